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
/* Process-wide SQLite settings, applied once before SQLite's first use
 * (agg_store_open and agg_outbox_open call it; a program that opens
 * databases by other means should call it first): memory statistics off. */
void agg_store_sqlite_setup(void);
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
    /* SHA-256 of report_bytes if the caller has it (ingest hashes on its
     * verify workers, off the serial store thread); NULL: the store hashes. */
    const uint8_t *report_digest;
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
    /* Partner ids the nation released the measurement to, comma-joined as
     * agg_store_join_releasable writes them; "" for none. Set by
     * agg_store_latest only (other walks leave it NULL). */
    const char *releasable_to;
};
typedef int (*agg_value_cb)(void *ctx, const struct agg_value *value);

/* For every (nation, indicator), the aggregated (non-excluded) observation
 * with the latest observed_at_ms at or before `at_ms`; at_ms < 0 means now
 * and reads the incrementally kept current table. Ties on observed_at_ms
 * go to the later-received report (received in the same millisecond: to
 * the row stored later). A non-zero return from cb stops the walk
 * and is returned. */
int agg_store_latest(struct agg_store *store, int64_t at_ms, agg_value_cb cb, void *ctx,
                     struct rsl_error *err);

/* Counts for /healthz and metrics. */
struct agg_store_stats {
    int64_t reports;
    int64_t measurements;
};
int agg_store_stats(struct agg_store *store, struct agg_store_stats *out, struct rsl_error *err);

/* An agent's clock offset as the store keeps it (agents.clock_offset_ms)
 * and /metrics shows it: created_at_ms - received_at_ms, saturated to the
 * int64 range. Positive: the agent's clock is ahead. It includes transit
 * and queueing, so a report resent from a spool after an outage shows its
 * age (strongly negative) until the agent has caught up. */
int64_t agg_clock_offset_ms(int64_t created_at_ms, int64_t received_at_ms);

/* ---- the audit walk (issue 4; resilience-ctl audit) ---------------------- */

/* One stored measurement row as written by agg_store_append. */
struct agg_stored_measurement {
    int64_t idx;               /* position in the report's measurements */
    const char *nation;
    const char *indicator;
    double value;
    const char *unit;
    int64_t observed_at_ms;
    int64_t received_at_ms;
    const char *agent_id;
    bool excluded;
    const char *releasable_to; /* comma-joined */
    const char *source;
};

/* At most this many measurement rows of one report are handed to the
 * callback (one more than a valid report can have, so an excess shows). */
#define AGG_STORE_AUDIT_MAX_ROWS (RSL_MAX_MEASUREMENTS + 1)

/* One stored report: its columns, its original signed bytes, and its
 * measurement rows ordered by idx. Everything is borrowed for the duration
 * of the callback only. */
struct agg_stored_report {
    int64_t id;                        /* storage order */
    const char *agent_id;
    uint64_t sequence;
    const char *nation;
    const char *key_id;
    int64_t created_at_ms;
    int64_t received_at_ms;
    const uint8_t *digest;             /* SHA-256 of the Report bytes, as stored */
    size_t digest_len;                 /* 32 unless the row was tampered with */
    const uint8_t *signed_bytes;       /* the whole SignedReport frame */
    size_t signed_len;
    const struct agg_stored_measurement *measurements;
    size_t n_measurements;             /* rows handed over (<= AGG_STORE_AUDIT_MAX_ROWS) */
    bool measurements_truncated;       /* more rows exist than were handed over */
};
typedef int (*agg_report_cb)(void *ctx, const struct agg_stored_report *report);

/* Walk every stored report in storage order, in one read transaction (a
 * consistent snapshot even while ingest commits). A non-zero return from
 * cb stops the walk and is returned. For `resilience-ctl audit`, which
 * re-verifies each report from its signed bytes and compares the rows the
 * API serves with what was signed. */
int agg_store_reports(struct agg_store *store, agg_report_cb cb, void *ctx,
                      struct rsl_error *err);

/* Check the incrementally kept present against history: each `current`
 * row must be its measurement row (same values, not excluded) and the
 * latest aggregated observation of its (nation, indicator); each pair with
 * an aggregated observation must have a `current` row. Every problem is
 * passed to cb with a short description; a non-zero return stops. */
typedef int (*agg_current_problem_cb)(void *ctx, const char *nation, const char *indicator,
                                      const char *problem);
int agg_store_check_current(struct agg_store *store, agg_current_problem_cb cb, void *ctx,
                            struct rsl_error *err);

/* ---- Read-only queries for the HTTPS API (issue 5) ---------------------- */

/* A number that differs from the previous call's whenever another
 * connection (the ingest thread) committed in between (SQLite's PRAGMA
 * data_version: read from shared memory, microseconds). The HTTPS workers
 * use it to know whether a cached response is still current. Meaningful
 * only as "same or different" on the same handle. */
int agg_store_data_version(struct agg_store *store, uint64_t *out, struct rsl_error *err);

/* One row of the agents table: every agent that ever had a report stored.
 * Strings are borrowed for the duration of the callback only. */
struct agg_agent_row {
    const char *agent_id;
    const char *nation;
    uint64_t last_sequence;   /* highest sequence stored */
    int64_t last_seen_ms;     /* received_at_ms of its latest stored report */
    int64_t reports;          /* reports stored */
    int64_t clock_offset_ms;  /* agg_clock_offset_ms of its latest received report */
};
typedef int (*agg_agent_cb)(void *ctx, const struct agg_agent_row *row);

/* Every agent, ordered by nation then agent id. A non-zero return from cb
 * stops the walk and is returned. */
int agg_store_agents(struct agg_store *store, agg_agent_cb cb, void *ctx, struct rsl_error *err);

/* For one indicator and each query time points[0..n_points) (ascending):
 * for every nation, the aggregated observation agg_store_latest(points[k])
 * would give for that (nation, indicator), passed as cb(ctx, k, value).
 * Points at which a nation had observed nothing yet get no call. Costs at
 * most min(n_points, observations) index seeks per nation, whatever the
 * size of the history, and reads one consistent snapshot. A non-zero
 * return from cb stops the walk and is returned. */
typedef int (*agg_point_value_cb)(void *ctx, size_t point, const struct agg_value *value);
int agg_store_history(struct agg_store *store, const char *indicator, const int64_t *points,
                      size_t n_points, agg_point_value_cb cb, void *ctx, struct rsl_error *err);

/* The form in which a measurement's releasable_to list is stored: ids
 * joined by commas (ids are [A-Za-z0-9_-], so no escaping). Exposed so that
 * `resilience-ctl audit` compares stored rows with signed reports the same
 * way the store wrote them. */
void agg_store_join_releasable(const rsl_measurement *m, char *out, size_t outlen);

#endif
