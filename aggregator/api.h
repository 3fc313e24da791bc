/*
 * api.h - the routes of the HTTPS API (ARCHITECTURE section 6), apart from
 * the transport: http.c turns each evhttp request into an agg_api_request
 * (method, path, query, a few headers, the authenticated principal) and
 * sends back the agg_api_response this module fills. Nothing here touches
 * a socket, so unit tests can call agg_api_handle directly, and the route
 * table below is the single list that dispatch, metrics, the OpenAPI
 * document test and the access-matrix tests all read.
 *
 * Order of checks for every request (so that callers without credentials
 * learn nothing from parameter errors, and a nation token cannot probe
 * which other codes exist):
 *   method (405) -> route (404) -> credentials (401) -> role and scope (403)
 *   -> query parameters (400) -> existence of the named thing (404) ->
 *   the answer (200, or 503 when the store cannot be read).
 *
 * Access policies:
 *   public  anyone; credentials are not even looked at (/healthz, /readyz,
 *           /v1/openapi.json)
 *   page    the dashboard shell and its assets, which hold no data: anyone
 *           without credentials (the page then signs in), staff and
 *           nations; a partner gets 403 and an invalid bearer token 401
 *   roles   a valid credential whose role is in the route's set, then the
 *           route's own scope check (a nation reads only its own values, a
 *           partner only its own release)
 *
 * Threads: one struct agg_api per HTTPS worker, used by that worker only
 * (it holds the worker's read-only store handle and its response cache).
 * The request counters (struct agg_api_metrics) are shared by all workers
 * and updated with relaxed atomics.
 *
 * Caching: a present-time answer of /v1/summary, /v1/requirements,
 * /v1/nations and /v1/nations/{CODE} is kept per worker, keyed by route,
 * view (staff or which nation) and format, and reused while the store's
 * data version is unchanged (nothing committed since; checked at most every
 * AGG_API_CACHE_RECHECK_MS) and it is less than AGG_API_CACHE_TTL_MS old
 * (states such as stale depend on the clock too).
 * `at=` and history answers are computed each time.
 */
#ifndef AGG_API_H
#define AGG_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"
#include "store.h"

#define AGG_API_CACHE_TTL_MS 1000
/* A cached answer confirmed this recently is served without asking the
 * store for its data version: a commit shows up at most this much later. */
#define AGG_API_CACHE_RECHECK_MS 100
#define AGG_API_MAX_HEADERS 10

/* Who is asking, as the transport established it. */
enum agg_auth_state {
    AGG_AUTH_NONE = 0,     /* no Authorization header and no usable client certificate */
    AGG_AUTH_BAD_TOKEN,    /* an Authorization header that is malformed or unknown */
    AGG_AUTH_BAD_CERT,     /* a client certificate that is not verified or not mapped */
    AGG_AUTH_OK,
};

struct agg_principal {
    enum agg_auth_state state;
    enum agg_role_kind role;       /* AGG_AUTH_OK only */
    const char *name;              /* [token NAME] or [client NAME]; borrowed */
    const char *nation;            /* "DEU" for nation:DEU, else "" */
    const char *partner;           /* "EU" for partner:EU, else "" */
    bool via_certificate;
};

struct agg_api_request {
    const char *method;            /* "GET", "HEAD", "POST", ... */
    const char *path;              /* decoded path, NULL if the target was malformed */
    const char *query;             /* raw query string without '?', or NULL */
    const char *accept;            /* Accept header or NULL */
    const char *if_none_match;     /* If-None-Match header or NULL */
    struct agg_principal principal;
};

struct agg_api_header {
    const char *name;
    const char *value;             /* static strings only */
};

struct agg_api_response {
    int status;
    const char *content_type;
    const char *body;              /* `len` bytes; borrowed from `owned`, the cache or static data */
    size_t len;
    char *owned;                   /* freed by agg_api_response_clear */
    struct agg_api_header headers[AGG_API_MAX_HEADERS];
    size_t n_headers;
    int route;                     /* index in the route table, -1 if none matched */
};

/* Free what a response owns and reset it. NULL-safe. */
void agg_api_response_clear(struct agg_api_response *rs);

/* ---- route table -------------------------------------------------------- */

enum agg_api_access { AGG_ACCESS_PUBLIC, AGG_ACCESS_PAGE, AGG_ACCESS_ROLES };

/* Role bits for AGG_ACCESS_ROLES. */
#define AGG_ROLE_BIT(kind) (1u << (kind))

struct agg_api_route_info {
    const char *method;            /* "GET" (HEAD is answered for every GET route) */
    const char *pattern;           /* OpenAPI path template: "/v1/nations/{code}" */
    enum agg_api_access access;
    unsigned roles;                /* AGG_ROLE_BIT set, for AGG_ACCESS_ROLES */
};

size_t agg_api_route_count(void);
const struct agg_api_route_info *agg_api_route(size_t index);

/* ---- metrics shared by the workers ------------------------------------- */

struct agg_api_metrics;

int agg_api_metrics_new(struct agg_api_metrics **out);
void agg_api_metrics_free(struct agg_api_metrics **metrics);
/* Requests answered with `status` on route `route` (-1: no route). */
uint64_t agg_api_metrics_requests(const struct agg_api_metrics *metrics, int route, int status);

/* ---- one worker's API state --------------------------------------------- */

struct agg_api;

/* cfg, store and metrics are borrowed and must outlive the api. */
int agg_api_new(const struct agg_config *cfg, struct agg_store *store,
                struct agg_api_metrics *metrics, struct agg_api **out, struct rsl_error *err);
void agg_api_free(struct agg_api **api);

/* Answer one request: *rs is overwritten (clear it after use). Never
 * fails: problems become error responses (JSON {"error", "detail"}). */
void agg_api_handle(struct agg_api *api, const struct agg_api_request *rq,
                    struct agg_api_response *rs);

#endif
