/*
 * test_jws.c - JWS compact serialization with EdDSA (lib/jws.c): a round
 * trip, a known-answer check of the header, and hostile inputs, each of
 * which must be refused with a message naming what is wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "rsl/jws.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"
#include "testutil.h"

struct fixture {
    char dir[128];
    struct rsl_signer *signer;
    struct rsl_signer *other;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char path[256];
    struct rsl_error err = {0};
    if (fx == NULL || rsl_test_mkdtemp(fx->dir, sizeof(fx->dir), "jws") != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/a", fx->dir);
    if (rsl_keys_generate(path, &err) != RSL_OK)
        return -1;
    snprintf(path, sizeof(path), "%s/a/sign.key", fx->dir);
    if (rsl_signer_load(path, &fx->signer, &err) != RSL_OK)
        return -1;
    snprintf(path, sizeof(path), "%s/b", fx->dir);
    if (rsl_keys_generate(path, &err) != RSL_OK)
        return -1;
    snprintf(path, sizeof(path), "%s/b/sign.key", fx->dir);
    if (rsl_signer_load(path, &fx->other, &err) != RSL_OK)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    rsl_signer_free(&fx->signer);
    rsl_signer_free(&fx->other);
    rsl_test_rmtree(fx->dir);
    free(fx);
    return 0;
}

static const char payload[] = "{\"partner\":\"EU\",\"release_id\":\"EU-1\"}";

static char *make(struct fixture *fx, struct rsl_signer *signer)
{
    char *jws = NULL;
    size_t len = 0;
    struct rsl_error err = {0};
    assert_int_equal(rsl_jws_sign(signer != NULL ? signer : fx->signer, (const uint8_t *)payload,
                                  strlen(payload), &jws, &len, &err),
                     RSL_OK);
    assert_int_equal(strlen(jws), len);
    return jws;
}

/* Verify `jws` with fx->signer's key; returns the code, error text in err. */
static int check(struct fixture *fx, const char *jws, size_t len, struct rsl_error *err)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    rsl_error_clear(err);
    int rc = rsl_jws_verify(jws, len, rsl_signer_public_key(fx->signer), &out, &out_len, err);
    if (rc == RSL_OK) {
        assert_non_null(out);
    } else {
        assert_null(out);
        assert_true(strlen(err->text) > 0);
    }
    free(out);
    return rc;
}

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    char *jws = make(fx, NULL);
    uint8_t *out = NULL;
    size_t out_len = 0;
    struct rsl_error err = {0};
    assert_int_equal(rsl_jws_verify(jws, strlen(jws), rsl_signer_public_key(fx->signer), &out,
                                    &out_len, &err),
                     RSL_OK);
    assert_int_equal(out_len, strlen(payload));
    assert_memory_equal(out, payload, out_len);
    assert_int_equal(out[out_len], '\0');
    free(out);

    /* The header is exactly what section 7 says, and decodes as such. */
    const char *dot = strchr(jws, '.');
    assert_non_null(dot);
    char header[256];
    size_t hlen = 0;
    assert_int_equal(sodium_base642bin((unsigned char *)header, sizeof(header) - 1, jws,
                                       (size_t)(dot - jws), NULL, &hlen, NULL,
                                       sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    header[hlen] = '\0';
    char expect[256];
    snprintf(expect, sizeof(expect), "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JOSE\"}",
             rsl_signer_key_id(fx->signer));
    assert_string_equal(header, expect);
    free(jws);
}

/* Every single flipped bit anywhere is refused (header, payload or
 * signature: a changed byte in the base64url text changes the decoded
 * bytes or makes them non-canonical). */
static void test_every_flip_fails(void **state)
{
    struct fixture *fx = *state;
    char *jws = make(fx, NULL);
    size_t len = strlen(jws);
    struct rsl_error err;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char saved = jws[i];
            jws[i] = (char)(jws[i] ^ (1 << bit));
            if (check(fx, jws, len, &err) == RSL_OK)
                fail_msg("flipping bit %d of byte %zu ('%c' -> '%c') still verifies", bit, i,
                         saved, jws[i]);
            jws[i] = saved;
        }
    }
    assert_int_equal(check(fx, jws, len, &err), RSL_OK);
    free(jws);
}

static void test_truncations_fail(void **state)
{
    struct fixture *fx = *state;
    char *jws = make(fx, NULL);
    size_t len = strlen(jws);
    struct rsl_error err;
    for (size_t n = 0; n < len; n++)
        assert_int_not_equal(check(fx, jws, n, &err), RSL_OK);
    free(jws);
}

static void test_wrong_key(void **state)
{
    struct fixture *fx = *state;
    char *jws = make(fx, fx->other);
    struct rsl_error err;
    assert_int_equal(check(fx, jws, strlen(jws), &err), RSL_EVERIFY);
    assert_non_null(strstr(err.text, "kid"));
    free(jws);
}

/* Build a JWS from a header text and payload, signed properly by signer:
 * so the only thing wrong is what the header says. */
static char *forge(struct rsl_signer *signer, const char *header, const char *body)
{
    size_t hl = sodium_base64_ENCODED_LEN(strlen(header), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t pl = sodium_base64_ENCODED_LEN(strlen(body), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t sl = sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(hl + pl + sl + 4);
    assert_non_null(out);
    sodium_bin2base64(out, hl, (const unsigned char *)header, strlen(header),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    strcat(out, ".");
    sodium_bin2base64(out + strlen(out), pl, (const unsigned char *)body, strlen(body),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    uint8_t sig[64];
    assert_int_equal(rsl_sign_detached(signer, (const uint8_t *)out, strlen(out), sig), RSL_OK);
    strcat(out, ".");
    sodium_bin2base64(out + strlen(out), sl, sig, 64, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

/* Copy tmpl into out with every "KID" replaced by kid. */
static void expand(char *out, size_t outlen, const char *tmpl, const char *kid)
{
    size_t o = 0;
    for (const char *t = tmpl; *t != '\0' && o + 40 < outlen;) {
        if (strncmp(t, "KID", 3) == 0) {
            o += (size_t)snprintf(out + o, outlen - o, "%s", kid);
            t += 3;
        } else {
            out[o++] = *t++;
        }
    }
    out[o] = '\0';
}

static void test_hostile_headers(void **state)
{
    struct fixture *fx = *state;
    const char *kid = rsl_signer_key_id(fx->signer);
    char h[512];
    /* "KID" in a template stands for the signer's key id. */
    struct {
        const char *tmpl;
        const char *needle;
    } cases[] = {
        {"{\"alg\":\"none\",\"kid\":\"KID\"}", "alg"},
        {"{\"alg\":\"HS256\",\"kid\":\"KID\"}", "alg"},
        {"{\"alg\":\"eddsa\",\"kid\":\"KID\"}", "alg"},
        {"{\"kid\":\"KID\"}", "alg"},
        {"{\"alg\":5,\"kid\":\"KID\"}", "alg"},
        {"{\"alg\":\"EdDSA\\u0000x\",\"kid\":\"KID\"}", "JSON"},
        {"{\"alg\":\"EdDSA\",\"alg\":\"none\",\"kid\":\"KID\"}", "header"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"KID\",\"crit\":[\"b64\"],\"b64\":false}", "crit"},
        {"{\"alg\":\"EdDSA\"}", "kid"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"0123abcd\"}", "kid"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"KIDKID\"}", "kid"},
        {"[\"alg\",\"EdDSA\",\"KID\"]", "object"},
        {"{\"alg\":\"EdDSA\",\"kid\":\"KID\"", "JSON"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expand(h, sizeof(h), cases[i].tmpl, kid);
        char *jws = forge(fx->signer, h, payload);
        struct rsl_error err;
        int rc = check(fx, jws, strlen(jws), &err);
        if (rc == RSL_OK)
            fail_msg("header %s accepted", h);
        if (strstr(err.text, cases[i].needle) == NULL)
            fail_msg("header %s: message '%s' does not mention '%s'", h, err.text,
                     cases[i].needle);
        free(jws);
    }
    /* Control: the same forging with a good header verifies. */
    snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"x-extra\":1}", kid);
    char *ok = forge(fx->signer, h, payload);
    struct rsl_error err;
    assert_int_equal(check(fx, ok, strlen(ok), &err), RSL_OK);
    free(ok);
}

static void test_hostile_structure(void **state)
{
    struct fixture *fx = *state;
    char *good = make(fx, NULL);
    size_t len = strlen(good);
    char buf[4096];
    struct rsl_error err;
    assert_true(len + 8 < sizeof(buf));

    const char *flat[] = {"", ".", "..", "...", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b."};
    for (size_t i = 0; i < sizeof(flat) / sizeof(flat[0]); i++)
        assert_int_equal(check(fx, flat[i], strlen(flat[i]), &err), RSL_EPARSE);

    /* Padding, whitespace, standard-base64 characters, trailing newline. */
    const char *inserts[] = {"=", " ", "+", "/", "\n", "\0"};
    for (size_t i = 0; i < sizeof(inserts) / sizeof(inserts[0]); i++) {
        size_t ins = strlen(inserts[i]) == 0 ? 1 : strlen(inserts[i]);
        for (size_t at = 0; at <= len; at += 7) {
            memcpy(buf, good, at);
            memcpy(buf + at, inserts[i], ins);
            memcpy(buf + at + ins, good + at, len - at);
            assert_int_not_equal(check(fx, buf, len + ins, &err), RSL_OK);
        }
    }
    /* A fifth part (JWE-like) and a signature of the wrong length. */
    snprintf(buf, sizeof(buf), "%s.AAAA", good);
    assert_int_equal(check(fx, buf, strlen(buf), &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "three"));
    const char *last = strrchr(good, '.');
    snprintf(buf, sizeof(buf), "%.*sAAAA", (int)(last + 1 - good), good);
    assert_int_equal(check(fx, buf, strlen(buf), &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "signature"));
    /* Oversized input is refused before any work. */
    assert_int_equal(check(fx, good, (size_t)RSL_JWS_MAX_BYTES + 1, &err), RSL_ETOOBIG);
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_flip_fails),
        cmocka_unit_test(test_truncations_fail),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_hostile_structure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
