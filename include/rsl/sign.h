/*
 * sign.h - Ed25519 report signatures (ARCHITECTURE section 2).
 *
 * A signature is pure Ed25519 over RSL_SIGN_DOMAIN, one zero byte, then the
 * serialized Report bytes. key_id is the lowercase hex of the first 16 bytes
 * of SHA-256 of the raw 32-byte public key.
 *
 * Signing keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public),
 * the same files `openssl genpkey -algorithm ed25519` makes. No OpenSSL type
 * appears in this header.
 */
#ifndef RSL_SIGN_H
#define RSL_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"

#define RSL_SIGN_DOMAIN "resilience.v1.report"
#define RSL_ED25519_PUBLIC_BYTES 32
#define RSL_ED25519_SIGNATURE_BYTES 64
#define RSL_KEY_ID_HEX_LEN 32

struct rsl_signer;

/* Load a private signing key from a PEM file. The file must be a regular
 * file not readable by group or others (RSL_EPERM otherwise, naming the path
 * and its mode). The secret is zeroed when the signer is freed. */
int rsl_signer_load(const char *pem_path, struct rsl_signer **out, struct rsl_error *err);
void rsl_signer_free(struct rsl_signer **signer);

/* The signer's raw public key (32 bytes, borrowed) and key id (borrowed). */
const uint8_t *rsl_signer_public_key(const struct rsl_signer *signer);
const char *rsl_signer_key_id(const struct rsl_signer *signer);

/* Sign `len` bytes of a serialized Report with the domain prefix. */
int rsl_sign_report(const struct rsl_signer *signer, const uint8_t *report, size_t len,
                    uint8_t signature[RSL_ED25519_SIGNATURE_BYTES]);

/* Pure Ed25519 over `len` bytes as given, no prefix: for formats that
 * separate domains themselves (a JWS signing input starts with the
 * base64url of its JSON header, never with RSL_SIGN_DOMAIN). Thread-safe. */
int rsl_sign_detached(const struct rsl_signer *signer, const uint8_t *msg, size_t len,
                      uint8_t signature[RSL_ED25519_SIGNATURE_BYTES]);
int rsl_verify_detached(const uint8_t public_key[RSL_ED25519_PUBLIC_BYTES], const uint8_t *msg,
                        size_t len, const uint8_t *signature, size_t signature_len);

/* Verify a report signature: RSL_OK, or RSL_EVERIFY when it does not verify
 * (wrong key, altered bytes, missing prefix, wrong length). Thread-safe. */
int rsl_verify_report(const uint8_t public_key[RSL_ED25519_PUBLIC_BYTES], const uint8_t *report,
                      size_t len, const uint8_t *signature, size_t signature_len);

/* key_id of a raw public key into out (33 bytes with the NUL). */
void rsl_key_id(const uint8_t public_key[RSL_ED25519_PUBLIC_BYTES], char out[RSL_KEY_ID_HEX_LEN + 1]);

/* Read a SubjectPublicKeyInfo PEM file holding an Ed25519 key. */
int rsl_public_key_load_pem(const char *path, uint8_t out[RSL_ED25519_PUBLIC_BYTES],
                            struct rsl_error *err);

/* Raw public key from base64 (the registry's sign_key form). */
int rsl_public_key_from_base64(const char *b64, uint8_t out[RSL_ED25519_PUBLIC_BYTES]);

#endif
