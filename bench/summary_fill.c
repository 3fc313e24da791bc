/*
 * summary_fill.c - grow an aggregator store to millions of measurements,
 * fast, for the /v1/summary-at-scale benchmark (bench/summary.sh).
 *
 * Writes through the store's own interface (aggregator/store.h: begin,
 * append, commit - the code the ingest thread runs), so the result is
 * exactly what years of ingest would leave: reports with their real signed
 * bytes (each report built and Ed25519-signed with its agent's key, so
 * `resilience-ctl audit` can check the store afterwards), history rows,
 * the incrementally kept `current` table, the agents table. The
 * aggregator must not be running on the file.
 *
 *   summary_fill DB MEASUREMENTS FIRST_SEQUENCE ID:NATION:KEYDIR ...
 *
 * Reports go round-robin over the agents, 10 measurements each (10
 * taxonomy indicators), sequence numbers from FIRST_SEQUENCE on, observed
 * over the past 365 days in increasing order (so the newest is "current"),
 * 2,000 reports per transaction. Progress on stderr; last line on stdout:
 *   measurements=N reports=R seconds=S
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aggregator/store.h"
#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/util.h"

#include "bench_indicators.h"

#define MAX_AGENTS 256
#define PER_REPORT 10
#define PER_TRANSACTION 2000
#define YEAR_MS (365LL * 24 * 3600 * 1000)


struct agent {
    char id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    struct rsl_signer *signer;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Build, sign and append one report in the open transaction. */
static int append_one(struct agg_store *st, const struct agent *a, uint64_t seq, int64_t observed,
                      struct rsl_error *err)
{
    rsl_report report = RESILIENCE__V1__REPORT__INIT;
    rsl_measurement ms[PER_REPORT];
    rsl_measurement *mp[PER_REPORT];
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    uint8_t *bytes = NULL;
    uint8_t *frame = NULL;
    size_t len = 0;
    size_t frame_len = 0;
    bool excluded[PER_REPORT] = {false};
    int rc = RSL_ENOMEM;
    report.agent_id = (char *)(uintptr_t)a->id;
    report.nation = (char *)(uintptr_t)a->nation;
    report.organisation = (char *)(uintptr_t)"Benchmark Ministry";
    report.marking = (char *)(uintptr_t)"NATO UNCLASSIFIED";
    report.sequence = seq;
    report.created_at_ms = observed + 1000;
    for (size_t i = 0; i < PER_REPORT; i++) {
        rsl_measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        ms[i] = init;
        ms[i].indicator = (char *)(uintptr_t)bench_indicators[i][0];
        ms[i].unit = (char *)(uintptr_t)bench_indicators[i][1];
        ms[i].value = (double)((seq * 7 + i * 13) % 100);
        ms[i].observed_at_ms = observed;
        ms[i].source = (char *)(uintptr_t)"summary_fill";
        mp[i] = &ms[i];
    }
    report.n_measurements = PER_REPORT;
    report.measurements = mp;
    if (rsl_report_encode(&report, &bytes, &len) != RSL_OK ||
        rsl_sign_report(a->signer, bytes, len, sig) != RSL_OK)
        goto out;
    sr.report.data = bytes;
    sr.report.len = len;
    sr.signature.data = sig;
    sr.signature.len = sizeof(sig);
    sr.key_id = (char *)(uintptr_t)rsl_signer_key_id(a->signer);
    if (rsl_signed_report_encode(&sr, &frame, &frame_len) != RSL_OK)
        goto out;
    struct agg_report_in in = {
        .agent_id = a->id,
        .nation = a->nation,
        .sequence = seq,
        .created_at_ms = report.created_at_ms,
        .received_at_ms = report.created_at_ms + 50,
        .key_id = rsl_signer_key_id(a->signer),
        .signed_bytes = frame,
        .signed_len = frame_len,
        .report_bytes = bytes,
        .report_len = len,
        .report = &report,
        .excluded = excluded,
    };
    enum agg_append_result result;
    rc = agg_store_append(st, &in, &result, err);
    if (rc == RSL_OK && result != AGG_APPEND_INSERTED)
        rc = rsl_error_set(err, RSL_EEXIST, "%s/%" PRIu64 " is already stored", a->id, seq);
out:
    free(bytes);
    free(frame);
    return rc;
}

int main(int argc, char **argv)
{
    struct agent agents[MAX_AGENTS];
    size_t n_agents = 0;
    struct rsl_error err;
    struct agg_store *st = NULL;
    int status = 1;

    if (argc < 5) {
        fprintf(stderr, "usage: summary_fill DB MEASUREMENTS FIRST_SEQUENCE ID:NATION:KEYDIR ...\n");
        return 2;
    }
    rsl_log_init("summary_fill", RSL_LOG_WARNING);
    uint64_t measurements = strtoull(argv[2], NULL, 10);
    uint64_t first_seq = strtoull(argv[3], NULL, 10);
    memset(agents, 0, sizeof(agents));
    for (int i = 4; i < argc && n_agents < MAX_AGENTS; i++) {
        struct agent *a = &agents[n_agents];
        const char *c1 = strchr(argv[i], ':');
        const char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        char path[4200];
        if (c2 == NULL || c2 - c1 != 4 || (size_t)(c1 - argv[i]) > RSL_AGENT_ID_MAX) {
            fprintf(stderr, "summary_fill: '%s' is not ID:NATION:KEYDIR\n", argv[i]);
            return 2;
        }
        memcpy(a->id, argv[i], (size_t)(c1 - argv[i]));
        memcpy(a->nation, c1 + 1, 3);
        snprintf(path, sizeof(path), "%s/sign.key", c2 + 1);
        rsl_error_clear(&err);
        if (rsl_signer_load(path, &a->signer, &err) != RSL_OK) {
            fprintf(stderr, "summary_fill: %s\n", err.text);
            return 2;
        }
        n_agents++;
    }
    uint64_t reports = (measurements + PER_REPORT - 1) / PER_REPORT;
    rsl_error_clear(&err);
    if (agg_store_open(argv[1], false, &st, &err) != RSL_OK) {
        fprintf(stderr, "summary_fill: %s\n", err.text);
        goto out;
    }
    double start = now_s();
    int64_t begin_ms = rsl_now_ms() - YEAR_MS;
    for (uint64_t r = 0; r < reports;) {
        if (agg_store_begin(st, &err) != RSL_OK)
            goto fail;
        for (uint64_t k = 0; k < PER_TRANSACTION && r < reports; k++, r++) {
            const struct agent *a = &agents[r % n_agents];
            uint64_t seq = first_seq + r / n_agents;
            /* Spread over the past year, increasing with r. */
            int64_t observed = begin_ms + (int64_t)((double)YEAR_MS * (double)r / (double)reports);
            if (append_one(st, a, seq, observed, &err) != RSL_OK)
                goto fail;
        }
        if (agg_store_commit(st, &err) != RSL_OK)
            goto fail;
        if ((r / PER_TRANSACTION) % 50 == 0 || r == reports)
            fprintf(stderr, "summary_fill: %" PRIu64 " / %" PRIu64 " reports (%.0f s)\n", r,
                    reports, now_s() - start);
    }
    printf("measurements=%" PRIu64 " reports=%" PRIu64 " seconds=%.1f\n", reports * PER_REPORT,
           reports, now_s() - start);
    status = 0;
    goto out;
fail:
    fprintf(stderr, "summary_fill: %s\n", err.text);
    agg_store_rollback(st);
out:
    agg_store_close(&st);
    for (size_t i = 0; i < n_agents; i++)
        rsl_signer_free(&agents[i].signer);
    return status;
}
