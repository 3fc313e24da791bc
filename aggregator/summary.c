/*
 * summary.c - alliance summary semantics (ARCHITECTURE section 5).
 *
 * The snapshot is a dense grid, nations x indicators, of the latest
 * observation per cell. With the shipped taxonomy that is 32 x ~40 cells, so
 * a dense grid is both the simplest and the fastest form: each request
 * fills one from the store's `current` table (or from history for `at=`)
 * and computes from it, touching each cell a constant number of times.
 *
 * Everything here is deterministic given (taxonomy, observations, T): no
 * clock, no I/O, so tests can feed hand-built observation sets and check
 * hand-computed results exactly.
 */
#include "summary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

const char *const agg_requirement_ids[AGG_N_REQUIREMENTS] = {"BR1", "BR2", "BR3", "BR4",
                                                              "BR5", "BR6", "BR7", "X"};

/* One cell of the grid. `present` is false until an observation arrives. */
struct agg_cell {
    bool present;
    double value;
    int64_t observed_at_ms;
    int64_t received_at_ms;
    char unit[RSL_UNIT_MAX + 1];
    char agent_id[RSL_AGENT_ID_MAX + 1];
};

struct agg_snapshot {
    const struct rsl_taxonomy *tax;
    struct agg_cell *cells; /* n_nations * n_indicators, row = nation */
};

static struct agg_cell *cell_at(const struct agg_snapshot *snap, size_t nation, size_t indicator)
{
    return &snap->cells[nation * snap->tax->n_indicators + indicator];
}

int agg_snapshot_new(const struct rsl_taxonomy *tax, struct agg_snapshot **out)
{
    *out = NULL;
    struct agg_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return RSL_ENOMEM;
    snap->tax = tax;
    size_t n = tax->n_nations * tax->n_indicators;
    /* calloc(0) may return NULL legitimately; ask for at least one cell. */
    snap->cells = calloc(n > 0 ? n : 1, sizeof(*snap->cells));
    if (snap->cells == NULL) {
        free(snap);
        return RSL_ENOMEM;
    }
    *out = snap;
    return RSL_OK;
}

void agg_snapshot_free(struct agg_snapshot **snap)
{
    if (snap == NULL || *snap == NULL)
        return;
    free((*snap)->cells);
    free(*snap);
    *snap = NULL;
}

/* Copy with truncation: the strings were validated at ingest, truncation
 * here only guards the fixed buffers against a store that holds more. */
static void copy_trunc(char *dst, size_t dstlen, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strnlen(src, dstlen - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int agg_snapshot_add(struct agg_snapshot *snap, const struct agg_value *value)
{
    if (value->nation == NULL || value->indicator == NULL)
        return RSL_OK;
    int ni = rsl_taxonomy_nation_index(snap->tax, value->nation);
    int ii = rsl_taxonomy_indicator_index(snap->tax, value->indicator);
    if (ni < 0 || ii < 0)
        return RSL_OK; /* outside the alliance or the taxonomy: not aggregated */
    struct agg_cell *c = cell_at(snap, (size_t)ni, (size_t)ii);
    /* Same rule as the store: latest observation wins, ties to the later
     * arrival; it makes the result independent of the offer order. */
    if (c->present && (value->observed_at_ms < c->observed_at_ms ||
                       (value->observed_at_ms == c->observed_at_ms &&
                        value->received_at_ms <= c->received_at_ms)))
        return RSL_OK;
    c->present = true;
    c->value = value->value;
    c->observed_at_ms = value->observed_at_ms;
    c->received_at_ms = value->received_at_ms;
    copy_trunc(c->unit, sizeof(c->unit), value->unit);
    copy_trunc(c->agent_id, sizeof(c->agent_id), value->agent_id);
    return RSL_OK;
}

int agg_snapshot_value_cb(void *ctx, const struct agg_value *value)
{
    return agg_snapshot_add(ctx, value);
}

const char *agg_state_name(enum agg_state s)
{
    switch (s) {
    case AGG_STATE_CURRENT: return "current";
    case AGG_STATE_STALE: return "stale";
    case AGG_STATE_MISSING: return "missing";
    }
    return "unknown";
}

const char *agg_req_status_name(int status)
{
    if (status == AGG_REQ_NO_DATA)
        return "no_data";
    return rsl_status_name((enum rsl_status)status);
}

/* State of one cell at T (see the header for the rule). */
static enum agg_state cell_state(const struct agg_cell *c, const struct rsl_indicator *ind,
                                 int64_t at_ms)
{
    if (!c->present || c->observed_at_ms > at_ms)
        return AGG_STATE_MISSING;
    /* Both are int64 ms; at_ms - observed_at_ms >= 0 here and cannot
     * overflow for any real timestamps (both positive). */
    if (at_ms - c->observed_at_ms <= ind->max_age_ms)
        return AGG_STATE_CURRENT;
    return AGG_STATE_STALE;
}

static int requirement_index(const char *req)
{
    for (int i = 0; i < AGG_N_REQUIREMENTS; i++)
        if (strcmp(req, agg_requirement_ids[i]) == 0)
            return i;
    return -1;
}

/* Worse of two requirement statuses: red > amber > green > no data. */
static int worse(int a, int b)
{
    return a > b ? a : b;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Fill value/min/median/max of `s` from n current values (sorted in place). */
static void aggregate_values(struct agg_indicator_summary *s, double *values, size_t n)
{
    if (n == 0) {
        s->has_value = false;
        return;
    }
    qsort(values, n, sizeof(*values), compare_double);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += values[i];
    s->has_value = true;
    s->min = values[0];
    s->max = values[n - 1];
    /* Even count: mean of the two middle values, written as a + (b-a)/2 so
     * two huge values of the same sign do not overflow. */
    if (n % 2 == 1)
        s->median = values[n / 2];
    else
        s->median = values[n / 2 - 1] + (values[n / 2] - values[n / 2 - 1]) / 2.0;
    switch (s->indicator->method) {
    case RSL_METHOD_SUM: s->value = sum; break;
    case RSL_METHOD_MEAN: s->value = sum / (double)n; break;
    case RSL_METHOD_MEDIAN: s->value = s->median; break;
    case RSL_METHOD_MIN: s->value = s->min; break;
    case RSL_METHOD_MAX: s->value = s->max; break;
    }
}

/* The summary of one indicator over nn cells, cell n at base[n * stride]
 * (a column of the snapshot grid, or one point's row of a history grid):
 * states, status counts and aggregates. The stale/missing nation lists
 * are filled when allocated (non-NULL). `req_status`, if not NULL, is the
 * per-nation worst status of the indicator's requirement, updated with
 * this indicator's current values. `values` is scratch for nn doubles.
 * Used for the summary and for every history point alike, so a history
 * point is computed exactly as `at=` computes the summary. */
static void summarize_indicator(const struct rsl_indicator *ind, const struct agg_cell *base,
                                size_t stride, size_t nn, int64_t at_ms, double *values,
                                struct agg_indicator_summary *is, int *req_status)
{
    size_t n_current = 0;
    is->indicator = ind;
    for (size_t n = 0; n < nn; n++) {
        const struct agg_cell *c = &base[n * stride];
        switch (cell_state(c, ind, at_ms)) {
        case AGG_STATE_CURRENT: {
            enum rsl_status st = rsl_indicator_status(ind, c->value);
            values[n_current++] = c->value;
            is->status_counts[st]++;
            if (req_status != NULL)
                req_status[n] = worse(req_status[n], (int)st);
            break;
        }
        case AGG_STATE_STALE:
            if (is->stale_nations != NULL)
                is->stale_nations[is->nations_stale] = n;
            is->nations_stale++;
            break;
        case AGG_STATE_MISSING:
            if (is->missing_nations != NULL)
                is->missing_nations[is->nations_missing] = n;
            is->nations_missing++;
            break;
        }
    }
    is->nations_reporting = n_current;
    aggregate_values(is, values, n_current);
}

void agg_summary_free(struct agg_summary **summary)
{
    if (summary == NULL || *summary == NULL)
        return;
    struct agg_summary *s = *summary;
    if (s->indicators != NULL) {
        for (size_t i = 0; i < s->taxonomy->n_indicators; i++) {
            free(s->indicators[i].stale_nations);
            free(s->indicators[i].missing_nations);
        }
        free(s->indicators);
    }
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++)
        free(s->requirements[r].nation_status);
    free(s);
    *summary = NULL;
}

int agg_summary_compute(const struct agg_snapshot *snap, int64_t at_ms, struct agg_summary **out,
                        struct rsl_error *err)
{
    int rc = RSL_ENOMEM;
    const struct rsl_taxonomy *tax = snap->tax;
    size_t nn = tax->n_nations;
    size_t ni = tax->n_indicators;
    struct agg_summary *s = NULL;
    double *values = NULL;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto out;
    s->taxonomy = tax;
    s->at_ms = at_ms;
    s->indicators = calloc(ni > 0 ? ni : 1, sizeof(*s->indicators));
    values = calloc(nn > 0 ? nn : 1, sizeof(*values));
    if (s->indicators == NULL || values == NULL)
        goto out;
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++) {
        struct agg_requirement_summary *req = &s->requirements[r];
        req->id = agg_requirement_ids[r];
        req->nation_status = malloc((nn > 0 ? nn : 1) * sizeof(*req->nation_status));
        if (req->nation_status == NULL)
            goto out;
        for (size_t n = 0; n < nn; n++)
            req->nation_status[n] = AGG_REQ_NO_DATA;
    }

    for (size_t i = 0; i < ni; i++) {
        const struct rsl_indicator *ind = &tax->indicators[i];
        struct agg_indicator_summary *is = &s->indicators[i];
        is->stale_nations = calloc(nn > 0 ? nn : 1, sizeof(size_t));
        is->missing_nations = calloc(nn > 0 ? nn : 1, sizeof(size_t));
        if (is->stale_nations == NULL || is->missing_nations == NULL)
            goto out;
        int r = requirement_index(ind->requirement);
        struct agg_requirement_summary *req = r >= 0 ? &s->requirements[r] : NULL;
        if (req != NULL)
            req->n_indicators++;
        /* Column i of the grid: cell (n, i) is n * ni + i. */
        summarize_indicator(ind, cell_at(snap, 0, i), ni, nn, at_ms, values, is,
                            req != NULL ? req->nation_status : NULL);
    }

    for (int r = 0; r < AGG_N_REQUIREMENTS; r++) {
        struct agg_requirement_summary *req = &s->requirements[r];
        for (size_t n = 0; n < nn; n++) {
            if (req->nation_status[n] == AGG_REQ_NO_DATA)
                req->no_data++;
            else
                req->status_counts[req->nation_status[n]]++;
        }
    }

    *out = s;
    s = NULL; /* transferred */
    rc = RSL_OK;
out:
    if (rc != RSL_OK)
        rsl_error_set(err, rc, "summary: out of memory");
    free(values);
    agg_summary_free(&s);
    return rc;
}

void agg_nation_view_free(struct agg_nation_view **view)
{
    if (view == NULL || *view == NULL)
        return;
    free((*view)->entries);
    free(*view);
    *view = NULL;
}

int agg_nation_view_compute(const struct agg_snapshot *snap, const char *nation_code,
                            int64_t at_ms, struct agg_nation_view **out, struct rsl_error *err)
{
    const struct rsl_taxonomy *tax = snap->tax;
    *out = NULL;
    int n = rsl_taxonomy_nation_index(tax, nation_code);
    if (n < 0)
        return rsl_error_set(err, RSL_ENOENT, "nation '%s' is not in the nation list",
                             nation_code);
    struct agg_nation_view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "summary: out of memory");
    v->entries = calloc(tax->n_indicators > 0 ? tax->n_indicators : 1, sizeof(*v->entries));
    if (v->entries == NULL) {
        free(v);
        return rsl_error_set(err, RSL_ENOMEM, "summary: out of memory");
    }
    v->nation = &tax->nations[n];
    v->at_ms = at_ms;
    v->n_entries = tax->n_indicators;
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++)
        v->requirement_status[r] = AGG_REQ_NO_DATA;

    for (size_t i = 0; i < tax->n_indicators; i++) {
        const struct rsl_indicator *ind = &tax->indicators[i];
        const struct agg_cell *c = cell_at(snap, (size_t)n, i);
        struct agg_nation_entry *e = &v->entries[i];
        e->indicator = ind;
        e->state = cell_state(c, ind, at_ms);
        v->counts[e->state]++;
        if (e->state == AGG_STATE_MISSING) {
            copy_trunc(e->unit, sizeof(e->unit), ind->unit);
            continue;
        }
        e->value = c->value;
        e->observed_at_ms = c->observed_at_ms;
        e->received_at_ms = c->received_at_ms;
        e->status = rsl_indicator_status(ind, c->value);
        memcpy(e->unit, c->unit, sizeof(e->unit));
        memcpy(e->agent_id, c->agent_id, sizeof(e->agent_id));
        /* Only current values count toward a requirement, as in the
         * alliance summary, so the two views never disagree. */
        int r = requirement_index(ind->requirement);
        if (e->state == AGG_STATE_CURRENT && r >= 0)
            v->requirement_status[r] = worse(v->requirement_status[r], (int)e->status);
    }
    *out = v;
    return RSL_OK;
}

/* ---- JSON ------------------------------------------------------------- */

/* jansson refuses non-finite reals (json_real returns NULL); a sum of huge
 * finite values can overflow to inf, which is reported as null rather than
 * failing the whole document. */
static json_t *json_number_or_null(bool has, double v)
{
    if (!has || !isfinite(v))
        return json_null();
    return json_real(v);
}

/* Add "<name>": RFC 3339 and "<name>_ms": integer. Returns 0 or -1. */
int agg_json_set_time(json_t *obj, const char *name, int64_t ms)
{
    char text[40];
    char key[64];
    rsl_format_time_ms(ms, text, sizeof(text));
    if (json_object_set_new(obj, name, json_string(text)) != 0)
        return -1;
    snprintf(key, sizeof(key), "%s_ms", name);
    return json_object_set_new(obj, key, json_integer((json_int_t)ms));
}

json_t *agg_status_counts_json(const size_t counts[3])
{
    return json_pack("{s:I,s:I,s:I}", "green", (json_int_t)counts[RSL_STATUS_GREEN], "amber",
                     (json_int_t)counts[RSL_STATUS_AMBER], "red",
                     (json_int_t)counts[RSL_STATUS_RED]);
}

/* The codes of nations idx[0..n); with only_nation set, only that one
 * (a nation token sees its own standing, not who else is stale). */
static json_t *nation_list_json(const struct rsl_taxonomy *tax, const size_t *idx, size_t n,
                                const char *only_nation)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (only_nation != NULL && strcmp(only_nation, tax->nations[idx[i]].code) != 0)
            continue;
        if (json_array_append_new(arr, json_string(tax->nations[idx[i]].code)) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *indicator_summary_json(const struct rsl_taxonomy *tax,
                                      const struct agg_indicator_summary *is,
                                      const char *only_nation)
{
    const struct rsl_indicator *ind = is->indicator;
    /* json_pack's "o" steals the reference and fails the whole pack (and
     * frees what it built) if any value is NULL, so no partial documents. */
    return json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:{s:f,s:f},s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
        "id", ind->id, "requirement", ind->requirement, "unit", ind->unit, "direction",
        rsl_direction_name(ind->direction), "method", rsl_method_name(ind->method),
        "thresholds", "amber", ind->amber, "red", ind->red, "max_age_ms",
        (json_int_t)ind->max_age_ms, "nations_reporting", (json_int_t)is->nations_reporting,
        "nations_stale", (json_int_t)is->nations_stale, "nations_missing",
        (json_int_t)is->nations_missing, "value", json_number_or_null(is->has_value, is->value),
        "min", json_number_or_null(is->has_value, is->min), "median",
        json_number_or_null(is->has_value, is->median), "max",
        json_number_or_null(is->has_value, is->max), "status", agg_status_counts_json(is->status_counts),
        "stale", nation_list_json(tax, is->stale_nations, is->nations_stale, only_nation),
        "missing", nation_list_json(tax, is->missing_nations, is->nations_missing, only_nation));
}

static json_t *requirement_summary_json(const struct rsl_taxonomy *tax,
                                        const struct agg_requirement_summary *req,
                                        const char *only_nation)
{
    json_t *nations = json_object();
    if (nations == NULL)
        return NULL;
    for (size_t n = 0; n < tax->n_nations; n++) {
        if (only_nation != NULL && strcmp(only_nation, tax->nations[n].code) != 0)
            continue;
        if (json_object_set_new(nations, tax->nations[n].code,
                                json_string(agg_req_status_name(req->nation_status[n]))) != 0) {
            json_decref(nations);
            return NULL;
        }
    }
    return json_pack("{s:s,s:I,s:{s:I,s:I,s:I,s:I},s:o}", "id", req->id, "indicators",
                     (json_int_t)req->n_indicators, "status", "green",
                     (json_int_t)req->status_counts[RSL_STATUS_GREEN], "amber",
                     (json_int_t)req->status_counts[RSL_STATUS_AMBER], "red",
                     (json_int_t)req->status_counts[RSL_STATUS_RED], "no_data",
                     (json_int_t)req->no_data, "nations", nations);
}

json_t *agg_summary_to_json(const struct agg_summary *summary, const char *only_nation)
{
    const struct rsl_taxonomy *tax = summary->taxonomy;
    json_t *doc = json_object();
    json_t *indicators = json_array();
    json_t *requirements = json_array();
    if (doc == NULL || indicators == NULL || requirements == NULL)
        goto fail;
    for (size_t i = 0; i < tax->n_indicators; i++)
        if (json_array_append_new(indicators, indicator_summary_json(tax, &summary->indicators[i],
                                                                     only_nation)) != 0)
            goto fail;
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++)
        if (json_array_append_new(requirements, requirement_summary_json(tax, &summary->requirements[r],
                                                                         only_nation)) != 0)
            goto fail;
    /* json_object_set_new consumes the value even when it fails, so the
     * arrays are handed over first and forgotten right away. */
    int bad = agg_json_set_time(doc, "at", summary->at_ms);
    bad |= json_object_set_new(doc, "nations", json_integer((json_int_t)tax->n_nations));
    bad |= json_object_set_new(doc, "indicators", indicators);
    indicators = NULL; /* transferred */
    bad |= json_object_set_new(doc, "requirements", requirements);
    requirements = NULL; /* transferred */
    if (bad != 0)
        goto fail;
    return doc;
fail:
    json_decref(indicators);
    json_decref(requirements);
    json_decref(doc);
    return NULL;
}

static json_t *nation_entry_json(const struct agg_nation_entry *e)
{
    const struct rsl_indicator *ind = e->indicator;
    json_t *obj = json_pack("{s:s,s:s,s:s,s:s}", "id", ind->id, "requirement", ind->requirement,
                            "unit", e->unit, "state", agg_state_name(e->state));
    if (obj == NULL)
        return NULL;
    int bad = 0;
    if (e->state == AGG_STATE_MISSING) {
        bad |= json_object_set_new(obj, "value", json_null());
        bad |= json_object_set_new(obj, "observed_at", json_null());
        bad |= json_object_set_new(obj, "observed_at_ms", json_null());
        bad |= json_object_set_new(obj, "status", json_null());
        bad |= json_object_set_new(obj, "agent_id", json_null());
    } else {
        bad |= json_object_set_new(obj, "value", json_number_or_null(true, e->value));
        bad |= agg_json_set_time(obj, "observed_at", e->observed_at_ms);
        bad |= json_object_set_new(obj, "status", json_string(rsl_status_name(e->status)));
        bad |= json_object_set_new(obj, "agent_id", json_string(e->agent_id));
    }
    if (bad != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

json_t *agg_nation_view_to_json(const struct agg_nation_view *view)
{
    json_t *entries = json_array();
    json_t *reqs = json_object();
    json_t *doc = NULL;
    if (entries == NULL || reqs == NULL)
        goto fail;
    for (size_t i = 0; i < view->n_entries; i++)
        if (json_array_append_new(entries, nation_entry_json(&view->entries[i])) != 0)
            goto fail;
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++)
        if (json_object_set_new(reqs, agg_requirement_ids[r],
                                json_string(agg_req_status_name(view->requirement_status[r]))) != 0)
            goto fail;
    doc = json_pack("{s:s,s:s}", "nation", view->nation->code, "name", view->nation->name);
    if (doc == NULL)
        goto fail;
    /* Every set_new below runs and consumes its value, success or not. */
    int bad = agg_json_set_time(doc, "at", view->at_ms);
    bad |= json_object_set_new(
        doc, "counts",
        json_pack("{s:I,s:I,s:I}", "current", (json_int_t)view->counts[AGG_STATE_CURRENT],
                  "stale", (json_int_t)view->counts[AGG_STATE_STALE], "missing",
                  (json_int_t)view->counts[AGG_STATE_MISSING]));
    bad |= json_object_set_new(doc, "requirements", reqs);
    reqs = NULL; /* transferred */
    bad |= json_object_set_new(doc, "indicators", entries);
    entries = NULL; /* transferred */
    if (bad != 0)
        goto fail;
    return doc;
fail:
    json_decref(entries);
    json_decref(reqs);
    json_decref(doc);
    return NULL;
}

/* ---- /v1/requirements ------------------------------------------------- */

json_t *agg_requirements_to_json(const struct agg_summary *summary, const char *only_nation)
{
    const struct rsl_taxonomy *tax = summary->taxonomy;
    json_t *doc = json_object();
    json_t *requirements = json_array();
    if (doc == NULL || requirements == NULL)
        goto fail;
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++)
        if (json_array_append_new(requirements, requirement_summary_json(tax, &summary->requirements[r],
                                                                         only_nation)) != 0)
            goto fail;
    int bad = agg_json_set_time(doc, "at", summary->at_ms);
    bad |= json_object_set_new(doc, "nations", json_integer((json_int_t)tax->n_nations));
    bad |= json_object_set_new(doc, "requirements", requirements);
    requirements = NULL; /* transferred */
    if (bad != 0)
        goto fail;
    return doc;
fail:
    json_decref(requirements);
    json_decref(doc);
    return NULL;
}

/* ---- history ---------------------------------------------------------- */

struct agg_history {
    const struct rsl_taxonomy *tax;
    const struct rsl_indicator *indicator;
    size_t n_points;
    int64_t *points;                         /* n_points query times */
    struct agg_cell *cells;                  /* n_points x n_nations, row = point */
    struct agg_indicator_summary *results;   /* n_points, after compute */
};

int agg_history_new(const struct rsl_taxonomy *tax, const char *indicator_id,
                    const int64_t *points, size_t n_points, struct agg_history **out)
{
    *out = NULL;
    int ii = rsl_taxonomy_indicator_index(tax, indicator_id);
    if (ii < 0)
        return RSL_ENOENT;
    if (n_points == 0 || n_points > AGG_HISTORY_MAX_POINTS)
        return RSL_EINVAL;
    struct agg_history *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return RSL_ENOMEM;
    size_t nn = tax->n_nations > 0 ? tax->n_nations : 1;
    h->tax = tax;
    h->indicator = &tax->indicators[ii];
    h->n_points = n_points;
    h->points = malloc(n_points * sizeof(*h->points));
    /* At most 1000 points x the nation list: bounded by the caller's limit. */
    h->cells = calloc(n_points * nn, sizeof(*h->cells));
    h->results = calloc(n_points, sizeof(*h->results));
    if (h->points == NULL || h->cells == NULL || h->results == NULL) {
        agg_history_free(&h);
        return RSL_ENOMEM;
    }
    memcpy(h->points, points, n_points * sizeof(*h->points));
    *out = h;
    return RSL_OK;
}

void agg_history_free(struct agg_history **history)
{
    if (history == NULL || *history == NULL)
        return;
    free((*history)->points);
    free((*history)->cells);
    free((*history)->results);
    free(*history);
    *history = NULL;
}

const int64_t *agg_history_points(const struct agg_history *h)
{
    return h->points;
}

int agg_history_add(struct agg_history *h, size_t point, const struct agg_value *value)
{
    if (point >= h->n_points || value->nation == NULL || value->indicator == NULL ||
        strcmp(value->indicator, h->indicator->id) != 0)
        return RSL_OK;
    int ni = rsl_taxonomy_nation_index(h->tax, value->nation);
    if (ni < 0)
        return RSL_OK;
    struct agg_cell *c = &h->cells[point * h->tax->n_nations + (size_t)ni];
    /* The snapshot's rule, so a point equals the at= summary whatever the
     * order of offers. */
    if (c->present && (value->observed_at_ms < c->observed_at_ms ||
                       (value->observed_at_ms == c->observed_at_ms &&
                        value->received_at_ms <= c->received_at_ms)))
        return RSL_OK;
    c->present = true;
    c->value = value->value;
    c->observed_at_ms = value->observed_at_ms;
    c->received_at_ms = value->received_at_ms;
    copy_trunc(c->unit, sizeof(c->unit), value->unit);
    copy_trunc(c->agent_id, sizeof(c->agent_id), value->agent_id);
    return RSL_OK;
}

int agg_history_point_cb(void *ctx, size_t point, const struct agg_value *value)
{
    return agg_history_add(ctx, point, value);
}

int agg_history_compute(struct agg_history *h, struct rsl_error *err)
{
    size_t nn = h->tax->n_nations;
    double *values = calloc(nn > 0 ? nn : 1, sizeof(*values));
    if (values == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "history: out of memory");
    for (size_t k = 0; k < h->n_points; k++) {
        struct agg_indicator_summary *is = &h->results[k];
        memset(is, 0, sizeof(*is));
        summarize_indicator(h->indicator, &h->cells[k * nn], 1, nn, h->points[k], values, is, NULL);
    }
    free(values);
    return RSL_OK;
}

size_t agg_history_n_points(const struct agg_history *h)
{
    return h->n_points;
}

const struct agg_indicator_summary *agg_history_result(const struct agg_history *h, size_t k)
{
    return k < h->n_points ? &h->results[k] : NULL;
}

const struct rsl_indicator *agg_history_indicator(const struct agg_history *h)
{
    return h->indicator;
}

json_t *agg_history_to_json(const struct agg_history *h, int64_t from_ms, int64_t to_ms,
                            int64_t step_ms)
{
    const struct rsl_indicator *ind = h->indicator;
    json_t *points = json_array();
    json_t *doc = NULL;
    if (points == NULL)
        goto fail;
    for (size_t k = 0; k < h->n_points; k++) {
        const struct agg_indicator_summary *is = &h->results[k];
        json_t *p = json_pack("{s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "nations_reporting",
                              (json_int_t)is->nations_reporting, "nations_stale",
                              (json_int_t)is->nations_stale, "nations_missing",
                              (json_int_t)is->nations_missing, "value",
                              json_number_or_null(is->has_value, is->value), "min",
                              json_number_or_null(is->has_value, is->min), "median",
                              json_number_or_null(is->has_value, is->median), "max",
                              json_number_or_null(is->has_value, is->max), "status",
                              agg_status_counts_json(is->status_counts));
        if (p == NULL || agg_json_set_time(p, "at", h->points[k]) != 0 ||
            json_array_append_new(points, p) != 0) {
            json_decref(p);
            goto fail;
        }
    }
    doc = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I}", "indicator", ind->id, "requirement",
                    ind->requirement, "unit", ind->unit, "method", rsl_method_name(ind->method),
                    "direction", rsl_direction_name(ind->direction), "step_ms",
                    (json_int_t)step_ms, "max_age_ms", (json_int_t)ind->max_age_ms);
    if (doc == NULL)
        goto fail;
    int bad = agg_json_set_time(doc, "from", from_ms);
    bad |= agg_json_set_time(doc, "to", to_ms);
    bad |= json_object_set_new(doc, "points", points);
    points = NULL; /* transferred */
    if (bad != 0)
        goto fail;
    return doc;
fail:
    json_decref(points);
    json_decref(doc);
    return NULL;
}

/* ---- /v1/nations ------------------------------------------------------ */

struct agg_overview_agent {
    char agent_id[RSL_AGENT_ID_MAX + 1];
    size_t nation;                           /* index in the nation list */
    uint64_t last_sequence;
    int64_t last_seen_ms;
    int64_t reports;
};

struct agg_overview {
    const struct rsl_taxonomy *tax;
    int64_t at_ms;
    struct agg_overview_nation *nations;     /* tax->n_nations */
    struct agg_overview_agent *agents;
    size_t n_agents;
    size_t agents_cap;
};

int agg_overview_new(const struct agg_snapshot *snap, int64_t at_ms, struct agg_overview **out)
{
    const struct rsl_taxonomy *tax = snap->tax;
    *out = NULL;
    struct agg_overview *ov = calloc(1, sizeof(*ov));
    if (ov == NULL)
        return RSL_ENOMEM;
    ov->tax = tax;
    ov->at_ms = at_ms;
    ov->nations = calloc(tax->n_nations > 0 ? tax->n_nations : 1, sizeof(*ov->nations));
    if (ov->nations == NULL) {
        free(ov);
        return RSL_ENOMEM;
    }
    for (size_t n = 0; n < tax->n_nations; n++) {
        struct agg_overview_nation *on = &ov->nations[n];
        on->nation = &tax->nations[n];
        for (size_t i = 0; i < tax->n_indicators; i++) {
            const struct agg_cell *c = cell_at(snap, n, i);
            enum agg_state st = cell_state(c, &tax->indicators[i], at_ms);
            on->counts[st]++;
            /* Freshness: the newest observation known at T, current or not. */
            if (st != AGG_STATE_MISSING && c->observed_at_ms > on->last_observed_ms)
                on->last_observed_ms = c->observed_at_ms;
        }
    }
    *out = ov;
    return RSL_OK;
}

void agg_overview_free(struct agg_overview **overview)
{
    if (overview == NULL || *overview == NULL)
        return;
    free((*overview)->nations);
    free((*overview)->agents);
    free(*overview);
    *overview = NULL;
}

int agg_overview_add_agent(struct agg_overview *ov, const struct agg_agent_row *row)
{
    int n = rsl_taxonomy_nation_index(ov->tax, row->nation);
    if (n < 0)
        return RSL_OK; /* an agent of a nation outside the list: not shown */
    if (ov->n_agents == ov->agents_cap) {
        size_t cap = ov->agents_cap > 0 ? ov->agents_cap * 2 : 64;
        struct agg_overview_agent *a = realloc(ov->agents, cap * sizeof(*a));
        if (a == NULL)
            return RSL_ENOMEM;
        ov->agents = a;
        ov->agents_cap = cap;
    }
    struct agg_overview_agent *a = &ov->agents[ov->n_agents++];
    copy_trunc(a->agent_id, sizeof(a->agent_id), row->agent_id);
    a->nation = (size_t)n;
    a->last_sequence = row->last_sequence;
    a->last_seen_ms = row->last_seen_ms;
    a->reports = row->reports;
    struct agg_overview_nation *on = &ov->nations[n];
    on->n_agents++;
    if (row->last_seen_ms > on->last_report_ms)
        on->last_report_ms = row->last_seen_ms;
    return RSL_OK;
}

int agg_overview_agent_cb(void *ctx, const struct agg_agent_row *row)
{
    return agg_overview_add_agent(ctx, row);
}

const struct agg_overview_nation *agg_overview_nation_at(const struct agg_overview *ov, size_t n)
{
    return n < ov->tax->n_nations ? &ov->nations[n] : NULL;
}

size_t agg_overview_n_nations(const struct agg_overview *ov)
{
    return ov->tax->n_nations;
}

int64_t agg_overview_at(const struct agg_overview *ov)
{
    return ov->at_ms;
}

/* A time field that is null when nothing happened yet (0). */
static int set_time_or_null(json_t *obj, const char *name, int64_t ms)
{
    if (ms > 0)
        return agg_json_set_time(obj, name, ms);
    char key[64];
    snprintf(key, sizeof(key), "%s_ms", name);
    int bad = json_object_set_new(obj, name, json_null());
    bad |= json_object_set_new(obj, key, json_null());
    return bad;
}

static json_t *overview_nation_json(const struct agg_overview *ov, size_t n)
{
    const struct agg_overview_nation *on = &ov->nations[n];
    json_t *agents = json_array();
    if (agents == NULL)
        return NULL;
    for (size_t i = 0; i < ov->n_agents; i++) {
        const struct agg_overview_agent *a = &ov->agents[i];
        if (a->nation != n)
            continue;
        json_t *o = json_pack("{s:s,s:I,s:I}", "agent_id", a->agent_id, "last_sequence",
                              (json_int_t)a->last_sequence, "reports", (json_int_t)a->reports);
        if (o == NULL || set_time_or_null(o, "last_report", a->last_seen_ms) != 0 ||
            json_array_append_new(agents, o) != 0) {
            json_decref(o);
            json_decref(agents);
            return NULL;
        }
    }
    json_t *doc = json_pack("{s:s,s:s,s:I,s:I,s:I}", "nation", on->nation->code, "name",
                            on->nation->name, "current", (json_int_t)on->counts[AGG_STATE_CURRENT],
                            "stale", (json_int_t)on->counts[AGG_STATE_STALE], "missing",
                            (json_int_t)on->counts[AGG_STATE_MISSING]);
    if (doc == NULL) {
        json_decref(agents);
        return NULL;
    }
    int bad = set_time_or_null(doc, "last_report", on->last_report_ms);
    bad |= set_time_or_null(doc, "last_observed", on->last_observed_ms);
    bad |= json_object_set_new(doc, "agents", agents);
    if (bad != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

json_t *agg_overview_to_json(const struct agg_overview *ov)
{
    json_t *nations = json_array();
    json_t *doc = json_object();
    if (nations == NULL || doc == NULL)
        goto fail;
    for (size_t n = 0; n < ov->tax->n_nations; n++)
        if (json_array_append_new(nations, overview_nation_json(ov, n)) != 0)
            goto fail;
    int bad = agg_json_set_time(doc, "at", ov->at_ms);
    bad |= json_object_set_new(doc, "nations", nations);
    nations = NULL; /* transferred */
    if (bad != 0)
        goto fail;
    return doc;
fail:
    json_decref(nations);
    json_decref(doc);
    return NULL;
}
