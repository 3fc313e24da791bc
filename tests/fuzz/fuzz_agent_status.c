/*
 * fuzz_agent_status.c - the agent's status file (<spool>/status, read by
 * `resilience-agent status`, agent/status.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rsl_error err = {0};
    struct agent_status st;
    int rc = agent_status_parse((const char *)data, size, "fuzz", &st, &err);
    if (rc == RSL_OK) {
        /* Strings come back terminated within their buffers. */
        if (memchr(st.agent_id, '\0', sizeof(st.agent_id)) == NULL ||
            memchr(st.endpoint, '\0', sizeof(st.endpoint)) == NULL)
            abort();
    } else if (err.text[0] == '\0') {
        abort();
    }
    return 0;
}
