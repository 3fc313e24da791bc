/*
 * fuzz_keys.c - key files as the daemons and resilience-ctl read them
 * (lib/keys.c, lib/sign.c): a damaged or hand-edited curve.key / curve.pub
 * (one line of Z85) or sign.key / sign.pub (Ed25519 PEM) must be refused
 * with a message, never half-loaded.
 *
 * Input: one selector byte (low two bits: curve.pub, curve.key, sign.key,
 * sign.pub), then the file. The loaders take a path, so the file is
 * written (mode 0600, as keygen makes them) into a private temp folder
 * (fuzz_tmp.h).
 *
 * Beyond "no crash, no leak, no UB": a loaded CURVE key is valid Z85 of 40
 * characters; a loaded signer has a 32-hex key id matching its public key
 * and its signatures verify with that key; a loaded public key's id is
 * well-formed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tmp.h"
#include "rsl/keys.h"
#include "rsl/sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_key_id(const char *id)
{
    if (strlen(id) != RSL_KEY_ID_HEX_LEN || strspn(id, "0123456789abcdef") != RSL_KEY_ID_HEX_LEN)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[4] = {"curve.pub", "curve.key", "sign.key", "sign.pub"};
    char path[640];
    struct rsl_error err = {0};
    if (size < 1)
        return 0;
    unsigned kind = data[0] & 3;
    fuzz_tmp_write(names[kind], data + 1, size - 1, path, sizeof(path));

    int rc;
    if (kind <= 1) {
        char key[RSL_Z85_KEY_LEN + 1];
        rc = kind == 0 ? rsl_curve_load_public(path, key, &err)
                       : rsl_curve_load_secret(path, key, &err);
        if (rc == RSL_OK && (strlen(key) != RSL_Z85_KEY_LEN || !rsl_z85_key_valid(key)))
            abort();
    } else if (kind == 2) {
        struct rsl_signer *signer = NULL;
        rc = rsl_signer_load(path, &signer, &err);
        if (rc == RSL_OK) {
            static const uint8_t msg[] = "fuzz";
            uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
            char id[RSL_KEY_ID_HEX_LEN + 1];
            const uint8_t *pub = rsl_signer_public_key(signer);
            check_key_id(rsl_signer_key_id(signer));
            rsl_key_id(pub, id);
            if (strcmp(id, rsl_signer_key_id(signer)) != 0 ||
                rsl_sign_report(signer, msg, sizeof(msg), sig) != RSL_OK ||
                rsl_verify_report(pub, msg, sizeof(msg), sig, sizeof(sig)) != RSL_OK)
                abort(); /* a key that signs what its own public key rejects */
        } else if (signer != NULL) {
            abort();
        }
        rsl_signer_free(&signer);
    } else {
        uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
        rc = rsl_public_key_load_pem(path, pub, &err);
        if (rc == RSL_OK) {
            char id[RSL_KEY_ID_HEX_LEN + 1];
            rsl_key_id(pub, id);
            check_key_id(id);
        }
    }
    if (rc != RSL_OK)
        fuzz_check_error(err.text);
    else
        fuzz_note_ok();
    return 0;
}
