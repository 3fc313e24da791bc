/*
 * fuzz_api.c - the HTTPS API's request handling without the network: the
 * request target as a client sends it (path routing with {code}/{id}
 * captures, strict query strings, percent-decoding, `at`, `from`, `to`,
 * `step`, `format`), through agg_api_handle (aggregator/api.c), the one
 * function the transport (http.c) calls for every request, against a
 * real SQLite store holding a few reports.
 *
 * Input: one selector byte, then the request target ("/v1/summary?at=...")
 * up to the first NUL or the end.
 *   bits 0-2  who asks: none, bad token, bad certificate, staff, nation
 *             DEU, nation FRA, partner EU, staff by certificate
 *   bits 3-4  method: GET, HEAD, POST, DELETE
 *   bit 5     Accept: text/csv
 *   bit 6     If-None-Match: the ETag of the previous answer (reaches 304)
 *   bit 7     pass path and query split at the first '?' as they are,
 *             instead of through libevent's URI parser as http.c does: the
 *             API must also hold up against paths the parser would never
 *             produce.
 *
 * Beyond "no crash, no leak, no UB", every answer keeps the API's
 * contract (api.h): a status it documents, errors as a JSON object with
 * "error" (the health probes' 503 is their status object), JSON answers that parse, and the order of checks: a caller
 * without valid credentials gets 401 on any route that needs a role, a
 * role outside the route's set gets 403, and a nation or partner never
 * sees another's scope.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <jansson.h>

#include "aggregator/api.h"
#include "aggregator/config.h"
#include "aggregator/store.h"
#include "fuzz_tmp.h"
#include "rsl/codec.h"
#include "rsl/log.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct agg_config *config;
static struct agg_store *store;
static struct agg_api_metrics *metrics;
static struct agg_api *api;
static char last_etag[128];

/* Store one report of `n` measurements (the first n indicators of the
 * taxonomy) by `agent` of `nation`. */
static void add_report(struct agg_store *st, const char *agent, const char *nation,
                       uint64_t sequence, size_t n, double base, int64_t at_ms)
{
    Resilience__V1__Measurement m[8];
    Resilience__V1__Measurement *ms[8];
    Resilience__V1__Report r = RESILIENCE__V1__REPORT__INIT;
    bool excluded[8] = {false};
    struct rsl_error err = {0};
    if (n > 8 || n > config->taxonomy->n_indicators)
        abort();
    for (size_t i = 0; i < n; i++) {
        Resilience__V1__Measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        m[i] = init;
        m[i].indicator = config->taxonomy->indicators[i].id;
        m[i].unit = config->taxonomy->indicators[i].unit;
        m[i].value = base + (double)i * 7.5;
        m[i].observed_at_ms = at_ms;
        ms[i] = &m[i];
    }
    r.agent_id = (char *)(uintptr_t)agent;
    r.nation = (char *)(uintptr_t)nation;
    r.organisation = (char *)(uintptr_t)"Ministry";
    r.sequence = sequence;
    r.created_at_ms = at_ms;
    r.n_measurements = n;
    r.measurements = ms;
    r.marking = (char *)(uintptr_t)"NATO UNCLASSIFIED";
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (rsl_report_encode(&r, &bytes, &len) != RSL_OK)
        abort();
    struct agg_report_in in = {
        .agent_id = agent,
        .nation = nation,
        .sequence = sequence,
        .created_at_ms = at_ms,
        .received_at_ms = at_ms + 1000,
        .key_id = "00112233445566778899aabbccddeeff",
        .signed_bytes = bytes, /* the store keeps but never checks them */
        .signed_len = len,
        .report_bytes = bytes,
        .report_len = len,
        .report = &r,
        .excluded = excluded,
    };
    enum agg_append_result result;
    if (agg_store_append(st, &in, &result, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_api: append: %s\n", err.text);
        abort();
    }
    free(bytes);
}

static void setup_once(void)
{
    struct rsl_error err = {0};
    char db[640], ignored[640];
    struct agg_store *writer = NULL;

    rsl_log_init("fuzz_api", RSL_LOG_ERR);
    config = calloc(1, sizeof(*config));
    if (config == NULL)
        abort();
    if (rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_SHARE_DIR "/nations.csv",
                          &config->taxonomy, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_api: taxonomy: %s\n", err.text);
        abort();
    }
    config->https_hsts = true;
    config->partners = calloc(1, sizeof(*config->partners));
    if (config->partners == NULL)
        abort();
    snprintf(config->partners[0].id, sizeof(config->partners[0].id), "EU");
    config->partners[0].min_nations = 2;
    config->n_partners = 1;

    fuzz_tmp_path("aggregator.db", db, sizeof(db));
    fuzz_tmp_path("aggregator.db-wal", ignored, sizeof(ignored));
    fuzz_tmp_path("aggregator.db-shm", ignored, sizeof(ignored));
    fuzz_tmp_path("aggregator.db-journal", ignored, sizeof(ignored));
    /* History for DEU, FRA and NOR: an hour ago and now, so summaries,
     * nation pages and history with any step have something to show. */
    int64_t now = rsl_now_ms();
    if (agg_store_open(db, false, &writer, &err) != RSL_OK ||
        agg_store_begin(writer, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_api: store: %s\n", err.text);
        abort();
    }
    add_report(writer, "DEU-BMI-01", "DEU", 1, 8, 40, now - 3600 * 1000);
    add_report(writer, "FRA-SGDSN-01", "FRA", 1, 6, 70, now - 3600 * 1000);
    add_report(writer, "DEU-BMI-01", "DEU", 2, 8, 95, now - 60 * 1000);
    add_report(writer, "NOR-DSB-01", "NOR", 1, 3, 10, now - 30 * 1000);
    if (agg_store_commit(writer, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_api: commit: %s\n", err.text);
        abort();
    }
    agg_store_close(&writer);
    /* As an HTTPS worker: its own read-only handle. */
    if (agg_store_open(db, true, &store, &err) != RSL_OK ||
        agg_api_metrics_new(&metrics) != RSL_OK ||
        agg_api_new(config, store, metrics, &api, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_api: api: %s\n", err.text);
        abort();
    }
}

static void principal_for(unsigned who, struct agg_principal *pr)
{
    memset(pr, 0, sizeof(*pr));
    pr->name = "";
    pr->nation = "";
    pr->partner = "";
    switch (who & 7) {
    case 0: pr->state = AGG_AUTH_NONE; break;
    case 1: pr->state = AGG_AUTH_BAD_TOKEN; break;
    case 2: pr->state = AGG_AUTH_BAD_CERT; pr->via_certificate = true; break;
    case 3: pr->state = AGG_AUTH_OK; pr->role = AGG_ROLE_STAFF; pr->name = "staff"; break;
    case 4:
        pr->state = AGG_AUTH_OK; pr->role = AGG_ROLE_NATION; pr->name = "deu"; pr->nation = "DEU";
        break;
    case 5:
        pr->state = AGG_AUTH_OK; pr->role = AGG_ROLE_NATION; pr->name = "fra"; pr->nation = "FRA";
        break;
    case 6:
        pr->state = AGG_AUTH_OK; pr->role = AGG_ROLE_PARTNER; pr->name = "eu"; pr->partner = "EU";
        break;
    default:
        pr->state = AGG_AUTH_OK; pr->role = AGG_ROLE_STAFF; pr->name = "ops";
        pr->via_certificate = true;
        break;
    }
}

static bool documented_status(int status)
{
    static const int known[] = {200, 304, 400, 401, 403, 404, 405, 501, 503};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (status == known[i])
            return true;
    return false;
}

/* The OpenAPI document is a static asset, checked by its own unit test:
 * parsing 30 KB on every run would only slow the fuzzer. */
static bool is_static_document(int route)
{
    const struct agg_api_route_info *info = route >= 0 ? agg_api_route((size_t)route) : NULL;
    return info != NULL && strcmp(info->pattern, "/v1/openapi.json") == 0;
}

/* The checks on one answer. */
static void check_response(const struct agg_api_request *rq, const struct agg_api_response *rs)
{
    const struct agg_principal *pr = &rq->principal;
    if (!documented_status(rs->status) || rs->content_type == NULL ||
        (rs->len > 0 && rs->body == NULL)) {
        fprintf(stderr, "fuzz_api: status %d\n", rs->status);
        abort();
    }
    bool json = strncmp(rs->content_type, "application/json", 16) == 0;
    if (rs->status >= 400) {
        json_error_t jerr;
        json_t *doc = json ? json_loadb(rs->body, rs->len, 0, &jerr) : NULL;
        /* /healthz and /readyz answer 503 with their status document. */
        const struct agg_api_route_info *info =
            rs->route >= 0 ? agg_api_route((size_t)rs->route) : NULL;
        bool probe = info != NULL && (strcmp(info->pattern, "/healthz") == 0 ||
                                      strcmp(info->pattern, "/readyz") == 0);
        if (!json_is_object(doc) || (!probe && !json_is_string(json_object_get(doc, "error")))) {
            fprintf(stderr, "fuzz_api: error %d is not a JSON object with \"error\"\n",
                    rs->status);
            abort();
        }
        json_decref(doc);
    } else if (rs->status == 200 && json && !is_static_document(rs->route)) {
        json_error_t jerr;
        json_t *doc = json_loadb(rs->body, rs->len, 0, &jerr);
        if (doc == NULL) {
            fprintf(stderr, "fuzz_api: 200 answer is not JSON: %s\n", jerr.text);
            abort();
        }
        json_decref(doc);
    }
    bool get = strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0;
    if (!get || rq->path == NULL || rs->route < 0)
        return;
    const struct agg_api_route_info *route = agg_api_route((size_t)rs->route);
    if (route == NULL)
        abort();
    if (route->access == AGG_ACCESS_ROLES) {
        if (pr->state != AGG_AUTH_OK && rs->status != 401)
            abort(); /* no credentials: nothing but 401, not even a 400 */
        if (pr->state == AGG_AUTH_OK && !(route->roles & AGG_ROLE_BIT(pr->role)) &&
            rs->status != 403)
            abort();
    }
    if (rs->status == 200 && pr->state == AGG_AUTH_OK && pr->role == AGG_ROLE_NATION &&
        strncmp(rq->path, "/v1/nations/", 12) == 0 && strcmp(rq->path + 12, pr->nation) != 0)
        abort(); /* a nation reads only its own page */
    if (rs->status == 200 && pr->state == AGG_AUTH_OK && pr->role == AGG_ROLE_PARTNER &&
        strncmp(rq->path, "/v1/partners/", 13) == 0 &&
        strncmp(rq->path + 13, pr->partner, strlen(pr->partner)) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[4] = {"GET", "HEAD", "POST", "DELETE"};
    if (api == NULL)
        setup_once();
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    char *target = malloc(size);
    if (target == NULL)
        return 0;
    memcpy(target, data + 1, size - 1);
    target[size - 1] = '\0'; /* up to the first NUL, as a C string */

    struct agg_api_request rq;
    struct agg_api_response rs;
    struct evhttp_uri *uri = NULL;
    char etag[sizeof(last_etag)];
    memset(&rq, 0, sizeof(rq));
    rq.method = methods[(sel >> 3) & 3];
    rq.accept = (sel & 0x20) ? "text/csv" : "*/*";
    snprintf(etag, sizeof(etag), "%s", last_etag);
    rq.if_none_match = (sel & 0x40) ? etag : NULL;
    principal_for(sel, &rq.principal);
    if (sel & 0x80) {
        char *q = strchr(target, '?');
        if (q != NULL)
            *q++ = '\0';
        rq.path = target;
        rq.query = q;
    } else {
        /* As the transport: libevent's parse of the request line target. */
        uri = evhttp_uri_parse_with_flags(target, 0);
        rq.path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
        rq.query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    }

    agg_api_handle(api, &rq, &rs);
    if (getenv("RSL_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "fuzz_api: %s %s ? %s -> %d %.*s\n", rq.method,
                rq.path != NULL ? rq.path : "(null)", rq.query != NULL ? rq.query : "(null)",
                rs.status, (int)(rs.len < 160 ? rs.len : 160), rs.body != NULL ? rs.body : "");
    check_response(&rq, &rs);
    if (agg_api_metrics_requests(metrics, rs.route, rs.status) == 0)
        abort(); /* every answer is counted */
    for (size_t i = 0; i < rs.n_headers; i++)
        if (strcmp(rs.headers[i].name, "ETag") == 0)
            snprintf(last_etag, sizeof(last_etag), "%s", rs.headers[i].value);
    agg_api_response_clear(&rs);
    if (uri != NULL)
        evhttp_uri_free(uri);
    free(target);
    return 0;
}
