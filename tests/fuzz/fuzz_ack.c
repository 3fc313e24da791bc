/*
 * fuzz_ack.c - the bytes an agent receives from the network: Ack decode.
 */
#include <stdint.h>
#include <stdlib.h>

#include "rsl/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rsl_error err = {0};
    rsl_ack *ack = NULL;
    if (rsl_ack_decode(data, size, 4096, &ack, &err) == RSL_OK)
        (void)rsl_ack_status_name(ack->status);
    rsl_ack_free(&ack);
    return 0;
}
