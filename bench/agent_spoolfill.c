/*
 * agent_spoolfill.c - fill an agent's spool with N real reports, fast.
 *
 * A benchmark needs a spool of 100,000 or 1,000,000 reports. Making them
 * with `resilience-agent submit` would cost a process each, and the agent
 * at one collector run per report would take days; so this tool does what
 * submit does - take sequence numbers under the spool's lock, build and
 * sign each report with the agent's key (agent_report_build), append it
 * (agent_spool_append) - in one process, with the agent's own library code,
 * so the entries are exactly what the agent writes. Run it with
 * LD_PRELOAD of bench's nofsync.so to skip the fsyncs (the benchmark does
 * not test durability; it tests what the agent does with a deep spool).
 *
 *   agent_spoolfill AGENT_CONF COUNT [MEASUREMENTS_PER_REPORT]
 *
 * Every report carries MEASUREMENTS_PER_REPORT (default 1) measurements of
 * energy.oil_stock_days, the first with the report's index as its value.
 * Progress goes to stderr; the last line on stdout is "COUNT SECONDS".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/config.h"
#include "agent/report.h"
#include "agent/seq.h"
#include "agent/spool.h"
#include "rsl/lineformat.h"
#include "rsl/log.h"
#include "rsl/util.h"

#define FILL_MAX_MEASUREMENTS 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct agent_config *cfg = NULL;
    struct agent_keys *keys = NULL;
    struct agent_seq *seq = NULL;
    struct agent_spool *spool = NULL;
    struct rsl_sample samples[FILL_MAX_MEASUREMENTS];
    struct agent_collector_config source;
    struct rsl_error err;
    char path[AGENT_PATH_MAX + 16];
    int exit_code = 1;
    bool locked = false;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: agent_spoolfill AGENT_CONF COUNT [MEASUREMENTS_PER_REPORT]\n");
        return 2;
    }
    uint64_t count = strtoull(argv[2], NULL, 10);
    size_t per = argc == 4 ? (size_t)strtoul(argv[3], NULL, 10) : 1;
    if (count == 0 || per == 0 || per > FILL_MAX_MEASUREMENTS) {
        fprintf(stderr, "agent_spoolfill: bad COUNT or MEASUREMENTS_PER_REPORT\n");
        return 2;
    }
    rsl_error_clear(&err);
    rsl_log_init("agent_spoolfill", RSL_LOG_WARNING);
    memset(&source, 0, sizeof(source));
    snprintf(source.name, sizeof(source.name), "spoolfill");
    memset(samples, 0, sizeof(samples));
    for (size_t i = 0; i < per; i++) {
        snprintf(samples[i].indicator, sizeof(samples[i].indicator), "energy.oil_stock_days");
        snprintf(samples[i].unit, sizeof(samples[i].unit), "days");
        samples[i].value = 90.0 + (double)i;
    }

    if (agent_config_load(argv[1], &cfg, &err) != RSL_OK ||
        agent_keys_load(cfg, &keys, &err) != RSL_OK)
        goto fail;
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    if (rsl_mkdir_p(cfg->spool_dir, 0700, &err) != RSL_OK ||
        agent_seq_open(path, &seq, &err) != RSL_OK)
        goto fail;
    /* Numbers in blocks: one counter write per 4096 reports. */
    agent_seq_set_reserve(seq, 4096);
    if (agent_seq_lock(seq, &err) != RSL_OK)
        goto fail;
    locked = true;
    if (agent_spool_open_writer(cfg->spool_dir, &spool, &err) != RSL_OK)
        goto fail;

    double t0 = now_s();
    for (uint64_t i = 0; i < count; i++) {
        uint64_t n = 0;
        uint8_t *frame = NULL;
        size_t len = 0;
        samples[0].value = (double)i;
        int64_t now = rsl_now_ms();
        if (agent_seq_take(seq, &n, &err) != RSL_OK ||
            agent_report_build(cfg, &source, keys->signer, n, now, now, samples, per, &frame,
                               &len, &err) != RSL_OK ||
            agent_spool_append(spool, n, frame, len, &err) != RSL_OK) {
            free(frame);
            goto fail;
        }
        free(frame);
        if ((i + 1) % 100000 == 0)
            fprintf(stderr, "agent_spoolfill: %" PRIu64 " reports (%.0f/s)\n", i + 1,
                    (double)(i + 1) / (now_s() - t0));
    }
    if (agent_seq_release(seq, &err) != RSL_OK)
        goto fail;
    printf("%" PRIu64 " %.3f\n", count, now_s() - t0);
    exit_code = 0;
    goto out;
fail:
    fprintf(stderr, "agent_spoolfill: %s\n", err.text);
out:
    agent_spool_close(&spool);
    if (locked)
        agent_seq_unlock(seq);
    agent_seq_close(&seq);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
    return exit_code;
}
