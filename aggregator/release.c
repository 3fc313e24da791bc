/*
 * release.c - a partner's view of the alliance picture (see release.h for
 * the consent and threshold rules).
 *
 * The filter is a summary snapshot (summary.h) fed only with releasable
 * observations of included indicators, so the release's aggregates come
 * out of exactly the same code as /v1/summary's, from a smaller input:
 * there is no second implementation of the section 5 semantics to drift.
 */
#include "release.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "summary.h"

struct agg_release_filter {
    const struct agg_partner *partner;   /* borrowed */
    const struct rsl_taxonomy *tax;      /* borrowed */
    struct agg_snapshot *snap;
    bool *included;                      /* per taxonomy indicator */
};

bool agg_releasable_contains(const char *joined, const char *partner)
{
    if (joined == NULL || partner == NULL || partner[0] == '\0')
        return false;
    size_t plen = strlen(partner);
    const char *p = joined;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (len == plen && memcmp(p, partner, plen) == 0)
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return false;
}

bool agg_release_includes(const struct agg_partner *partner, const struct rsl_indicator *ind)
{
    for (size_t i = 0; i < partner->n_include; i++)
        if (strcmp(partner->include[i], ind->id) == 0 ||
            strcmp(partner->include[i], ind->requirement) == 0)
            return true;
    return false;
}

int agg_release_filter_new(const struct agg_partner *partner, const struct rsl_taxonomy *tax,
                           struct agg_release_filter **out)
{
    *out = NULL;
    struct agg_release_filter *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return RSL_ENOMEM;
    f->partner = partner;
    f->tax = tax;
    f->included = calloc(tax->n_indicators > 0 ? tax->n_indicators : 1, sizeof(bool));
    if (f->included == NULL || agg_snapshot_new(tax, &f->snap) != RSL_OK) {
        agg_release_filter_free(&f);
        return RSL_ENOMEM;
    }
    for (size_t i = 0; i < tax->n_indicators; i++)
        f->included[i] = agg_release_includes(partner, &tax->indicators[i]);
    *out = f;
    return RSL_OK;
}

void agg_release_filter_free(struct agg_release_filter **filter)
{
    if (filter == NULL || *filter == NULL)
        return;
    agg_snapshot_free(&(*filter)->snap);
    free((*filter)->included);
    free(*filter);
    *filter = NULL;
}

int agg_release_filter_cb(void *ctx, const struct agg_value *value)
{
    struct agg_release_filter *f = ctx;
    int idx = rsl_taxonomy_indicator_index(f->tax, value->indicator);
    if (idx < 0 || !f->included[idx])
        return 0;
    if (!agg_releasable_contains(value->releasable_to, f->partner->id))
        return 0;
    return agg_snapshot_add(f->snap, value) == RSL_OK ? 0 : RSL_ENOMEM;
}

/* One indicator of the release: facts, contributing nations, and the
 * alliance figure only at or above the threshold. */
static json_t *indicator_json(const struct agg_indicator_summary *is, int min_nations)
{
    const struct rsl_indicator *ind = is->indicator;
    json_t *obj = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "id", ind->id, "requirement",
                            ind->requirement, "unit", ind->unit, "method",
                            rsl_method_name(ind->method), "direction",
                            rsl_direction_name(ind->direction), "nations_contributing",
                            (json_int_t)is->nations_reporting);
    if (obj == NULL)
        return NULL;
    int bad = 0;
    bool released = is->has_value && isfinite(is->value) &&
                    is->nations_reporting >= (size_t)min_nations;
    bad |= json_object_set_new(obj, "released", json_boolean(released));
    if (released) {
        bad |= json_object_set_new(obj, "value", json_real(is->value));
        bad |= json_object_set_new(obj, "status", agg_status_counts_json(is->status_counts));
    } else {
        bad |= json_object_set_new(obj, "withheld",
                                   json_string(is->nations_reporting < (size_t)min_nations
                                                   ? "fewer nations than min_nations contribute"
                                                   : "no value"));
    }
    if (bad != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* A nation's releasable values (current or stale) of included
 * indicators; NULL with *empty when it has none. */
static json_t *nation_json(const struct agg_release_filter *f, const struct agg_nation_view *view,
                           bool *empty)
{
    *empty = true;
    json_t *values = json_array();
    if (values == NULL)
        return NULL;
    for (size_t i = 0; i < view->n_entries; i++) {
        const struct agg_nation_entry *e = &view->entries[i];
        int idx = rsl_taxonomy_indicator_index(f->tax, e->indicator->id);
        if (idx < 0 || !f->included[idx] || e->state == AGG_STATE_MISSING || !isfinite(e->value))
            continue;
        json_t *v = json_pack("{s:s,s:f,s:s,s:s,s:s}", "indicator", e->indicator->id, "value",
                              e->value, "unit", e->unit, "state", agg_state_name(e->state),
                              "status", rsl_status_name(e->status));
        if (v == NULL || agg_json_set_time(v, "observed_at", e->observed_at_ms) != 0 ||
            json_array_append_new(values, v) != 0) {
            json_decref(v);
            json_decref(values);
            return NULL;
        }
        *empty = false;
    }
    json_t *obj = json_pack("{s:s,s:o}", "nation", view->nation->code, "values", values);
    return obj;
}

int agg_release_figures(const struct agg_release_filter *f, int64_t at_ms, json_t **out,
                        struct rsl_error *err)
{
    struct agg_summary *summary = NULL;
    json_t *doc = NULL, *indicators = NULL, *nations = NULL;
    int rc;
    *out = NULL;
    if ((rc = agg_summary_compute(f->snap, at_ms, &summary, err)) != RSL_OK)
        goto out;
    rc = RSL_ENOMEM;
    indicators = json_array();
    nations = json_array();
    if (indicators == NULL || nations == NULL)
        goto nomem;
    for (size_t i = 0; i < f->tax->n_indicators; i++) {
        if (!f->included[i])
            continue;
        json_t *ind = indicator_json(&summary->indicators[i], f->partner->min_nations);
        if (ind == NULL || json_array_append_new(indicators, ind) != 0)
            goto nomem;
    }
    for (size_t n = 0; n < f->tax->n_nations; n++) {
        struct agg_nation_view *view = NULL;
        if (agg_nation_view_compute(f->snap, f->tax->nations[n].code, at_ms, &view, err) !=
            RSL_OK)
            goto nomem;
        bool empty = true;
        json_t *nj = nation_json(f, view, &empty);
        agg_nation_view_free(&view);
        if (nj == NULL)
            goto nomem;
        if (empty) {
            json_decref(nj);
            continue;
        }
        if (json_array_append_new(nations, nj) != 0)
            goto nomem;
    }
    doc = json_pack("{s:s,s:i,s:o,s:o}", "marking", f->partner->marking, "min_nations",
                    f->partner->min_nations, "indicators", indicators, "nations", nations);
    indicators = nations = NULL; /* stolen by json_pack, even on failure */
    if (doc == NULL)
        goto nomem;
    *out = doc;
    rc = RSL_OK;
    goto out;
nomem:
    rc = rsl_error_set(err, RSL_ENOMEM, "release: out of memory");
out:
    json_decref(indicators);
    json_decref(nations);
    agg_summary_free(&summary);
    return rc;
}

int agg_release_payload(const char *partner, const char *release_id, int64_t sequence,
                        int64_t generated_at_ms, int64_t as_of_ms, const json_t *figures,
                        char **out, size_t *out_len, struct rsl_error *err)
{
    *out = NULL;
    *out_len = 0;
    json_t *doc = json_deep_copy(figures);
    if (doc == NULL || json_object_set_new(doc, "partner", json_string(partner)) != 0 ||
        json_object_set_new(doc, "release_id", json_string(release_id)) != 0 ||
        json_object_set_new(doc, "sequence", json_integer((json_int_t)sequence)) != 0 ||
        agg_json_set_time(doc, "generated_at", generated_at_ms) != 0 ||
        agg_json_set_time(doc, "as_of", as_of_ms) != 0) {
        json_decref(doc);
        return rsl_error_set(err, RSL_ENOMEM, "release: out of memory");
    }
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(doc);
    if (text == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "release: out of memory");
    *out = text;
    *out_len = strlen(text);
    return RSL_OK;
}
