/*
 * ingest.c - the per-frame decision, the batch transaction, the metrics,
 * and the threads of the ingest pipeline (see ingest.h).
 *
 * Invariant that everything below serves: an agent only ever hears ACCEPTED
 * (or DUPLICATE) for a report whose transaction has committed. Verdicts are
 * born RETRY_LATER; agg_ingest_check_frame can only turn them into
 * REJECTED or "store me"; agg_ingest_store_batch turns "store me" into
 * ACCEPTED / DUPLICATE / REJECTED (equivocation) only after COMMIT
 * returned, and back into RETRY_LATER on any failure. A frame that goes
 * wrong in a way nobody foresaw therefore makes the agent resend, never
 * drop, a report.
 *
 * Threads and ownership. Every socket is created in agg_ingest_start (so
 * bind errors come back synchronously) and then used by exactly one thread
 * (pthread_create is the full memory barrier libzmq asks for when a socket
 * changes threads); after the threads are joined, agg_ingest_stop uses them
 * once more to drain and close. Work moves between threads as a pointer to
 * a `struct job` inside an inproc message: whoever received the message
 * owns the job, nobody else touches it. Each job ends in the socket thread,
 * which sends its ack and frees it; so "admitted" minus "acked" is exactly
 * what is in flight, counted by the socket thread alone, and that count is
 * the admission limit (max_queue) that bounds every queue behind it: no
 * queue holds more than max_queue jobs, nor more than
 * AGG_INGEST_QUEUE_BYTES_MAX bytes of reports.
 * The inproc sockets' own high-water marks are off (0) on purpose. A
 * libzmq HWM is approximate: the writer learns what its reader consumed
 * only every HWM/2 messages read (libzmq's low-water mark), so a queue can
 * look full while holding half its mark or less - the socket thread would
 * turn reports away for nothing (a test caught exactly that), or a stage
 * would stall. With the exact count at the entry as the bound, a send between
 * stages never meets a full queue, which also rules out a deadlock between
 * the socket thread (sending jobs) and the stages (sending results back).
 *
 * Order matters for security: the ZAP REP socket is bound before the ROUTER
 * binds, and the ROUTER sets ZMQ_ZAP_DOMAIN with ZMQ_ZAP_ENFORCE_DOMAIN, so
 * there is no moment at which a CURVE handshake succeeds without the
 * registry being consulted. If the ZAP endpoint cannot be bound (another
 * handler in this context, a libzmq without inproc), we do not start. If
 * the ZAP thread ends (or is slow), libzmq finds no handler (or gets no
 * reply before ZMQ_HANDSHAKE_IVL) and refuses the handshake: with the
 * domain enforced, a missing handler means "deny", not "admit".
 *
 * Group commit: the store thread takes every verified report waiting (up
 * to batch_max / AGG_INGEST_BATCH_MAX_BYTES) into one transaction. While
 * one COMMIT waits for fsync, the workers keep verifying, so under load the
 * batches grow by themselves and the fsync cost is shared; with little
 * load a report is committed alone, without waiting for company.
 *
 * Metrics are process-wide C11 atomics (relaxed: they are statistics), so
 * the HTTPS threads can read them for /metrics without a lock; the per
 * agent clock table has a mutex of its own.
 */
#include "ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "rsl/codec.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

/* Part of libzmq's draft API in the headers, but implemented by the
 * shipped library (4.3.x); without it a missing ZAP handler means "admit
 * everyone", so we set it, read it back, and refuse to start if libzmq
 * refuses it. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8
#define ROUTING_ID_MAX 256
/* Let the last acks drain on shutdown, but never hang on a dead peer. */
#define ROUTER_LINGER_MS 2000
/* Messages the socket thread reads from the ROUTER per wake-up before it
 * looks at the results again: keeps acks flowing under a flood. */
#define RECEIVE_BURST 256
/* Results (acks to send) handled per wake-up, for the same reason. */
#define RESULT_BURST 1024
/* Jobs a verify worker takes per wake-up under one registry reference. */
#define WORKER_BURST 64
/* On stop, how long the socket thread waits for reports in flight to be
 * answered before it gives up on them (their agents will resend). */
#define DRAIN_TIMEOUT_MS 30000
/* Below this share of max_queue in flight, a full queue counts as relieved
 * (hysteresis, so the log does not flap at the limit). */
#define QUEUE_RELIEF_PERCENT 90
/* At most one "queue full" warning this often (ms). */
#define FULL_LOG_MS 10000

/* ======================================================================== */
/* Metrics                                                                  */
/* ======================================================================== */

static atomic_uint_fast64_t counters[AGG_COUNT_N];

static const char *const counter_names[AGG_COUNT_N] = {
    [AGG_COUNT_ACCEPTED] = "accepted",
    [AGG_COUNT_DUPLICATE] = "duplicate",
    [AGG_COUNT_RETRY_LATER] = "retry_later",
    [AGG_COUNT_RETRY_QUEUE_FULL] = "queue_full",
    [AGG_COUNT_RETRY_STORE_ERROR] = "store_error",
    [AGG_COUNT_RETRY_OTHER] = "other",
    [AGG_COUNT_EXCLUDED_MEASUREMENTS] = "excluded_measurements",
    [AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR] = "unknown_indicator",
    [AGG_COUNT_EXCLUDED_UNIT] = "unit_mismatch",
    [AGG_COUNT_EXCLUDED_FUTURE] = "future_observation",
    [AGG_COUNT_ACKS_UNDELIVERED] = "acks_undelivered",
    [AGG_COUNT_ZAP_ADMITTED] = "admitted",
    [AGG_COUNT_ZAP_REFUSED] = "refused",
    [AGG_COUNT_CONN_HANDSHAKES] = "handshake_succeeded",
    [AGG_COUNT_CONN_HANDSHAKE_FAILURES] = "handshake_failed",
    [AGG_COUNT_CONN_DISCONNECTS] = "disconnected",
    [AGG_COUNT_COMMITS] = "commits",
    [AGG_COUNT_STORE_ERRORS] = "store_errors",
    [AGG_COUNT_REGISTRY_RELOADS] = "ok",
    [AGG_COUNT_REGISTRY_RELOAD_FAILURES] = "failed",
    [AGG_COUNT_MALFORMED] = "malformed",
    [AGG_COUNT_OVERSIZED] = "oversized",
    [AGG_COUNT_UNKNOWN_AGENT] = "unknown_agent",
    [AGG_COUNT_UNKNOWN_KEY] = "unknown_key",
    [AGG_COUNT_REVOKED_KEY] = "revoked_key",
    [AGG_COUNT_BAD_SIGNATURE] = "bad_signature",
    [AGG_COUNT_WRONG_SENDER] = "wrong_sender",
    [AGG_COUNT_NATION_MISMATCH] = "nation_mismatch",
    [AGG_COUNT_FUTURE_TIMESTAMP] = "future_timestamp",
    [AGG_COUNT_EQUIVOCATION] = "equivocation",
};

uint64_t agg_ingest_counter(enum agg_ingest_counter c)
{
    if ((int)c < 0 || c >= AGG_COUNT_N)
        return 0;
    return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

const char *agg_ingest_counter_name(enum agg_ingest_counter c)
{
    if ((int)c < 0 || c >= AGG_COUNT_N || counter_names[c] == NULL)
        return "unknown";
    return counter_names[c];
}

static void count(enum agg_ingest_counter c, uint64_t n)
{
    if ((int)c >= 0 && c < AGG_COUNT_N && n > 0)
        atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

void agg_ingest_counter_add(enum agg_ingest_counter c, uint64_t n)
{
    count(c, n);
}

/* Gauges: written by the pipeline threads, read by anyone. in_flight is
 * owned by the socket thread (the only writer); the queue depths are
 * incremented by the stage that hands a job on and decremented by the
 * stage that takes it, always in that order, so they never go below 0. */
static atomic_uint_fast64_t gauge_in_flight;
static atomic_uint_fast64_t gauge_in_flight_bytes;
static atomic_uint_fast64_t gauge_verify_queue;
static atomic_uint_fast64_t gauge_store_queue;
static atomic_uint_fast64_t gauge_max_queue;
static atomic_uint_fast64_t gauge_workers;

static uint64_t gauge_get(atomic_uint_fast64_t *g)
{
    return atomic_load_explicit(g, memory_order_relaxed);
}

static void gauge_set(atomic_uint_fast64_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

static void gauge_add(atomic_uint_fast64_t *g, uint64_t v)
{
    atomic_fetch_add_explicit(g, v, memory_order_relaxed);
}

static void gauge_sub(atomic_uint_fast64_t *g, uint64_t v)
{
    atomic_fetch_sub_explicit(g, v, memory_order_relaxed);
}

void agg_ingest_gauges(struct agg_ingest_gauges *out)
{
    if (out == NULL)
        return;
    out->in_flight = gauge_get(&gauge_in_flight);
    out->in_flight_bytes = gauge_get(&gauge_in_flight_bytes);
    out->verify_queue = gauge_get(&gauge_verify_queue);
    out->store_queue = gauge_get(&gauge_store_queue);
    out->max_queue = gauge_get(&gauge_max_queue);
    out->workers = gauge_get(&gauge_workers);
}

/* Histograms: bucket limits are integers in the unit observations are
 * made in (microseconds, reports), `divisor` turns them into the exposed
 * unit (seconds). Buckets are stored per bucket, not cumulatively, so an
 * observation is one atomic add; the snapshot accumulates. */
struct histogram {
    const char *name;
    const char *help;
    const uint64_t *limits;
    size_t n_limits;
    double divisor;
    atomic_uint_fast64_t buckets[AGG_HIST_MAX_BUCKETS + 1]; /* last: above every limit */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum;
};

/* Ack latency, µs: from half a millisecond (a commit without load) to 10 s
 * (a store that has fallen far behind). */
static const uint64_t latency_limits_us[] = {500, 1000, 2500, 5000, 10000, 25000, 50000,
                                             100000, 250000, 500000, 1000000, 2500000,
                                             5000000, 10000000};
/* Reports per transaction: powers of two up to the largest batch_max. */
static const uint64_t batch_limits[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                        10000};
/* One transaction, µs: an fsync on an SSD is ~0.1-2 ms. */
static const uint64_t commit_limits_us[] = {250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                                            100000, 250000, 500000, 1000000, 5000000};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(ARRAY_LEN(latency_limits_us) <= AGG_HIST_MAX_BUCKETS, "too many buckets");
_Static_assert(ARRAY_LEN(batch_limits) <= AGG_HIST_MAX_BUCKETS, "too many buckets");
_Static_assert(ARRAY_LEN(commit_limits_us) <= AGG_HIST_MAX_BUCKETS, "too many buckets");

static struct histogram histograms[AGG_HIST_N] = {
    [AGG_HIST_ACK_LATENCY] = {"resilience_ingest_ack_latency_seconds",
                              "Time from receiving a report to sending its ack (after its "
                              "transaction committed, for ACCEPTED).",
                              latency_limits_us, ARRAY_LEN(latency_limits_us), 1e6, {0}, 0, 0},
    [AGG_HIST_BATCH_REPORTS] = {"resilience_ingest_batch_reports",
                                "Reports per store transaction (group commit).", batch_limits,
                                ARRAY_LEN(batch_limits), 1.0, {0}, 0, 0},
    [AGG_HIST_COMMIT_SECONDS] = {"resilience_ingest_commit_seconds",
                                 "Duration of one store transaction, fsync included.",
                                 commit_limits_us, ARRAY_LEN(commit_limits_us), 1e6, {0}, 0, 0},
};

static void histogram_observe(enum agg_ingest_histogram which, uint64_t value)
{
    struct histogram *h = &histograms[which];
    size_t i = 0;
    while (i < h->n_limits && value > h->limits[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
}

void agg_ingest_histogram(enum agg_ingest_histogram which, struct agg_histogram_snapshot *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof(*out));
    if ((int)which < 0 || which >= AGG_HIST_N)
        return;
    struct histogram *h = &histograms[which];
    out->name = h->name;
    out->help = h->help;
    out->n_buckets = h->n_limits;
    uint64_t running = 0;
    for (size_t i = 0; i < h->n_limits; i++) {
        running += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->upper_bounds[i] = (double)h->limits[i] / h->divisor;
        out->cumulative[i] = running;
    }
    running += atomic_load_explicit(&h->buckets[h->n_limits], memory_order_relaxed);
    /* count is the +Inf bucket: derived from the buckets read above so the
     * exposition is internally consistent (count >= every bucket). */
    out->count = running;
    out->sum = (double)atomic_load_explicit(&h->sum, memory_order_relaxed) / h->divisor;
}

/* Per-agent clock offsets. A sorted array (binary search; an insert only on
 * an agent's first report) guarded by clocks_lock; written by the store
 * thread after each commit, read by /metrics. Bounded: agents are enrolled
 * ones (their reports verified), and at most CLOCKS_MAX are tracked. */
#define CLOCKS_MAX (2 * AGG_REGISTRY_MAX_AGENTS)
static pthread_mutex_t clocks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct agg_agent_clock *clocks;  /* guarded by clocks_lock */
static size_t n_clocks;                 /* guarded by clocks_lock */
static size_t cap_clocks;               /* guarded by clocks_lock */

/* Same rule as the agents table: the latest received report wins. */
static void clocks_update(const char *agent_id, const char *nation, int64_t offset_ms,
                          int64_t received_ms)
{
    pthread_mutex_lock(&clocks_lock);
    size_t lo = 0;
    size_t hi = n_clocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(agent_id, clocks[mid].agent_id);
        if (c == 0) {
            lo = mid;
            goto found;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    /* Not there: insert at lo. */
    if (n_clocks >= CLOCKS_MAX)
        goto out;
    if (n_clocks == cap_clocks) {
        size_t cap = cap_clocks ? cap_clocks * 2 : 64;
        struct agg_agent_clock *c = realloc(clocks, cap * sizeof(*c));
        if (c == NULL)
            goto out; /* a statistic: skipping it is fine */
        clocks = c;
        cap_clocks = cap;
    }
    memmove(&clocks[lo + 1], &clocks[lo], (n_clocks - lo) * sizeof(*clocks));
    n_clocks++;
    memset(&clocks[lo], 0, sizeof(clocks[lo]));
    rsl_strlcpy(clocks[lo].agent_id, agent_id, sizeof(clocks[lo].agent_id));
    clocks[lo].last_received_ms = INT64_MIN;
found:
    if (received_ms >= clocks[lo].last_received_ms) {
        rsl_strlcpy(clocks[lo].nation, nation, sizeof(clocks[lo].nation));
        clocks[lo].offset_ms = offset_ms;
        clocks[lo].last_received_ms = received_ms;
    }
out:
    pthread_mutex_unlock(&clocks_lock);
}

int agg_ingest_clock_offsets(struct agg_agent_clock **out, size_t *n)
{
    if (out == NULL || n == NULL)
        return RSL_EINVAL;
    *out = NULL;
    *n = 0;
    int rc = RSL_OK;
    pthread_mutex_lock(&clocks_lock);
    if (n_clocks > 0) {
        *out = malloc(n_clocks * sizeof(**out));
        if (*out == NULL) {
            rc = RSL_ENOMEM;
        } else {
            memcpy(*out, clocks, n_clocks * sizeof(**out));
            *n = n_clocks;
        }
    }
    pthread_mutex_unlock(&clocks_lock);
    return rc;
}

/* Seed the clock table from the store's agents table at start, so /metrics
 * shows every agent's last known offset after a restart too. */
static int clocks_seed_cb(void *ctx, const struct agg_agent_row *row)
{
    (void)ctx;
    if (rsl_valid_agent_id(row->agent_id))
        clocks_update(row->agent_id, row->nation, row->clock_offset_ms, row->last_seen_ms);
    return 0;
}

/* ---- Prometheus text ---------------------------------------------------- */

static void metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_counter(FILE *f, const char *name, const char *help, enum agg_ingest_counter c)
{
    metric_head(f, name, "counter", help);
    fprintf(f, "%s %" PRIu64 "\n", name, agg_ingest_counter(c));
}

/* A labelled family of counters: one sample per counter, label value = the
 * counter's name. */
static void metric_family(FILE *f, const char *name, const char *help, const char *label,
                          enum agg_ingest_counter first, enum agg_ingest_counter last)
{
    metric_head(f, name, "counter", help);
    for (int c = (int)first; c <= (int)last; c++)
        fprintf(f, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label,
                agg_ingest_counter_name((enum agg_ingest_counter)c),
                agg_ingest_counter((enum agg_ingest_counter)c));
}

static void metric_gauge(FILE *f, const char *name, const char *help, uint64_t value)
{
    metric_head(f, name, "gauge", help);
    fprintf(f, "%s %" PRIu64 "\n", name, value);
}

static void metric_histogram(FILE *f, enum agg_ingest_histogram which)
{
    struct agg_histogram_snapshot h;
    agg_ingest_histogram(which, &h);
    metric_head(f, h.name, "histogram", h.help);
    for (size_t i = 0; i < h.n_buckets; i++)
        fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h.name, h.upper_bounds[i],
                h.cumulative[i]);
    fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", h.name, h.count);
    fprintf(f, "%s_sum %.6f\n%s_count %" PRIu64 "\n", h.name, h.sum, h.name, h.count);
}

int agg_ingest_metrics_text(char **out, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    struct agg_agent_clock *clk = NULL;
    size_t n_clk = 0;
    if (out == NULL || len == NULL)
        return RSL_EINVAL;
    *out = NULL;
    *len = 0;
    if (agg_ingest_clock_offsets(&clk, &n_clk) != RSL_OK)
        return RSL_ENOMEM;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL) {
        free(clk);
        return RSL_ENOMEM;
    }
    metric_counter(f, "resilience_reports_accepted_total",
                   "Reports stored and acknowledged ACCEPTED (after their transaction "
                   "committed).", AGG_COUNT_ACCEPTED);
    metric_counter(f, "resilience_reports_duplicate_total",
                   "Reports already stored with the same bytes, acknowledged DUPLICATE.",
                   AGG_COUNT_DUPLICATE);
    metric_family(f, "resilience_reports_rejected_total",
                  "Reports acknowledged REJECTED, by reason (nothing of them is stored).",
                  "reason", AGG_COUNT_FIRST_REJECTION, AGG_COUNT_N - 1);
    metric_family(f, "resilience_reports_retry_later_total",
                  "Reports acknowledged RETRY_LATER, by cause.", "reason",
                  AGG_COUNT_RETRY_QUEUE_FULL, AGG_COUNT_RETRY_OTHER);
    metric_family(f, "resilience_measurements_excluded_total",
                  "Measurements of accepted reports left out of aggregation, by reason.",
                  "reason", AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR, AGG_COUNT_EXCLUDED_FUTURE);

    struct agg_ingest_gauges g;
    agg_ingest_gauges(&g);
    metric_gauge(f, "resilience_ingest_in_flight",
                 "Reports received and admitted, not yet acknowledged.", g.in_flight);
    metric_gauge(f, "resilience_ingest_in_flight_bytes", "Bytes of the reports in flight.",
                 g.in_flight_bytes);
    metric_head(f, "resilience_ingest_queue_depth", "gauge",
                "Reports waiting for (or in) a pipeline stage.");
    fprintf(f, "resilience_ingest_queue_depth{stage=\"verify\"} %" PRIu64 "\n"
               "resilience_ingest_queue_depth{stage=\"store\"} %" PRIu64 "\n",
            g.verify_queue, g.store_queue);
    metric_gauge(f, "resilience_ingest_queue_limit",
                 "Reports in flight beyond which new ones are answered RETRY_LATER "
                 "([ingest] max_queue).", g.max_queue);
    metric_gauge(f, "resilience_ingest_workers", "Signature-verifying threads.", g.workers);
    for (int h = 0; h < AGG_HIST_N; h++)
        metric_histogram(f, (enum agg_ingest_histogram)h);
    metric_counter(f, "resilience_ingest_store_errors_total",
                   "Store transactions that failed (their reports were asked to retry).",
                   AGG_COUNT_STORE_ERRORS);
    metric_counter(f, "resilience_ingest_acks_undelivered_total",
                   "Acks that could not be sent (peer gone or at its high-water mark; the "
                   "agent resends and gets DUPLICATE).", AGG_COUNT_ACKS_UNDELIVERED);
    metric_family(f, "resilience_ingest_zap_total",
                  "CURVE handshakes decided by the ZAP handler (refused: key not enrolled).",
                  "result", AGG_COUNT_ZAP_ADMITTED, AGG_COUNT_ZAP_REFUSED);
    metric_family(f, "resilience_ingest_connection_events_total",
                  "Connection events of the ingest socket; 'disconnected' includes peers "
                  "dropped by libzmq for a message over max_message_bytes.",
                  "event", AGG_COUNT_CONN_HANDSHAKES, AGG_COUNT_CONN_DISCONNECTS);
    metric_family(f, "resilience_registry_reloads_total",
                  "Agent registry reloads on SIGHUP (failed: the previous registry stays).",
                  "result", AGG_COUNT_REGISTRY_RELOADS, AGG_COUNT_REGISTRY_RELOAD_FAILURES);

    metric_head(f, "resilience_agent_clock_offset_seconds", "gauge",
                "created_at minus receive time of the agent's latest accepted report "
                "(positive: clock ahead; includes transit and spool delay).");
    for (size_t i = 0; i < n_clk; i++)
        fprintf(f, "resilience_agent_clock_offset_seconds{agent=\"%s\",nation=\"%s\"} %.3f\n",
                clk[i].agent_id, clk[i].nation, (double)clk[i].offset_ms / 1000.0);
    metric_head(f, "resilience_agent_last_report_timestamp_seconds", "gauge",
                "When the agent's latest accepted report was received (unix time).");
    for (size_t i = 0; i < n_clk; i++)
        fprintf(f, "resilience_agent_last_report_timestamp_seconds{agent=\"%s\",nation=\"%s\"} "
                   "%.3f\n",
                clk[i].agent_id, clk[i].nation, (double)clk[i].last_received_ms / 1000.0);
    free(clk);
    int failed = ferror(f);
    if (fclose(f) != 0 || failed || buf == NULL) {
        free(buf);
        return RSL_ENOMEM;
    }
    *out = buf;
    *len = size;
    return RSL_OK;
}

/* Monotonic microseconds, for latencies. */
static uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ======================================================================== */
/* One frame                                                                */
/* ======================================================================== */

/* The blank verdict: nothing owned, nothing decided. */
static void verdict_init(struct agg_verdict *v)
{
    memset(v, 0, sizeof(*v));
    /* Zero is ACCEPTED in the protobuf enum: never the default. */
    v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
    v->reason = AGG_COUNT_N;
    v->append_result = -1;
}

void agg_verdict_clear(struct agg_verdict *v)
{
    if (v == NULL)
        return;
    rsl_signed_report_free(&v->signed_report);
    rsl_report_free(&v->report);
    free(v->excluded);
    verdict_init(v);
}

/* Reject with a reason; the detail ("reason: text") goes to the agent.
 * Details are built only from validated fields and our own words, so they
 * are ASCII and safe both in the Ack (which must be UTF-8) and in logs. */
static void verdict_reject(struct agg_verdict *v, enum agg_ingest_counter reason,
                           const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void verdict_reject(struct agg_verdict *v, enum agg_ingest_counter reason,
                           const char *fmt, ...)
{
    /* Leaves room for the "reason: " prefix in the detail. */
    char text[RSL_ACK_DETAIL_MAX - 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(v->detail, sizeof(v->detail), "%s: %s", agg_ingest_counter_name(reason), text);
    v->status = RESILIENCE__V1__ACK__STATUS__REJECTED;
    v->reason = reason;
    v->store = false;
}

/* t is more than `limit` ms ahead of `now`, computed without signed
 * overflow whatever the operands (t - now can exceed INT64_MAX). */
static bool ahead_by_more_than(int64_t t, int64_t now, int64_t limit)
{
    if (t <= now)
        return false;
    uint64_t ahead = (uint64_t)t - (uint64_t)now; /* exact: 0 < t - now < 2^64 */
    return ahead > (uint64_t)(limit < 0 ? 0 : limit);
}

/* Mark measurements that must not be aggregated and name them in the
 * detail (truncated with a count if it would not fit):
 *  - indicator not in the taxonomy, or a unit other than the taxonomy's
 *    (ARCHITECTURE section 2);
 *  - observed further in the future than the clock-skew limit allows: the
 *    latest observation wins `current`, so one such value (a collector
 *    printing microseconds, a wrong clock) would shadow every real one for
 *    that nation until the bogus date passed.
 * The signed original, all measurements included, is stored regardless. */
static int mark_excluded(struct agg_verdict *v, const struct rsl_taxonomy *tax, int64_t now_ms,
                         int64_t skew_ms)
{
    const rsl_report *r = v->report;
    v->excluded = calloc(r->n_measurements > 0 ? r->n_measurements : 1, sizeof(bool));
    if (v->excluded == NULL)
        return RSL_ENOMEM;
    size_t off = 0;
    size_t left_out = 0;
    v->detail[0] = '\0';
    for (size_t i = 0; i < r->n_measurements; i++) {
        const rsl_measurement *m = r->measurements[i];
        const struct rsl_indicator *ind = rsl_taxonomy_indicator(tax, m->indicator);
        const char *unit = m->unit != NULL ? m->unit : "";
        char why[RSL_UNIT_MAX * 2 + 64];
        if (ind == NULL) {
            snprintf(why, sizeof(why), "unknown indicator");
            v->n_excluded_unknown_indicator++;
        } else if (unit[0] != '\0' && strcmp(unit, ind->unit) != 0) {
            /* Empty means "the taxonomy unit"; anything else must match. */
            snprintf(why, sizeof(why), "unit '%s' is not the taxonomy unit '%s'", unit,
                     ind->unit);
            v->n_excluded_unit++;
        } else if (ahead_by_more_than(m->observed_at_ms, now_ms, skew_ms)) {
            snprintf(why, sizeof(why), "observed_at_ms is in the future");
            v->n_excluded_future++;
        } else {
            continue;
        }
        v->excluded[i] = true;
        v->n_excluded++;
        char entry[RSL_INDICATOR_ID_MAX + sizeof(why) + 48];
        int n = snprintf(entry, sizeof(entry), "%smeasurements[%zu] %s: %s",
                         off == 0 ? "excluded: " : "; ", i, m->indicator, why);
        /* Keep room for a "; and N more" tail. */
        if (n > 0 && off + (size_t)n < RSL_ACK_DETAIL_MAX - 32) {
            memcpy(v->detail + off, entry, (size_t)n + 1);
            off += (size_t)n;
        } else {
            left_out++;
        }
    }
    if (left_out > 0)
        snprintf(v->detail + off, sizeof(v->detail) - off, "; and %zu more", left_out);
    return RSL_OK;
}

/* Base-128 varint of at most 10 bytes from [*p, end). */
static bool peek_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7fu) << shift;
        if ((b & 0x80u) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* A Report that failed decoding or validation may still name its agent and
 * sequence: read only the two top-level fields (agent_id = 1, sequence = 4)
 * with a scan that allocates nothing - handing an invalid frame to
 * protobuf-c again would let a frame of empty sub-messages cost ~40 times
 * its size in memory, the very thing rsl_report_decode's count check
 * prevents. Used only if the whole top level is well-formed and both
 * values are valid; last occurrence wins, as in protobuf. */
static void peek_report_identity(struct agg_verdict *v, const uint8_t *data, size_t len)
{
    const uint8_t *p = data;
    const uint8_t *end = data + len;
    char id[RSL_AGENT_ID_MAX + 1] = "";
    uint64_t sequence = 0;
    while (p < end) {
        uint64_t tag;
        uint64_t value;
        if (!peek_varint(&p, end, &tag))
            return;
        uint64_t field = tag >> 3;
        switch (tag & 7u) {
        case 0:
            if (!peek_varint(&p, end, &value))
                return;
            if (field == 4)
                sequence = value;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return;
            p += 4;
            break;
        case 2:
            if (!peek_varint(&p, end, &value) || value > (uint64_t)(end - p))
                return;
            if (field == 1) {
                id[0] = '\0';
                if (value <= RSL_AGENT_ID_MAX && memchr(p, 0, (size_t)value) == NULL) {
                    memcpy(id, p, (size_t)value);
                    id[value] = '\0';
                }
            }
            p += value;
            break;
        default:
            return;
        }
    }
    if (rsl_valid_agent_id(id) && sequence >= 1 && sequence <= (uint64_t)INT64_MAX) {
        memcpy(v->agent_id, id, sizeof(id));
        v->sequence = sequence;
    }
}

int agg_ingest_check_frame(const uint8_t *frame, size_t len, const char *zap_user_id,
                           int64_t now_ms, const struct agg_registry *reg,
                           const struct rsl_taxonomy *tax, const struct agg_config *cfg,
                           struct agg_verdict *v)
{
    struct rsl_error err;
    if (v == NULL)
        return RSL_EINVAL;
    verdict_init(v); /* overwritten, not freed: see ingest.h */
    if ((frame == NULL && len > 0) || reg == NULL || tax == NULL || cfg == NULL)
        return RSL_EINVAL;
    v->frame = frame;
    v->frame_len = len;
    v->received_at_ms = now_ms;
    /* Our ZAP handler sets at most an agent id; anything longer is not one
     * of ours, and an empty user id can match no agent below. */
    if (zap_user_id != NULL && rsl_strlcpy(v->user_id, zap_user_id, sizeof(v->user_id)) != RSL_OK)
        v->user_id[0] = '\0';

    rsl_error_clear(&err);
    int rc = rsl_signed_report_decode(frame, len, cfg->max_message_bytes, &v->signed_report, &err);
    if (rc == RSL_ETOOBIG) {
        verdict_reject(v, AGG_COUNT_OVERSIZED, "%zu bytes is over max_message_bytes %zu", len,
                       cfg->max_message_bytes);
        return RSL_OK;
    }
    if (rc == RSL_ENOMEM) {
        /* Our shortage, not a malformed report: the verdict stays
         * RETRY_LATER, so the agent resends instead of setting it aside. */
        snprintf(v->detail, sizeof(v->detail), "aggregator out of memory");
        return RSL_OK;
    }
    if (rc != RSL_OK) {
        verdict_reject(v, AGG_COUNT_MALFORMED, "SignedReport: %s", err.text);
        return RSL_OK;
    }
    const rsl_signed_report *sr = v->signed_report;
    rc = rsl_report_decode(sr->report.data, sr->report.len, &v->report, &err);
    if (rc == RSL_ENOMEM) {
        peek_report_identity(v, sr->report.data, sr->report.len);
        snprintf(v->detail, sizeof(v->detail), "aggregator out of memory");
        return RSL_OK;
    }
    if (rc != RSL_OK) {
        peek_report_identity(v, sr->report.data, sr->report.len);
        verdict_reject(v, AGG_COUNT_MALFORMED, "Report: %s", err.text);
        return RSL_OK;
    }
    const rsl_report *r = v->report;
    rsl_strlcpy(v->agent_id, r->agent_id, sizeof(v->agent_id));
    v->sequence = r->sequence;

    const struct agg_agent *agent = agg_registry_find_agent(reg, r->agent_id);
    if (agent == NULL) {
        verdict_reject(v, AGG_COUNT_UNKNOWN_AGENT, "agent '%s' is not enrolled", r->agent_id);
        return RSL_OK;
    }
    const uint8_t *pub = NULL;
    switch (agg_agent_key_state(agent, sr->key_id, &pub)) {
    case AGG_KEY_VALID:
        break;
    case AGG_KEY_REVOKED:
        verdict_reject(v, AGG_COUNT_REVOKED_KEY, "key %s of agent %s is revoked", sr->key_id,
                       r->agent_id);
        return RSL_OK;
    case AGG_KEY_UNKNOWN:
    default:
        verdict_reject(v, AGG_COUNT_UNKNOWN_KEY, "key %s is not enrolled for agent %s",
                       sr->key_id, r->agent_id);
        return RSL_OK;
    }
    /* Over exactly the bytes that will be stored and digested: the
     * SignedReport's `report` field, prefixed with the signing domain. */
    rc = rsl_verify_report(pub, sr->report.data, sr->report.len, sr->signature.data,
                           sr->signature.len);
    if (rc == RSL_ENOMEM || rc == RSL_ECRYPTO) {
        /* The verifier could not run (memory, library init): no verdict on
         * the signature, so never a permanent REJECTED. */
        snprintf(v->detail, sizeof(v->detail), "aggregator cannot verify now: %s",
                 rsl_strerror(rc));
        return RSL_OK;
    }
    if (rc != RSL_OK) {
        verdict_reject(v, AGG_COUNT_BAD_SIGNATURE, "signature does not verify with key %s",
                       sr->key_id);
        return RSL_OK;
    }
    /* The CURVE key authenticated the connection as user_id; a valid
     * signature alone does not let one agent deliver for another. */
    if (strcmp(v->user_id, r->agent_id) != 0) {
        verdict_reject(v, AGG_COUNT_WRONG_SENDER,
                       "connection authenticated as '%s' sent a report of agent '%s'",
                       v->user_id[0] != '\0' ? v->user_id : "(nobody)", r->agent_id);
        return RSL_OK;
    }
    if (strcmp(r->nation, agent->nation) != 0) {
        verdict_reject(v, AGG_COUNT_NATION_MISMATCH, "nation '%s' is not the enrolled nation '%s'",
                       r->nation, agent->nation);
        return RSL_OK;
    }
    if (ahead_by_more_than(r->created_at_ms, now_ms, cfg->max_future_skew_ms)) {
        verdict_reject(v, AGG_COUNT_FUTURE_TIMESTAMP,
                       "created_at_ms %" PRId64 " is %" PRIu64 " ms ahead of the aggregator's "
                       "clock (allowed: %" PRId64 ")",
                       r->created_at_ms, (uint64_t)r->created_at_ms - (uint64_t)now_ms,
                       cfg->max_future_skew_ms);
        return RSL_OK;
    }
    if (mark_excluded(v, tax, now_ms, cfg->max_future_skew_ms) != RSL_OK) {
        /* Out of memory: not the agent's fault, let it resend. */
        snprintf(v->detail, sizeof(v->detail), "aggregator out of memory");
        return RSL_OK;
    }
    /* The duplicate/equivocation key, computed here in parallel rather
     * than in the one store thread. */
    rsl_sha256(sr->report.data, sr->report.len, v->report_digest);
    v->has_report_digest = true;
    v->store = true; /* still RETRY_LATER: nothing is committed yet */
    return RSL_OK;
}

/* ---- the batch transaction ---------------------------------------------- */

/* Append order within a batch: by agent, then arrival. Reports of one
 * agent then follow each other, and their rows land on the same few index
 * pages one after the other while those are still in the CPU's caches,
 * instead of every report touching the pages of another nation: the store
 * thread's CPU per report falls. Within an agent the order is the arrival
 * order, as before: of two copies of one report the first is stored, and
 * the agent's latest report is the last one. Across agents the rows of a
 * batch are stored in agent order, so of two observations of one (nation,
 * indicator) with the same observed_at_ms received in the same millisecond
 * the agent later in that order wins (store.h: the later row). */
struct batch_key {
    const struct agg_verdict *v;
    size_t i;
};

static int batch_key_cmp(const void *a, const void *b)
{
    const struct batch_key *x = a;
    const struct batch_key *y = b;
    int c = strcmp(x->v->report->agent_id, y->v->report->agent_id);
    if (c != 0)
        return c;
    return x->i < y->i ? -1 : x->i > y->i;
}

int agg_ingest_store_batch(struct agg_store *store, struct agg_verdict *const *verdicts, size_t n,
                           struct rsl_error *err)
{
    size_t candidates = 0;
    for (size_t i = 0; i < n; i++) {
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        /* Whatever happened before, nothing is decided until COMMIT. */
        v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
        v->reason = AGG_COUNT_N;
        v->append_result = -1;
        candidates++;
    }
    if (candidates == 0)
        return RSL_OK;

    /* The order to append in (see batch_key_cmp); without memory for it,
     * the order they came in. */
    struct batch_key *order = malloc(candidates * sizeof(*order));
    if (order != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            struct agg_verdict *v = verdicts[i];
            if (v == NULL || !v->store)
                continue;
            if (v->report == NULL || v->signed_report == NULL || v->frame == NULL) {
                /* Reported (and every candidate answered) by the loop below. */
                free(order);
                order = NULL;
                break;
            }
            order[k].v = v;
            order[k].i = i;
            k++;
        }
        if (order != NULL)
            qsort(order, candidates, sizeof(*order), batch_key_cmp);
    }

    int rc = agg_store_begin(store, err);
    for (size_t j = 0; j < (order != NULL ? candidates : n) && rc == RSL_OK; j++) {
        size_t i = order != NULL ? order[j].i : j;
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        if (v->report == NULL || v->signed_report == NULL || v->frame == NULL) {
            rc = rsl_error_set(err, RSL_EINVAL, "agg_ingest_store_batch: verdict %zu has no "
                               "report", i);
            break;
        }
        const rsl_report *r = v->report;
        struct agg_report_in in = {
            .agent_id = r->agent_id,
            .nation = r->nation,
            .sequence = r->sequence,
            .created_at_ms = r->created_at_ms,
            .received_at_ms = v->received_at_ms,
            .key_id = v->signed_report->key_id,
            .signed_bytes = v->frame,
            .signed_len = v->frame_len,
            .report_bytes = v->signed_report->report.data,
            .report_len = v->signed_report->report.len,
            .report = r,
            .excluded = v->excluded,
            /* A verdict made elsewhere than agg_ingest_check_frame may
             * come without it: the store hashes then. */
            .report_digest = v->has_report_digest ? v->report_digest : NULL,
        };
        enum agg_append_result result;
        rc = agg_store_append(store, &in, &result, err);
        if (rc == RSL_OK)
            v->append_result = (int)result;
    }
    free(order);
    if (rc == RSL_OK)
        rc = agg_store_commit(store, err);
    if (rc != RSL_OK) {
        /* Nothing of this batch is stored, whatever the appends said
         * (an "equivocation" may have been against a row of this very
         * batch that is now gone): every candidate is asked to resend. */
        agg_store_rollback(store);
        for (size_t i = 0; i < n; i++) {
            struct agg_verdict *v = verdicts[i];
            if (v == NULL || !v->store)
                continue;
            v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
            v->reason = AGG_COUNT_RETRY_STORE_ERROR;
            snprintf(v->detail, sizeof(v->detail), "%s",
                     rc == RSL_ENOSPC ? "aggregator storage full" : "aggregator storage error");
        }
        return rc;
    }
    /* Committed: now the outcomes are true. */
    for (size_t i = 0; i < n; i++) {
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        switch (v->append_result) {
        case AGG_APPEND_INSERTED:
            v->status = RESILIENCE__V1__ACK__STATUS__ACCEPTED;
            break; /* the detail keeps the excluded measurements, if any */
        case AGG_APPEND_DUPLICATE:
            v->status = RESILIENCE__V1__ACK__STATUS__DUPLICATE;
            snprintf(v->detail, sizeof(v->detail), "already stored");
            break;
        case AGG_APPEND_CONFLICT:
            /* Permanent, and the stored original stays the only one. */
            verdict_reject(v, AGG_COUNT_EQUIVOCATION,
                           "sequence %" PRIu64 " is already stored with different content",
                           v->sequence);
            break;
        default:
            /* Cannot happen (every append succeeded); stay RETRY_LATER. */
            break;
        }
    }
    return RSL_OK;
}

void agg_ingest_record(const struct agg_verdict *v)
{
    if (v == NULL)
        return;
    switch (v->status) {
    case RESILIENCE__V1__ACK__STATUS__ACCEPTED:
        count(AGG_COUNT_ACCEPTED, 1);
        count(AGG_COUNT_EXCLUDED_MEASUREMENTS, v->n_excluded);
        count(AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR, v->n_excluded_unknown_indicator);
        count(AGG_COUNT_EXCLUDED_UNIT, v->n_excluded_unit);
        count(AGG_COUNT_EXCLUDED_FUTURE, v->n_excluded_future);
        if (v->n_excluded > 0)
            RSL_INFO("ingest", "accepted %s/%" PRIu64 " with %zu of %zu measurements excluded "
                     "from aggregation: %s", v->agent_id, v->sequence, v->n_excluded,
                     v->report != NULL ? v->report->n_measurements : 0, v->detail);
        else
            RSL_DEBUG("ingest", "accepted %s/%" PRIu64 " (%zu measurements)", v->agent_id,
                      v->sequence, v->report != NULL ? v->report->n_measurements : 0);
        break;
    case RESILIENCE__V1__ACK__STATUS__DUPLICATE:
        count(AGG_COUNT_DUPLICATE, 1);
        RSL_DEBUG("ingest", "duplicate %s/%" PRIu64, v->agent_id, v->sequence);
        break;
    case RESILIENCE__V1__ACK__STATUS__REJECTED: {
        enum agg_ingest_counter reason = v->reason;
        if ((int)reason < (int)AGG_COUNT_FIRST_REJECTION || reason >= AGG_COUNT_N)
            reason = AGG_COUNT_MALFORMED; /* cannot happen: every rejection names one */
        count(reason, 1);
        const char *agent = v->agent_id[0] != '\0' ? v->agent_id : "?";
        /* One line per rejection, with the reason first in the detail, so
         * the log alone can be tallied by reason. */
        if (reason == AGG_COUNT_EQUIVOCATION)
            RSL_WARN("ingest", "EQUIVOCATION by agent %s: %s", agent, v->detail);
        else
            RSL_NOTICE("ingest", "rejected report from %s (connection %s) sequence %" PRIu64
                       ": %s", agent, v->user_id[0] != '\0' ? v->user_id : "?", v->sequence,
                       v->detail);
        break;
    }
    case RESILIENCE__V1__ACK__STATUS__RETRY_LATER:
    default: {
        enum agg_ingest_counter cause = v->reason;
        if (cause != AGG_COUNT_RETRY_QUEUE_FULL && cause != AGG_COUNT_RETRY_STORE_ERROR)
            cause = AGG_COUNT_RETRY_OTHER;
        count(AGG_COUNT_RETRY_LATER, 1);
        count(cause, 1);
        /* Queue-full answers are logged in bulk by the socket thread; a
         * line per report would flood the log exactly when it matters. */
        if (cause != AGG_COUNT_RETRY_QUEUE_FULL)
            RSL_DEBUG("ingest", "retry later %s/%" PRIu64 ": %s",
                      v->agent_id[0] != '\0' ? v->agent_id : "?", v->sequence, v->detail);
        break;
    }
    }
}

/* ======================================================================== */
/* The pipeline                                                             */
/* ======================================================================== */

/* A control pipe: the parent end stays with agg_ingest_*, the child end
 * belongs to the thread. One message, "STOP", is ever sent. */
struct control_pipe {
    void *parent;
    void *child;
};

/* One received message on its way through the pipeline. Owned by exactly
 * one thread at a time: the one that last received its pointer. */
struct job {
    uint8_t routing_id[ROUTING_ID_MAX];
    size_t routing_len;
    zmq_msg_t payload;                 /* the SignedReport frame, never copied */
    bool payload_valid;                /* payload initialised */
    bool decided;                      /* verdict reached while receiving */
    bool admitted;                     /* counted in flight (socket thread's books) */
    size_t bytes;                      /* payload size, as counted in flight */
    uint64_t received_us;              /* monotonic, for the ack latency */
    int64_t received_at_ms;            /* wall clock, stored with the report */
    char user_id[RSL_AGENT_ID_MAX + 1];
    struct agg_verdict verdict;        /* borrows the payload's bytes */
};

/* A verify worker: its thread and its three sockets. */
struct worker {
    struct agg_ingest *ing;
    pthread_t thread;
    bool running;
    struct control_pipe pipe;
    void *jobs_in;                     /* PULL from the socket thread */
    void *store_out;                   /* PUSH to the store thread */
    void *results_out;                 /* PUSH rejections to the socket thread */
};

struct agg_ingest {
    const struct agg_config *cfg;            /* borrowed, outlives us */
    struct agg_registry_holder *registry;    /* borrowed, has its own lock */
    void *ctx;                               /* the ZeroMQ context */
    size_t n_workers;
    size_t max_queue;
    size_t batch_max;

    /* Set by ingest_shutdown before it stops the threads; set by a thread
     * that ended on its own (thread_lost). */
    atomic_bool stopping;
    atomic_bool failed;

    /* Failed batches, store thread only (store_failed): a disk that stays
     * full is one log line per STORE_FAIL_LOG_US, not one per batch. */
    uint64_t store_failing;        /* consecutive failed batches */
    uint64_t store_fail_unlogged;  /* failed since the last line */
    uint64_t store_fail_logged_us; /* when the last line was written, 0: never */
    bool store_fail_said;          /* this run of failures has a line */

    /* ZAP thread (closes its own sockets when it ends) */
    pthread_t zap_thread;
    bool zap_running;
    void *zap_socket;
    struct control_pipe zap_pipe;

    /* socket thread */
    pthread_t router_thread;
    bool router_running;
    struct control_pipe router_pipe;
    void *router;                            /* the CURVE ROUTER */
    void *monitor;                           /* PAIR: the ROUTER's socket monitor */
    void *jobs_out;                          /* PUSH to the workers */
    void *results_in;                        /* PULL: verdicts to acknowledge */

    /* verify workers */
    struct worker *workers;                  /* n_workers of them */

    /* store thread */
    pthread_t store_thread;
    bool store_running;
    struct control_pipe store_pipe;
    void *store_in;                          /* PULL from the workers */
    void *store_results_out;                 /* PUSH settled verdicts to the socket thread */
    struct agg_store *store;
    struct job **batch_jobs;                 /* batch_max scratch slots */
    struct agg_verdict **batch_verdicts;     /* batch_max scratch slots */
};

static void close_socket(void **s)
{
    if (*s != NULL) {
        zmq_close(*s);
        *s = NULL;
    }
}

/* Both ends are created here (caller's thread); the child end is handed to
 * the thread with pthread_create. LINGER 0: a STOP that was never read must
 * not hold up context termination. */
static int pipe_open(void *ctx, struct control_pipe *p, const char *name, struct rsl_error *err)
{
    char endpoint[64];
    int zero = 0;
    /* Unique per pipe object: the address of the struct. */
    snprintf(endpoint, sizeof(endpoint), "inproc://agg-%s-%p", name, (void *)p);
    p->parent = zmq_socket(ctx, ZMQ_PAIR);
    p->child = zmq_socket(ctx, ZMQ_PAIR);
    if (p->parent == NULL || p->child == NULL)
        goto fail;
    zmq_setsockopt(p->parent, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(p->child, ZMQ_LINGER, &zero, sizeof(zero));
    if (zmq_bind(p->parent, endpoint) != 0 || zmq_connect(p->child, endpoint) != 0)
        goto fail;
    return RSL_OK;
fail:
    rsl_error_set(err, RSL_EIO, "ingest: control pipe %s: %s", name, zmq_strerror(errno));
    close_socket(&p->parent);
    close_socket(&p->child);
    return RSL_EIO;
}

static void pipe_close(struct control_pipe *p)
{
    close_socket(&p->parent);
    close_socket(&p->child);
}

/* DONTWAIT: a PAIR whose peer has gone would block a plain send forever,
 * and with it the daemon's SIGTERM handling. The thread is joined anyway. */
static void pipe_stop(struct control_pipe *p)
{
    if (p->parent != NULL && zmq_send(p->parent, "STOP", 4, ZMQ_DONTWAIT) != 4 &&
        errno != EAGAIN)
        RSL_ERR("ingest", "cannot signal a thread to stop: %s", zmq_strerror(errno));
}

/* Read the STOP (or anything) off a control pipe's child end. */
static void pipe_consume(void *child)
{
    char buf[8];
    while (zmq_recv(child, buf, sizeof(buf), ZMQ_DONTWAIT) >= 0) {
    }
}

/* One end of a pipeline queue: no high-water mark (see the top of this
 * file: the admission count bounds it) and no linger (leftovers are drained by
 * agg_ingest_stop before closing). */
static void *queue_socket(void *ctx, int type, const char *endpoint, bool bind,
                          struct rsl_error *err)
{
    int zero = 0;
    void *s = zmq_socket(ctx, type);
    if (s == NULL ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof(zero)) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof(zero)) != 0 ||
        (bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) != 0) {
        rsl_error_set(err, RSL_EIO, "ingest: queue %s: %s", endpoint, zmq_strerror(errno));
        close_socket(&s);
        return NULL;
    }
    return s;
}

/* Hand a job to the next stage. Returns false if it could not be queued
 * (only when the context is going away: the queues have no high-water
 * mark); the caller still owns it then. */
/* The message is the pointer itself (JOB_MESSAGE bytes), not the job. */
#define JOB_MESSAGE sizeof(struct job *)

static bool job_send(void *sock, struct job *job, int flags)
{
    return zmq_send(sock, &job, JOB_MESSAGE, flags) == (int)JOB_MESSAGE;
}

/* Take a job without waiting: NULL if none is queued. */
static struct job *job_receive(void *sock)
{
    struct job *job = NULL;
    if (zmq_recv(sock, &job, JOB_MESSAGE, ZMQ_DONTWAIT) != (int)JOB_MESSAGE)
        return NULL;
    return job;
}

static struct job *job_new(void)
{
    struct job *job = malloc(sizeof(*job));
    if (job == NULL)
        return NULL;
    job->routing_len = 0;
    job->payload_valid = false;
    job->decided = false;
    job->admitted = false;
    job->bytes = 0;
    job->received_us = 0;
    job->received_at_ms = 0;
    job->user_id[0] = '\0';
    verdict_init(&job->verdict);
    return job;
}

static void job_free(struct job **jobp)
{
    struct job *job = *jobp;
    if (job == NULL)
        return;
    agg_verdict_clear(&job->verdict);
    if (job->payload_valid)
        zmq_msg_close(&job->payload);
    free(job);
    *jobp = NULL;
}

/* Free every job still queued on a socket (after its threads ended). */
static size_t drain_jobs(void *sock)
{
    size_t n = 0;
    struct job *job;
    while (sock != NULL && (job = job_receive(sock)) != NULL) {
        job_free(&job);
        n++;
    }
    return n;
}

/* ---- ZAP handler (RFC 27) ---------------------------------------------- */

static bool frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

static void zap_send_reply(void *sock, zmq_msg_t *request_id, const char *status,
                           const char *text, const char *user_id)
{
    /* version, request id (echoed), status code, status text, user id,
     * metadata (empty). A failing send on REP can only mean shutdown. */
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, request_id != NULL ? zmq_msg_data(request_id) : "",
             request_id != NULL ? zmq_msg_size(request_id) : 0, ZMQ_SNDMORE);
    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/* Read one ZAP request and answer it. Returns -1 only on ETERM.
 * A REP socket must answer every request, or it can receive no more; so
 * even a malformed request gets a 400 reply, never silence. The decision
 * uses a registry reference taken just for this look-up, so a registry
 * swap takes effect from the next handshake on. */
static int zap_handle(struct agg_ingest *ing, void *sock)
{
    zmq_msg_t frames[ZAP_MAX_FRAMES];
    size_t n = 0;
    int more = 1;
    int result = 0;

    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = n < ZAP_MAX_FRAMES ? &frames[n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            zmq_msg_close(m);
            result = errno == ETERM ? -1 : 0;
            goto out;
        }
        more = zmq_msg_more(m);
        if (m == &scratch)
            zmq_msg_close(m); /* excess frames: a malformed request */
        else
            n++;
    }

    /* 0 version, 1 request id, 2 domain, 3 address, 4 identity, 5 mechanism,
     * 6.. credentials (CURVE: one 32-byte client public key). */
    zmq_msg_t *request_id = n > 1 ? &frames[1] : NULL;
    if (n < 7 || !frame_is(&frames[0], "1.0")) {
        RSL_WARN("zap", "malformed ZAP request (%zu frames)", n);
        zap_send_reply(sock, request_id, "400", "malformed request", "");
        goto out;
    }
    char address[64];
    snprintf(address, sizeof(address), "%.*s", (int)zmq_msg_size(&frames[3]),
             (const char *)zmq_msg_data(&frames[3]));
    if (!frame_is(&frames[2], AGG_ZAP_DOMAIN) || !frame_is(&frames[5], "CURVE") || n != 7 ||
        zmq_msg_size(&frames[6]) != 32) {
        count(AGG_COUNT_ZAP_REFUSED, 1);
        RSL_NOTICE("zap", "refused a connection from %s: not CURVE in domain '%s'", address,
                   AGG_ZAP_DOMAIN);
        zap_send_reply(sock, request_id, "400", "CURVE required", "");
        goto out;
    }

    char z85[RSL_Z85_KEY_LEN + 1];
    if (zmq_z85_encode(z85, zmq_msg_data(&frames[6]), 32) == NULL) {
        zap_send_reply(sock, request_id, "500", "internal error", "");
        goto out;
    }
    /* Copy the agent id before letting go of the registry reference. */
    char agent_id[RSL_AGENT_ID_MAX + 1] = "";
    struct agg_registry *reg = agg_registry_holder_get(ing->registry);
    const struct agg_agent *agent = agg_registry_find_curve(reg, z85);
    if (agent != NULL)
        rsl_strlcpy(agent_id, agent->id, sizeof(agent_id));
    agg_registry_release(&reg);

    if (agent_id[0] == '\0') {
        count(AGG_COUNT_ZAP_REFUSED, 1);
        RSL_NOTICE("zap", "refused CURVE key %s from %s: not enrolled", z85, address);
        zap_send_reply(sock, request_id, "400", "key not enrolled", "");
    } else {
        count(AGG_COUNT_ZAP_ADMITTED, 1);
        RSL_DEBUG("zap", "admitted agent %s from %s", agent_id, address);
        zap_send_reply(sock, request_id, "200", "OK", agent_id);
    }
out:
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return result;
}

/* A pipeline thread ended on its own (its poll failed, its socket broke):
 * ingest cannot go on without it, and an aggregator that accepts
 * connections but never answers - while it still feeds the systemd
 * watchdog - would never be restarted. So the whole daemon stops: the
 * main thread gets a SIGTERM, sees agg_ingest_failed() and exits with
 * status 3, which systemd's Restart=on-failure restarts. Not while
 * ingest_shutdown stops the threads on purpose. */
static void thread_lost(struct agg_ingest *ing, const char *what)
{
    if (atomic_load(&ing->stopping))
        return;
    if (atomic_exchange(&ing->failed, true))
        return; /* already reported */
    RSL_ERR("ingest", "%s stopped unexpectedly; the aggregator stops so that it can be "
            "restarted", what);
    kill(getpid(), SIGTERM);
}

bool agg_ingest_failed(const struct agg_ingest *ing)
{
    return ing != NULL && atomic_load(&ing->failed);
}

/* The ZAP thread: wait on the control pipe and the ZAP socket; a STOP (or
 * context termination) ends it. It closes its own sockets: they were
 * created elsewhere but belong to this thread now. */
static void *zap_main(void *arg)
{
    struct agg_ingest *ing = arg;
    pthread_setname_np(pthread_self(), "agg-zap");
    void *sock = ing->zap_socket;
    zmq_pollitem_t items[2] = {
        {ing->zap_pipe.child, 0, ZMQ_POLLIN, 0},
        {sock, 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            /* Closing the socket below unbinds the handler: with the
             * domain enforced, every later handshake is refused. Say so,
             * since agents will now all be turned away. */
            RSL_ERR("zap", "poll: %s; ZAP handler stopping, all new agent connections will be "
                    "refused", zmq_strerror(errno));
            thread_lost(ing, "the ZAP handler");
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            break; /* STOP */
        if ((items[1].revents & ZMQ_POLLIN) && zap_handle(ing, sock) < 0)
            break;
    }
    close_socket(&ing->zap_socket);
    close_socket(&ing->zap_pipe.child);
    return NULL;
}

/* ---- the socket thread --------------------------------------------------- */

/* The socket thread's books: what it admitted and has not yet answered.
 * Only this thread reads or writes them; the gauges mirror them. */
struct router_state {
    size_t in_flight;
    size_t in_flight_bytes;
    bool queue_full;                   /* in the "answering RETRY_LATER" state */
    bool full_logged;                  /* the warning for this episode was logged */
    int64_t last_full_log_ms;          /* monotonic: when the last one was */
    uint64_t turned_away;              /* RETRY_LATER (queue full) since the warning */
};

/* Receive one message (routing id + frames) without blocking into `job`.
 * Returns 1 if the job was filled, 0 if nothing was waiting, -1 on ETERM.
 * The protocol is one frame per message; anything else is answered as
 * malformed (the whole multipart message is consumed so the next read
 * starts at a message boundary). The payload zmq_msg_t is kept, not
 * copied: its bytes go to the store as the signed original. */
static int receive_job(void *router, struct job *job)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&id);
        return e == ETERM ? -1 : 0;
    }
    job->received_us = monotonic_us();
    job->received_at_ms = rsl_now_ms();
    job->routing_len = zmq_msg_size(&id) <= ROUTING_ID_MAX ? zmq_msg_size(&id) : 0;
    memcpy(job->routing_id, zmq_msg_data(&id), job->routing_len);
    bool more = zmq_msg_more(&id);
    zmq_msg_close(&id);

    size_t frames = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        /* The rest of a multipart message is already here: blocking is safe. */
        if (zmq_msg_recv(&m, router, 0) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (e == ETERM)
                return -1;
            /* Cannot happen (parts arrive together); the verdict stays
             * RETRY_LATER so the agent resends rather than loses it. */
            snprintf(job->verdict.detail, sizeof(job->verdict.detail),
                     "aggregator could not read the message");
            job->verdict.reason = AGG_COUNT_RETRY_OTHER;
            job->decided = true;
            return 1;
        }
        more = zmq_msg_more(&m);
        if (frames == 0) {
            job->payload = m; /* ownership moves into the job */
            job->payload_valid = true;
        } else {
            zmq_msg_close(&m);
        }
        frames++;
    }
    if (job->payload_valid) {
        job->bytes = zmq_msg_size(&job->payload);
        /* Metadata set by the ZAP handler: the agent id the CURVE key is
         * enrolled under. ZAP properties take precedence over anything the
         * peer announces about itself in its handshake metadata. */
        const char *uid = zmq_msg_gets(&job->payload, "User-Id");
        if (uid == NULL || rsl_strlcpy(job->user_id, uid, sizeof(job->user_id)) != RSL_OK)
            job->user_id[0] = '\0';
    }
    memcpy(job->verdict.user_id, job->user_id, sizeof(job->user_id)); /* for the log line */
    if (frames != 1) {
        verdict_reject(&job->verdict, AGG_COUNT_MALFORMED,
                       "expected one frame per message, got %zu", frames);
        job->decided = true;
    }
    return 1;
}

/* The identity of a frame that will not be checked (queue full), so the
 * RETRY_LATER ack can name it and the agent can match it to its spool: the
 * SignedReport's `report` field (1), then the Report's agent_id and
 * sequence, read without allocating (peek_report_identity). Best effort. */
static void peek_frame_identity(struct agg_verdict *v, const uint8_t *data, size_t len)
{
    const uint8_t *p = data;
    const uint8_t *end = data + len;
    const uint8_t *report = NULL;
    size_t report_len = 0;
    while (p < end) {
        uint64_t tag;
        uint64_t value;
        if (!peek_varint(&p, end, &tag))
            return;
        switch (tag & 7u) {
        case 0:
            if (!peek_varint(&p, end, &value))
                return;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return;
            p += 4;
            break;
        case 2:
            if (!peek_varint(&p, end, &value) || value > (uint64_t)(end - p))
                return;
            if ((tag >> 3) == 1) {
                report = p;
                report_len = (size_t)value;
            }
            p += value;
            break;
        default:
            return;
        }
    }
    if (report != NULL)
        peek_report_identity(v, report, report_len);
}

/* One ack frame behind the routing id. DONTWAIT: one slow peer at its
 * high-water mark must not stall the socket thread for everyone (it will
 * resend and get DUPLICATE). ZMQ_ROUTER_MANDATORY: an unknown routing id
 * fails with EHOSTUNREACH instead of a silent drop. Either way the ack is
 * counted as undelivered. */
static void send_ack(void *router, const struct job *job)
{
    const struct agg_verdict *v = &job->verdict;
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (job->routing_len == 0)
        return;
    ack.agent_id = (char *)(uintptr_t)v->agent_id;
    ack.sequence = v->sequence;
    ack.status = (Resilience__V1__Ack__Status)v->status;
    ack.detail = (char *)(uintptr_t)v->detail;
    if (rsl_ack_encode(&ack, &buf, &len) != RSL_OK) {
        count(AGG_COUNT_ACKS_UNDELIVERED, 1);
        RSL_ERR("ingest", "cannot encode an ack (out of memory)");
        return;
    }
    if (zmq_send(router, job->routing_id, job->routing_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(router, buf, len, ZMQ_DONTWAIT) < 0) {
        count(AGG_COUNT_ACKS_UNDELIVERED, 1);
        if (errno == EHOSTUNREACH)
            RSL_DEBUG("ingest", "ack for %s/%" PRIu64 " not sent: peer disconnected",
                      v->agent_id, v->sequence);
        else
            RSL_WARN("ingest", "ack for %s/%" PRIu64 " not sent: %s", v->agent_id,
                     v->sequence, zmq_strerror(errno));
    }
    free(buf);
}

static void publish_books(const struct router_state *rs)
{
    gauge_set(&gauge_in_flight, rs->in_flight);
    gauge_set(&gauge_in_flight_bytes, rs->in_flight_bytes);
}

/* The end of every job: count and log its verdict, time it, acknowledge,
 * take it off the books, free it. */
static void finish_job(struct agg_ingest *ing, struct router_state *rs, struct job **jobp)
{
    struct job *job = *jobp;
    agg_ingest_record(&job->verdict);
    histogram_observe(AGG_HIST_ACK_LATENCY, monotonic_us() - job->received_us);
    send_ack(ing->router, job);
    if (job->admitted) {
        rs->in_flight--;
        rs->in_flight_bytes -= job->bytes;
        publish_books(rs);
        if (rs->queue_full && rs->in_flight * 100 < ing->max_queue * QUEUE_RELIEF_PERCENT) {
            rs->queue_full = false;
            if (rs->full_logged) {
                rs->full_logged = false;
                RSL_NOTICE("ingest", "ingest queue below its limit again (%zu in flight); %" PRIu64
                           " reports were asked to retry later meanwhile", rs->in_flight,
                           rs->turned_away);
                rs->turned_away = 0;
            }
        }
    }
    job_free(jobp);
}

/* Back-pressure: the store (or verification) has fallen behind. Answer
 * RETRY_LATER without checking anything - cheap, so a flood cannot make
 * the socket thread itself the bottleneck - and name the report if its
 * identity can be read. */
static void turn_away(struct agg_ingest *ing, struct router_state *rs, struct job **jobp)
{
    struct job *job = *jobp;
    if (job->payload_valid)
        peek_frame_identity(&job->verdict, zmq_msg_data(&job->payload), job->bytes);
    job->verdict.status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
    job->verdict.reason = AGG_COUNT_RETRY_QUEUE_FULL;
    snprintf(job->verdict.detail, sizeof(job->verdict.detail),
             "aggregator busy: %zu reports waiting to be stored; retry later", rs->in_flight);
    if (!rs->queue_full) {
        rs->queue_full = true;
        /* A warning (and a notice when it is over) per episode, but at
         * most one every FULL_LOG_MS however often the queue fills and
         * drains around its limit; quiet episodes are summed up in the
         * next warning. */
        int64_t now = rsl_monotonic_ms();
        if (rs->last_full_log_ms == 0 || now - rs->last_full_log_ms >= FULL_LOG_MS) {
            if (rs->turned_away > 0)
                RSL_NOTICE("ingest", "%" PRIu64 " reports were asked to retry later since the "
                           "last warning", rs->turned_away);
            rs->full_logged = true;
            rs->last_full_log_ms = now;
            rs->turned_away = 0;
            RSL_WARN("ingest", "ingest queue full (%zu reports, %zu bytes in flight; max_queue "
                     "%zu): answering RETRY_LATER until the store catches up", rs->in_flight,
                     rs->in_flight_bytes, ing->max_queue);
        }
    }
    rs->turned_away++;
    finish_job(ing, rs, jobp);
}

/* Read up to RECEIVE_BURST messages and admit each into the pipeline (or
 * answer it at once). Returns -1 on ETERM. */
static int receive_some(struct agg_ingest *ing, struct router_state *rs)
{
    for (int i = 0; i < RECEIVE_BURST; i++) {
        struct job *job = job_new();
        if (job == NULL) {
            /* The message stays queued in libzmq; try again next wake-up. */
            RSL_ERR("ingest", "out of memory receiving a report");
            return 0;
        }
        int r = receive_job(ing->router, job);
        if (r <= 0) {
            job_free(&job);
            return r;
        }
        if (job->decided) {
            finish_job(ing, rs, &job);
            continue;
        }
        if (rs->in_flight >= ing->max_queue ||
            rs->in_flight_bytes + job->bytes > AGG_INGEST_QUEUE_BYTES_MAX) {
            turn_away(ing, rs, &job);
            continue;
        }
        /* On the books before it leaves: the worker may answer before
         * this thread runs again, but only this thread takes it off. */
        job->admitted = true;
        rs->in_flight++;
        rs->in_flight_bytes += job->bytes;
        gauge_add(&gauge_verify_queue, 1);
        /* DONTWAIT: whatever happens, the socket thread never blocks. The
         * queue has no mark, so only a context going away fails this;
         * the report is then turned away like any over the limit. */
        if (!job_send(ing->jobs_out, job, ZMQ_DONTWAIT)) {
            gauge_sub(&gauge_verify_queue, 1);
            job->admitted = false;
            rs->in_flight--;
            rs->in_flight_bytes -= job->bytes;
            turn_away(ing, rs, &job);
            continue;
        }
        publish_books(rs);
    }
    return 0;
}

/* Acknowledge what the workers rejected and the store thread settled. */
static void acknowledge_some(struct agg_ingest *ing, struct router_state *rs)
{
    struct job *job;
    for (int i = 0; i < RESULT_BURST && (job = job_receive(ing->results_in)) != NULL; i++)
        finish_job(ing, rs, &job);
}

/* Socket monitor events (two frames: 6 bytes of event and value, then an
 * endpoint). Handshakes and disconnects are counted; oversized messages
 * surface only as disconnects (see AGG_COUNT_CONN_DISCONNECTS). */
static void monitor_some(struct agg_ingest *ing)
{
    for (int i = 0; i < RESULT_BURST; i++) {
        zmq_msg_t head;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, ing->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&head) >= 6) {
            memcpy(&event, zmq_msg_data(&head), sizeof(event));
            memcpy(&value, (const uint8_t *)zmq_msg_data(&head) + 2, sizeof(value));
        }
        bool more = zmq_msg_more(&head);
        zmq_msg_close(&head);
        while (more) {
            zmq_msg_t rest;
            zmq_msg_init(&rest);
            if (zmq_msg_recv(&rest, ing->monitor, 0) < 0) {
                zmq_msg_close(&rest);
                break;
            }
            more = zmq_msg_more(&rest);
            zmq_msg_close(&rest);
        }
        switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            count(AGG_COUNT_CONN_HANDSHAKES, 1);
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            count(AGG_COUNT_CONN_HANDSHAKE_FAILURES, 1);
            RSL_DEBUG("ingest", "handshake failed (event 0x%x, value %" PRIu32 ")",
                      (unsigned)event, value);
            break;
        case ZMQ_EVENT_DISCONNECTED:
            count(AGG_COUNT_CONN_DISCONNECTS, 1);
            RSL_DEBUG("ingest", "connection closed (fd %" PRIu32 "): peer left, failed its "
                      "handshake, or sent a message over max_message_bytes", value);
            break;
        default:
            break;
        }
    }
}

/* The socket thread: the only user of the ROUTER. Blocking poll with no
 * timeout while running: the control pipe wakes it for STOP. After STOP it
 * reads no new reports but keeps acknowledging until nothing is in flight
 * (or DRAIN_TIMEOUT_MS passed: then the rest is dropped unacknowledged and
 * its agents resend after their timeout). */
static void *router_main(void *arg)
{
    struct agg_ingest *ing = arg;
    /* Named threads: `top -H`, perf and gdb show which stage is busy. */
    pthread_setname_np(pthread_self(), "agg-socket");
    struct router_state rs = {0};
    bool accepting = true;
    int64_t drain_deadline = 0;
    zmq_pollitem_t items[4] = {
        {ing->router_pipe.child, 0, ZMQ_POLLIN, 0},
        {ing->results_in, 0, ZMQ_POLLIN, 0},
        {ing->monitor, 0, ZMQ_POLLIN, 0},
        {ing->router, 0, ZMQ_POLLIN, 0}, /* last: left out while draining */
    };
    for (;;) {
        int n = zmq_poll(items, accepting ? 4 : 3, accepting ? -1 : 100);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("ingest", "poll: %s; ingest stopped", zmq_strerror(errno));
            thread_lost(ing, "the socket thread");
            break;
        }
        /* Acks first: they free room in the queue for what comes next. */
        if (items[1].revents & ZMQ_POLLIN)
            acknowledge_some(ing, &rs);
        if (items[2].revents & ZMQ_POLLIN)
            monitor_some(ing);
        if (accepting && (items[3].revents & ZMQ_POLLIN) && receive_some(ing, &rs) < 0) {
            thread_lost(ing, "the socket thread");
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            pipe_consume(ing->router_pipe.child);
            /* After an internal failure the reports in flight may never
             * come back from a thread that is gone: no drain, the agents
             * resend them to the restarted aggregator. */
            if (atomic_load(&ing->failed))
                break;
            if (accepting) {
                accepting = false;
                drain_deadline = rsl_monotonic_ms() + DRAIN_TIMEOUT_MS;
                if (rs.in_flight > 0)
                    RSL_INFO("ingest", "stopping: waiting for %zu reports in flight",
                             rs.in_flight);
            }
        }
        if (!accepting) {
            if (rs.in_flight == 0)
                break;
            if (rsl_monotonic_ms() > drain_deadline) {
                RSL_WARN("ingest", "stopping with %zu reports unanswered (their agents will "
                         "resend)", rs.in_flight);
                break;
            }
        }
    }
    rs.in_flight = 0;
    rs.in_flight_bytes = 0;
    publish_books(&rs);
    return NULL;
}

/* ---- the verify workers --------------------------------------------------- */

/* Check up to WORKER_BURST jobs under one registry reference (a reload
 * takes effect from the next burst on), then pass each on: to the store
 * thread if it passed, straight back for its ack if not. */
static void verify_some(struct worker *w)
{
    struct agg_ingest *ing = w->ing;
    struct agg_registry *reg = NULL;
    struct job *job;
    for (int i = 0; i < WORKER_BURST && (job = job_receive(w->jobs_in)) != NULL; i++) {
        gauge_sub(&gauge_verify_queue, 1);
        if (reg == NULL)
            reg = agg_registry_holder_get(ing->registry);
        /* The verdict borrows the payload's bytes, which the job keeps. */
        if (job->payload_valid)
            agg_ingest_check_frame(zmq_msg_data(&job->payload), job->bytes, job->user_id,
                                   job->received_at_ms, reg, ing->cfg->taxonomy, ing->cfg,
                                   &job->verdict);
        bool to_store = job->verdict.store;
        if (to_store)
            gauge_add(&gauge_store_queue, 1);
        if (!job_send(to_store ? w->store_out : w->results_out, job, 0)) {
            /* Only when the context goes away; the socket thread has
             * stopped waiting by then. */
            if (to_store)
                gauge_sub(&gauge_store_queue, 1);
            RSL_ERR("ingest", "verify worker: cannot pass a report on: %s",
                    zmq_strerror(errno));
            job_free(&job);
        }
    }
    agg_registry_release(&reg);
}

/* The loop of a pipeline thread: run `work` whenever `in` has jobs, until
 * the STOP message arrives on `stop` (what is still queued then is drained
 * by agg_ingest_stop). Shared by the verify workers and the store thread. */
static void pipeline_loop(struct agg_ingest *ing, void *stop, void *in, void (*work)(void *),
                          void *ctx, const char *what)
{
    zmq_pollitem_t items[2] = {
        {stop, 0, ZMQ_POLLIN, 0},
        {in, 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("ingest", "%s: poll: %s; stopped", what, zmq_strerror(errno));
            thread_lost(ing, what);
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            work(ctx);
        if (items[0].revents & ZMQ_POLLIN)
            break;
    }
}

static void verify_some_cb(void *ctx)
{
    verify_some(ctx);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_setname_np(pthread_self(), "agg-verify");
    pipeline_loop(w->ing, w->pipe.child, w->jobs_in, verify_some_cb, w, "a verify worker");
    return NULL;
}

/* ---- the store thread ----------------------------------------------------- */

/* Failed batches: the first is logged at once, then at most one line per
 * STORE_FAIL_LOG_US saying how many failed meanwhile (every one is counted
 * in resilience_ingest_store_errors_total); the first batch that commits
 * again says so. */
#define STORE_FAIL_LOG_US (10u * 1000u * 1000u)

static void store_failed(struct agg_ingest *ing, size_t n, const struct rsl_error *err)
{
    uint64_t now = monotonic_us();
    ing->store_failing++;
    /* The window holds across successes too: a store that fails every
     * other batch is still one line per window, not two per pair. */
    if (ing->store_fail_logged_us != 0 && now - ing->store_fail_logged_us < STORE_FAIL_LOG_US) {
        ing->store_fail_unlogged++;
        return;
    }
    ing->store_fail_said = true;
    if (ing->store_fail_unlogged > 0)
        RSL_ERR("ingest", "storing %zu reports failed, asking their agents to retry: %s "
                "(%" PRIu64 " more batches failed since the last such line)", n, err->text,
                ing->store_fail_unlogged);
    else
        RSL_ERR("ingest", "storing %zu reports failed, asking their agents to retry: %s", n,
                err->text);
    ing->store_fail_logged_us = now;
    ing->store_fail_unlogged = 0;
}

static void store_succeeded(struct agg_ingest *ing)
{
    if (ing->store_failing == 0)
        return;
    /* Only after a run of failures that was logged: the line pairs with it. */
    if (ing->store_fail_said)
        RSL_NOTICE("ingest", "storing works again after %" PRIu64 " failed batches",
                   ing->store_failing);
    ing->store_failing = 0;
    ing->store_fail_said = false;
}

/* One group commit: everything verified and waiting (up to batch_max and
 * AGG_INGEST_BATCH_MAX_BYTES) in one transaction, then every verdict on to
 * the socket thread - only now, after COMMIT returned. */
static void store_some(struct agg_ingest *ing)
{
    size_t n = 0;
    size_t bytes = 0;
    struct job *job;
    while (n < ing->batch_max && bytes < AGG_INGEST_BATCH_MAX_BYTES &&
           (job = job_receive(ing->store_in)) != NULL) {
        ing->batch_jobs[n] = job;
        ing->batch_verdicts[n] = &job->verdict;
        bytes += job->bytes;
        n++;
    }
    if (n == 0)
        return;
    gauge_sub(&gauge_store_queue, n);

    struct rsl_error err;
    rsl_error_clear(&err);
    uint64_t started = monotonic_us();
    if (agg_ingest_store_batch(ing->store, ing->batch_verdicts, n, &err) != RSL_OK) {
        count(AGG_COUNT_STORE_ERRORS, 1);
        store_failed(ing, n, &err);
    } else {
        store_succeeded(ing);
        count(AGG_COUNT_COMMITS, 1);
        histogram_observe(AGG_HIST_COMMIT_SECONDS, monotonic_us() - started);
        histogram_observe(AGG_HIST_BATCH_REPORTS, n);
    }
    for (size_t i = 0; i < n; i++) {
        job = ing->batch_jobs[i];
        ing->batch_jobs[i] = NULL;
        const struct agg_verdict *v = &job->verdict;
        if (v->status == RESILIENCE__V1__ACK__STATUS__ACCEPTED && v->report != NULL)
            clocks_update(v->report->agent_id, v->report->nation,
                          agg_clock_offset_ms(v->report->created_at_ms, v->received_at_ms),
                          v->received_at_ms);
        if (!job_send(ing->store_results_out, job, 0)) {
            RSL_ERR("ingest", "store: cannot pass a verdict on: %s", zmq_strerror(errno));
            job_free(&job);
        }
    }
}

static void store_some_cb(void *ctx)
{
    store_some(ctx);
}

static void *store_main(void *arg)
{
    struct agg_ingest *ing = arg;
    pthread_setname_np(pthread_self(), "agg-store");
    pipeline_loop(ing, ing->store_pipe.child, ing->store_in, store_some_cb, ing,
                  "the store thread");
    return NULL;
}

/* ---- start / stop --------------------------------------------------------- */

int agg_ingest_router_new(void *zmq_ctx, const struct agg_config *cfg, void **out,
                          struct rsl_error *err)
{
    char path[AGG_PATH_MAX + 16];
    char secret[RSL_Z85_KEY_LEN + 1];
    void *router = NULL;
    int rc;

    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_router_new: NULL argument");
    *out = NULL;
    if (zmq_ctx == NULL || cfg == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_router_new: NULL argument");
    if (rsl_keys_path(cfg->keys_dir, "curve.key", path, sizeof(path)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "ingest: keys path too long");
    rc = rsl_curve_load_secret(path, secret, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "ingest");
        return rc;
    }

    router = zmq_socket(zmq_ctx, ZMQ_ROUTER);
    if (router == NULL) {
        rsl_secure_zero(secret, sizeof(secret));
        return rsl_error_set(err, RSL_EIO, "ingest: socket: %s", zmq_strerror(errno));
    }
    int one = 1;
    int linger = ROUTER_LINGER_MS;
    int rcvhwm = AGG_INGEST_RCVHWM;
    int64_t maxmsg = (int64_t)cfg->max_message_bytes;
    struct {
        int option;
        const void *value;
        size_t len;
        const char *name;
    } opts[] = {
        {ZMQ_CURVE_SERVER, &one, sizeof(one), "ZMQ_CURVE_SERVER"},
        {ZMQ_CURVE_SECRETKEY, secret, RSL_Z85_KEY_LEN, "ZMQ_CURVE_SECRETKEY"},
        {ZMQ_ZAP_DOMAIN, AGG_ZAP_DOMAIN, strlen(AGG_ZAP_DOMAIN), "ZMQ_ZAP_DOMAIN"},
        {ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof(one), "ZMQ_ZAP_ENFORCE_DOMAIN"},
        {ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg), "ZMQ_MAXMSGSIZE"},
        {ZMQ_ROUTER_MANDATORY, &one, sizeof(one), "ZMQ_ROUTER_MANDATORY"},
        {ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm), "ZMQ_RCVHWM"},
        {ZMQ_LINGER, &linger, sizeof(linger), "ZMQ_LINGER"},
    };
    rc = RSL_OK;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (zmq_setsockopt(router, opts[i].option, opts[i].value, opts[i].len) != 0) {
            /* Every option is security- or correctness-relevant: no
             * "best effort" start. */
            rc = rsl_error_set(err, RSL_EIO, "ingest: setting %s: %s", opts[i].name,
                               zmq_strerror(errno));
            break;
        }
    }
    rsl_secure_zero(secret, sizeof(secret));
    if (rc != RSL_OK)
        goto fail;

    /* Read the security options back: a libzmq that accepted but ignored
     * one (a build without the draft options, a future rename) must not
     * leave us with an open door. */
    int mechanism = 0;
    int enforce = 0;
    size_t optlen = sizeof(mechanism);
    if (zmq_getsockopt(router, ZMQ_MECHANISM, &mechanism, &optlen) != 0 ||
        mechanism != ZMQ_CURVE) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: the ROUTER is not a CURVE server");
        goto fail;
    }
    optlen = sizeof(enforce);
    if (zmq_getsockopt(router, ZMQ_ZAP_ENFORCE_DOMAIN, &enforce, &optlen) != 0 || enforce != 1) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: this libzmq does not enforce the ZAP domain; "
                           "refusing to start without authentication");
        goto fail;
    }

    for (size_t i = 0; i < cfg->n_bind; i++) {
        if (zmq_bind(router, cfg->bind[i]) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "ingest: bind %s: %s", cfg->bind[i],
                               zmq_strerror(errno));
            goto fail;
        }
    }
    char last[AGG_ENDPOINT_MAX];
    size_t last_len = sizeof(last);
    if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, last, &last_len) == 0)
        RSL_INFO("ingest", "listening on %s (CURVE, ZAP domain '%s')", last, AGG_ZAP_DOMAIN);
    *out = router;
    return RSL_OK;
fail:
    close_socket(&router);
    return rc;
}


static void stop_thread(struct control_pipe *p, pthread_t thread, bool *running)
{
    if (!*running)
        return;
    pipe_stop(p);
    pthread_join(thread, NULL);
    *running = false;
}

/* Stop whatever runs, in pipeline order (the socket thread first, so it
 * can still collect the answers of what it admitted), free what is left
 * in the queues, close every socket and the store. Used by stop and by a
 * failed start alike. */
static void ingest_shutdown(struct agg_ingest *ing)
{
    atomic_store(&ing->stopping, true);
    stop_thread(&ing->router_pipe, ing->router_thread, &ing->router_running);
    for (size_t i = 0; ing->workers != NULL && i < ing->n_workers; i++)
        stop_thread(&ing->workers[i].pipe, ing->workers[i].thread, &ing->workers[i].running);
    stop_thread(&ing->store_pipe, ing->store_thread, &ing->store_running);

    /* Every thread that used them has been joined: the sockets are ours
     * again. Reports still queued were never answered; their agents
     * resend. */
    size_t left = drain_jobs(ing->results_in) + drain_jobs(ing->store_in);
    for (size_t i = 0; ing->workers != NULL && i < ing->n_workers; i++)
        left += drain_jobs(ing->workers[i].jobs_in);
    if (left > 0)
        RSL_NOTICE("ingest", "%zu reports left unanswered at shutdown", left);
    gauge_set(&gauge_verify_queue, 0);
    gauge_set(&gauge_store_queue, 0);
    gauge_set(&gauge_in_flight, 0);
    gauge_set(&gauge_in_flight_bytes, 0);
    gauge_set(&gauge_workers, 0);

    for (size_t i = 0; ing->workers != NULL && i < ing->n_workers; i++) {
        struct worker *w = &ing->workers[i];
        close_socket(&w->jobs_in);
        close_socket(&w->store_out);
        close_socket(&w->results_out);
        pipe_close(&w->pipe);
    }
    /* The monitor is stopped before either end closes: libzmq 4.3 never
     * frees an event still queued towards a closed PAIR socket. */
    if (ing->router != NULL && ing->monitor != NULL)
        zmq_socket_monitor(ing->router, NULL, 0);
    close_socket(&ing->router);
    close_socket(&ing->monitor);
    close_socket(&ing->jobs_out);
    close_socket(&ing->results_in);
    close_socket(&ing->store_in);
    close_socket(&ing->store_results_out);
    pipe_close(&ing->router_pipe);
    pipe_close(&ing->store_pipe);
    agg_store_close(&ing->store);

    /* ZAP last: until the ROUTER is closed, a handshake could still ask. */
    stop_thread(&ing->zap_pipe, ing->zap_thread, &ing->zap_running);
    close_socket(&ing->zap_socket);
    pipe_close(&ing->zap_pipe);
    if (ing->ctx != NULL)
        zmq_ctx_term(ing->ctx);
    free(ing->workers);
    free(ing->batch_jobs);
    free(ing->batch_verdicts);
    free(ing);
}

/* The sockets of the pipeline, all created here, in the caller's thread.
 * The binding ends first, so each connect finds its peer. */
static int pipeline_open(struct agg_ingest *ing, struct rsl_error *err)
{
    char jobs[64], store[64], results[64], monitor[64];
    snprintf(jobs, sizeof(jobs), "inproc://agg-jobs-%p", (void *)ing);
    snprintf(store, sizeof(store), "inproc://agg-store-%p", (void *)ing);
    snprintf(results, sizeof(results), "inproc://agg-results-%p", (void *)ing);
    snprintf(monitor, sizeof(monitor), "inproc://agg-monitor-%p", (void *)ing);

    if ((ing->jobs_out = queue_socket(ing->ctx, ZMQ_PUSH, jobs, true, err)) == NULL ||
        (ing->store_in = queue_socket(ing->ctx, ZMQ_PULL, store, true, err)) == NULL ||
        (ing->results_in = queue_socket(ing->ctx, ZMQ_PULL, results, true, err)) == NULL ||
        (ing->store_results_out = queue_socket(ing->ctx, ZMQ_PUSH, results, false, err)) ==
            NULL)
        return RSL_EIO;
    for (size_t i = 0; i < ing->n_workers; i++) {
        struct worker *w = &ing->workers[i];
        w->ing = ing;
        if ((w->jobs_in = queue_socket(ing->ctx, ZMQ_PULL, jobs, false, err)) == NULL ||
            (w->store_out = queue_socket(ing->ctx, ZMQ_PUSH, store, false, err)) == NULL ||
            (w->results_out = queue_socket(ing->ctx, ZMQ_PUSH, results, false, err)) == NULL)
            return RSL_EIO;
        int rc = pipe_open(ing->ctx, &w->pipe, "worker", err);
        if (rc != RSL_OK)
            return rc;
    }
    int rc = pipe_open(ing->ctx, &ing->router_pipe, "router", err);
    if (rc == RSL_OK)
        rc = pipe_open(ing->ctx, &ing->store_pipe, "store", err);
    if (rc != RSL_OK)
        return rc;

    /* The ROUTER's monitor, for connection counts; a statistic, so a
     * failure here is logged, not fatal. */
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_DISCONNECTED;
    int zero = 0;
    if (zmq_socket_monitor(ing->router, monitor, events) == 0 &&
        (ing->monitor = zmq_socket(ing->ctx, ZMQ_PAIR)) != NULL) {
        zmq_setsockopt(ing->monitor, ZMQ_LINGER, &zero, sizeof(zero));
        if (zmq_connect(ing->monitor, monitor) != 0)
            close_socket(&ing->monitor);
    }
    if (ing->monitor == NULL)
        RSL_WARN("ingest", "no socket monitor (%s): connection events will not be counted",
                 zmq_strerror(errno));
    return RSL_OK;
}

int agg_ingest_start(const struct agg_config *cfg, struct agg_registry_holder *registry,
                     struct agg_store **store, struct agg_ingest **out, struct rsl_error *err)
{
    struct agg_ingest *ing = NULL;
    int rc;

    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_start: NULL argument");
    *out = NULL;
    if (cfg == NULL || registry == NULL || store == NULL || *store == NULL ||
        cfg->taxonomy == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_start: NULL argument");
    ing = calloc(1, sizeof(*ing));
    if (ing == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    atomic_init(&ing->stopping, false);
    atomic_init(&ing->failed, false);
    ing->cfg = cfg;
    ing->registry = registry;
    /* 0 (a config struct built by hand) means the default. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    ing->n_workers = cfg->ingest_workers > 0 ? (size_t)cfg->ingest_workers
                     : cores > 0 && cores <= AGG_MAX_WORKERS ? (size_t)cores : 1;
    ing->max_queue = cfg->ingest_max_queue > 0 ? cfg->ingest_max_queue : AGG_DEFAULT_MAX_QUEUE;
    ing->batch_max = cfg->ingest_batch_max > 0 ? cfg->ingest_batch_max : AGG_DEFAULT_BATCH_MAX;
    /* The loader enforces these bounds; a struct filled in by hand too. */
    if (ing->n_workers > AGG_MAX_WORKERS)
        ing->n_workers = AGG_MAX_WORKERS;
    if (ing->max_queue > AGG_MAX_QUEUE_MAX)
        ing->max_queue = AGG_MAX_QUEUE_MAX;
    if (ing->batch_max > AGG_BATCH_MAX_MAX)
        ing->batch_max = AGG_BATCH_MAX_MAX;
    /* Everything the threads need is allocated now: a thread that cannot
     * get its memory later would leave reports in flight forever. */
    ing->workers = calloc(ing->n_workers, sizeof(*ing->workers));
    ing->batch_jobs = calloc(ing->batch_max, sizeof(*ing->batch_jobs));
    ing->batch_verdicts = calloc(ing->batch_max, sizeof(*ing->batch_verdicts));
    if (ing->workers == NULL || ing->batch_jobs == NULL || ing->batch_verdicts == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto fail;
    }
    ing->ctx = zmq_ctx_new();
    if (ing->ctx == NULL) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if (!zmq_has("curve")) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: this libzmq has no CURVE support");
        goto fail;
    }

    /* 1. ZAP handler, bound before anything could ask it. */
    if ((rc = pipe_open(ing->ctx, &ing->zap_pipe, "zap", err)) != RSL_OK)
        goto fail;
    ing->zap_socket = zmq_socket(ing->ctx, ZMQ_REP);
    /* A reply nobody can take any more must not hold up zmq_ctx_term. */
    int zero = 0;
    if (ing->zap_socket != NULL)
        zmq_setsockopt(ing->zap_socket, ZMQ_LINGER, &zero, sizeof(zero));
    if (ing->zap_socket == NULL || zmq_bind(ing->zap_socket, ZAP_ENDPOINT) != 0) {
        rc = rsl_error_set(err, RSL_EIO,
                           "ingest: cannot bind the ZAP handler at %s (%s); refusing to start "
                           "without authentication", ZAP_ENDPOINT, zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&ing->zap_thread, NULL, zap_main, ing) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start the ZAP thread");
        goto fail;
    }
    ing->zap_running = true;
    /* The ZAP thread owns zap_socket and zap_pipe.child now and closes them
     * itself (NULLing the fields) before it ends. */

    /* 2. The ROUTER and the pipeline's queues. */
    if ((rc = agg_ingest_router_new(ing->ctx, cfg, &ing->router, err)) != RSL_OK)
        goto fail;
    if ((rc = pipeline_open(ing, err)) != RSL_OK)
        goto fail;

    /* 3. Threads, from the back of the pipeline to the front. The store
     * moves in first (a failure below still closes it: the caller is told
     * through *store staying set only if nothing started). */
    {
        struct rsl_error seed_err;
        rsl_error_clear(&seed_err);
        if (agg_store_agents(*store, clocks_seed_cb, NULL, &seed_err) != RSL_OK)
            RSL_WARN("ingest", "clock offsets not restored: %s", seed_err.text);
    }
    ing->store = *store;
    if (pthread_create(&ing->store_thread, NULL, store_main, ing) != 0) {
        ing->store = NULL;
        rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start the store thread");
        goto fail;
    }
    ing->store_running = true;
    *store = NULL; /* transferred */
    for (size_t i = 0; i < ing->n_workers; i++) {
        if (pthread_create(&ing->workers[i].thread, NULL, worker_main, &ing->workers[i]) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start verify worker %zu", i + 1);
            goto fail_started;
        }
        ing->workers[i].running = true;
    }
    gauge_set(&gauge_max_queue, ing->max_queue);
    gauge_set(&gauge_workers, ing->n_workers);
    if (pthread_create(&ing->router_thread, NULL, router_main, ing) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start the socket thread");
        goto fail_started;
    }
    ing->router_running = true;
    RSL_INFO("ingest", "%zu verify workers, max_queue %zu, batch_max %zu", ing->n_workers,
             ing->max_queue, ing->batch_max);
    *out = ing;
    return RSL_OK;

fail_started:
    /* The store has moved in: hand it back so the contract "on failure
     * *store is left with the caller" holds (no thread uses it any more
     * once they are stopped). */
    for (size_t i = 0; i < ing->n_workers; i++)
        stop_thread(&ing->workers[i].pipe, ing->workers[i].thread, &ing->workers[i].running);
    stop_thread(&ing->store_pipe, ing->store_thread, &ing->store_running);
    *store = ing->store;
    ing->store = NULL;
fail:
    ingest_shutdown(ing);
    return rc;
}

void agg_ingest_stop(struct agg_ingest **ingestp)
{
    if (ingestp == NULL || *ingestp == NULL)
        return;
    ingest_shutdown(*ingestp);
    *ingestp = NULL;
}
