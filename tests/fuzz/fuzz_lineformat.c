/*
 * fuzz_lineformat.c - collector output (exec programs, drop files, HTTP
 * bodies) in the line format.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "rsl/lineformat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rsl_error err = {0};
    struct rsl_sample *samples = NULL;
    size_t n = 0;
    if (rsl_lineformat_parse((const char *)data, size, "fuzz", 64, &samples, &n, &err) == RSL_OK) {
        for (size_t i = 0; i < n; i++)
            if (!isfinite(samples[i].value) || samples[i].indicator[0] == '\0')
                abort(); /* the parser promised finite values and ids */
    }
    free(samples);
    return 0;
}
