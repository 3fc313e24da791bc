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
 *     reports per store transaction and acknowledging each only after the
 *     transaction committed.
 * The caller talks to them only through agg_ingest_start / agg_ingest_stop
 * (inproc PAIR pipes underneath); the store handle moves into the ingest
 * thread, the registry holder is shared (it has its own lock).
 */
#ifndef AGG_INGEST_H
#define AGG_INGEST_H

#include <stdint.h>

#include "config.h"
#include "registry.h"
#include "rsl/error.h"
#include "store.h"

#define AGG_INGEST_BATCH_MAX 256
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
 * the ROUTER and the store; then the ZAP thread stops. NULL-safe. */
void agg_ingest_stop(struct agg_ingest **ingest);

#endif
