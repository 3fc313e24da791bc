/*
 * release.h - what a partner may see (ARCHITECTURE section 7, issue 6):
 * the release policy as pure computation, no I/O, no clock, no threads.
 *
 * Consent rule: a nation's measurement enters a partner's view only if the
 * nation listed that partner in the measurement's releasable_to, and only
 * the nation's *current* observation counts: if its latest observation of
 * an indicator is not releasable, the partner sees nothing of that nation
 * for it (an older, releasable value is not substituted: a nation that
 * stopped releasing a figure did so on purpose). Everything in the release
 * - nation-level values and the aggregates - is computed from these
 * measurements only, so consent covers what is derived from a nation's
 * numbers too.
 *
 * Aggregation threshold: an indicator's alliance figure (value by the
 * taxonomy's method and the counts per status) is released only when at
 * least min_nations nations contribute a current releasable value;
 * otherwise it is marked withheld, with no number. min/median/max are
 * never released: each is one nation's value.
 *
 * Usage: agg_release_filter_new(partner, taxonomy) -> walk the store with
 * agg_store_latest(store, -1, agg_release_filter_cb, filter) ->
 * agg_release_figures(filter, at_ms) -> the "figures" JSON (marking,
 * min_nations, indicators, nations) -> agg_release_payload adds the
 * release's identity and times.
 */
#ifndef AGG_RELEASE_H
#define AGG_RELEASE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"
#include "rsl/taxonomy.h"
#include "store.h"

/* Is `partner` one of the comma-joined ids in `joined` (exact match)? */
bool agg_releasable_contains(const char *joined, const char *partner);

/* Does the partner's include list cover the indicator (by id or by its
 * baseline requirement)? */
bool agg_release_includes(const struct agg_partner *partner, const struct rsl_indicator *ind);

struct agg_release_filter;

int agg_release_filter_new(const struct agg_partner *partner, const struct rsl_taxonomy *tax,
                           struct agg_release_filter **out);
void agg_release_filter_free(struct agg_release_filter **filter);

/* agg_value_cb: offer one current observation; kept only if the indicator
 * is included and the observation is releasable to the partner. */
int agg_release_filter_cb(void *ctx, const struct agg_value *value);

/* The released figures at `at_ms` as a JSON object (new reference):
 * {"marking", "min_nations", "indicators": [...], "nations": [...]}.
 * Deterministic for the same observations and time, so its digest tells
 * whether the picture changed. RSL_ENOMEM. */
int agg_release_figures(const struct agg_release_filter *filter, int64_t at_ms, json_t **out,
                        struct rsl_error *err);

/* The whole payload: figures plus "partner", "release_id", "sequence",
 * "generated_at"(_ms) and "as_of"(_ms). Takes a reference to figures'
 * members (figures itself is not modified). Compact JSON text with sorted
 * keys, malloc'd; RSL_ENOMEM. */
int agg_release_payload(const char *partner, const char *release_id, int64_t sequence,
                        int64_t generated_at_ms, int64_t as_of_ms, const json_t *figures,
                        char **out, size_t *out_len, struct rsl_error *err);

#endif
