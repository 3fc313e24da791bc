/*
 * summary.h - alliance summary semantics (ARCHITECTURE section 5): pure
 * computation, no I/O, no clock.
 *
 * Three steps, each with its own type so the HTTP layer (and later CSV and
 * partner releases) can reuse the middle ones:
 *
 *   1. agg_snapshot: the latest observation per (nation, indicator) known at
 *      a query time, a dense nations x indicators grid filled from
 *      agg_store_latest (agg_snapshot_value_cb is a ready-made callback).
 *      Observations for nations or indicators outside the taxonomy are
 *      ignored: the alliance is the nation list, the indicators the taxonomy.
 *   2. agg_summary / agg_nation_view: plain read-only result structs computed
 *      from a snapshot and the query time T. Every number a client can see is
 *      in them, so JSON and CSV writers only format.
 *   3. *_to_json: jansson documents for the HTTPS API.
 *
 * State of a nation for an indicator at T (observation o, the latest with
 * o.observed_at_ms <= T): current if T - o.observed_at_ms <= max_age (exactly
 * max_age old still counts as current), stale if older, missing if there is
 * no such observation. An observation stamped after T (clock skew at the
 * sender) is not yet known at T and so counts as missing.
 *
 * All structs borrow the taxonomy they were built from: it must outlive them.
 */
#ifndef AGG_SUMMARY_H
#define AGG_SUMMARY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/taxonomy.h"
#include "store.h"

/* ---- 1. snapshot ------------------------------------------------------ */

struct agg_snapshot;

/* An empty grid for `tax` (borrowed). RSL_ENOMEM on allocation failure. */
int agg_snapshot_new(const struct rsl_taxonomy *tax, struct agg_snapshot **out);
void agg_snapshot_free(struct agg_snapshot **snap);

/* Offer one observation. Unknown nation or indicator: ignored (RSL_OK).
 * If the cell is taken, the later observed_at_ms wins, ties go to the later
 * received_at_ms (the store's rule), so the order of offers does not
 * matter. Strings are copied; over-long unit or agent_id are truncated to
 * the codec limits (they were validated at ingest). */
int agg_snapshot_add(struct agg_snapshot *snap, const struct agg_value *value);

/* agg_value_cb adapter: ctx is a struct agg_snapshot *. */
int agg_snapshot_value_cb(void *ctx, const struct agg_value *value);

/* ---- 2. results ------------------------------------------------------- */

enum agg_state {
    AGG_STATE_CURRENT = 0,
    AGG_STATE_STALE = 1,
    AGG_STATE_MISSING = 2,
};

/* "current", "stale", "missing". */
const char *agg_state_name(enum agg_state s);

/* Requirement-level status of a nation: an rsl_status, or no data. */
#define AGG_REQ_NO_DATA (-1)

/* "green" "amber" "red" for rsl_status values, "no_data" for AGG_REQ_NO_DATA. */
const char *agg_req_status_name(int status);

/* The baseline requirements in report order. */
#define AGG_N_REQUIREMENTS 8
extern const char *const agg_requirement_ids[AGG_N_REQUIREMENTS]; /* "BR1".."BR7","X" */

struct agg_indicator_summary {
    const struct rsl_indicator *indicator;   /* borrowed from the taxonomy */
    size_t nations_reporting;                /* current */
    size_t nations_stale;
    size_t nations_missing;
    bool has_value;                          /* false: no current value at all */
    double value;                            /* by the indicator's method */
    double min;
    double median;                           /* even count: mean of the two middle */
    double max;
    size_t status_counts[3];                 /* indexed by enum rsl_status */
    size_t *stale_nations;                   /* nation indices, nations_stale entries */
    size_t *missing_nations;                 /* nation indices, nations_missing entries */
};

struct agg_requirement_summary {
    const char *id;                          /* agg_requirement_ids[i] */
    size_t n_indicators;                     /* taxonomy indicators in it */
    int *nation_status;                      /* per nation: rsl_status or AGG_REQ_NO_DATA */
    size_t status_counts[3];                 /* nations per worst status */
    size_t no_data;                          /* nations with no current value in it */
};

struct agg_summary {
    const struct rsl_taxonomy *taxonomy;     /* borrowed */
    int64_t at_ms;                           /* the query time T */
    struct agg_indicator_summary *indicators;        /* taxonomy->n_indicators, taxonomy order */
    struct agg_requirement_summary requirements[AGG_N_REQUIREMENTS];
};

/* Compute the alliance summary at `at_ms` from `snap`. */
int agg_summary_compute(const struct agg_snapshot *snap, int64_t at_ms, struct agg_summary **out,
                        struct rsl_error *err);
void agg_summary_free(struct agg_summary **summary);

struct agg_nation_entry {
    const struct rsl_indicator *indicator;   /* borrowed */
    enum agg_state state;
    /* When state != MISSING: the latest observation and its status (given
     * for stale values too, so an operator sees what went out of date). */
    double value;
    int64_t observed_at_ms;
    int64_t received_at_ms;
    enum rsl_status status;
    char unit[RSL_UNIT_MAX + 1];             /* the taxonomy unit when missing */
    char agent_id[RSL_AGENT_ID_MAX + 1];     /* "" when missing */
};

struct agg_nation_view {
    const struct rsl_nation *nation;         /* borrowed */
    int64_t at_ms;
    struct agg_nation_entry *entries;        /* taxonomy->n_indicators, taxonomy order */
    size_t n_entries;
    size_t counts[3];                        /* indexed by enum agg_state */
    int requirement_status[AGG_N_REQUIREMENTS]; /* rsl_status or AGG_REQ_NO_DATA */
};

/* One nation's values at `at_ms`. RSL_ENOENT if `nation_code` is not in the
 * nation list. */
int agg_nation_view_compute(const struct agg_snapshot *snap, const char *nation_code,
                            int64_t at_ms, struct agg_nation_view **out, struct rsl_error *err);
void agg_nation_view_free(struct agg_nation_view **view);

/* ---- 3. JSON ---------------------------------------------------------- */

/* The /v1/summary document. `only_nation`: NULL for the full view (staff);
 * a nation code to restrict the per-nation requirement statuses to that
 * nation (nation role: alliance aggregates plus its own values only).
 * Returns a new reference, NULL on allocation failure. */
json_t *agg_summary_to_json(const struct agg_summary *summary, const char *only_nation);

/* The /v1/nations/{CODE} document; new reference or NULL. */
json_t *agg_nation_view_to_json(const struct agg_nation_view *view);

#endif
