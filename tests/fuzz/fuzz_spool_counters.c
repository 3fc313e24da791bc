/*
 * fuzz_spool_counters.c - the agent's persisted drop counters
 * (<spool>/counters, agent/spool.c): a file on disk that may be damaged.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rsl_error err = {0};
    struct agent_spool_counters c;
    uint64_t dropping[AGENT_SPOOL_DROP_BATCH];
    size_t n = 0;
    int rc = agent_spool_counters_parse((const char *)data, size, "fuzz", &c, dropping,
                                        AGENT_SPOOL_DROP_BATCH, &n, &err);
    if (rc == RSL_OK) {
        /* The parser promised bounded, in-range sequences. */
        if (n > AGENT_SPOOL_DROP_BATCH)
            abort();
        for (size_t i = 0; i < n; i++)
            if (dropping[i] == 0 || dropping[i] > (uint64_t)INT64_MAX)
                abort();
    } else if (n != 0 || err.text[0] == '\0' || c.dropped_oldest + c.expired + c.refused != 0) {
        abort(); /* errors leave nothing behind and always say why */
    }
    return 0;
}
