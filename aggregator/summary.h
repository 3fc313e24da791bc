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

/* JSON helpers shared with the partner releases (release.c). Add
 * "<name>": RFC 3339 text and "<name>_ms": unix ms to obj; 0 or -1. */
int agg_json_set_time(json_t *obj, const char *name, int64_t ms);
/* {"green": n, "amber": n, "red": n}; new reference or NULL. */
json_t *agg_status_counts_json(const size_t counts[3]);

/* The /v1/summary document. `only_nation`: NULL for the full view (staff);
 * a nation code to restrict the per-nation requirement statuses and the
 * stale/missing nation lists to that nation (nation role: alliance
 * aggregates plus its own standing only; the counts stay alliance-wide).
 * Returns a new reference, NULL on allocation failure. */
json_t *agg_summary_to_json(const struct agg_summary *summary, const char *only_nation);

/* The /v1/nations/{CODE} document; new reference or NULL. */
json_t *agg_nation_view_to_json(const struct agg_nation_view *view);

/* The /v1/requirements document: the query time and, per baseline
 * requirement, alliance counts per worst status and each nation's worst
 * status (only `only_nation`'s when not NULL). New reference or NULL. */
json_t *agg_requirements_to_json(const struct agg_summary *summary, const char *only_nation);

/* ---- 4. history of one indicator ---------------------------------------- */

/* Upper bound on the points of one history (GET .../history refuses more
 * with 400): bounds memory (points x nations cells) and store seeks. */
#define AGG_HISTORY_MAX_POINTS 1000

/* The alliance figures of one indicator at each of n query times, every
 * point computed exactly as the summary at= that time computes them
 * (same states, same method, same statuses). Filled from
 * agg_store_history through agg_history_point_cb, then agg_history_compute. */
struct agg_history;

/* RSL_ENOENT: no such indicator; RSL_EINVAL: n_points is 0 or above
 * AGG_HISTORY_MAX_POINTS; RSL_ENOMEM. `points` is copied. */
int agg_history_new(const struct rsl_taxonomy *tax, const char *indicator_id,
                    const int64_t *points, size_t n_points, struct agg_history **out);
void agg_history_free(struct agg_history **history);

/* Offer the observation a nation had at point `point` (other indicators,
 * unknown nations and out-of-range points are ignored; the latest
 * observation wins as in agg_snapshot_add). */
int agg_history_add(struct agg_history *history, size_t point, const struct agg_value *value);
/* agg_point_value_cb adapter: ctx is a struct agg_history *. */
int agg_history_point_cb(void *ctx, size_t point, const struct agg_value *value);

/* Compute every point's figures (call once all observations are in). */
int agg_history_compute(struct agg_history *history, struct rsl_error *err);

size_t agg_history_n_points(const struct agg_history *history);
const int64_t *agg_history_points(const struct agg_history *history);
const struct rsl_indicator *agg_history_indicator(const struct agg_history *history);
/* Point k's figures (no nation lists: stale_nations/missing_nations are
 * NULL, only the counts are set); NULL if k is out of range. */
const struct agg_indicator_summary *agg_history_result(const struct agg_history *history,
                                                       size_t k);

/* The history document: indicator facts, from/to/step and the points. */
json_t *agg_history_to_json(const struct agg_history *history, int64_t from_ms, int64_t to_ms,
                            int64_t step_ms);

/* ---- 5. nations overview (/v1/nations) ---------------------------------- */

/* Per nation: the agents that reported, when its last report arrived, how
 * fresh its newest observation is, and its current/stale/missing counts at
 * the query time. */
struct agg_overview_nation {
    const struct rsl_nation *nation;         /* borrowed */
    size_t n_agents;                         /* agents that ever reported */
    int64_t last_report_ms;                  /* newest report received; 0: never */
    int64_t last_observed_ms;                /* newest observation known at T; 0: none */
    size_t counts[3];                        /* indexed by enum agg_state */
};

struct agg_overview;

/* Counts from `snap` at `at_ms`; agents are added afterwards. */
int agg_overview_new(const struct agg_snapshot *snap, int64_t at_ms, struct agg_overview **out);
void agg_overview_free(struct agg_overview **overview);
/* Add one row of the store's agents table (nations outside the list are
 * ignored). */
int agg_overview_add_agent(struct agg_overview *overview, const struct agg_agent_row *row);
/* agg_agent_cb adapter: ctx is a struct agg_overview *. */
int agg_overview_agent_cb(void *ctx, const struct agg_agent_row *row);
size_t agg_overview_n_nations(const struct agg_overview *overview);
int64_t agg_overview_at(const struct agg_overview *overview);
const struct agg_overview_nation *agg_overview_nation_at(const struct agg_overview *overview,
                                                         size_t n);
/* The /v1/nations document; new reference or NULL. */
json_t *agg_overview_to_json(const struct agg_overview *overview);

#endif
