/*
 * store_write.c - micro-benchmark of the aggregator's store write path
 * (aggregator/store.h: agg_store_begin / agg_store_append ... /
 * agg_store_commit), the one serial stage of ingest.
 *
 *   store_write DB [--reports N] [--agents A] [--measures M] [--batch B]
 *               [--warmup W]
 *
 * Builds N reports first (A agents round robin, sequence 1.., M taxonomy
 * measurements each, observed "now" increasing, decoded from their own
 * bytes exactly as ingest hands them over; the signature bytes are filler:
 * the store does not verify), then appends them B per transaction into
 * DB (a fresh file: synchronous=FULL, WAL, as the aggregator runs it) and
 * times only the store calls. The first W reports (default: one batch)
 * warm up and are not counted. Output, one line on stdout:
 *   reports=N batch=B cpu_us_per_report=.. wall_us_per_report=.. commits=..
 * CPU is this thread's (CLOCK_THREAD_CPUTIME_ID): on a loaded machine it
 * moves far less than wall time, and under `valgrind --tool=callgrind` the
 * instruction count per report is exact and repeatable.
 * At the end the store is checked with agg_store_check_current (the
 * incrementally kept `current` against history): exit 1 on any problem.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aggregator/store.h"
#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/log.h"
#include "rsl/util.h"

#include "bench_indicators.h"

#define MAX_MEASURES 64 /* more than 10 repeat the ten indicators */
#define N_INDICATORS 10
#define MAX_AGENTS 1024


static const char *const nations[] = {"ALB", "BEL", "BGR", "CAN", "CZE", "DEU", "DNK", "ESP",
                                      "EST", "FIN", "FRA", "GBR", "GRC", "HRV", "HUN", "ISL"};

/* One prepared report: its frames and the decoded form the store reads. */
struct prepared {
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    uint64_t sequence;
    uint8_t *report_bytes;
    size_t report_len;
    uint8_t *frame;
    size_t frame_len;
    rsl_report *report;
    uint8_t digest[32];
};

static uint64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int prepare(struct prepared *p, size_t agent, uint64_t seq, size_t measures, int64_t now)
{
    rsl_report report = RESILIENCE__V1__REPORT__INIT;
    rsl_measurement ms[MAX_MEASURES];
    rsl_measurement *mp[MAX_MEASURES];
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t sig[64];
    struct rsl_error err;
    memset(sig, 0x5a, sizeof(sig));
    snprintf(p->nation, sizeof(p->nation), "%s", nations[agent % (sizeof(nations) /
                                                                  sizeof(nations[0]))]);
    snprintf(p->agent_id, sizeof(p->agent_id), "%s-BENCH-%02zu", p->nation, agent);
    p->sequence = seq;
    report.agent_id = p->agent_id;
    report.nation = p->nation;
    report.organisation = (char *)(uintptr_t)"Benchmark Ministry";
    report.marking = (char *)(uintptr_t)"NATO UNCLASSIFIED";
    report.sequence = seq;
    report.created_at_ms = now;
    for (size_t i = 0; i < measures; i++) {
        rsl_measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        ms[i] = init;
        ms[i].indicator = (char *)(uintptr_t)bench_indicators[i % N_INDICATORS][0];
        ms[i].unit = (char *)(uintptr_t)bench_indicators[i % N_INDICATORS][1];
        ms[i].value = (double)(seq % 1000) + (double)i / 10.0;
        ms[i].observed_at_ms = now - 1000;
        ms[i].source = (char *)(uintptr_t)"bench";
        mp[i] = &ms[i];
    }
    report.n_measurements = measures;
    report.measurements = mp;
    if (rsl_report_encode(&report, &p->report_bytes, &p->report_len) != RSL_OK)
        return -1;
    sr.report.data = p->report_bytes;
    sr.report.len = p->report_len;
    sr.signature.data = sig;
    sr.signature.len = sizeof(sig);
    sr.key_id = (char *)(uintptr_t)"00112233445566778899aabbccddeeff";
    if (rsl_signed_report_encode(&sr, &p->frame, &p->frame_len) != RSL_OK)
        return -1;
    /* Ingest hashes on its verify workers and hands the digest over. */
    rsl_sha256(p->report_bytes, p->report_len, p->digest);
    rsl_error_clear(&err);
    if (rsl_report_decode(p->report_bytes, p->report_len, &p->report, &err) != RSL_OK) {
        fprintf(stderr, "store_write: %s\n", err.text);
        return -1;
    }
    return 0;
}

static int problem_cb(void *ctx, const char *nation, const char *indicator, const char *problem)
{
    int *n = ctx;
    fprintf(stderr, "store_write: current %s/%s: %s\n", nation, indicator, problem);
    (*n)++;
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 32000, agents = 16, measures = 10, batch = 400, warmup = 0;
    bool warmup_set = false;
    static const struct option opts[] = {
        {"reports", required_argument, NULL, 'n'}, {"agents", required_argument, NULL, 'a'},
        {"measures", required_argument, NULL, 'm'}, {"batch", required_argument, NULL, 'b'},
        {"warmup", required_argument, NULL, 'w'}, {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': n = strtoull(optarg, NULL, 10); break;
        case 'a': agents = strtoull(optarg, NULL, 10); break;
        case 'm': measures = strtoull(optarg, NULL, 10); break;
        case 'b': batch = strtoull(optarg, NULL, 10); break;
        case 'w': warmup = strtoull(optarg, NULL, 10); warmup_set = true; break;
        default: return 2;
        }
    }
    if (optind + 1 != argc || n == 0 || agents == 0 || agents > MAX_AGENTS || measures == 0 ||
        measures > MAX_MEASURES || batch == 0) {
        fprintf(stderr, "usage: store_write DB [--reports N] [--agents A] [--measures M] "
                        "[--batch B] [--warmup W]\n");
        return 2;
    }
    if (!warmup_set)
        warmup = batch < n ? batch : 0;
    rsl_log_init("store_write", RSL_LOG_WARNING);

    struct prepared *p = calloc(n, sizeof(*p));
    bool *excluded = calloc(measures, sizeof(bool));
    if (p == NULL || excluded == NULL)
        return 2;
    int64_t t0 = rsl_now_ms();
    for (size_t i = 0; i < n; i++)
        if (prepare(&p[i], i % agents, 1 + i / agents, measures, t0 + (int64_t)(i / 50)) != 0)
            return 2;

    struct rsl_error err;
    struct agg_store *st = NULL;
    rsl_error_clear(&err);
    if (agg_store_open(argv[optind], false, &st, &err) != RSL_OK) {
        fprintf(stderr, "store_write: %s\n", err.text);
        return 2;
    }
    uint64_t cpu0 = 0, wall0 = 0;
    size_t commits = 0;
    int status = 0;
    for (size_t i = 0; i < n;) {
        if (i == warmup || (i == 0 && warmup == 0)) {
            cpu0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
            wall0 = clock_us(CLOCK_MONOTONIC);
        }
        size_t end = i + batch < n ? i + batch : n;
        if (i < warmup && end > warmup)
            end = warmup;
        if (agg_store_begin(st, &err) != RSL_OK)
            goto fail;
        for (; i < end; i++) {
            const struct prepared *q = &p[i];
            struct agg_report_in in = {
                .agent_id = q->agent_id,
                .nation = q->nation,
                .sequence = q->sequence,
                .created_at_ms = q->report->created_at_ms,
                .received_at_ms = q->report->created_at_ms + 3,
                .key_id = "00112233445566778899aabbccddeeff",
                .signed_bytes = q->frame,
                .signed_len = q->frame_len,
                .report_bytes = q->report_bytes,
                .report_len = q->report_len,
                .report = q->report,
                .excluded = excluded,
                .report_digest = q->digest,
            };
            enum agg_append_result result;
            if (agg_store_append(st, &in, &result, &err) != RSL_OK)
                goto fail;
            if (result != AGG_APPEND_INSERTED) {
                fprintf(stderr, "store_write: report %zu not inserted (%d)\n", i, (int)result);
                status = 1;
            }
        }
        if (agg_store_commit(st, &err) != RSL_OK)
            goto fail;
        commits++;
    }
    uint64_t cpu = clock_us(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    uint64_t wall = clock_us(CLOCK_MONOTONIC) - wall0;
    size_t counted = n - warmup;
    int problems = 0;
    if (agg_store_check_current(st, problem_cb, &problems, &err) != RSL_OK) {
        fprintf(stderr, "store_write: check: %s\n", err.text);
        status = 1;
    }
    if (problems > 0)
        status = 1;
    printf("reports=%zu batch=%zu cpu_us_per_report=%.1f wall_us_per_report=%.1f commits=%zu\n",
           counted, batch, (double)cpu / (double)(counted ? counted : 1),
           (double)wall / (double)(counted ? counted : 1), commits);
    goto out;
fail:
    fprintf(stderr, "store_write: %s\n", err.text);
    agg_store_rollback(st);
    status = 2;
out:
    agg_store_close(&st);
    for (size_t i = 0; i < n; i++) {
        free(p[i].report_bytes);
        free(p[i].frame);
        rsl_report_free(&p[i].report);
    }
    free(p);
    free(excluded);
    return status;
}
