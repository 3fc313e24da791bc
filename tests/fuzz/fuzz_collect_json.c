/*
 * fuzz_collect_json.c - the flat JSON object an http collector may return
 * (agent/jsonbody.c): untrusted bytes from a server we do not control.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jsonbody.h"
#include "rsl/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rsl_error err = {0};
    struct rsl_sample *samples = NULL;
    size_t n = 0;
    int rc = agent_json_parse((const char *)data, size, "fuzz", 64, &samples, &n, &err);
    if (rc == RSL_OK) {
        /* The parser promised finite values and valid ids, at most 64. */
        if (n > 64)
            abort();
        for (size_t i = 0; i < n; i++)
            if (!isfinite(samples[i].value) || !rsl_valid_indicator_id(samples[i].indicator))
                abort();
    } else if ((samples != NULL || n != 0) || err.text[0] == '\0') {
        abort(); /* errors leave nothing behind and always say why */
    }
    free(samples);
    return 0;
}
