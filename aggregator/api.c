/*
 * api.c - the routes of the HTTPS API: matching, access rules, query
 * parameters, documents, response cache and request counters (see api.h
 * for the order of checks, the access policies and the cache).
 *
 * Every answer is built here as bytes plus a short list of static headers;
 * http.c only copies them onto the wire. Errors are always JSON
 * {"error": "<code>", "detail": "<one sentence>"} with the status that
 * says what happened: 400 bad_request, 401 unauthorized, 403 forbidden,
 * 404 not_found, 405 method_not_allowed, 500 internal, 501
 * not_implemented, 503 unavailable.
 */
#include "api.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "assets.h"
#include "csv.h"
#include "ingest.h"
#include "releaser.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "store_outbox.h"
#include "summary.h"

#define LOG_MODULE "api"

#define API_MAX_QUERY_BYTES 1024
#define API_MAX_PARAM_VALUE 128
#define API_MAX_SEGMENT 64
#define API_MAX_CAPTURES 2
#define API_CACHE_SLOTS 16
#define API_CACHE_KEY_MAX 96
#define API_MAX_TIME_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */
#define API_HISTORY_DEFAULT_SPAN_MS (24 * 3600 * INT64_C(1000))
#define API_HISTORY_DEFAULT_STEP_MS (3600 * INT64_C(1000))

#define CT_JSON "application/json"
#define CT_CSV "text/csv; charset=utf-8; header=present"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_JOSE "application/jose"

/* The dashboard page may load its own script, style and data, nothing
 * else; no inline script or style, no framing, no form posts. API
 * responses are data: nothing in them may be run or framed. */
#define CSP_PAGE                                                                                  \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "            \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#define CSP_DATA "default-src 'none'; frame-ancestors 'none'"

/* ---- route table ------------------------------------------------------- */

/* The one list of routes. Dispatch walks it, /metrics labels requests with
 * its patterns, the unit test compares it with openapi.json entry by entry
 * and the access-matrix test probes every row, so a route cannot be added
 * in one place and forgotten in another. Patterns are OpenAPI path
 * templates so the comparison is a plain string match. Order matters only
 * for patterns that could both match; none can today (every template
 * variable is a whole segment, and literal prefixes differ). */

enum route_id {
    R_INDEX = 0,
    R_APP_JS,
    R_APP_CSS,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_OPENAPI,
    R_ME,
    R_SUMMARY,
    R_REQUIREMENTS,
    R_NATIONS,
    R_NATION,
    R_HISTORY,
    R_PARTNER,
    R_COUNT
};

#define STAFF AGG_ROLE_BIT(AGG_ROLE_STAFF)
#define NATION AGG_ROLE_BIT(AGG_ROLE_NATION)
#define PARTNER AGG_ROLE_BIT(AGG_ROLE_PARTNER)

static const struct agg_api_route_info routes[R_COUNT] = {
    [R_INDEX] = {"GET", "/", AGG_ACCESS_PAGE, 0},
    [R_APP_JS] = {"GET", "/assets/app.js", AGG_ACCESS_PAGE, 0},
    [R_APP_CSS] = {"GET", "/assets/app.css", AGG_ACCESS_PAGE, 0},
    [R_HEALTHZ] = {"GET", "/healthz", AGG_ACCESS_PUBLIC, 0},
    [R_READYZ] = {"GET", "/readyz", AGG_ACCESS_PUBLIC, 0},
    [R_METRICS] = {"GET", "/metrics", AGG_ACCESS_ROLES, STAFF},
    [R_OPENAPI] = {"GET", "/v1/openapi.json", AGG_ACCESS_PUBLIC, 0},
    [R_ME] = {"GET", "/v1/me", AGG_ACCESS_ROLES, STAFF | NATION | PARTNER},
    [R_SUMMARY] = {"GET", "/v1/summary", AGG_ACCESS_ROLES, STAFF | NATION},
    [R_REQUIREMENTS] = {"GET", "/v1/requirements", AGG_ACCESS_ROLES, STAFF | NATION},
    [R_NATIONS] = {"GET", "/v1/nations", AGG_ACCESS_ROLES, STAFF},
    [R_NATION] = {"GET", "/v1/nations/{code}", AGG_ACCESS_ROLES, STAFF | NATION},
    [R_HISTORY] = {"GET", "/v1/indicators/{id}/history", AGG_ACCESS_ROLES, STAFF | NATION},
    [R_PARTNER] = {"GET", "/v1/partners/{id}/summary", AGG_ACCESS_ROLES, STAFF | PARTNER},
};

size_t agg_api_route_count(void)
{
    return R_COUNT;
}

const struct agg_api_route_info *agg_api_route(size_t index)
{
    return index < R_COUNT ? &routes[index] : NULL;
}

/* A path segment a template variable may capture: ids, codes, file names. */
static bool segment_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

/* Match `path` against a template; "{x}" captures one segment of 1..64
 * segment characters. Exact otherwise: no trailing slash, no prefixes. */
static bool route_match(const char *pattern, const char *path,
                        char captures[API_MAX_CAPTURES][API_MAX_SEGMENT + 1])
{
    size_t n_captures = 0;
    const char *p = pattern;
    const char *s = path;
    while (*p != '\0') {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (close == NULL || n_captures >= API_MAX_CAPTURES)
                return false;
            size_t len = 0;
            while (s[len] != '\0' && s[len] != '/') {
                if (!segment_char(s[len]) || len >= API_MAX_SEGMENT)
                    return false;
                len++;
            }
            if (len == 0)
                return false;
            memcpy(captures[n_captures], s, len);
            captures[n_captures][len] = '\0';
            n_captures++;
            s += len;
            p = close + 1;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *s == '\0';
}

/* ---- metrics ------------------------------------------------------------ */

/* Counters per (route, status) rather than per raw path: the label set must
 * stay bounded whatever clients send (a path-labelled counter would let any
 * caller create series at will). Statuses outside the list share one
 * "other" bucket for the same reason. */

static const int counted_statuses[] = {200, 304, 400, 401, 403, 404, 405, 500, 501, 503};
#define N_STATUSES (sizeof(counted_statuses) / sizeof(counted_statuses[0]))

struct agg_api_metrics {
    /* [route or R_COUNT for "no route"][status index or N_STATUSES for
     * any other status]. Relaxed atomics: counters, no ordering needed. */
    _Atomic uint64_t requests[R_COUNT + 1][N_STATUSES + 1];
};

int agg_api_metrics_new(struct agg_api_metrics **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? RSL_OK : RSL_ENOMEM;
}

void agg_api_metrics_free(struct agg_api_metrics **metrics)
{
    if (metrics == NULL || *metrics == NULL)
        return;
    free(*metrics);
    *metrics = NULL;
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < N_STATUSES; i++)
        if (counted_statuses[i] == status)
            return i;
    return N_STATUSES;
}

static size_t route_slot(int route)
{
    return route >= 0 && route < R_COUNT ? (size_t)route : R_COUNT;
}

uint64_t agg_api_metrics_requests(const struct agg_api_metrics *m, int route, int status)
{
    if (m == NULL)
        return 0;
    return atomic_load_explicit(&m->requests[route_slot(route)][status_index(status)],
                                memory_order_relaxed);
}

/* ---- per-worker state and cache ----------------------------------------- */

/* Why a cache at all: the present summary is the hottest route (dashboards
 * on wall screens, scripts polling it) and computing it walks the whole
 * `current` table and builds a ~20 KB JSON document, while the data only
 * changes when ingest commits. Why per worker: no lock on the request
 * path, and two copies of a few KB each cost nothing. Why a small fixed
 * array with linear search: there are only a handful of distinct present
 * views (staff, each nation that polls, JSON or CSV). */

struct cache_entry {
    bool used;
    char key[API_CACHE_KEY_MAX];
    uint64_t data_version;
    int64_t made_ms;              /* monotonic */
    int64_t checked_ms;           /* monotonic: data version last confirmed */
    const char *content_type;     /* static */
    char *body;
    size_t len;
};

struct agg_api {
    const struct agg_config *cfg;         /* borrowed */
    struct agg_store *store;              /* borrowed, this worker's read-only handle */
    struct agg_api_metrics *metrics;      /* borrowed, shared */
    struct agg_outbox *outbox;            /* this worker's read-only release handle, lazily */
    struct cache_entry cache[API_CACHE_SLOTS];
    const struct agg_asset *asset_index;  /* borrowed from the generated table */
    const struct agg_asset *asset_js;
    const struct agg_asset *asset_css;
    const struct agg_asset *asset_openapi;
};

static const struct agg_asset *asset_find(const char *name)
{
    for (size_t i = 0; i < agg_n_assets; i++)
        if (strcmp(agg_assets[i].name, name) == 0)
            return &agg_assets[i];
    return NULL;
}

int agg_api_new(const struct agg_config *cfg, struct agg_store *store,
                struct agg_api_metrics *metrics, struct agg_api **out, struct rsl_error *err)
{
    *out = NULL;
    if (cfg == NULL || store == NULL || metrics == NULL || cfg->taxonomy == NULL)
        return rsl_error_set(err, RSL_EINVAL, "api: NULL argument");
    struct agg_api *api = calloc(1, sizeof(*api));
    if (api == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "api: out of memory");
    api->cfg = cfg;
    api->store = store;
    api->metrics = metrics;
    api->asset_index = asset_find("index.html");
    api->asset_js = asset_find("app.js");
    api->asset_css = asset_find("app.css");
    api->asset_openapi = asset_find("openapi.json");
    if (api->asset_index == NULL || api->asset_js == NULL || api->asset_css == NULL ||
        api->asset_openapi == NULL) {
        free(api);
        return rsl_error_set(err, RSL_EINVAL, "api: built without its embedded assets");
    }
    *out = api;
    return RSL_OK;
}

void agg_api_free(struct agg_api **api)
{
    if (api == NULL || *api == NULL)
        return;
    for (size_t i = 0; i < API_CACHE_SLOTS; i++)
        free((*api)->cache[i].body);
    agg_outbox_close(&(*api)->outbox);
    free(*api);
    *api = NULL;
}

static struct cache_entry *cache_lookup(struct agg_api *api, const char *key, int64_t now)
{
    for (size_t i = 0; i < API_CACHE_SLOTS; i++) {
        struct cache_entry *e = &api->cache[i];
        if (e->used && now - e->made_ms < AGG_API_CACHE_TTL_MS && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* Keep rs's body under `key`: the entry takes rs->owned and rs borrows it
 * back. The slot reused is the one with this key, else a free one, else
 * the oldest. */
static void cache_put(struct agg_api *api, const char *key, uint64_t version, int64_t now,
                      struct agg_api_response *rs)
{
    struct cache_entry *slot = NULL;
    for (size_t i = 0; i < API_CACHE_SLOTS && slot == NULL; i++)
        if (api->cache[i].used && strcmp(api->cache[i].key, key) == 0)
            slot = &api->cache[i];
    for (size_t i = 0; i < API_CACHE_SLOTS && slot == NULL; i++)
        if (!api->cache[i].used)
            slot = &api->cache[i];
    if (slot == NULL) {
        slot = &api->cache[0];
        for (size_t i = 1; i < API_CACHE_SLOTS; i++)
            if (api->cache[i].made_ms < slot->made_ms)
                slot = &api->cache[i];
    }
    if (rs->owned == NULL || rsl_strlcpy(slot->key, key, sizeof(slot->key)) != RSL_OK)
        return;
    free(slot->body);
    slot->used = true;
    slot->data_version = version;
    slot->made_ms = now;
    slot->checked_ms = now;
    slot->content_type = rs->content_type;
    slot->body = rs->owned;
    slot->len = rs->len;
    rs->owned = NULL; /* transferred; rs->body still points at it */
}

/* ---- responses ----------------------------------------------------------- */

void agg_api_response_clear(struct agg_api_response *rs)
{
    if (rs == NULL)
        return;
    free(rs->owned);
    memset(rs, 0, sizeof(*rs));
    rs->route = -1;
}

static void add_header(struct agg_api_response *rs, const char *name, const char *value)
{
    if (rs->n_headers < AGG_API_MAX_HEADERS) {
        rs->headers[rs->n_headers].name = name;
        rs->headers[rs->n_headers].value = value;
        rs->n_headers++;
    }
}

/* The response takes `body` (malloc'ed); any previous owned body is freed,
 * so an error set after a partial success never leaks. */
static void set_body_owned(struct agg_api_response *rs, int status, const char *content_type,
                           char *body, size_t len)
{
    free(rs->owned);
    rs->owned = body;
    rs->body = body;
    rs->len = len;
    rs->status = status;
    rs->content_type = content_type;
}

/* The response points at data it does not own: an embedded asset or a
 * cache entry, valid until this worker handles its next request (http.c
 * copies the bytes out before that). */
static void set_static(struct agg_api_response *rs, int status, const char *content_type,
                       const void *data, size_t len)
{
    free(rs->owned);
    rs->owned = NULL;
    rs->body = data;
    rs->len = len;
    rs->status = status;
    rs->content_type = content_type;
}

/* The document `doc` (consumed) as compact JSON plus a newline. A document
 * that could not be built or serialized (out of memory) becomes a 500 with
 * a fixed body, so a client is never left without an answer. */
static void set_json(struct agg_api_response *rs, int status, json_t *doc)
{
    static const char oom[] = "{\"error\":\"internal\",\"detail\":\"out of memory\"}\n";
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    if (text == NULL) {
        set_static(rs, 500, CT_JSON, oom, sizeof(oom) - 1);
        return;
    }
    size_t len = strlen(text);
    char *body = realloc(text, len + 2);
    if (body == NULL) {
        free(text);
        set_static(rs, 500, CT_JSON, oom, sizeof(oom) - 1);
        return;
    }
    body[len] = '\n';
    body[len + 1] = '\0';
    set_body_owned(rs, status, CT_JSON, body, len + 1);
}

static void set_error(struct agg_api_response *rs, int status, const char *error,
                      const char *detail)
{
    set_json(rs, status, json_pack("{s:s,s:s}", "error", error, "detail", detail));
}

/* A finished CSV buffer becomes the body; a buffer that ran out of memory
 * part-way becomes a 500 rather than a truncated table. */
static void set_csv(struct agg_api_response *rs, struct agg_buf *buf)
{
    if (buf->failed || buf->data == NULL) {
        agg_buf_free(buf);
        set_error(rs, 500, "internal", "out of memory");
        return;
    }
    set_body_owned(rs, 200, CT_CSV, buf->data, buf->len);
    memset(buf, 0, sizeof(*buf)); /* transferred */
}

/* ---- query strings ------------------------------------------------------ */

/* Percent-decode src[0..len) into out (NUL-terminated). '+' stays '+': the
 * query is RFC 3986, not a form, so "at=...+01:00" means what it says.
 * Rejects bad escapes, control characters and NUL, and over-long values. */
static int percent_decode(const char *src, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = rsl_hex_digit(src[i + 1]);
            int lo = rsl_hex_digit(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return -1;
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* The parameters a route accepts; values are decoded into `value`. */
struct query_param {
    const char *name;
    bool present;
    char value[API_MAX_PARAM_VALUE + 1];
};

/* Parse `query` (may be NULL or "") strictly: every parameter must be one
 * of `params`, given at most once, with a non-empty value. On error writes
 * a detail for the 400 response and returns -1. */
static int query_parse(const char *query, struct query_param *params, size_t n_params,
                       char *detail, size_t detaillen)
{
    if (query == NULL || query[0] == '\0')
        return 0;
    size_t qlen = strlen(query);
    if (qlen > API_MAX_QUERY_BYTES) {
        snprintf(detail, detaillen, "query string longer than %d bytes", API_MAX_QUERY_BYTES);
        return -1;
    }
    const char *p = query;
    while (*p != '\0') {
        const char *end = strchr(p, '&');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char name[64];
        if (len == 0) {
            snprintf(detail, detaillen, "empty query parameter");
            return -1;
        }
        size_t name_len = eq != NULL ? (size_t)(eq - p) : len;
        if (percent_decode(p, name_len, name, sizeof(name)) != 0) {
            snprintf(detail, detaillen, "malformed query parameter name");
            return -1;
        }
        struct query_param *param = NULL;
        for (size_t i = 0; i < n_params; i++)
            if (strcmp(params[i].name, name) == 0)
                param = &params[i];
        if (param == NULL) {
            char shown[64];
            snprintf(detail, detaillen, "unknown query parameter '%s'",
                     rsl_text_show(name, shown, sizeof(shown)));
            return -1;
        }
        if (param->present) {
            snprintf(detail, detaillen, "query parameter '%s' given more than once", name);
            return -1;
        }
        size_t value_len = eq != NULL ? len - name_len - 1 : 0;
        if (eq == NULL || value_len == 0) {
            snprintf(detail, detaillen, "query parameter '%s' needs a value", name);
            return -1;
        }
        if (percent_decode(eq + 1, value_len, param->value, sizeof(param->value)) != 0) {
            snprintf(detail, detaillen, "query parameter '%s': malformed or longer than %d bytes",
                     name, API_MAX_PARAM_VALUE);
            return -1;
        }
        param->present = true;
        p += len;
        if (*p == '&') {
            p++;
            if (*p == '\0') {
                snprintf(detail, detaillen, "empty query parameter");
                return -1;
            }
        }
    }
    return 0;
}

/* A time parameter: RFC 3339 or unix ms, 1 ms after the epoch up to the
 * year 9999 (so every time printed back has a four-digit year). */
static int parse_time_param(const struct query_param *param, int64_t *out, char *detail,
                            size_t detaillen)
{
    int64_t t = 0;
    if (rsl_parse_time_ms(param->value, &t) != RSL_OK || t <= 0 || t > API_MAX_TIME_MS) {
        snprintf(detail, detaillen,
                 "query parameter '%s': expected RFC 3339 (2026-11-27T09:00:00Z) or unix "
                 "milliseconds", param->name);
        return -1;
    }
    *out = t;
    return 0;
}

/* CSV or JSON: ?format= wins, else Accept naming text/csv. A browser's
 * fetch sends a wildcard Accept and gets JSON; no content negotiation beyond
 * that is attempted (no 406: JSON is always an acceptable fallback for the
 * scripts that send odd Accept headers). */
static int want_csv(const struct agg_api_request *rq, const struct query_param *format,
                    bool *csv, char *detail, size_t detaillen)
{
    *csv = false;
    if (format->present) {
        if (strcmp(format->value, "csv") == 0) {
            *csv = true;
        } else if (strcmp(format->value, "json") != 0) {
            snprintf(detail, detaillen, "query parameter 'format': expected json or csv");
            return -1;
        }
        return 0;
    }
    *csv = rq->accept != NULL && strcasestr(rq->accept, "text/csv") != NULL;
    return 0;
}

/* ---- access ------------------------------------------------------------- */

/* 0 if the principal may use the route, else fills the 401/403 answer and
 * returns -1. Scope checks that need the route's parameters come later. */
static int check_access(const struct agg_api_route_info *route, const struct agg_principal *pr,
                        struct agg_api_response *rs)
{
    if (route->access == AGG_ACCESS_PUBLIC)
        return 0;
    if (route->access == AGG_ACCESS_PAGE) {
        /* The shell holds no data. An unusable certificate must not lock a
         * browser out of the page that lets it sign in with a token. */
        if (pr->state == AGG_AUTH_NONE || pr->state == AGG_AUTH_BAD_CERT)
            return 0;
    }
    switch (pr->state) {
    case AGG_AUTH_NONE:
        add_header(rs, "WWW-Authenticate", "Bearer realm=\"resilience\"");
        set_error(rs, 401, "unauthorized",
                  "an Authorization: Bearer token or a client certificate is required");
        return -1;
    case AGG_AUTH_BAD_TOKEN:
        add_header(rs, "WWW-Authenticate", "Bearer realm=\"resilience\", error=\"invalid_token\"");
        set_error(rs, 401, "unauthorized", "the bearer token is not valid");
        return -1;
    case AGG_AUTH_BAD_CERT:
        add_header(rs, "WWW-Authenticate", "Bearer realm=\"resilience\"");
        set_error(rs, 401, "unauthorized",
                  "the client certificate is not trusted or not mapped to a role");
        return -1;
    case AGG_AUTH_OK:
        break;
    }
    unsigned allowed = route->access == AGG_ACCESS_PAGE ? (STAFF | NATION) : route->roles;
    if ((allowed & AGG_ROLE_BIT(pr->role)) == 0) {
        set_error(rs, 403, "forbidden", "this role may not use this resource");
        return -1;
    }
    return 0;
}

/* ---- documents from the store ------------------------------------------- */

enum doc_kind { DOC_SUMMARY, DOC_REQUIREMENTS, DOC_NATIONS, DOC_NATION };

/* Fill a snapshot from the worker's store; -1 after setting a 503. A store
 * that cannot be read is the server's problem, not the client's, and 503
 * tells a load balancer to try elsewhere. */
static int load_snapshot(struct agg_api *api, int64_t store_at, struct agg_snapshot **out,
                         struct agg_api_response *rs)
{
    struct rsl_error err = {0};
    struct agg_snapshot *snap = NULL;
    *out = NULL;
    if (agg_snapshot_new(api->cfg->taxonomy, &snap) != RSL_OK) {
        set_error(rs, 500, "internal", "out of memory");
        return -1;
    }
    int rc = agg_store_latest(api->store, store_at, agg_snapshot_value_cb, snap, &err);
    if (rc != RSL_OK) {
        RSL_ERR(LOG_MODULE, "store read failed: %s", err.text);
        agg_snapshot_free(&snap);
        set_error(rs, 503, "unavailable", "the store cannot be read");
        return -1;
    }
    *out = snap;
    return 0;
}

/* Compute and format one of the snapshot-based documents into rs.
 * `nation` is the {code} of DOC_NATION; `only_nation` restricts per-nation
 * detail for a nation principal. */
static void render_document(struct agg_api *api, enum doc_kind kind, const char *nation,
                            const char *only_nation, bool csv, int64_t at_ms, int64_t store_at,
                            struct agg_api_response *rs)
{
    struct agg_snapshot *snap = NULL;
    struct agg_summary *summary = NULL;
    struct agg_nation_view *view = NULL;
    struct agg_overview *overview = NULL;
    struct agg_buf buf = {0};
    struct rsl_error err = {0};

    if (load_snapshot(api, store_at, &snap, rs) != 0)
        goto out;
    switch (kind) {
    case DOC_SUMMARY:
    case DOC_REQUIREMENTS:
        if (agg_summary_compute(snap, at_ms, &summary, &err) != RSL_OK) {
            set_error(rs, 500, "internal", err.text);
            goto out;
        }
        if (csv) {
            if (kind == DOC_SUMMARY)
                agg_csv_summary(&buf, summary);
            else
                agg_csv_requirements(&buf, summary, only_nation);
            set_csv(rs, &buf);
        } else {
            set_json(rs, 200, kind == DOC_SUMMARY ? agg_summary_to_json(summary, only_nation)
                                                  : agg_requirements_to_json(summary, only_nation));
        }
        break;
    case DOC_NATION:
        if (agg_nation_view_compute(snap, nation, at_ms, &view, &err) != RSL_OK) {
            set_error(rs, 500, "internal", err.text);
            goto out;
        }
        if (csv) {
            agg_csv_nation_view(&buf, view);
            set_csv(rs, &buf);
        } else {
            set_json(rs, 200, agg_nation_view_to_json(view));
        }
        break;
    case DOC_NATIONS:
        if (agg_overview_new(snap, at_ms, &overview) != RSL_OK) {
            set_error(rs, 500, "internal", "out of memory");
            goto out;
        }
        if (agg_store_agents(api->store, agg_overview_agent_cb, overview, &err) != RSL_OK) {
            RSL_ERR(LOG_MODULE, "store read failed: %s", err.text);
            set_error(rs, 503, "unavailable", "the store cannot be read");
            goto out;
        }
        if (csv) {
            agg_csv_overview(&buf, overview);
            set_csv(rs, &buf);
        } else {
            set_json(rs, 200, agg_overview_to_json(overview));
        }
        break;
    }
out:
    agg_buf_free(&buf);
    agg_overview_free(&overview);
    agg_nation_view_free(&view);
    agg_summary_free(&summary);
    agg_snapshot_free(&snap);
}

/* A snapshot document at `at` (when given) or now, from the cache when the
 * present is asked and nothing changed. */
static void serve_document(struct agg_api *api, enum doc_kind kind, const char *nation,
                           const char *only_nation, bool csv, const struct query_param *at,
                           struct agg_api_response *rs)
{
    char detail[256];
    int64_t at_ms = 0;
    if (at != NULL && at->present) {
        if (parse_time_param(at, &at_ms, detail, sizeof(detail)) != 0) {
            set_error(rs, 400, "bad_request", detail);
            return;
        }
        render_document(api, kind, nation, only_nation, csv, at_ms, at_ms, rs);
        return;
    }
    /* The present, from the cache if it is young enough and the store has
     * not changed. Asking the store costs a read transaction (two fcntl
     * locks), so an entry confirmed less than AGG_API_CACHE_RECHECK_MS ago
     * is served without asking. The version is read before computing, so
     * a commit that lands while we compute changes it and a later request
     * recomputes. */
    char key[API_CACHE_KEY_MAX];
    snprintf(key, sizeof(key), "%d|%s|%s|%s", (int)kind, nation != NULL ? nation : "",
             only_nation != NULL ? only_nation : "*", csv ? "csv" : "json");
    int64_t now = rsl_monotonic_ms();
    struct cache_entry *hit = cache_lookup(api, key, now);
    if (hit != NULL && now - hit->checked_ms < AGG_API_CACHE_RECHECK_MS) {
        set_static(rs, 200, hit->content_type, hit->body, hit->len);
        return;
    }
    uint64_t version = 0;
    struct rsl_error err = {0};
    if (agg_store_data_version(api->store, &version, &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "store read failed: %s", err.text);
        set_error(rs, 503, "unavailable", "the store cannot be read");
        return;
    }
    if (hit != NULL && hit->data_version == version) {
        hit->checked_ms = now;
        set_static(rs, 200, hit->content_type, hit->body, hit->len);
        return;
    }
    render_document(api, kind, nation, only_nation, csv, rsl_now_ms(), -1, rs);
    if (rs->status == 200)
        cache_put(api, key, version, now, rs);
}

/* ---- routes ------------------------------------------------------------- */

static const char *only_nation_of(const struct agg_principal *pr)
{
    return pr->role == AGG_ROLE_NATION ? pr->nation : NULL;
}

static void route_healthz(struct agg_api *api, struct agg_api_response *rs)
{
    struct agg_store_stats stats = {0};
    struct rsl_error err = {0};
    if (agg_store_stats(api->store, &stats, &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "healthz: store: %s", err.text);
        set_json(rs, 503, json_pack("{s:s,s:s}", "status", "error", "store", "error"));
        return;
    }
    set_json(rs, 200, json_pack("{s:s,s:s,s:I}", "status", "ok", "store", "ok", "reports",
                                (json_int_t)stats.reports));
}

/* Ready = doing its job: the store can be read right now and the ingest
 * pipeline is running (reports are being accepted). */
static void route_readyz(struct agg_api *api, struct agg_api_response *rs)
{
    uint64_t version = 0;
    struct rsl_error err = {0};
    struct agg_ingest_gauges gauges;
    bool store_ok = agg_store_data_version(api->store, &version, &err) == RSL_OK;
    if (!store_ok)
        RSL_WARN(LOG_MODULE, "readyz: store: %s", err.text);
    /* The ingest publishes its worker count while it runs (0 otherwise). */
    agg_ingest_gauges(&gauges);
    bool ingest_ok = gauges.workers > 0;
    set_json(rs, store_ok && ingest_ok ? 200 : 503,
             json_pack("{s:s,s:s,s:s}", "status", store_ok && ingest_ok ? "ready" : "not_ready",
                       "store", store_ok ? "ok" : "error", "ingest",
                       ingest_ok ? "running" : "stopped"));
}

static void route_me(const struct agg_principal *pr, struct agg_api_response *rs)
{
    set_json(rs, 200,
             json_pack("{s:s,s:s,s:s,s:o,s:o}", "role", agg_role_kind_name(pr->role), "name",
                       pr->name != NULL ? pr->name : "", "via",
                       pr->via_certificate ? "certificate" : "token", "nation",
                       pr->role == AGG_ROLE_NATION ? json_string(pr->nation) : json_null(),
                       "partner",
                       pr->role == AGG_ROLE_PARTNER ? json_string(pr->partner) : json_null()));
}

/* Prometheus text exposition format 0.0.4: the ingest's metrics (counters,
 * queue depths, latency histograms: agg_ingest_metrics_text, owned by the
 * ingest module), then the store's size as this worker reads it and the
 * HTTPS request counters by route and status. */
static void route_metrics(struct agg_api *api, struct agg_api_response *rs)
{
    struct agg_buf b = {0};
    char *ingest = NULL;
    size_t ingest_len = 0;
    agg_buf_puts(&b, "# HELP resilience_build_info Version of the running aggregator.\n"
                     "# TYPE resilience_build_info gauge\n");
    agg_buf_printf(&b, "resilience_build_info{version=\"%s\"} 1\n", RSL_VERSION);
    if (agg_ingest_metrics_text(&ingest, &ingest_len) != RSL_OK) {
        agg_buf_free(&b);
        set_error(rs, 500, "internal", "out of memory");
        return;
    }
    agg_buf_append(&b, ingest, ingest_len);
    free(ingest);
    char *releases = NULL;
    size_t releases_len = 0;
    if (agg_release_metrics_text(&releases, &releases_len) != RSL_OK) {
        agg_buf_free(&b);
        set_error(rs, 500, "internal", "out of memory");
        return;
    }
    agg_buf_append(&b, releases, releases_len);
    free(releases);

    struct agg_store_stats stats = {0};
    struct rsl_error err = {0};
    if (agg_store_stats(api->store, &stats, &err) == RSL_OK) {
        agg_buf_printf(&b,
                       "# HELP resilience_store_reports Reports held in the store.\n"
                       "# TYPE resilience_store_reports gauge\nresilience_store_reports %lld\n"
                       "# HELP resilience_store_measurements Measurements held in the store.\n"
                       "# TYPE resilience_store_measurements gauge\n"
                       "resilience_store_measurements %lld\n",
                       (long long)stats.reports, (long long)stats.measurements);
    }
    agg_buf_puts(&b, "# HELP resilience_store_up 1 if the HTTPS worker can read the store.\n"
                     "# TYPE resilience_store_up gauge\n");
    agg_buf_printf(&b, "resilience_store_up %d\n", err.code == 0 ? 1 : 0);

    agg_buf_puts(&b, "# HELP resilience_http_requests_total HTTPS requests answered, by route "
                     "and status.\n# TYPE resilience_http_requests_total counter\n");
    for (size_t r = 0; r <= R_COUNT; r++) {
        for (size_t s = 0; s <= N_STATUSES; s++) {
            uint64_t n = atomic_load_explicit(&api->metrics->requests[r][s], memory_order_relaxed);
            if (n == 0)
                continue;
            const char *route = r < R_COUNT ? routes[r].pattern : "other";
            if (s < N_STATUSES)
                agg_buf_printf(&b, "resilience_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                               route, counted_statuses[s], (unsigned long long)n);
            else
                agg_buf_printf(&b,
                               "resilience_http_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                               route, (unsigned long long)n);
        }
    }
    if (b.failed || b.data == NULL) {
        agg_buf_free(&b);
        set_error(rs, 500, "internal", "out of memory");
        return;
    }
    set_body_owned(rs, 200, CT_METRICS, b.data, b.len);
}

static void route_history(struct agg_api *api, const char *indicator, bool csv,
                          const struct query_param *from,
                          const struct query_param *to, const struct query_param *step,
                          struct agg_api_response *rs)
{
    char detail[256];
    int64_t to_ms = rsl_now_ms();
    int64_t from_ms = 0;
    int64_t step_ms = API_HISTORY_DEFAULT_STEP_MS;
    int64_t *points = NULL;
    struct agg_history *history = NULL;
    struct rsl_error err = {0};

    if (to->present && parse_time_param(to, &to_ms, detail, sizeof(detail)) != 0)
        goto bad;
    from_ms = to_ms - API_HISTORY_DEFAULT_SPAN_MS;
    if (from->present && parse_time_param(from, &from_ms, detail, sizeof(detail)) != 0)
        goto bad;
    if (from_ms <= 0)
        from_ms = 1;
    if (step->present &&
        (rsl_parse_duration_ms(step->value, &step_ms) != RSL_OK || step_ms <= 0)) {
        snprintf(detail, sizeof(detail),
                 "query parameter 'step': expected a duration such as 300, 90s, 15m, 1h or 1d");
        goto bad;
    }
    if (from_ms > to_ms) {
        snprintf(detail, sizeof(detail), "'from' is after 'to'");
        goto bad;
    }
    /* Count the points without overflow: (to - from) / step + 1. */
    int64_t n = (to_ms - from_ms) / step_ms + 1;
    if (n > AGG_HISTORY_MAX_POINTS) {
        snprintf(detail, sizeof(detail),
                 "from, to and step give %lld points; at most %d (use a larger step)",
                 (long long)n, AGG_HISTORY_MAX_POINTS);
        goto bad;
    }
    if (rsl_taxonomy_indicator_index(api->cfg->taxonomy, indicator) < 0) {
        set_error(rs, 404, "not_found", "no such indicator in the taxonomy");
        goto out;
    }
    points = malloc((size_t)n * sizeof(*points));
    if (points == NULL) {
        set_error(rs, 500, "internal", "out of memory");
        goto out;
    }
    for (int64_t k = 0; k < n; k++)
        points[k] = from_ms + k * step_ms;
    if (agg_history_new(api->cfg->taxonomy, indicator, points, (size_t)n, &history) != RSL_OK) {
        set_error(rs, 500, "internal", "out of memory");
        goto out;
    }
    if (agg_store_history(api->store, indicator, points, (size_t)n, agg_history_point_cb, history,
                          &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "store read failed: %s", err.text);
        set_error(rs, 503, "unavailable", "the store cannot be read");
        goto out;
    }
    if (agg_history_compute(history, &err) != RSL_OK) {
        set_error(rs, 500, "internal", err.text);
        goto out;
    }
    if (csv) {
        struct agg_buf buf = {0};
        agg_csv_history(&buf, history);
        set_csv(rs, &buf);
    } else {
        set_json(rs, 200, agg_history_to_json(history, from_ms, to_ms, step_ms));
    }
    goto out;
bad:
    set_error(rs, 400, "bad_request", detail);
out:
    agg_history_free(&history);
    free(points);
}

/* The partner's release (section 7): the newest one the release generator
 * stored, as it was signed (the JWS compact serialization, not JSON).
 * Scope was checked by dispatch. The outbox handle is opened on first use:
 * most workers never serve a partner. */
static void route_partner(struct agg_api *api, const char *id, struct agg_api_response *rs)
{
    bool known = false;
    for (size_t i = 0; i < api->cfg->n_partners; i++)
        if (strcmp(api->cfg->partners[i].id, id) == 0)
            known = true;
    if (!known) {
        set_error(rs, 404, "not_found", "no such partner in the configuration");
        return;
    }
    struct rsl_error err;
    struct agg_release_row row;
    bool found = false;
    rsl_error_clear(&err);
    memset(&row, 0, sizeof(row));
    if (api->outbox == NULL &&
        agg_outbox_open(api->cfg->store_path, true, &api->outbox, &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "partner release: %s", err.text);
        set_error(rs, 503, "unavailable", "the release store cannot be read");
        return;
    }
    if (agg_outbox_last(api->outbox, id, &row, &found, &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "partner release: %s", err.text);
        set_error(rs, 503, "unavailable", "the release store cannot be read");
        return;
    }
    if (!found) {
        set_error(rs, 503, "unavailable", "no release has been made for this partner yet");
        return;
    }
    set_body_owned(rs, 200, CT_JOSE, row.jws, row.jws_len);
    row.jws = NULL; /* the response owns it now */
    agg_release_row_clear(&row);
}

/* An embedded file with its strong ETag. If-None-Match is matched by
 * substring: the header may list several tags, and ours are fixed-length
 * quoted hex that cannot occur inside another tag by accident. */
static void serve_asset(const struct agg_api_request *rq, const struct agg_asset *asset,
                        const char *content_type, struct agg_api_response *rs)
{
    add_header(rs, "ETag", asset->etag);
    if (rq->if_none_match != NULL && strstr(rq->if_none_match, asset->etag) != NULL) {
        set_static(rs, 304, content_type, "", 0);
        return;
    }
    set_static(rs, 200, content_type, asset->data, asset->len);
}

/* Common headers, by what the answer is. */
static void finish_headers(struct agg_api *api, int route, struct agg_api_response *rs)
{
    bool asset = route == R_INDEX || route == R_APP_JS || route == R_APP_CSS || route == R_OPENAPI;
    /* Assets may be kept but must be revalidated (ETag); data never. */
    add_header(rs, "Cache-Control", asset && rs->status < 400 ? "no-cache" : "no-store");
    add_header(rs, "X-Content-Type-Options", "nosniff");
    if (api->cfg->https_hsts)
        add_header(rs, "Strict-Transport-Security", "max-age=31536000");
    if (route == R_INDEX && rs->status < 400) {
        add_header(rs, "Content-Security-Policy", CSP_PAGE);
        add_header(rs, "X-Frame-Options", "DENY");
        add_header(rs, "Referrer-Policy", "no-referrer");
    } else {
        add_header(rs, "Content-Security-Policy", CSP_DATA);
    }
}

/* Route-specific checks and the answer. Which query parameters each route
 * accepts is decided here, in one switch, so the strictness rule (unknown
 * parameter = 400 naming it) is the same everywhere: a typo such as
 * ?form=csv must not silently return JSON. */
static void dispatch(struct agg_api *api, int route, const struct agg_api_request *rq,
                     char captures[API_MAX_CAPTURES][API_MAX_SEGMENT + 1],
                     struct agg_api_response *rs)
{
    const struct agg_principal *pr = &rq->principal;
    struct query_param params[4];
    size_t n_params = 0;
    char detail[256];
    memset(params, 0, sizeof(params));

    switch (route) {
    case R_SUMMARY:
    case R_REQUIREMENTS:
    case R_NATION:
        params[n_params++].name = "at";
        params[n_params++].name = "format";
        break;
    case R_NATIONS:
        params[n_params++].name = "format";
        break;
    case R_HISTORY:
        params[n_params++].name = "from";
        params[n_params++].name = "to";
        params[n_params++].name = "step";
        params[n_params++].name = "format";
        break;
    default:
        break;
    }

    /* Scope of a nation principal on /v1/nations/{code}: before the query
     * and before existence, so it cannot probe which codes exist. */
    if (route == R_NATION && pr->role == AGG_ROLE_NATION && strcmp(pr->nation, captures[0]) != 0) {
        set_error(rs, 403, "forbidden", "a nation may read only its own values");
        return;
    }
    if (route == R_PARTNER && pr->role == AGG_ROLE_PARTNER && strcmp(pr->partner, captures[0]) != 0) {
        /* Likewise a partner cannot list the partners. */
        set_error(rs, 403, "forbidden", "a partner may read only its own release");
        return;
    }
    /* The page and its assets ignore query strings (cache busters, links
     * with tracking parameters); every other route is strict. */
    bool page = routes[route].access == AGG_ACCESS_PAGE;
    if (!page && query_parse(rq->query, params, n_params, detail, sizeof(detail)) != 0) {
        set_error(rs, 400, "bad_request", detail);
        return;
    }
    struct query_param *format = NULL;
    for (size_t i = 0; i < n_params; i++)
        if (strcmp(params[i].name, "format") == 0)
            format = &params[i];
    bool csv = false;
    if (format != NULL && want_csv(rq, format, &csv, detail, sizeof(detail)) != 0) {
        set_error(rs, 400, "bad_request", detail);
        return;
    }

    switch (route) {
    case R_INDEX:
        serve_asset(rq, api->asset_index, "text/html; charset=utf-8", rs);
        return;
    case R_APP_JS:
        serve_asset(rq, api->asset_js, "text/javascript; charset=utf-8", rs);
        return;
    case R_APP_CSS:
        serve_asset(rq, api->asset_css, "text/css; charset=utf-8", rs);
        return;
    case R_OPENAPI:
        serve_asset(rq, api->asset_openapi, CT_JSON, rs);
        return;
    case R_HEALTHZ:
        route_healthz(api, rs);
        return;
    case R_READYZ:
        route_readyz(api, rs);
        return;
    case R_METRICS:
        route_metrics(api, rs);
        return;
    case R_ME:
        route_me(pr, rs);
        return;
    case R_SUMMARY:
        serve_document(api, DOC_SUMMARY, NULL, only_nation_of(pr), csv, &params[0], rs);
        return;
    case R_REQUIREMENTS:
        serve_document(api, DOC_REQUIREMENTS, NULL, only_nation_of(pr), csv, &params[0], rs);
        return;
    case R_NATIONS:
        serve_document(api, DOC_NATIONS, NULL, NULL, csv, NULL, rs);
        return;
    case R_NATION:
        if (rsl_taxonomy_nation_index(api->cfg->taxonomy, captures[0]) < 0) {
            set_error(rs, 404, "not_found", "no such nation in the nation list");
            return;
        }
        serve_document(api, DOC_NATION, captures[0], NULL, csv, &params[0], rs);
        return;
    case R_HISTORY:
        route_history(api, captures[0], csv, &params[0], &params[1], &params[2], rs);
        return;
    case R_PARTNER:
        route_partner(api, captures[0], rs);
        return;
    default:
        set_error(rs, 404, "not_found", "no such resource");
        return;
    }
}

/* The whole order of checks of api.h lives in this function and dispatch;
 * every path out of it goes through `done`, so every answer gets the
 * common headers and is counted. */
void agg_api_handle(struct agg_api *api, const struct agg_api_request *rq,
                    struct agg_api_response *rs)
{
    char captures[API_MAX_CAPTURES][API_MAX_SEGMENT + 1];
    int route = -1;

    memset(rs, 0, sizeof(*rs));
    rs->route = -1;
    memset(captures, 0, sizeof(captures));
    bool get = strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0;
    if (rq->path == NULL) {
        set_error(rs, 400, "bad_request", "malformed request target");
        goto done;
    }
    for (int i = 0; i < R_COUNT; i++) {
        if (route_match(routes[i].pattern, rq->path, captures)) {
            route = i;
            break;
        }
    }
    if (!get) {
        /* Every route is read-only. */
        add_header(rs, "Allow", "GET, HEAD");
        set_error(rs, 405, "method_not_allowed", "only GET and HEAD are supported");
        goto done;
    }
    if (route < 0) {
        set_error(rs, 404, "not_found", "no such resource");
        goto done;
    }
    rs->route = route;
    if (check_access(&routes[route], &rq->principal, rs) != 0)
        goto done;
    dispatch(api, route, rq, captures, rs);
done:
    rs->route = route;
    finish_headers(api, route, rs);
    atomic_fetch_add_explicit(&api->metrics->requests[route_slot(route)][status_index(rs->status)],
                              1, memory_order_relaxed);
}
