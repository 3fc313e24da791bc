/*
 * ingest.h - the aggregator's ZeroMQ side: authenticate agents (ZAP),
 * receive SignedReports on a CURVE ROUTER, verify them on a pool of
 * threads, store them with group commit, acknowledge each after its own
 * transaction committed.
 *
 * The pipeline (one arrow = one inproc PUSH/PULL pair carrying pointers to
 * jobs; ownership of a job moves with its message):
 *
 *   agents --CURVE--> [socket thread] --jobs--> [verify workers x N]
 *                       ^   owns the ROUTER          |  REJECTED      | passed
 *                       |                            v                v
 *                       +------------ results <------+----- [store thread]
 *                                                         group commit
 *
 *   - the ZAP thread: a REP socket on inproc://zeromq.zap.01 that admits a
 *     CURVE client only if its public key is enrolled in the registry, and
 *     names the connection with the agent id (ZAP user id);
 *   - the socket thread alone owns the ROUTER (CURVE server, ZAP domain
 *     enforced so it fails closed, ZMQ_ROUTER_MANDATORY): it receives,
 *     admits a report into the pipeline or answers RETRY_LATER when
 *     cfg->ingest_max_queue reports (or AGG_INGEST_QUEUE_BYTES_MAX bytes)
 *     are already in flight, and sends every ack;
 *   - cfg->ingest_workers verify threads run agg_ingest_check_frame (decode,
 *     registry, Ed25519, the SHA-256 the store compares) - the expensive,
 *     parallel part;
 *   - the store thread takes whatever has been verified, up to
 *     cfg->ingest_batch_max reports, into ONE transaction (synchronous=FULL)
 *     and only after COMMIT returned passes each verdict on for its ack.
 * Memory is bounded by the admission limit at the single entry point: no
 * queue behind it can hold more than what was admitted.
 *
 * The decision about one frame is a pure function with no sockets
 * (agg_ingest_check_frame), and the transaction around a batch of them is
 * another (agg_ingest_store_batch): the threads are only the glue between
 * them and the ROUTER, and tests and the fuzz target drive the two
 * functions directly.
 *
 * Metrics for GET /metrics (the HTTPS side reads them, no lock needed for
 * the caller): agg_ingest_counter (monotonic counters), agg_ingest_gauges
 * (queue depths), agg_ingest_histogram (ack latency, reports per commit,
 * commit time), agg_ingest_clock_offsets (per agent), or all of it at once
 * in Prometheus text format with agg_ingest_metrics_text. They are
 * process-wide: one aggregator runs one ingest.
 */
#ifndef AGG_INGEST_H
#define AGG_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "registry.h"
#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/taxonomy.h"
#include "store.h"

/* A store transaction also stops growing once its frames add up to this
 * many bytes, so the memory held by one batch does not scale with
 * max_message_bytes. */
#define AGG_INGEST_BATCH_MAX_BYTES (16u * 1024u * 1024u)
/* Bytes of reports in flight (admitted, not yet acknowledged) beyond which
 * new reports are answered RETRY_LATER, whatever max_queue says: bounds the
 * pipeline's memory even with large max_message_bytes. Decoded, an
 * ordinary report holds about six times its frame (the decoder's arena,
 * lib/codec.c): a few tens of MiB at the default max_queue. Frames of
 * many tiny measurements hold more per byte; RSL_MAX_MEASUREMENTS caps
 * each report. */
#define AGG_INGEST_QUEUE_BYTES_MAX (256u * 1024u * 1024u)
/* Messages queued per connected agent inside libzmq before it stops reading
 * that agent's TCP stream (back-pressure, nothing is dropped): bounds the
 * per-peer memory to this many times max_message_bytes. Twice the agent's
 * default send window (512), so a whole window plus its resends can wait
 * while the socket thread is busy, and a single backfilling agent is never
 * held up by libzmq rather than by the pipeline. */
#define AGG_INGEST_RCVHWM 1024
#define AGG_ZAP_DOMAIN "resilience"

/* ---- metrics -------------------------------------------------------------- */

/* Counters, process-wide, monotonic. The rejection reasons are contiguous
 * and last: AGG_COUNT_FIRST_REJECTION .. AGG_COUNT_N - 1. */
enum agg_ingest_counter {
    /* outcomes (one per acknowledged report) */
    AGG_COUNT_ACCEPTED = 0,
    AGG_COUNT_DUPLICATE,
    AGG_COUNT_RETRY_LATER,           /* all RETRY_LATER answers, whatever the cause */
    /* RETRY_LATER by cause (they add up to AGG_COUNT_RETRY_LATER) */
    AGG_COUNT_RETRY_QUEUE_FULL,      /* back-pressure: max_queue reports in flight */
    AGG_COUNT_RETRY_STORE_ERROR,     /* the transaction failed (disk full, I/O error) */
    AGG_COUNT_RETRY_OTHER,           /* out of memory, unreadable message, shutdown */
    /* measurements left out of aggregation (the report is accepted) */
    AGG_COUNT_EXCLUDED_MEASUREMENTS, /* total of the three below */
    AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR,
    AGG_COUNT_EXCLUDED_UNIT,         /* unit is not the taxonomy's */
    AGG_COUNT_EXCLUDED_FUTURE,       /* observed_at_ms beyond the skew limit */
    /* transport */
    AGG_COUNT_ACKS_UNDELIVERED,      /* peer gone or at its high-water mark */
    AGG_COUNT_ZAP_ADMITTED,          /* CURVE handshakes admitted by ZAP */
    AGG_COUNT_ZAP_REFUSED,           /* ... refused (unknown key, not CURVE) */
    AGG_COUNT_CONN_HANDSHAKES,       /* sessions established (socket monitor) */
    AGG_COUNT_CONN_HANDSHAKE_FAILURES,
    /* Connections closed, for any reason: a peer closing, a failed
     * handshake, or a message over max_message_bytes - libzmq drops that
     * message and the connection and (4.3) reports nothing more specific
     * than this event, so oversized messages are counted here, not in
     * AGG_COUNT_OVERSIZED (which counts only frames that were read). */
    AGG_COUNT_CONN_DISCONNECTS,
    /* store */
    AGG_COUNT_COMMITS,               /* transactions committed */
    AGG_COUNT_STORE_ERRORS,          /* transactions that failed */
    /* registry (SIGHUP) */
    AGG_COUNT_REGISTRY_RELOADS,
    AGG_COUNT_REGISTRY_RELOAD_FAILURES,
    /* rejections by reason (REJECTED acks): */
    AGG_COUNT_MALFORMED,
    AGG_COUNT_OVERSIZED,
    AGG_COUNT_UNKNOWN_AGENT,
    AGG_COUNT_UNKNOWN_KEY,
    AGG_COUNT_REVOKED_KEY,
    AGG_COUNT_BAD_SIGNATURE,
    AGG_COUNT_WRONG_SENDER,
    AGG_COUNT_NATION_MISMATCH,
    AGG_COUNT_FUTURE_TIMESTAMP,
    AGG_COUNT_EQUIVOCATION,
    AGG_COUNT_N
};

#define AGG_COUNT_FIRST_REJECTION AGG_COUNT_MALFORMED

/* Current value of a counter (relaxed atomic read; monotonic); 0 if out of
 * range. Safe from any thread. */
uint64_t agg_ingest_counter(enum agg_ingest_counter c);
/* Snake-case name, the label value of the counter within its metric family
 * (agg_ingest_metrics_text): "bad_signature" (reason), "queue_full"
 * (retry cause), "unit_mismatch" (exclusion reason), "admitted" (ZAP),
 * "disconnected" (connection event), "ok"/"failed" (registry reloads),
 * "accepted", ...; "unknown" if out of range. */
const char *agg_ingest_counter_name(enum agg_ingest_counter c);
/* Add to a counter (the daemon counts registry reloads with this). */
void agg_ingest_counter_add(enum agg_ingest_counter c, uint64_t n);

/* Point-in-time gauges of the running ingest (all 0 when none runs). */
struct agg_ingest_gauges {
    uint64_t in_flight;        /* admitted, not yet acknowledged */
    uint64_t in_flight_bytes;
    uint64_t verify_queue;     /* waiting for (or in) a verify worker */
    uint64_t store_queue;      /* verified, waiting for (or in) a transaction */
    uint64_t max_queue;        /* the admission limit (cfg->ingest_max_queue) */
    uint64_t workers;          /* verify threads */
};
void agg_ingest_gauges(struct agg_ingest_gauges *out);

/* Histograms with fixed buckets. */
enum agg_ingest_histogram {
    AGG_HIST_ACK_LATENCY = 0,  /* seconds from receipt to ack sent, per report */
    AGG_HIST_BATCH_REPORTS,    /* reports per store transaction */
    AGG_HIST_COMMIT_SECONDS,   /* duration of one store transaction, fsync included */
    AGG_HIST_N
};
#define AGG_HIST_MAX_BUCKETS 16
struct agg_histogram_snapshot {
    const char *name;          /* Prometheus metric name */
    const char *help;
    size_t n_buckets;          /* finite buckets; +Inf is `count` */
    double upper_bounds[AGG_HIST_MAX_BUCKETS];
    uint64_t cumulative[AGG_HIST_MAX_BUCKETS]; /* observations <= upper_bounds[i] */
    uint64_t count;
    double sum;
};
/* Copy a histogram (each field read atomically; the copy as a whole is not
 * one instant, as is usual for Prometheus client libraries). */
void agg_ingest_histogram(enum agg_ingest_histogram h, struct agg_histogram_snapshot *out);

/* Per agent: the clock offset of its latest received accepted report
 * (agg_clock_offset_ms: created_at_ms - received_at_ms; it includes
 * transit and spool delay), as also kept in the store's agents table. */
struct agg_agent_clock {
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    int64_t offset_ms;
    int64_t last_received_ms;
};
/* A snapshot, sorted by agent id, in a new array the caller frees (NULL
 * and 0 when empty). RSL_ENOMEM on allocation failure. Thread-safe. */
int agg_ingest_clock_offsets(struct agg_agent_clock **out, size_t *n);

/* Every metric above in the Prometheus text exposition format (version
 * 0.0.4): HELP and TYPE lines, then samples, "\n"-terminated. Metric names:
 *   resilience_reports_accepted_total, resilience_reports_duplicate_total,
 *   resilience_reports_rejected_total{reason},
 *   resilience_reports_retry_later_total{reason=queue_full|store_error|other},
 *   resilience_measurements_excluded_total{reason},
 *   resilience_ingest_in_flight, resilience_ingest_in_flight_bytes,
 *   resilience_ingest_queue_depth{stage=verify|store},
 *   resilience_ingest_queue_limit, resilience_ingest_workers,
 *   resilience_ingest_ack_latency_seconds (histogram),
 *   resilience_ingest_batch_reports (histogram),
 *   resilience_ingest_commit_seconds (histogram),
 *   resilience_ingest_store_errors_total, resilience_ingest_acks_undelivered_total,
 *   resilience_ingest_zap_total{result=admitted|refused},
 *   resilience_ingest_connection_events_total{event=handshake_succeeded|
 *     handshake_failed|disconnected},
 *   resilience_registry_reloads_total{result=ok|failed},
 *   resilience_agent_clock_offset_seconds{agent,nation},
 *   resilience_agent_last_report_timestamp_seconds{agent,nation}.
 * *out is a new NUL-terminated buffer the caller frees, *len its length.
 * RSL_ENOMEM on allocation failure. Thread-safe. */
int agg_ingest_metrics_text(char **out, size_t *len);

/* ---- one frame, without sockets ---------------------------------------- */

/* What becomes of one received SignedReport frame.
 *
 * `status` is the Ack status to send. agg_ingest_check_frame never sets
 * ACCEPTED or DUPLICATE: a frame that passes every check has `store` set and
 * status RETRY_LATER ("not committed yet"); only agg_ingest_store_batch,
 * after COMMIT returned, turns it into ACCEPTED, DUPLICATE or (equivocation)
 * REJECTED. So a verdict that is sent without its transaction having
 * committed can at worst make the agent resend. */
struct agg_verdict {
    int status;                          /* RESILIENCE__V1__ACK__STATUS__* */
    /* REJECTED: the reason (a rejection counter). RETRY_LATER: its cause
     * (AGG_COUNT_RETRY_*) once known, AGG_COUNT_N while nothing is decided.
     * Otherwise AGG_COUNT_N. */
    enum agg_ingest_counter reason;
    bool store;                          /* passed every check: goes to the store */
    char detail[RSL_ACK_DETAIL_MAX + 1]; /* the Ack detail: ASCII, one line */
    /* Who the ack is for: from the report, or for a Report that fails
     * validation a best-effort read of its top-level fields (only when
     * well-formed), so the agent can match a REJECTED ack to its spool. */
    char agent_id[RSL_AGENT_ID_MAX + 1];
    uint64_t sequence;
    char user_id[RSL_AGENT_ID_MAX + 1];  /* the ZAP user id the frame came with */
    const uint8_t *frame;                /* borrowed: the SignedReport bytes */
    size_t frame_len;
    int64_t received_at_ms;              /* the `now_ms` the frame was checked at */
    rsl_signed_report *signed_report;    /* owned; NULL unless decoded */
    rsl_report *report;                  /* owned; NULL unless decoded and valid */
    bool *excluded;                      /* owned; report->n_measurements flags */
    /* SHA-256 of the Report bytes, set with `store` (hashed on the verify
     * worker, so the serial store thread does not: agg_report_in). */
    uint8_t report_digest[32];
    bool has_report_digest;              /* report_digest is set */
    size_t n_excluded;                   /* = the three below added up */
    size_t n_excluded_unknown_indicator;
    size_t n_excluded_unit;
    size_t n_excluded_future;
    int append_result;                   /* agg_ingest_store_batch's scratch */
};

/* Free what a verdict owns and reset it to "RETRY_LATER, nothing decided"
 * (never to ACCEPTED, which is the protobuf zero value). NULL-safe. */
void agg_verdict_clear(struct agg_verdict *v);

/* Decide about one frame: decode the SignedReport (at most
 * cfg->max_message_bytes) and the Report, then check, in this order: the
 * agent is enrolled in `reg`, key_id is one of its keys and not revoked,
 * the signature verifies over the domain prefix and the report bytes, the
 * connection's ZAP user id (`zap_user_id`, "" or NULL if none) is that
 * agent, the nation is the enrolled one, created_at_ms is at most
 * cfg->max_future_skew_ms ahead of `now_ms`. A report that passes is marked
 * for the store, and its measurements that are not aggregated (indicator
 * not in `tax`, unit not the taxonomy's, observed more than the skew limit
 * in the future) are flagged in `excluded` and named in `detail`.
 * `frame` is borrowed by the verdict and must outlive it. *out is
 * overwritten, not freed (it may be uninitialised): agg_verdict_clear a
 * verdict before reusing it, and when done. No side effects: nothing
 * is counted or logged (agg_ingest_record does that for the final verdict).
 * Thread-safe (reg and tax are only read). Returns RSL_OK whenever a
 * verdict was reached, RSL_EINVAL for NULL arguments (then out, if not
 * NULL, is a cleared verdict). */
int agg_ingest_check_frame(const uint8_t *frame, size_t len, const char *zap_user_id,
                           int64_t now_ms, const struct agg_registry *reg,
                           const struct rsl_taxonomy *tax, const struct agg_config *cfg,
                           struct agg_verdict *out);

/* Store every verdict with `store` set in ONE transaction on `store`, then
 * settle them: after COMMIT returned, ACCEPTED (new), DUPLICATE (same
 * agent_id, sequence and Report bytes already stored) or REJECTED with
 * reason AGG_COUNT_EQUIVOCATION (same agent_id and sequence, other bytes).
 * The agent's last sequence and clock offset are written in the same
 * transaction. If anything fails (begin, an append, commit) the
 * transaction is rolled back, every such verdict becomes RETRY_LATER
 * (reason AGG_COUNT_RETRY_STORE_ERROR) and the store error is returned
 * (err says what). Verdicts without `store` are left alone. */
int agg_ingest_store_batch(struct agg_store *store, struct agg_verdict *const *verdicts, size_t n,
                           struct rsl_error *err);

/* Count a final verdict (accepted / duplicate / retry_later and its cause /
 * the rejection reason / excluded measurements by reason) and log it:
 * rejections at notice (equivocation as a warning), accepted reports with
 * excluded measurements at info, the rest at debug. */
void agg_ingest_record(const struct agg_verdict *v);

/* ---- sockets and threads ------------------------------------------------ */

/* Create the ROUTER in `zmq_ctx` with every option the ingest relies on,
 * all set before binding and the security ones read back: CURVE server
 * with the secret key from cfg->keys_dir/curve.key, ZAP domain
 * AGG_ZAP_DOMAIN with ZMQ_ZAP_ENFORCE_DOMAIN (no handler in the context:
 * every handshake fails), ZMQ_MAXMSGSIZE = cfg->max_message_bytes,
 * ZMQ_ROUTER_MANDATORY, AGG_INGEST_RCVHWM, a bounded linger; then bind
 * every cfg->bind endpoint. The caller owns *out (zmq_close). */
int agg_ingest_router_new(void *zmq_ctx, const struct agg_config *cfg, void **out,
                          struct rsl_error *err);

struct agg_ingest;

/* Start the ZAP handler (refusing to continue if its endpoint cannot be
 * bound: without it libzmq would admit any CURVE key), then the store
 * thread, the verify workers and the socket thread (which owns the ROUTER,
 * bound here so bind errors come back synchronously). cfg->ingest_workers,
 * ingest_max_queue and ingest_batch_max of 0 mean their defaults. On
 * RSL_OK every thread runs and *store has moved in (NULLed). On failure
 * nothing runs, *store is left with the caller and err says why
 * ("ingest: bind tcp://HOST:PORT: Address already in use").
 * cfg, registry must outlive the ingest. */
int agg_ingest_start(const struct agg_config *cfg, struct agg_registry_holder *registry,
                     struct agg_store **store, struct agg_ingest **out, struct rsl_error *err);

/* Stop: the socket thread stops reading new reports and waits until every
 * admitted one has been answered (committed and acked, or rejected); then
 * the workers, the store thread (closing the store) and the ZAP thread
 * stop. NULL-safe. Never blocks on a thread that has already ended. */
void agg_ingest_stop(struct agg_ingest **ingest);

/* True once a pipeline thread has ended on its own (see thread_lost in
 * ingest.c): the daemon has been sent SIGTERM and should exit with
 * AGG_EXIT_INTERNAL so that its supervisor restarts it. */
bool agg_ingest_failed(const struct agg_ingest *ingest);

/* Exit status of a daemon stopped by an internal failure at run time (not
 * a configuration error: systemd's Restart=on-failure restarts it). */
#define AGG_EXIT_INTERNAL 3

#endif
