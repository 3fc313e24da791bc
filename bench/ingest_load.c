/*
 * ingest_load.c - load generator for the end-to-end ingest benchmark
 * (bench/ingest.sh): many agents over ZeroMQ + CURVE against a running
 * aggregator, each report acknowledged only after its transaction
 * committed.
 *
 *   ingest_load --endpoint tcp://127.0.0.1:PORT --server-key Z85
 *               [--reports N] [--window W] [--measures M]
 *               ID:NATION:KEYDIR ...
 *
 * Per agent (KEYDIR holds its sign.key, curve.key, curve.pub, as
 * `resilience-ctl keygen` writes them): N reports (sequence 1..N) with M
 * measurements each are built and signed BEFORE the clock starts, exactly
 * as the agent would (Report -> domain-prefixed Ed25519 -> SignedReport), so
 * the signing cost of the load generator does not compete with the
 * aggregator during the measurement. Each agent has its own DEALER (own
 * CURVE session); one thread drives all of them, keeping up to W reports
 * in flight per agent. Report 1 of every agent is sent first and its ack
 * awaited (handshakes, warm caches); the timed phase is reports 2..N.
 *
 * RETRY_LATER is handled as the agent does, with the agent's own code
 * (agent/sender.h, struct agent_cwnd): each load agent keeps at most its
 * congestion window in flight (slow start from AGENT_CWND_INITIAL up to
 * W), halves it once per round of RETRY_LATER and pauses sending for
 * AGENT_RETRY_PAUSE_MS, doubling per round in a row; the turned-away
 * reports go out again after the pause. With many agents (BENCH_AGENTS
 * 128 x window 512 is far beyond the aggregator's max_queue) the load then
 * looks like a storm of real agents, not a flood.
 *
 * Latency per report: from its first send to its final ack (ACCEPTED or
 * DUPLICATE); waits after RETRY_LATER count.
 * Output (stdout), one line:
 *   reports=R seconds=S rate=R/S p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..
 *   retries=.. rejected=.. cpu_s=.. (this process's CPU over the timed phase)
 * Exit 0 if every report was acknowledged, 1 otherwise, 2 on usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <zmq.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"

#include "agent/sender.h"
#include "bench_indicators.h"

#define MAX_AGENTS 1024
#define MAX_MEASURES 10
#define RETRY_DELAY_US 20000
#define GIVE_UP_S 600.0


struct report_slot {
    uint8_t *frame;
    size_t len;
    uint64_t first_sent_us;  /* 0: never sent */
    uint64_t resend_at_us;   /* RETRY_LATER: when to send again; 0: not waiting */
    uint64_t sent_no;        /* agent_cwnd_sent number of its last send */
    bool done;
};

struct agent {
    char id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    void *sock;
    struct report_slot *slots;  /* [0] is sequence 1 */
    uint64_t next;              /* index of the next report never sent */
    uint64_t in_flight;         /* sent and not settled, waiting to be resent included */
    uint64_t out;               /* sent and not yet answered */
    uint64_t done;
    struct agent_cwnd cwnd;
    uint64_t pause_until_us;    /* RETRY_LATER: send nothing before this */
    unsigned streak;            /* rounds of RETRY_LATER since the last progress */
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int build_frame(const struct agent *a, const struct rsl_signer *signer, uint64_t seq,
                       size_t n_measures, struct report_slot *slot)
{
    rsl_report report = RESILIENCE__V1__REPORT__INIT;
    rsl_measurement ms[MAX_MEASURES];
    rsl_measurement *mp[MAX_MEASURES];
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    uint8_t *bytes = NULL;
    size_t len = 0;
    int64_t now = rsl_now_ms();
    report.agent_id = (char *)(uintptr_t)a->id;
    report.nation = (char *)(uintptr_t)a->nation;
    report.organisation = (char *)(uintptr_t)"Benchmark Ministry";
    report.marking = (char *)(uintptr_t)"NATO UNCLASSIFIED";
    report.sequence = seq;
    report.created_at_ms = now;
    for (size_t i = 0; i < n_measures; i++) {
        rsl_measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        ms[i] = init;
        ms[i].indicator = (char *)(uintptr_t)bench_indicators[i][0];
        ms[i].unit = (char *)(uintptr_t)bench_indicators[i][1];
        ms[i].value = (double)(seq % 1000) + (double)i / 10.0;
        ms[i].observed_at_ms = now - 1000;
        ms[i].source = (char *)(uintptr_t)"bench";
        mp[i] = &ms[i];
    }
    report.n_measurements = n_measures;
    report.measurements = mp;
    if (rsl_report_encode(&report, &bytes, &len) != RSL_OK ||
        rsl_sign_report(signer, bytes, len, sig) != RSL_OK) {
        free(bytes);
        return -1;
    }
    sr.report.data = bytes;
    sr.report.len = len;
    sr.signature.data = sig;
    sr.signature.len = sizeof(sig);
    sr.key_id = (char *)(uintptr_t)rsl_signer_key_id(signer);
    int rc = rsl_signed_report_encode(&sr, &slot->frame, &slot->len);
    free(bytes);
    return rc == RSL_OK ? 0 : -1;
}

static int setup_agent(void *ctx, const char *spec, const char *endpoint, const char *server_key,
                       uint64_t reports, size_t n_measures, struct agent *a)
{
    char keydir[4096];
    char path[4200];
    char secret[RSL_Z85_KEY_LEN + 1];
    char public[RSL_Z85_KEY_LEN + 1];
    struct rsl_error err = {0};
    struct rsl_signer *signer = NULL;
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL || (size_t)(c1 - spec) > RSL_AGENT_ID_MAX || c2 - c1 != 4) {
        fprintf(stderr, "ingest_load: agent '%s' is not ID:NATION:KEYDIR\n", spec);
        return -1;
    }
    memcpy(a->id, spec, (size_t)(c1 - spec));
    a->id[c1 - spec] = '\0';
    memcpy(a->nation, c1 + 1, 3);
    a->nation[3] = '\0';
    snprintf(keydir, sizeof(keydir), "%s", c2 + 1);
    snprintf(path, sizeof(path), "%s/sign.key", keydir);
    if (rsl_signer_load(path, &signer, &err) != RSL_OK) {
        fprintf(stderr, "ingest_load: %s\n", err.text);
        return -1;
    }
    a->slots = calloc(reports, sizeof(*a->slots));
    if (a->slots == NULL)
        return -1;
    for (uint64_t i = 0; i < reports; i++)
        if (build_frame(a, signer, i + 1, n_measures, &a->slots[i]) != 0) {
            fprintf(stderr, "ingest_load: cannot build report %" PRIu64 "\n", i + 1);
            rsl_signer_free(&signer);
            return -1;
        }
    rsl_signer_free(&signer);
    snprintf(path, sizeof(path), "%s/curve.key", keydir);
    if (rsl_curve_load_secret(path, secret, &err) != RSL_OK) {
        fprintf(stderr, "ingest_load: %s\n", err.text);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/curve.pub", keydir);
    if (rsl_curve_load_public(path, public, &err) != RSL_OK) {
        fprintf(stderr, "ingest_load: %s\n", err.text);
        return -1;
    }
    a->sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    int hwm = 100000;
    if (a->sock == NULL ||
        zmq_setsockopt(a->sock, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_setsockopt(a->sock, ZMQ_SNDHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(a->sock, ZMQ_RCVHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, server_key, RSL_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(a->sock, ZMQ_CURVE_PUBLICKEY, public, RSL_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(a->sock, ZMQ_CURVE_SECRETKEY, secret, RSL_Z85_KEY_LEN) != 0 ||
        zmq_connect(a->sock, endpoint) != 0) {
        fprintf(stderr, "ingest_load: socket for %s: %s\n", a->id, zmq_strerror(errno));
        return -1;
    }
    rsl_secure_zero(secret, sizeof(secret));
    return 0;
}

static void send_slot(struct agent *a, uint64_t i, uint64_t now)
{
    struct report_slot *s = &a->slots[i];
    if (zmq_send(a->sock, s->frame, s->len, ZMQ_DONTWAIT) < 0) {
        s->resend_at_us = now + RETRY_DELAY_US; /* nowhere to queue: try again soon */
    } else {
        s->resend_at_us = 0;
        s->sent_no = agent_cwnd_sent(&a->cwnd);
        a->out++;
    }
    if (s->first_sent_us == 0)
        s->first_sent_us = now;
}

/* May this agent send one more report now? */
static bool may_send(const struct agent *a, uint64_t now)
{
    return now >= a->pause_until_us && a->out < a->cwnd.cwnd;
}

/* CPU seconds of this process so far, every thread (libzmq's I/O thread,
 * which does the CURVE encryption, included). */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int compare_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x;
    uint64_t b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, 'e'}, {"server-key", required_argument, NULL, 's'},
        {"reports", required_argument, NULL, 'n'},  {"window", required_argument, NULL, 'w'},
        {"measures", required_argument, NULL, 'm'}, {NULL, 0, NULL, 0},
    };
    const char *endpoint = NULL;
    const char *server_key = NULL;
    uint64_t reports = 1000;
    uint64_t window = 64;
    size_t n_measures = 10;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'e': endpoint = optarg; break;
        case 's': server_key = optarg; break;
        case 'n': reports = strtoull(optarg, NULL, 10); break;
        case 'w': window = strtoull(optarg, NULL, 10); break;
        case 'm': n_measures = (size_t)strtoul(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    size_t n_agents = (size_t)(argc - optind);
    if (endpoint == NULL || server_key == NULL || n_agents == 0 || n_agents > MAX_AGENTS ||
        reports < 2 || window < 1 || n_measures < 1 || n_measures > MAX_MEASURES) {
        fprintf(stderr, "usage: ingest_load --endpoint EP --server-key Z85 [--reports N>=2] "
                        "[--window W] [--measures 1..10] ID:NATION:KEYDIR ...\n");
        return 2;
    }

    void *ctx = zmq_ctx_new();
    struct agent *agents = calloc(n_agents, sizeof(*agents));
    zmq_pollitem_t *items = calloc(n_agents, sizeof(*items));
    uint64_t *latencies = calloc(n_agents * reports, sizeof(*latencies));
    if (ctx == NULL || agents == NULL || items == NULL || latencies == NULL)
        return 2;
    uint64_t t0 = now_us();
    for (size_t i = 0; i < n_agents; i++) {
        if (setup_agent(ctx, argv[optind + (int)i], endpoint, server_key, reports, n_measures,
                        &agents[i]) != 0)
            return 2;
        items[i] = (zmq_pollitem_t){agents[i].sock, 0, ZMQ_POLLIN, 0};
        agent_cwnd_init(&agents[i].cwnd, window);
    }
    fprintf(stderr, "ingest_load: %zu agents x %" PRIu64 " reports built and signed in %.1f s\n",
            n_agents, reports, (double)(now_us() - t0) / 1e6);

    uint64_t retries = 0;
    uint64_t rejected = 0;
    uint64_t n_latencies = 0;
    uint64_t timed_start = 0;
    double timed_cpu = 0;
    uint8_t buf[65536];
    /* Phase 0: report 1 of each agent (warm-up, not timed); phase 1: the rest. */
    for (int phase = 0; phase < 2; phase++) {
        uint64_t limit = phase == 0 ? 1 : reports;
        uint64_t target = 0;
        uint64_t settled = 0;
        for (size_t i = 0; i < n_agents; i++)
            target += limit - agents[i].done;
        if (phase == 1) {
            timed_start = now_us();
            timed_cpu = cpu_s();
        }
        uint64_t deadline = now_us() + (uint64_t)(GIVE_UP_S * 1e6);
        while (settled < target) {
            uint64_t now = now_us();
            if (now > deadline) {
                fprintf(stderr, "ingest_load: gave up with %" PRIu64 " reports unacknowledged\n",
                        target - settled);
                return 1;
            }
            long timeout = 100;
            for (size_t i = 0; i < n_agents; i++) {
                struct agent *a = &agents[i];
                /* Resends first (they are older), then new reports; a
                 * linear look at the window is fine. */
                for (uint64_t k = a->done; k < a->next; k++) {
                    struct report_slot *s = &a->slots[k];
                    if (s->done || s->resend_at_us == 0)
                        continue;
                    if (s->resend_at_us <= now && may_send(a, now))
                        send_slot(a, k, now);
                    else if (s->resend_at_us > now &&
                             (long)((s->resend_at_us - now) / 1000) + 1 < timeout)
                        timeout = (long)((s->resend_at_us - now) / 1000) + 1;
                }
                while (a->next < limit && a->in_flight < window && may_send(a, now)) {
                    send_slot(a, a->next, now);
                    a->next++;
                    a->in_flight++;
                }
                if (a->pause_until_us > now && (long)((a->pause_until_us - now) / 1000) + 1 < timeout)
                    timeout = (long)((a->pause_until_us - now) / 1000) + 1;
            }
            if (zmq_poll(items, (int)n_agents, timeout) < 0 && errno != EINTR)
                return 2;
            now = now_us();
            for (size_t i = 0; i < n_agents; i++) {
                if (!(items[i].revents & ZMQ_POLLIN))
                    continue;
                struct agent *a = &agents[i];
                int got;
                while ((got = zmq_recv(a->sock, buf, sizeof(buf), ZMQ_DONTWAIT)) >= 0) {
                    rsl_ack *ack = NULL;
                    if ((size_t)got > sizeof(buf) ||
                        rsl_ack_decode(buf, (size_t)got, sizeof(buf), &ack, NULL) != RSL_OK)
                        continue;
                    uint64_t k = ack->sequence - 1;
                    if (ack->sequence >= 1 && k < reports && !a->slots[k].done) {
                        struct report_slot *s = &a->slots[k];
                        if (a->out > 0)
                            a->out--;
                        if (ack->status == RESILIENCE__V1__ACK__STATUS__RETRY_LATER) {
                            retries++;
                            if (agent_cwnd_retry_later(&a->cwnd, s->sent_no)) {
                                a->streak++;
                                a->pause_until_us =
                                    now + (uint64_t)agent_backoff_ms(AGENT_RETRY_PAUSE_MS,
                                                                     300000, a->streak,
                                                                     (uint32_t)random()) * 1000u;
                            }
                            s->resend_at_us = a->pause_until_us > now ? a->pause_until_us : now;
                        } else {
                            a->streak = 0;
                            agent_cwnd_progress(&a->cwnd);
                            if (ack->status == RESILIENCE__V1__ACK__STATUS__REJECTED) {
                                rejected++;
                                if (rejected <= 3)
                                    fprintf(stderr, "ingest_load: REJECTED %s/%" PRIu64 ": %s\n",
                                            a->id, ack->sequence, ack->detail);
                            }
                            s->done = true;
                            a->in_flight--;
                            settled++;
                            if (phase == 1)
                                latencies[n_latencies++] = now - s->first_sent_us;
                            while (a->done < reports && a->slots[a->done].done)
                                a->done++;
                        }
                    }
                    rsl_ack_free(&ack);
                }
            }
        }
    }
    double seconds = (double)(now_us() - timed_start) / 1e6;
    double cpu = cpu_s() - timed_cpu;
    qsort(latencies, n_latencies, sizeof(*latencies), compare_u64);
#define PCT(p) ((double)latencies[(size_t)((double)(n_latencies - 1) * (p))] / 1000.0)
    printf("reports=%" PRIu64 " seconds=%.3f rate=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f retries=%" PRIu64 " rejected=%" PRIu64 " cpu_s=%.3f\n",
           n_latencies, seconds, (double)n_latencies / seconds, PCT(0.50), PCT(0.90), PCT(0.99),
           PCT(1.0), retries, rejected, cpu);
    for (size_t i = 0; i < n_agents; i++) {
        for (uint64_t k = 0; k < reports; k++)
            free(agents[i].slots[k].frame);
        free(agents[i].slots);
        zmq_close(agents[i].sock);
    }
    zmq_ctx_term(ctx);
    free(agents);
    free(items);
    free(latencies);
    return rejected == 0 ? 0 : 1;
}
