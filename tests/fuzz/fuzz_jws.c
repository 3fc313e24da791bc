/*
 * fuzz_jws.c - a partner release as its recipient (or `resilience-ctl
 * verify`) checks it: rsl_jws_verify (lib/jws.c) over a compact JWS, with
 * the aggregator's public key fixed (Ed25519 from the libsodium seed of
 * 32 bytes 0x01; the seeds in corpus/jws/ were signed with it, so the
 * header, kid and payload checks after the signature are reached too).
 *
 * Beyond "no crash, no leak, no UB": what verifies is exactly three
 * non-empty unpadded parts, its payload comes back NUL-terminated and no
 * longer than the input, and a refusal leaves no payload and says why.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "rsl/jws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t public_key[crypto_sign_PUBLICKEYBYTES];
    static int ready;
    if (!ready) {
        uint8_t seed[crypto_sign_SEEDBYTES], secret[crypto_sign_SECRETKEYBYTES];
        memset(seed, 0x01, sizeof(seed));
        if (sodium_init() < 0)
            abort();
        crypto_sign_seed_keypair(public_key, secret, seed);
        sodium_memzero(secret, sizeof(secret));
        ready = 1;
    }
    /* An exact-size copy: the verifier promises not to need a NUL. */
    char *jws = malloc(size ? size : 1);
    if (jws == NULL)
        return 0;
    memcpy(jws, data, size);

    struct rsl_error err = {0};
    uint8_t *payload = NULL;
    size_t payload_len = 0;
    int rc = rsl_jws_verify(jws, size, public_key, &payload, &payload_len, &err);
    if (rc == RSL_OK) {
        size_t dots = 0;
        for (size_t i = 0; i < size; i++) {
            if (jws[i] == '.')
                dots++;
            else if (jws[i] == '=')
                abort(); /* padding is not canonical base64url */
        }
        if (dots != 2 || jws[0] == '.' || jws[size - 1] == '.' || payload == NULL ||
            payload_len > size || payload[payload_len] != '\0')
            abort();
    } else if (payload != NULL || err.text[0] == '\0') {
        abort();
    }
    free(payload);
    free(jws);
    return 0;
}
