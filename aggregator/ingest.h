/*
 * ingest.h - the aggregator's ZeroMQ side: authenticate agents (ZAP),
 * receive SignedReports on a CURVE ROUTER, verify, store, acknowledge.
 *
 * Two threads, each owning its sockets:
 *   - the ZAP handler: a REP socket on inproc://zeromq.zap.01 that admits a
 *     CURVE client only if its public key is enrolled in the registry, and
 *     names the connection with the agent id (ZAP user id);
 *   - the ingest thread: the ROUTER (CURVE server, ZAP domain "resilience"
 *     enforced so it fails closed), batching up to AGG_INGEST_BATCH_MAX
 *     reports (and at most AGG_INGEST_BATCH_MAX_BYTES) per store
 *     transaction and acknowledging each only after the transaction
 *     committed.
 * The caller talks to them only through agg_ingest_start / agg_ingest_stop
 * (inproc PAIR pipes underneath); the store handle moves into the ingest
 * thread, the registry holder is shared (it has its own lock).
 *
 * The decision about one frame is a pure function with no sockets
 * (agg_ingest_check_frame), and the transaction around a batch of them is
 * another (agg_ingest_store_batch): the ingest thread is only the glue
 * between them and the ROUTER, and tests and the fuzz target drive the two
 * functions directly.
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

#define AGG_INGEST_BATCH_MAX 256
/* A batch also stops growing once its frames add up to this many bytes, so
 * the memory held by one batch does not scale with max_message_bytes. */
#define AGG_INGEST_BATCH_MAX_BYTES (16u * 1024u * 1024u)
/* Messages queued per connected agent inside libzmq before it stops reading
 * that agent's TCP stream (back-pressure, nothing is dropped): bounds the
 * per-peer memory to this many times max_message_bytes. Several times the
 * agent's send window (32). */
#define AGG_INGEST_RCVHWM 128
#define AGG_ZAP_DOMAIN "resilience"

/* Outcome counters, process-wide, for /metrics. */
enum agg_ingest_counter {
    AGG_COUNT_ACCEPTED = 0,
    AGG_COUNT_DUPLICATE,
    AGG_COUNT_EXCLUDED_MEASUREMENTS, /* measurements left out of aggregation */
    AGG_COUNT_RETRY_LATER,           /* reports answered RETRY_LATER (store failure) */
    /* rejections by reason: */
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

/* First counter that is a rejection reason (for a "rejected{reason=...}"
 * family): AGG_COUNT_MALFORMED .. AGG_COUNT_N-1. */
#define AGG_COUNT_FIRST_REJECTION AGG_COUNT_MALFORMED

/* Current value of a counter (relaxed atomic read; monotonic). */
uint64_t agg_ingest_counter(enum agg_ingest_counter c);
/* Snake-case name: "accepted", "bad_signature", ... ; "unknown" if out of range. */
const char *agg_ingest_counter_name(enum agg_ingest_counter c);

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
    enum agg_ingest_counter reason;      /* REJECTED: why; otherwise AGG_COUNT_N */
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
    size_t n_excluded;
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
 * Returns RSL_OK whenever a verdict was reached, RSL_EINVAL for NULL
 * arguments (then out, if not NULL, is a cleared verdict). */
int agg_ingest_check_frame(const uint8_t *frame, size_t len, const char *zap_user_id,
                           int64_t now_ms, const struct agg_registry *reg,
                           const struct rsl_taxonomy *tax, const struct agg_config *cfg,
                           struct agg_verdict *out);

/* Store every verdict with `store` set in ONE transaction on `store`, then
 * settle them: after COMMIT returned, ACCEPTED (new), DUPLICATE (same
 * agent_id, sequence and Report bytes already stored) or REJECTED with
 * reason AGG_COUNT_EQUIVOCATION (same agent_id and sequence, other bytes).
 * If anything fails (begin, an append, commit) the transaction is rolled
 * back, every such verdict becomes RETRY_LATER and the store error is
 * returned (err says what). Verdicts without `store` are left alone. */
int agg_ingest_store_batch(struct agg_store *store, struct agg_verdict *const *verdicts, size_t n,
                           struct rsl_error *err);

/* Count a final verdict (accepted / duplicate / retry_later / the
 * rejection reason) and log rejections (equivocation as a warning). */
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
 * bound: without it libzmq would admit any CURVE key), then the ingest
 * thread, which loads keys/curve.key, binds every cfg->bind endpoint and
 * reports back. On RSL_OK both threads run and *store has moved in (NULLed).
 * On failure nothing runs, *store is left with the caller and err says why
 * ("ingest: bind tcp://HOST:PORT: Address already in use").
 * cfg, registry must outlive the ingest. */
int agg_ingest_start(const struct agg_config *cfg, struct agg_registry_holder *registry,
                     struct agg_store **store, struct agg_ingest **out, struct rsl_error *err);

/* Stop: the ingest thread finishes the batch in hand (commit, acks), closes
 * the ROUTER and the store; then the ZAP thread stops. NULL-safe. Never
 * blocks on a thread that has already ended. */
void agg_ingest_stop(struct agg_ingest **ingest);

#endif
