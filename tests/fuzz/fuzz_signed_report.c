/*
 * fuzz_signed_report.c - the bytes an aggregator receives from the network:
 * SignedReport decode (size-bounded), inner Report decode + validation,
 * signature verification against a fixed key, and re-encoding of what was
 * accepted (must round-trip to a message that decodes again).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "rsl/codec.h"
#include "rsl/sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t public_key[32];
    static int ready;
    if (!ready) {
        uint8_t seed[32] = {1}, secret[64];
        if (sodium_init() < 0)
            abort();
        crypto_sign_seed_keypair(public_key, secret, seed);
        ready = 1;
    }
    struct rsl_error err = {0};
    rsl_signed_report *sr = NULL;
    rsl_report *report = NULL;
    if (rsl_signed_report_decode(data, size, RSL_MAX_MESSAGE_BYTES_DEFAULT, &sr, &err) != RSL_OK)
        return 0;
    (void)rsl_verify_report(public_key, sr->report.data, sr->report.len, sr->signature.data,
                            sr->signature.len);
    if (rsl_report_decode(sr->report.data, sr->report.len, &report, &err) == RSL_OK) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (rsl_report_encode(report, &buf, &len) == RSL_OK) {
            rsl_report *again = NULL;
            /* What validated once must validate again after a round trip. */
            if (rsl_report_decode(buf, len, &again, &err) != RSL_OK)
                abort();
            rsl_report_free(&again);
            free(buf);
        }
        rsl_report_free(&report);
    }
    rsl_signed_report_free(&sr);
    return 0;
}
