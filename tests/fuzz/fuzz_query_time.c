/*
 * fuzz_query_time.c - HTTP query values: `at`, `from`, `to` (RFC 3339 or
 * unix ms) and `step` (durations). Whatever parses must format and parse
 * back to the same instant.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[128];
    if (size >= sizeof(text))
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t ms = 0;
    if (rsl_parse_time_ms(text, &ms) == RSL_OK && ms < 253402300800000LL) {
        char out[40];
        int64_t again = -1;
        rsl_format_time_ms(ms, out, sizeof(out));
        if (rsl_parse_time_ms(out, &again) != RSL_OK || again != ms)
            abort();
    }
    (void)rsl_parse_duration_ms(text, &ms);
    double d;
    (void)rsl_parse_double(text, &d);
    return 0;
}
