/*
 * jws.h - signed partner releases as JWS compact serializations
 * (RFC 7515) with alg "EdDSA" over Ed25519 (RFC 8037), ARCHITECTURE
 * section 7.
 *
 * A release is BASE64URL(header) "." BASE64URL(payload) "."
 * BASE64URL(signature), no padding, where the protected header is
 * {"alg":"EdDSA","kid":"<key id as in section 2>","typ":"JOSE"} and the
 * signature is pure Ed25519 over the ASCII bytes before the second dot.
 * Any JOSE library verifies it with the aggregator's public key; ours is
 * here so the aggregator (which signs) and resilience-ctl (which verifies
 * offline) share one implementation.
 *
 * Verification is strict, because a release crosses an organisational
 * boundary and a verifier that accepts more than one spelling of the same
 * thing invites confusion attacks: exactly three non-empty parts,
 * canonical unpadded base64url, a JSON object header without duplicate
 * keys whose alg is "EdDSA" (never "none", never HMAC), whose kid names
 * the key used, and without "crit" (RFC 7515 4.1.11: a verifier must
 * refuse critical extensions it does not implement; we implement none).
 */
#ifndef RSL_JWS_H
#define RSL_JWS_H

#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"
#include "rsl/sign.h"

/* Upper bound on a whole compact JWS we make or accept (a release for 32
 * nations and the whole taxonomy is well under 1 MiB). */
#define RSL_JWS_MAX_BYTES (8u * 1024u * 1024u)
/* Upper bound on the decoded protected header. */
#define RSL_JWS_MAX_HEADER_BYTES 4096u

/* Sign `payload` (any bytes; a release is JSON) with `signer`: *out is a
 * NUL-terminated compact JWS (malloc'd, the caller frees), *out_len its
 * length. RSL_ETOOBIG over RSL_JWS_MAX_BYTES, RSL_ENOMEM, RSL_ECRYPTO. */
int rsl_jws_sign(const struct rsl_signer *signer, const uint8_t *payload, size_t payload_len,
                 char **out, size_t *out_len, struct rsl_error *err);

/* Verify a compact JWS of `len` bytes (no trailing newline: strip it
 * first) against `public_key`. On RSL_OK *payload holds the decoded
 * payload, NUL-terminated for convenience (malloc'd, the caller frees) and
 * *payload_len its length. Errors: RSL_EPARSE for malformed input (the
 * message names the part and offset or the header field), RSL_ETOOBIG,
 * RSL_EVERIFY when the kid names another key or the signature does not
 * verify, RSL_ENOMEM. Never reads beyond `len`; `jws` need not be
 * NUL-terminated. Thread-safe. */
int rsl_jws_verify(const char *jws, size_t len, const uint8_t public_key[RSL_ED25519_PUBLIC_BYTES],
                   uint8_t **payload, size_t *payload_len, struct rsl_error *err);

#endif
