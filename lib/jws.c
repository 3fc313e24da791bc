/*
 * jws.c - JWS compact serialization with EdDSA (RFC 7515, RFC 8037).
 *
 * Base64url comes from libsodium (sodium_bin2base64 / sodium_base642bin
 * with the URL-safe, unpadded variant): it is already linked, constant
 * time, and its decoder refuses non-zero trailing bits, so each byte string
 * has exactly one accepted spelling. We still scan the alphabet ourselves
 * first, only to name the offending offset in the error message.
 *
 * The header is parsed with jansson (JSON_REJECT_DUPLICATES: a header with
 * two "alg" members is an attack on verifiers that read the first one
 * while another library reads the last). The signature is checked last,
 * after the cheap structural checks, with the same libsodium verifier the
 * aggregator uses for reports (rsl_verify_detached).
 */
#include "rsl/jws.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING

static const char *const part_names[3] = {"part 1 (header)", "part 2 (payload)",
                                          "part 3 (signature)"};

/* Encoded length without the NUL sodium_base64_ENCODED_LEN counts. */
static size_t b64url_len(size_t n)
{
    return sodium_base64_ENCODED_LEN(n, B64URL) - 1;
}

int rsl_jws_sign(const struct rsl_signer *signer, const uint8_t *payload, size_t payload_len,
                 char **out, size_t *out_len, struct rsl_error *err)
{
    char header[160];
    char *buf = NULL;
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    int rc;

    if (out == NULL || out_len == NULL || signer == NULL || (payload == NULL && payload_len > 0))
        return rsl_error_set(err, RSL_EINVAL, "jws: NULL argument");
    *out = NULL;
    *out_len = 0;
    if (payload_len > RSL_JWS_MAX_BYTES / 4 * 3)
        return rsl_error_set(err, RSL_ETOOBIG, "jws: payload of %zu bytes is over the %u-byte "
                             "limit of a release", payload_len, RSL_JWS_MAX_BYTES);
    int hlen = snprintf(header, sizeof(header), "{\"alg\":\"EdDSA\",\"kid\":\"%s\",\"typ\":\"JOSE\"}",
                        rsl_signer_key_id(signer));
    if (hlen < 0 || (size_t)hlen >= sizeof(header))
        return rsl_error_set(err, RSL_EINVAL, "jws: key id too long");

    size_t h64 = b64url_len((size_t)hlen);
    size_t p64 = b64url_len(payload_len);
    size_t s64 = b64url_len(sizeof(sig));
    size_t total = h64 + 1 + p64 + 1 + s64;
    buf = malloc(total + 1);
    if (buf == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "jws: out of memory");
        goto out;
    }
    sodium_bin2base64(buf, h64 + 1, (const unsigned char *)header, (size_t)hlen, B64URL);
    buf[h64] = '.';
    sodium_bin2base64(buf + h64 + 1, p64 + 1, payload != NULL ? payload : (const uint8_t *)"",
                      payload_len, B64URL);
    buf[h64 + 1 + p64] = '.';
    /* The signing input is everything before the second dot, as ASCII. */
    rc = rsl_sign_detached(signer, (const uint8_t *)buf, h64 + 1 + p64, sig);
    if (rc != RSL_OK) {
        rc = rsl_error_set(err, rc, "jws: signing failed");
        goto out;
    }
    sodium_bin2base64(buf + h64 + 1 + p64 + 1, s64 + 1, sig, sizeof(sig), B64URL);
    *out = buf;
    *out_len = total;
    buf = NULL;
    rc = RSL_OK;
out:
    free(buf);
    return rc;
}

/* Decode one part [s, s+n) into a fresh buffer (NUL-terminated, for the
 * header's JSON parser and the caller's convenience). */
static int part_decode(const char *s, size_t n, int part, uint8_t **out, size_t *out_len,
                       struct rsl_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (n == 0)
        return rsl_error_set(err, RSL_EPARSE, "JWS %s: empty", part_names[part]);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok)
            return rsl_error_set(err, RSL_EPARSE,
                                 "JWS %s: byte 0x%02x at offset %zu is not base64url (padding, "
                                 "whitespace and '+/' are not allowed)",
                                 part_names[part], (unsigned char)c, i);
    }
    size_t cap = n / 4 * 3 + 3;
    uint8_t *buf = malloc(cap + 1);
    if (buf == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "jws: out of memory");
    size_t got = 0;
    const char *end = NULL;
    if (sodium_base642bin(buf, cap, s, n, NULL, &got, &end, B64URL) != 0 || end != s + n) {
        free(buf);
        return rsl_error_set(err, RSL_EPARSE,
                             "JWS %s: not canonical base64url (length %zu or trailing bits)",
                             part_names[part], n);
    }
    buf[got] = '\0';
    *out = buf;
    *out_len = got;
    return RSL_OK;
}

/* The protected header: a JSON object, alg EdDSA, kid = our key's id, no
 * crit. Other members (typ, cty, ...) are allowed and ignored. */
static int header_check(const uint8_t *h, size_t hlen, const char *key_id, struct rsl_error *err)
{
    json_error_t jerr;
    int rc = RSL_OK;
    json_t *doc = json_loadb((const char *)h, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        return rsl_error_set(err, RSL_EPARSE, "JWS header: not JSON at byte %d: %s",
                             jerr.position, jerr.text);
    if (!json_is_object(doc)) {
        rc = rsl_error_set(err, RSL_EPARSE, "JWS header: not a JSON object");
        goto out;
    }
    json_t *alg = json_object_get(doc, "alg");
    if (!json_is_string(alg)) {
        rc = rsl_error_set(err, RSL_EPARSE, "JWS header: \"alg\" missing or not a string");
        goto out;
    }
    if (strcmp(json_string_value(alg), "EdDSA") != 0 ||
        strlen(json_string_value(alg)) != json_string_length(alg)) {
        char shown[40];
        snprintf(shown, sizeof(shown), "%s", json_string_value(alg));
        rc = rsl_error_set(err, RSL_EPARSE, "JWS header: alg \"%s\" is not EdDSA", shown);
        goto out;
    }
    if (json_object_get(doc, "crit") != NULL) {
        rc = rsl_error_set(err, RSL_EPARSE, "JWS header: \"crit\" names extensions this "
                           "verifier does not implement");
        goto out;
    }
    json_t *kid = json_object_get(doc, "kid");
    if (!json_is_string(kid)) {
        rc = rsl_error_set(err, RSL_EPARSE, "JWS header: \"kid\" missing or not a string");
        goto out;
    }
    if (json_string_length(kid) != strlen(key_id) || strcmp(json_string_value(kid), key_id) != 0) {
        char shown[RSL_KEY_ID_HEX_LEN + 8];
        snprintf(shown, sizeof(shown), "%s", json_string_value(kid));
        rc = rsl_error_set(err, RSL_EVERIFY, "JWS header: kid \"%s\" is not the id %s of the "
                           "given key (signed by another key?)", shown, key_id);
        goto out;
    }
out:
    json_decref(doc);
    return rc;
}

int rsl_jws_verify(const char *jws, size_t len, const uint8_t public_key[RSL_ED25519_PUBLIC_BYTES],
                   uint8_t **payload, size_t *payload_len, struct rsl_error *err)
{
    uint8_t *header = NULL, *body = NULL, *sig = NULL;
    size_t header_len = 0, body_len = 0, sig_len = 0;
    size_t start[3], n[3];
    char key_id[RSL_KEY_ID_HEX_LEN + 1];
    int rc;

    if (payload == NULL || payload_len == NULL || public_key == NULL || (jws == NULL && len > 0))
        return rsl_error_set(err, RSL_EINVAL, "jws: NULL argument");
    *payload = NULL;
    *payload_len = 0;
    if (len > RSL_JWS_MAX_BYTES)
        return rsl_error_set(err, RSL_ETOOBIG, "JWS: %zu bytes, over the %u-byte limit", len,
                             RSL_JWS_MAX_BYTES);
    /* Split at exactly two dots. */
    size_t parts = 0;
    start[0] = 0;
    for (size_t i = 0; i < len; i++) {
        if (jws[i] != '.')
            continue;
        if (parts == 2)
            return rsl_error_set(err, RSL_EPARSE, "JWS: more than three parts (a third '.' at "
                                 "offset %zu; JWE and JSON serializations are not accepted)", i);
        n[parts] = i - start[parts];
        parts++;
        start[parts] = i + 1;
    }
    if (parts != 2)
        return rsl_error_set(err, RSL_EPARSE, "JWS: %zu part%s, expected three separated by '.'",
                             parts + 1, parts == 0 ? "" : "s");
    n[2] = len - start[2];

    if ((rc = part_decode(jws + start[0], n[0], 0, &header, &header_len, err)) != RSL_OK)
        goto out;
    if (header_len > RSL_JWS_MAX_HEADER_BYTES) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "JWS header: %zu bytes, over %u", header_len,
                           RSL_JWS_MAX_HEADER_BYTES);
        goto out;
    }
    rsl_key_id(public_key, key_id);
    if ((rc = header_check(header, header_len, key_id, err)) != RSL_OK)
        goto out;
    if ((rc = part_decode(jws + start[2], n[2], 2, &sig, &sig_len, err)) != RSL_OK)
        goto out;
    if (sig_len != RSL_ED25519_SIGNATURE_BYTES) {
        rc = rsl_error_set(err, RSL_EPARSE, "JWS signature: %zu bytes, an Ed25519 signature has "
                           "%d", sig_len, RSL_ED25519_SIGNATURE_BYTES);
        goto out;
    }
    if ((rc = part_decode(jws + start[1], n[1], 1, &body, &body_len, err)) != RSL_OK)
        goto out;
    rc = rsl_verify_detached(public_key, (const uint8_t *)jws, start[2] - 1, sig, sig_len);
    if (rc != RSL_OK) {
        rc = rsl_error_set(err, rc == RSL_EVERIFY ? RSL_EVERIFY : rc,
                           "JWS: the signature does not verify with key %s (altered, or signed "
                           "by another key)", key_id);
        goto out;
    }
    *payload = body;
    *payload_len = body_len;
    body = NULL;
    rc = RSL_OK;
out:
    free(header);
    free(body);
    free(sig);
    return rc;
}
