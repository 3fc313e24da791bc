/*
 * fuzz_agent_seq.c - the agent's persisted sequence counter
 * (<spool>/sequence, agent/seq.c): a file on disk that a crash, a full
 * disk or a hand edit may have damaged. A number must never be handed out
 * twice, so a counter that does not hold one clean number is refused, not
 * guessed.
 *
 * Each input is written to `sequence` in a private temp folder
 * (fuzz_tmp.h), then opened and one number taken, as `resilience-agent
 * submit` does.
 *
 * Beyond "no crash, no leak, no UB": a number handed out is in
 * 1..INT64_MAX-1 and the counter has moved past it, and a refusal says why
 * in one line.
 */
#include <stdint.h>
#include <stdlib.h>

#include "agent/seq.h"
#include "fuzz_tmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    char path[640], ignored[640];
    if (!ready) {
        /* What the counter creates beside itself. */
        fuzz_tmp_path("sequence.lock", ignored, sizeof(ignored));
        fuzz_tmp_path("sequence.tmp", ignored, sizeof(ignored));
        ready = 1;
    }
    fuzz_tmp_write("sequence", data, size, path, sizeof(path));

    struct rsl_error err = {0};
    struct agent_seq *seq = NULL;
    uint64_t n = 0;
    int rc = agent_seq_open(path, &seq, &err);
    if (rc == RSL_OK)
        rc = agent_seq_take(seq, &n, &err);
    if (rc == RSL_OK) {
        if (n < 1 || n >= (uint64_t)INT64_MAX || agent_seq_peek(seq) != n + 1)
            abort();
        fuzz_note_ok();
    } else {
        fuzz_check_error(err.text);
    }
    agent_seq_close(&seq);
    return 0;
}
