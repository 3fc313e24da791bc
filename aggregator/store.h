/*
 * store.h - the aggregator's one storage module: all SQL lives behind this
 * narrow interface (a PostgreSQL backend for replicated deployments will
 * implement the same functions).
 *
 * Embedded backend: SQLite, WAL, synchronous=FULL, one file. The ingest
 * thread owns one read-write handle and groups many reports per transaction
 * (agg_store_begin / agg_store_append ... / agg_store_commit); every report in
 * a batch is acknowledged only after agg_store_commit returned RSL_OK. Each
 * HTTPS thread opens its own read-only handle (WAL readers never block the
 * writer). A handle is used by one thread only.
 *
 * Tables (private): reports (agent_id, sequence UNIQUE, original signed
 * bytes, digest of the report bytes), measurements (history, indexed by
 * nation, indicator, observed_at_ms), current (latest observation per nation
 * and indicator, kept incrementally in the same transaction so the present
 * never rescans history), agents (last sequence, last report time).
 */
#ifndef AGG_STORE_H
#define AGG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"

struct agg_store;

/* Open (creating the file and schema if needed, unless read_only). Runs
 * PRAGMA quick_check and refuses a corrupt store with RSL_ECORRUPT and a
 * message naming the file. */
int agg_store_open(const char *path, bool read_only, struct agg_store **out, struct rsl_error *err);
void agg_store_close(struct agg_store **store);

/* One verified report to append. `excluded[i]` is true for measurements
 * left out of aggregation (unknown indicator or unit): they are stored in
 * history but never enter `current`. */
struct agg_report_in {
    const char *agent_id;
    const char *nation;
    uint64_t sequence;
    int64_t created_at_ms;
    int64_t received_at_ms;
    const char *key_id;
    const uint8_t *signed_bytes;   /* the whole SignedReport frame */
    size_t signed_len;
    const uint8_t *report_bytes;   /* SignedReport.report */
    size_t report_len;
    const rsl_report *report;      /* decoded report_bytes */
    const bool *excluded;          /* report->n_measurements entries */
};

enum agg_append_result {
    AGG_APPEND_INSERTED = 0,  /* new (agent_id, sequence): stored */
    AGG_APPEND_DUPLICATE = 1, /* same (agent_id, sequence) and same bytes: nothing stored */
    AGG_APPEND_CONFLICT = 2,  /* same (agent_id, sequence), different bytes: equivocation */
};

int agg_store_begin(struct agg_store *store, struct rsl_error *err);
/* On success *result says what happened. Errors leave the transaction to be
 * rolled back by the caller. */
int agg_store_append(struct agg_store *store, const struct agg_report_in *in,
                     enum agg_append_result *result, struct rsl_error *err);
int agg_store_commit(struct agg_store *store, struct rsl_error *err);
void agg_store_rollback(struct agg_store *store);

/* Outside a batch: is (agent_id, sequence) stored, and with which bytes?
 * RSL_OK with *found. Used to answer duplicates without a write. */
int agg_store_lookup(struct agg_store *store, const char *agent_id, uint64_t sequence,
                     bool *found, uint8_t digest[32], struct rsl_error *err);

/* One observation as the read side sees it. Strings are borrowed for the
 * duration of the callback only. */
struct agg_value {
    const char *nation;
    const char *indicator;
    const char *unit;
    const char *agent_id;
    double value;
    int64_t observed_at_ms;
    int64_t received_at_ms;
};
typedef int (*agg_value_cb)(void *ctx, const struct agg_value *value);

/* For every (nation, indicator), the aggregated (non-excluded) observation
 * with the latest observed_at_ms at or before `at_ms`; at_ms < 0 means now
 * and reads the incrementally kept current table. Ties on observed_at_ms
 * go to the later-received report. A non-zero return from cb stops the walk
 * and is returned. */
int agg_store_latest(struct agg_store *store, int64_t at_ms, agg_value_cb cb, void *ctx,
                     struct rsl_error *err);

/* Counts for /healthz and metrics. */
struct agg_store_stats {
    int64_t reports;
    int64_t measurements;
};
int agg_store_stats(struct agg_store *store, struct agg_store_stats *out, struct rsl_error *err);

#endif
