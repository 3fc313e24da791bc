/*
 * test_faults_alloc.c - out-of-memory injection into every function of the
 * shared library that allocates, SQLite style: for each function, fail its
 * 1st allocation, then its 2nd, ... (once, then persistently from N on)
 * until a run completes without reaching N. Each run must return an error
 * (RSL_ENOMEM with a message, or another code where noted and why) or a
 * correct result, must not crash and must not leak (fault_loop.h).
 *
 * Allocations counted: malloc/calloc/realloc/strdup/strndup made by the lib/ sources
 * (GNU ld --wrap, see fault.h) and, for the functions that use OpenSSL, the
 * allocations OpenSSL makes for them (CRYPTO_set_mem_functions). Those made
 * inside libprotobuf-c go through the allocator lib/codec.c gives it, so
 * they are ours too. libzmq and libinih allocate with their own references:
 * not counted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "fault_loop.h"
#include "rsl/codec.h"
#include "rsl/ini.h"
#include "rsl/keys.h"
#include "rsl/lineformat.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"
#include "testutil.h"

#define N_MEASUREMENTS 20

/* Everything the operations need, made once without injection. */
struct fixture {
    char dir[128];
    char keydir[256];
    char sign_key[300];
    char sign_pub[300];
    uint8_t *report;         /* a valid serialized Report */
    size_t report_len;
    uint8_t *signed_report;  /* a SignedReport around it */
    size_t signed_len;
    uint8_t *ack;
    size_t ack_len;
    uint8_t signature[RSL_ED25519_SIGNATURE_BYTES];
    uint8_t public_key[RSL_ED25519_PUBLIC_BYTES];
    char key_id[RSL_KEY_ID_HEX_LEN + 1];
    struct rsl_signer *signer;
    char ini_path[300];
    char *ini_text;
    size_t long_value_len;   /* length of the continued value in ini_text */
    char indicators[512];
    char nations[512];
    size_t n_indicators;
    size_t n_nations;
    char *lines;             /* collector output with N_LINES samples */
    unsigned gen;            /* keys_generate: next folder number */
};

static struct fixture fx;

/* ---- fixture ----------------------------------------------------------------- */

static void build_report(void)
{
    static char ids[N_MEASUREMENTS][32];
    static rsl_measurement m[N_MEASUREMENTS];
    static rsl_measurement *mp[N_MEASUREMENTS];
    static char *partners[3] = {(char *)"EU", (char *)"partner_2", (char *)"UKR"};
    rsl_report r = RESILIENCE__V1__REPORT__INIT;
    r.agent_id = (char *)"DEU-BMI-01";
    r.nation = (char *)"DEU";
    r.organisation = (char *)"Bundesministerium des Innern";
    r.sequence = 7;
    r.created_at_ms = 1764234000000;
    r.marking = (char *)"NATO UNCLASSIFIED";
    for (size_t i = 0; i < N_MEASUREMENTS; i++) {
        resilience__v1__measurement__init(&m[i]);
        snprintf(ids[i], sizeof(ids[i]), "energy.indicator_%zu", i);
        m[i].indicator = ids[i];
        m[i].value = 10.5 * (double)i;
        m[i].unit = (char *)"days";
        m[i].observed_at_ms = 1764233000000 + (int64_t)i;
        m[i].source = (char *)"collector fuel";
        m[i].n_releasable_to = 1 + i % 3;
        m[i].releasable_to = partners;
        mp[i] = &m[i];
    }
    r.n_measurements = N_MEASUREMENTS;
    r.measurements = mp;
    assert_int_equal(rsl_report_encode(&r, &fx.report, &fx.report_len), RSL_OK);

    assert_int_equal(rsl_sign_report(fx.signer, fx.report, fx.report_len, fx.signature), RSL_OK);
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    sr.report.data = fx.report;
    sr.report.len = fx.report_len;
    sr.signature.data = fx.signature;
    sr.signature.len = sizeof(fx.signature);
    sr.key_id = fx.key_id;
    assert_int_equal(rsl_signed_report_encode(&sr, &fx.signed_report, &fx.signed_len), RSL_OK);

    rsl_ack a = RESILIENCE__V1__ACK__INIT;
    a.agent_id = (char *)"DEU-BMI-01";
    a.sequence = 7;
    a.status = RESILIENCE__V1__ACK__STATUS__REJECTED;
    a.detail = (char *)"measurements[3]: unknown indicator";
    assert_int_equal(rsl_ack_encode(&a, &fx.ack, &fx.ack_len), RSL_OK);
}

/* An INI file with several sections and a value continued over enough
 * lines that the loader's value buffer must grow (it starts at 256). */
static void build_ini(void)
{
    char *text = malloc(8192);
    assert_non_null(text);
    size_t n = 0;
    n += (size_t)snprintf(text + n, 8192 - n,
                          "; comment\n[agent]\nid = DEU-BMI-01\nnation = DEU\n"
                          "organisation = Ministry\n\n[collector fuel]\ntype = static\n"
                          "value = 90\nreleasable_to = EU,\n");
    fx.long_value_len = strlen("EU,");
    for (int i = 0; i < 12; i++) {
        char item[64];
        int k = snprintf(item, sizeof(item), "partner_%02d_abcdefghijklmnopqrstuvwxyz,", i);
        n += (size_t)snprintf(text + n, 8192 - n, "  %s\n", item);
        fx.long_value_len += (size_t)k + 1; /* joined with one space */
    }
    n += (size_t)snprintf(text + n, 8192 - n, "[log]\nlevel = info\n");
    fx.ini_text = text;
    assert_int_equal(rsl_file_write_atomic(fx.ini_path, text, n, 0644, NULL), RSL_OK);
}

static void build_lines(void)
{
    size_t cap = 64 * 40;
    fx.lines = malloc(cap);
    assert_non_null(fx.lines);
    size_t n = 0;
    n += (size_t)snprintf(fx.lines + n, cap - n, "# collector output\n");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(fx.lines + n, cap - n, "energy.oil_%d %d.5 days %d\n", i, i,
                              1000 + i);
}

static int group_setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    if (fault_mkdtemp(fx.dir, sizeof(fx.dir), "alloc") != 0)
        return -1;
    snprintf(fx.keydir, sizeof(fx.keydir), "%s/keys", fx.dir);
    snprintf(fx.sign_key, sizeof(fx.sign_key), "%s/sign.key", fx.keydir);
    snprintf(fx.sign_pub, sizeof(fx.sign_pub), "%s/sign.pub", fx.keydir);
    snprintf(fx.ini_path, sizeof(fx.ini_path), "%s/test.conf", fx.dir);
    snprintf(fx.indicators, sizeof(fx.indicators), "%s/indicators.csv", RSL_SHARE_DIR);
    snprintf(fx.nations, sizeof(fx.nations), "%s/nations.csv", RSL_SHARE_DIR);
    struct rsl_error err = {0};
    if (rsl_keys_generate(fx.keydir, &err) != RSL_OK ||
        rsl_signer_load(fx.sign_key, &fx.signer, &err) != RSL_OK) {
        print_error("setup: %s\n", err.text);
        return -1;
    }
    memcpy(fx.public_key, rsl_signer_public_key(fx.signer), sizeof(fx.public_key));
    memcpy(fx.key_id, rsl_signer_key_id(fx.signer), sizeof(fx.key_id));
    build_report();
    build_ini();
    build_lines();
    struct rsl_taxonomy *tax = NULL;
    if (rsl_taxonomy_load(fx.indicators, fx.nations, &tax, &err) != RSL_OK) {
        print_error("setup: %s\n", err.text);
        return -1;
    }
    fx.n_indicators = tax->n_indicators;
    fx.n_nations = tax->n_nations;
    rsl_taxonomy_free(&tax);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rsl_signer_free(&fx.signer);
    free(fx.report);
    free(fx.signed_report);
    free(fx.ack);
    free(fx.ini_text);
    free(fx.lines);
    rsl_test_rmtree(fx.dir);
    return 0;
}

/* Run a case in both allocation modes. */
static void run_alloc_case(const struct fault_case *c)
{
    fault_run_case(c, FAULT_ONCE, ENOMEM);
    fault_run_case(c, FAULT_PERSIST, ENOMEM);
}

/* ---- codec ------------------------------------------------------------------- */

static int op_report_decode(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    rsl_report *r = NULL;
    int rc = rsl_report_decode(fx.report, fx.report_len, &r, err);
    if (rc != RSL_OK) {
        assert_null(r);
        return rc;
    }
    assert_string_equal(r->agent_id, "DEU-BMI-01");
    assert_int_equal(r->n_measurements, N_MEASUREMENTS);
    assert_string_equal(r->measurements[19]->indicator, "energy.indicator_19");
    assert_int_equal(r->measurements[19]->n_releasable_to, 2);
    assert_string_equal(r->measurements[19]->releasable_to[1], "partner_2");
    rsl_report_free(&r);
    assert_null(r);
    return rc;
}

static void test_report_decode(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_report_decode", FAULT_ALLOC, op_report_decode, NULL, NULL,
                           {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
}

static int op_signed_report_decode(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    rsl_signed_report *sr = NULL;
    int rc = rsl_signed_report_decode(fx.signed_report, fx.signed_len,
                                      RSL_MAX_MESSAGE_BYTES_DEFAULT, &sr, err);
    if (rc != RSL_OK) {
        assert_null(sr);
        return rc;
    }
    assert_string_equal(sr->key_id, fx.key_id);
    assert_int_equal(sr->report.len, fx.report_len);
    assert_memory_equal(sr->report.data, fx.report, fx.report_len);
    assert_memory_equal(sr->signature.data, fx.signature, sizeof(fx.signature));
    rsl_signed_report_free(&sr);
    return rc;
}

static void test_signed_report_decode(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_signed_report_decode", FAULT_ALLOC, op_signed_report_decode,
                           NULL, NULL, {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
}

static int op_ack_decode(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    rsl_ack *a = NULL;
    int rc = rsl_ack_decode(fx.ack, fx.ack_len, 4096, &a, err);
    if (rc != RSL_OK) {
        assert_null(a);
        return rc;
    }
    assert_int_equal(a->status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    assert_string_equal(a->detail, "measurements[3]: unknown indicator");
    rsl_ack_free(&a);
    return rc;
}

static void test_ack_decode(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_ack_decode", FAULT_ALLOC, op_ack_decode, NULL, NULL,
                           {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
}

/* Validate and re-encode messages decoded before arming. */
static int op_encode_all(void *ctx, struct rsl_error *err)
{
    /* The decoded inputs were made before arming (see test_encode). */
    void **msgs = ctx;
    const rsl_signed_report *sr = msgs[0];
    const rsl_report *r = msgs[1];
    const rsl_ack *a = msgs[2];
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    if ((rc = rsl_report_validate(r, err)) != RSL_OK)
        return rc;
    if ((rc = rsl_report_encode(r, &buf, &len)) != RSL_OK) {
        assert_null(buf);
        return rc;
    }
    assert_int_equal(len, fx.report_len);
    assert_memory_equal(buf, fx.report, len);
    free(buf);
    buf = NULL;
    if ((rc = rsl_signed_report_encode(sr, &buf, &len)) != RSL_OK) {
        assert_null(buf);
        return rc;
    }
    assert_int_equal(len, fx.signed_len);
    assert_memory_equal(buf, fx.signed_report, len);
    free(buf);
    buf = NULL;
    if ((rc = rsl_ack_encode(a, &buf, &len)) != RSL_OK) {
        assert_null(buf);
        return rc;
    }
    assert_int_equal(len, fx.ack_len);
    assert_memory_equal(buf, fx.ack, len);
    free(buf);
    return RSL_OK;
}

static void test_encode(void **state)
{
    (void)state;
    void *msgs[3] = {NULL, NULL, NULL};
    assert_int_equal(rsl_signed_report_decode(fx.signed_report, fx.signed_len, 1 << 20,
                                              (rsl_signed_report **)&msgs[0], NULL),
                     RSL_OK);
    assert_int_equal(rsl_report_decode(fx.report, fx.report_len, (rsl_report **)&msgs[1], NULL),
                     RSL_OK);
    assert_int_equal(rsl_ack_decode(fx.ack, fx.ack_len, 4096, (rsl_ack **)&msgs[2], NULL),
                     RSL_OK);
    /* The encoders take no struct rsl_error: a bare RSL_ENOMEM is right. */
    struct fault_case c = {"rsl_*_encode + rsl_report_validate", FAULT_ALLOC, op_encode_all,
                           NULL, msgs, {RSL_ENOMEM}, {0}, false, NULL};
    run_alloc_case(&c);
    rsl_signed_report_free((rsl_signed_report **)&msgs[0]);
    rsl_report_free((rsl_report **)&msgs[1]);
    rsl_ack_free((rsl_ack **)&msgs[2]);
}

/* ---- signatures and keys -------------------------------------------------------- */

static int op_sign(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    (void)err;
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    int rc = rsl_sign_report(fx.signer, fx.report, fx.report_len, sig);
    if (rc == RSL_OK) /* Ed25519 is deterministic: the same bytes every time */
        assert_memory_equal(sig, fx.signature, sizeof(sig));
    return rc;
}

static void test_sign(void **state)
{
    (void)state;
    /* An OpenSSL allocation failing inside EVP_DigestSign is reported as
     * RSL_ECRYPTO: OpenSSL does not tell it apart from other failures. */
    struct fault_case c = {"rsl_sign_report", FAULT_ALLOC | FAULT_SSL, op_sign, NULL, NULL,
                           {RSL_ENOMEM}, {RSL_ECRYPTO}, false, NULL};
    run_alloc_case(&c);
}

static int op_verify(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    (void)err;
    return rsl_verify_report(fx.public_key, fx.report, fx.report_len, fx.signature,
                             sizeof(fx.signature));
}

static void test_verify(void **state)
{
    (void)state;
    /* Never RSL_EVERIFY for a good signature: the aggregator would reject
     * a genuine report because memory was short. */
    struct fault_case c = {"rsl_verify_report", FAULT_ALLOC | FAULT_SSL, op_verify, NULL, NULL,
                           {RSL_ENOMEM}, {0}, false, NULL};
    run_alloc_case(&c);
}

static int op_signer_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct rsl_signer *s = NULL;
    int rc = rsl_signer_load(fx.sign_key, &s, err);
    if (rc != RSL_OK) {
        assert_null(s);
        return rc;
    }
    assert_string_equal(rsl_signer_key_id(s), fx.key_id);
    assert_memory_equal(rsl_signer_public_key(s), fx.public_key, RSL_ED25519_PUBLIC_BYTES);
    rsl_signer_free(&s);
    return rc;
}

static void test_signer_load(void **state)
{
    (void)state;
    /* OpenSSL's PEM decoder tries each decoder under an error mark and
     * drops their errors, so some of its allocation failures come out as
     * "not a PEM key" (RSL_EPARSE); lib/sign.c reports RSL_ENOMEM whenever
     * OpenSSL's error queue says so. */
    struct fault_case c = {"rsl_signer_load", FAULT_ALLOC | FAULT_SSL, op_signer_load, NULL,
                           NULL, {RSL_ENOMEM}, {RSL_ECRYPTO, RSL_EPARSE}, true, fx.sign_key};
    run_alloc_case(&c);
}

static int op_public_key_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    int rc = rsl_public_key_load_pem(fx.sign_pub, pub, err);
    if (rc == RSL_OK)
        assert_memory_equal(pub, fx.public_key, sizeof(pub));
    return rc;
}

static void test_public_key_load(void **state)
{
    (void)state;
    /* RSL_EPARSE from OpenSSL's decoder: see test_signer_load. */
    struct fault_case c = {"rsl_public_key_load_pem", FAULT_ALLOC | FAULT_SSL,
                           op_public_key_load, NULL, NULL, {RSL_ENOMEM},
                           {RSL_ECRYPTO, RSL_EPARSE}, true, fx.sign_pub};
    run_alloc_case(&c);
}

/* rsl_key_id and rsl_sha256 cannot report an error: their output must be
 * right whatever OpenSSL's allocator does. */
static int op_hashes(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    (void)err;
    /* SHA-256("abc"), FIPS 180-2 appendix B.1 */
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t digest[32];
    memset(digest, 0xa5, sizeof(digest));
    rsl_sha256("abc", 3, digest);
    assert_memory_equal(digest, abc, sizeof(abc));
    char id[RSL_KEY_ID_HEX_LEN + 1];
    memset(id, 'x', sizeof(id));
    rsl_key_id(fx.public_key, id);
    assert_string_equal(id, fx.key_id);
    /* base64 is OpenSSL too (EVP_EncodeBlock / EVP_DecodeBlock). */
    char b64[64];
    uint8_t back[RSL_ED25519_PUBLIC_BYTES];
    rsl_base64_encode(fx.public_key, sizeof(fx.public_key), b64);
    int rc = rsl_public_key_from_base64(b64, back);
    if (rc == RSL_OK)
        assert_memory_equal(back, fx.public_key, sizeof(back));
    return rc;
}

static void test_hashes(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_sha256 + rsl_key_id + base64", FAULT_ALLOC | FAULT_SSL,
                           op_hashes, NULL, NULL, {RSL_ENOMEM}, {0}, false, NULL};
    run_alloc_case(&c);
}

/* Generate into a new folder each run; the check in after(). */
static char gen_dir[300];

static int op_keys_generate(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    snprintf(gen_dir, sizeof(gen_dir), "%s/gen-%u", fx.dir, fx.gen++);
    return rsl_keys_generate(gen_dir, err);
}

/* Success: four files with the right modes that load. Failure: no key file
 * left behind, so a retry is not refused. */
static void after_keys_generate(void *ctx, int rc, bool fired)
{
    (void)ctx;
    (void)fired;
    static const char *const names[] = {"sign.key", "sign.pub", "curve.key", "curve.pub"};
    static const unsigned modes[] = {0600, 0644, 0600, 0644};
    for (size_t i = 0; i < 4; i++) {
        char path[400];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", gen_dir, names[i]);
        if (rc == RSL_OK) {
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(st.st_mode & 07777, modes[i]);
            assert_true(st.st_size > 0);
        } else if (lstat(path, &st) == 0) {
            print_error("keys_generate failed (%d) but left %s\n", rc, path);
            fail();
        }
    }
    if (rc == RSL_OK) {
        char path[400];
        struct rsl_error err = {0};
        struct rsl_signer *s = NULL;
        snprintf(path, sizeof(path), "%s/sign.key", gen_dir);
        assert_int_equal(rsl_signer_load(path, &s, &err), RSL_OK);
        rsl_signer_free(&s);
    }
    rsl_test_rmtree(gen_dir);
}

static void test_keys_generate(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_keys_generate", FAULT_ALLOC | FAULT_SSL, op_keys_generate,
                           after_keys_generate, NULL, {RSL_ENOMEM}, {RSL_ECRYPTO}, true,
                           NULL};
    run_alloc_case(&c);
}

static int op_curve_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    char path[400], sec[RSL_Z85_KEY_LEN + 1], pub[RSL_Z85_KEY_LEN + 1];
    snprintf(path, sizeof(path), "%s/curve.key", fx.keydir);
    int rc = rsl_curve_load_secret(path, sec, err);
    if (rc != RSL_OK)
        return rc;
    snprintf(path, sizeof(path), "%s/curve.pub", fx.keydir);
    rc = rsl_curve_load_public(path, pub, err);
    if (rc != RSL_OK)
        return rc;
    assert_true(rsl_z85_key_valid(sec));
    assert_true(rsl_z85_key_valid(pub));
    return rc;
}

static void test_curve_load(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_curve_load_*", FAULT_ALLOC | FAULT_SSL, op_curve_load, NULL,
                           NULL, {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
}

/* ---- INI --------------------------------------------------------------------------- */

#define INI_MAX_KEYS 32

/* What the handler collected: its copies are allocations too, so a
 * handler's own out-of-memory error travels through the loader. */
struct ini_seen {
    char *values[INI_MAX_KEYS];
    int lines[INI_MAX_KEYS];
    size_t n;
};

static int ini_collect(void *ctx, const char *section, const char *key, const char *value,
                       int line, struct rsl_error *err)
{
    struct ini_seen *seen = ctx;
    (void)section;
    (void)key;
    if (seen->n == INI_MAX_KEYS)
        return rsl_error_set(err, RSL_ECONFIG, "too many keys");
    char *copy = strdup(value);
    if (copy == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    seen->lines[seen->n] = line;
    seen->values[seen->n++] = copy;
    return RSL_OK;
}

static void ini_seen_check_and_free(struct ini_seen *seen, int rc)
{
    if (rc == RSL_OK) {
        assert_int_equal(seen->n, 7);
        assert_string_equal(seen->values[0], "DEU-BMI-01");
        assert_int_equal(seen->lines[5], 10); /* releasable_to, continued below it */
        assert_int_equal(strlen(seen->values[5]), fx.long_value_len);
        assert_string_equal(seen->values[6], "info");
    }
    for (size_t i = 0; i < seen->n; i++)
        free(seen->values[i]);
    memset(seen, 0, sizeof(*seen));
}

static int op_ini_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct ini_seen seen;
    memset(&seen, 0, sizeof(seen));
    int rc = rsl_ini_load(fx.ini_path, ini_collect, &seen, err);
    ini_seen_check_and_free(&seen, rc);
    return rc;
}

static int op_ini_parse(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct ini_seen seen;
    memset(&seen, 0, sizeof(seen));
    int rc = rsl_ini_parse_buffer(fx.ini_text, strlen(fx.ini_text), "test.conf", ini_collect,
                                  &seen, err);
    ini_seen_check_and_free(&seen, rc);
    return rc;
}

static void test_ini(void **state)
{
    (void)state;
    struct fault_case load = {"rsl_ini_load", FAULT_ALLOC, op_ini_load, NULL, NULL,
                              {RSL_ENOMEM}, {0}, true, fx.ini_path};
    run_alloc_case(&load);
    struct fault_case parse = {"rsl_ini_parse_buffer", FAULT_ALLOC, op_ini_parse, NULL, NULL,
                               {RSL_ENOMEM}, {0}, true, "test.conf"};
    run_alloc_case(&parse);
}

/* ---- taxonomy --------------------------------------------------------------------- */

static int op_taxonomy_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct rsl_taxonomy *tax = NULL;
    int rc = rsl_taxonomy_load(fx.indicators, fx.nations, &tax, err);
    if (rc != RSL_OK) {
        assert_null(tax);
        return rc;
    }
    assert_int_equal(tax->n_indicators, fx.n_indicators);
    assert_int_equal(tax->n_nations, fx.n_nations);
    assert_true(rsl_taxonomy_nation_index(tax, "DEU") >= 0);
    rsl_taxonomy_free(&tax);
    return rc;
}

static void test_taxonomy_load(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_taxonomy_load", FAULT_ALLOC, op_taxonomy_load, NULL, NULL,
                           {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
}

/* Re-parsing into a loaded taxonomy: a failure must leave the old tables
 * whole (the taxonomy.h contract: "either loads whole or not at all"). */
struct reparse {
    struct rsl_taxonomy *tax;
    const char *indicators;
    const char *nations;
};

static const char REPARSE_INDICATORS[] =
    "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
    "a.one,BR1,days,higher_is_better,10,5,sum,,first\n"
    "a.two,BR2,pct,lower_is_better,10,20,mean,24,\"second, quoted\"\n"
    "a.three,X,,higher_is_better,1,1,max,1,third\n";
static const char REPARSE_NATIONS[] = "code,name,eu_member\nAAA,Aland,yes\nBBB,Bland,no\n";

static int op_taxonomy_reparse(void *ctx, struct rsl_error *err)
{
    struct reparse *rp = ctx;
    int rc = rsl_taxonomy_parse_indicators(REPARSE_INDICATORS, strlen(REPARSE_INDICATORS),
                                           "new.csv", rp->tax, err);
    if (rc != RSL_OK)
        return rc;
    return rsl_taxonomy_parse_nations(REPARSE_NATIONS, strlen(REPARSE_NATIONS), "new-nations.csv",
                                      rp->tax, err);
}

static void after_reparse(void *ctx, int rc, bool fired)
{
    struct reparse *rp = ctx;
    (void)fired;
    if (rc == RSL_OK) {
        assert_int_equal(rp->tax->n_indicators, 3);
        assert_string_equal(rp->tax->indicators[1].id, "a.three");
        assert_string_equal(rp->tax->indicators[2].description, "second, quoted");
        assert_int_equal(rp->tax->n_nations, 2);
        /* Back to the shipped tables for the next run (not counted). */
        struct rsl_taxonomy *fresh = NULL;
        assert_int_equal(rsl_taxonomy_load(rp->indicators, rp->nations, &fresh, NULL), RSL_OK);
        rsl_taxonomy_free(&rp->tax);
        rp->tax = fresh;
        return;
    }
    /* Indicators may have been replaced when the nations failed; what
     * matters is that each table is one whole file, never a mix. */
    assert_true(rp->tax->n_indicators == fx.n_indicators || rp->tax->n_indicators == 3);
    assert_int_equal(rp->tax->n_nations, fx.n_nations);
    for (size_t i = 0; i < rp->tax->n_indicators; i++)
        assert_non_null(rp->tax->indicators[i].id);
    for (size_t i = 0; i < rp->tax->n_nations; i++)
        assert_non_null(rp->tax->nations[i].name);
    struct rsl_taxonomy *fresh = NULL;
    assert_int_equal(rsl_taxonomy_load(rp->indicators, rp->nations, &fresh, NULL), RSL_OK);
    rsl_taxonomy_free(&rp->tax);
    rp->tax = fresh;
}

static void test_taxonomy_reparse(void **state)
{
    (void)state;
    struct reparse rp = {NULL, fx.indicators, fx.nations};
    assert_int_equal(rsl_taxonomy_load(fx.indicators, fx.nations, &rp.tax, NULL), RSL_OK);
    struct fault_case c = {"rsl_taxonomy_parse_*", FAULT_ALLOC, op_taxonomy_reparse,
                           after_reparse, &rp, {RSL_ENOMEM}, {0}, true, NULL};
    run_alloc_case(&c);
    rsl_taxonomy_free(&rp.tax);
}

/* ---- line format, files ---------------------------------------------------------------- */

static int op_lineformat(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct rsl_sample *s = NULL;
    size_t n = 99;
    int rc = rsl_lineformat_parse(fx.lines, strlen(fx.lines), "collector fuel", 1000, &s, &n, err);
    if (rc != RSL_OK) {
        assert_null(s);
        assert_int_equal(n, 0);
        return rc;
    }
    assert_int_equal(n, 40);
    assert_string_equal(s[39].indicator, "energy.oil_39");
    assert_int_equal(s[39].observed_at_ms, 1039);
    free(s);
    return rc;
}

static void test_lineformat(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_lineformat_parse", FAULT_ALLOC, op_lineformat, NULL, NULL,
                           {RSL_ENOMEM}, {0}, true, "collector fuel"};
    run_alloc_case(&c);
}

static int op_file_read_all(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = rsl_file_read_all(fx.ini_path, 1 << 20, &data, &len, err);
    if (rc != RSL_OK) {
        assert_null(data);
        return rc;
    }
    assert_int_equal(len, strlen(fx.ini_text));
    assert_memory_equal(data, fx.ini_text, len + 1);
    free(data);
    return rc;
}

static void test_file_read_all(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_file_read_all", FAULT_ALLOC, op_file_read_all, NULL, NULL,
                           {RSL_ENOMEM}, {0}, true, fx.ini_path};
    run_alloc_case(&c);
}

int main(void)
{
    /* Before anything touches OpenSSL, or its allocations are not seen. */
    if (!fault_init()) {
        fprintf(stderr, "test_faults_alloc: CRYPTO_set_mem_functions refused\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_decode),
        cmocka_unit_test(test_signed_report_decode),
        cmocka_unit_test(test_ack_decode),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_sign),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_signer_load),
        cmocka_unit_test(test_public_key_load),
        cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_keys_generate),
        cmocka_unit_test(test_curve_load),
        cmocka_unit_test(test_ini),
        cmocka_unit_test(test_taxonomy_load),
        cmocka_unit_test(test_taxonomy_reparse),
        cmocka_unit_test(test_lineformat),
        cmocka_unit_test(test_file_read_all),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
