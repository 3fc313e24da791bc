/*
 * test_http.c - the aggregator's HTTPS server (aggregator/http.c) end to end
 * on loopback: real TLS (a self-signed P-256 certificate made here with the
 * OpenSSL API), a real SQLite store filled through agg_store_*, the shipped
 * taxonomy, and libcurl as the client verifying the certificate.
 *
 * One server (port 0, two workers) serves every test in the group. Tests
 * cover authentication (401 with WWW-Authenticate, 403 per role), routes
 * (404, 405), strict query parsing (400 naming the parameter), `at=` before
 * and after a change, CSV, history, the page and its assets (CSP, ETag),
 * /metrics, /readyz without an ingest, the OpenAPI document against the
 * server's route table, the response cache seeing new commits, the TLS
 * floor (1.1 and non-ECDHE suites refused) and the header size limit.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "aggregator/api.h"
#include "aggregator/config.h"
#include "aggregator/http.h"
#include "rsl/codec.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"
#include "aggregator/store.h"
#include "aggregator/summary.h"

#define STAFF_TOKEN "staff-0123456789abcdef"
#define DEU_TOKEN "deu-0123456789abcdef"
#define EU_TOKEN "eu-partner-0123456789"

struct fixture {
    char dir[64];
    char cert[128];
    char key[128];
    char store[128];
    struct agg_config *cfg;
    struct agg_http *http;
    int port;
    int64_t now;
    const struct rsl_indicator *ind; /* the indicator the reports carry */
};

static struct fixture fx;

/* ---- set-up helpers ------------------------------------------------- */

/* A self-signed P-256 certificate for 127.0.0.1 / localhost; the key file
 * gets `key_mode`. Returns 0 on success. */
static int make_certificate(const char *cert_path, const char *key_path, mode_t key_mode)
{
    int rc = -1;
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_EXTENSION *ext = NULL;
    FILE *f = NULL;
    int fd = -1;
    if (pkey == NULL || x == NULL)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
        goto out;
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        goto out;
    f = fopen(cert_path, "w");
    if (f == NULL || PEM_write_X509(f, x) != 1)
        goto out;
    fclose(f);
    f = NULL;
    fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || fchmod(fd, key_mode) != 0)
        goto out;
    f = fdopen(fd, "w");
    if (f == NULL)
        goto out;
    fd = -1; /* owned by f */
    if (PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    rc = 0;
out:
    if (f != NULL)
        fclose(f);
    if (fd >= 0)
        close(fd);
    X509_EXTENSION_free(ext);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}

/* Append one report with one measurement of fx.ind. */
static void append_report(struct agg_store *st, const char *agent, const char *nation,
                          uint64_t sequence, double value, int64_t observed_at_ms)
{
    Resilience__V1__Measurement m = RESILIENCE__V1__MEASUREMENT__INIT;
    Resilience__V1__Measurement *ms[] = {&m};
    Resilience__V1__Report r = RESILIENCE__V1__REPORT__INIT;
    m.indicator = fx.ind->id;
    m.value = value;
    m.unit = fx.ind->unit;
    m.observed_at_ms = observed_at_ms;
    r.agent_id = (char *)(uintptr_t)agent;
    r.nation = (char *)(uintptr_t)nation;
    r.organisation = (char *)(uintptr_t)"Ministry";
    r.sequence = sequence;
    r.created_at_ms = observed_at_ms;
    r.n_measurements = 1;
    r.measurements = ms;
    r.marking = (char *)(uintptr_t)"NATO UNCLASSIFIED";
    uint8_t *bytes = NULL;
    size_t len = 0;
    assert_int_equal(rsl_report_encode(&r, &bytes, &len), RSL_OK);
    bool excluded = false;
    struct agg_report_in in = {
        .agent_id = agent,
        .nation = nation,
        .sequence = sequence,
        .created_at_ms = observed_at_ms,
        .received_at_ms = observed_at_ms + 1000,
        .key_id = "00112233445566778899aabbccddeeff",
        .signed_bytes = bytes, /* the store keeps but never checks them */
        .signed_len = len,
        .report_bytes = bytes,
        .report_len = len,
        .report = &r,
        .excluded = &excluded,
    };
    enum agg_append_result result;
    struct rsl_error err = {0};
    int rc = agg_store_append(st, &in, &result, &err);
    if (rc != RSL_OK)
        fprintf(stderr, "append: %s\n", err.text);
    assert_int_equal(rc, RSL_OK);
    assert_int_equal(result, AGG_APPEND_INSERTED);
    free(bytes);
}

static void add_token(struct agg_config *cfg, const char *name, enum agg_role_kind role,
                      const char *scope, const char *token)
{
    struct agg_token *t = &cfg->tokens[cfg->n_tokens++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->role = role;
    if (role == AGG_ROLE_NATION)
        snprintf(t->nation, sizeof(t->nation), "%s", scope);
    if (role == AGG_ROLE_PARTNER)
        snprintf(t->partner, sizeof(t->partner), "%s", scope);
    rsl_sha256(token, strlen(token), t->sha256);
}

static void free_config(struct agg_config **cfg)
{
    if (*cfg == NULL)
        return;
    rsl_taxonomy_free(&(*cfg)->taxonomy);
    free((*cfg)->tokens);
    free(*cfg);
    *cfg = NULL;
}

static int group_setup(void **state)
{
    (void)state;
    struct rsl_error err = {0};
    struct agg_store *st = NULL;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_http.XXXXXX");
    if (mkdtemp(fx.dir) == NULL)
        return -1;
    snprintf(fx.cert, sizeof(fx.cert), "%s/server.crt", fx.dir);
    snprintf(fx.key, sizeof(fx.key), "%s/server.key", fx.dir);
    snprintf(fx.store, sizeof(fx.store), "%s/aggregator.db", fx.dir);
    if (make_certificate(fx.cert, fx.key, 0600) != 0)
        return -1;

    struct agg_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return -1;
    fx.cfg = cfg;
    if (rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_SHARE_DIR "/nations.csv",
                          &cfg->taxonomy, &err) != RSL_OK) {
        fprintf(stderr, "taxonomy: %s\n", err.text);
        return -1;
    }
    fx.ind = &cfg->taxonomy->indicators[0];
    snprintf(cfg->store_path, sizeof(cfg->store_path), "%s", fx.store);
    snprintf(cfg->https_listen, sizeof(cfg->https_listen), "127.0.0.1:0");
    snprintf(cfg->https_host, sizeof(cfg->https_host), "127.0.0.1");
    cfg->https_port = 0;
    snprintf(cfg->https_cert, sizeof(cfg->https_cert), "%s", fx.cert);
    snprintf(cfg->https_key, sizeof(cfg->https_key), "%s", fx.key);
    cfg->https_threads = 2;
    cfg->https_hsts = true;
    cfg->tokens = calloc(3, sizeof(*cfg->tokens));
    if (cfg->tokens == NULL)
        return -1;
    add_token(cfg, "staff", AGG_ROLE_STAFF, NULL, STAFF_TOKEN);
    add_token(cfg, "deu", AGG_ROLE_NATION, "DEU", DEU_TOKEN);
    add_token(cfg, "eu", AGG_ROLE_PARTNER, "EU", EU_TOKEN);

    /* History: DEU 10 then 30 (changed 30 minutes ago), FRA 20. */
    fx.now = rsl_now_ms();
    if (agg_store_open(fx.store, false, &st, &err) != RSL_OK) {
        fprintf(stderr, "store: %s\n", err.text);
        return -1;
    }
    if (agg_store_begin(st, &err) != RSL_OK)
        return -1;
    append_report(st, "DEU-BMI-01", "DEU", 1, 10, fx.now - 60 * 60000);
    append_report(st, "FRA-MI-01", "FRA", 1, 20, fx.now - 60 * 60000);
    append_report(st, "DEU-BMI-01", "DEU", 2, 30, fx.now - 30 * 60000);
    if (agg_store_commit(st, &err) != RSL_OK) {
        fprintf(stderr, "commit: %s\n", err.text);
        return -1;
    }
    agg_store_close(&st);

    if (agg_http_start(cfg, &fx.http, &err) != RSL_OK) {
        fprintf(stderr, "start: %s\n", err.text);
        return -1;
    }
    fx.port = agg_http_port(fx.http);
    return fx.port > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    agg_http_stop(&fx.http);
    free_config(&fx.cfg);
    char path[160];
    const char *files[] = {"server.crt", "server.key", "aggregator.db", "aggregator.db-wal",
                           "aggregator.db-shm", "bad.key"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fx.dir, files[i]);
        unlink(path);
    }
    rmdir(fx.dir);
    curl_global_cleanup();
    return 0;
}

/* ---- client --------------------------------------------------------- */

struct buffer {
    char *data;
    size_t len;
};

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct buffer *b = userdata;
    size_t n = size * nmemb;
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->len += n;
    p[b->len] = '\0';
    b->data = p;
    return n;
}

struct response {
    CURLcode curl;
    long status;
    struct buffer body;
    struct buffer headers;
    json_t *json; /* parsed body, NULL if not JSON */
};

struct request {
    const char *method;      /* NULL: GET */
    const char *path;
    const char *token;       /* NULL: no Authorization header */
    const char *raw_auth;    /* a whole Authorization header value */
    const char *scheme;      /* NULL: https */
    long tls_min;            /* CURL_SSLVERSION_* or 0 */
    long tls_max;
    const char *ciphers;
    size_t padding;          /* bytes of an extra header */
    const char *header;      /* one more request header line, e.g. "Accept: text/csv" */
};

static void perform(const struct request *rq, struct response *rs)
{
    char url[512];
    char auth[256];
    struct curl_slist *headers = NULL;
    char *pad = NULL;
    memset(rs, 0, sizeof(*rs));
    CURL *c = curl_easy_init();
    assert_non_null(c);
    snprintf(url, sizeof(url), "%s://127.0.0.1:%d%s", rq->scheme != NULL ? rq->scheme : "https",
             fx.port, rq->path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, fx.cert);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &rs->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &rs->headers);
    if (rq->method != NULL && strcmp(rq->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (rq->method != NULL)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    if (rq->token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", rq->token);
        headers = curl_slist_append(headers, auth);
    }
    if (rq->raw_auth != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: %s", rq->raw_auth);
        headers = curl_slist_append(headers, auth);
    }
    if (rq->padding > 0) {
        pad = malloc(rq->padding + 16);
        assert_non_null(pad);
        memcpy(pad, "X-Padding: ", 11);
        memset(pad + 11, 'a', rq->padding);
        pad[11 + rq->padding] = '\0';
        headers = curl_slist_append(headers, pad);
    }
    if (rq->header != NULL)
        headers = curl_slist_append(headers, rq->header);
    if (headers != NULL)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    if (rq->tls_min != 0)
        curl_easy_setopt(c, CURLOPT_SSLVERSION, rq->tls_min | rq->tls_max);
    if (rq->ciphers != NULL)
        curl_easy_setopt(c, CURLOPT_SSL_CIPHER_LIST, rq->ciphers);
    rs->curl = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
    if (rs->body.data != NULL)
        rs->json = json_loads(rs->body.data, 0, NULL);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    free(pad);
}

static void response_free(struct response *rs)
{
    free(rs->body.data);
    free(rs->headers.data);
    json_decref(rs->json);
    memset(rs, 0, sizeof(*rs));
}

/* GET path with token; asserts transport success and the status. */
static void get(const char *path, const char *token, long status, struct response *rs)
{
    struct request rq = {.path = path, .token = token};
    perform(&rq, rs);
    if (rs->curl != CURLE_OK)
        fprintf(stderr, "%s: %s\n", path, curl_easy_strerror(rs->curl));
    assert_int_equal(rs->curl, CURLE_OK);
    if (rs->status != status)
        fprintf(stderr, "%s: got %ld: %s\n", path, rs->status, rs->body.data);
    assert_int_equal(rs->status, status);
}

static void assert_error(const struct response *rs, const char *error, const char *detail_part)
{
    assert_non_null(rs->json);
    assert_string_equal(json_string_value(json_object_get(rs->json, "error")), error);
    const char *detail = json_string_value(json_object_get(rs->json, "detail"));
    assert_non_null(detail);
    if (detail_part != NULL && strstr(detail, detail_part) == NULL) {
        fprintf(stderr, "detail '%s' lacks '%s'\n", detail, detail_part);
        fail();
    }
}

static bool has_header(const struct response *rs, const char *line)
{
    return rs->headers.data != NULL && strcasestr(rs->headers.data, line) != NULL;
}

/* The summary entry of fx.ind. */
static json_t *indicator_entry(json_t *summary)
{
    json_t *inds = json_object_get(summary, "indicators");
    for (size_t i = 0; i < json_array_size(inds); i++) {
        json_t *e = json_array_get(inds, i);
        if (strcmp(json_string_value(json_object_get(e, "id")), fx.ind->id) == 0)
            return e;
    }
    fail_msg("indicator %s not in the summary", fx.ind->id);
    return NULL;
}

/* Send `request` over a raw TLS connection (no certificate check: only the
 * bytes matter here) and read until the server closes. Returns the number
 * of bytes read into out (NUL-terminated), or -1. */
static int raw_tls_exchange(const char *request, char *out, size_t outlen)
{
    int n = -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ctx == NULL || fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1)
        goto out;
    if (SSL_write(ssl, request, (int)strlen(request)) <= 0)
        goto out;
    size_t total = 0;
    for (;;) {
        int r = SSL_read(ssl, out + total, (int)(outlen - 1 - total));
        if (r <= 0)
            break;
        total += (size_t)r;
        if (total == outlen - 1)
            break;
    }
    out[total] = '\0';
    n = (int)total;
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return n;
}

/* ---- tests ---------------------------------------------------------- */

static void test_healthz(void **state)
{
    (void)state;
    struct response rs;
    get("/healthz", NULL, 200, &rs);
    assert_string_equal(json_string_value(json_object_get(rs.json, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(rs.json, "store")), "ok");
    assert_int_equal(json_integer_value(json_object_get(rs.json, "reports")), 3);
    assert_true(has_header(&rs, "Content-Type: application/json"));
    assert_true(has_header(&rs, "Cache-Control: no-store"));
    assert_true(has_header(&rs, "Strict-Transport-Security: max-age="));
    response_free(&rs);

    /* HEAD: the same status and headers, no body. */
    char raw[4096];
    assert_true(raw_tls_exchange("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n",
                                 raw, sizeof(raw)) > 0);
    assert_non_null(strstr(raw, "HTTP/1.1 200"));
    assert_null(strstr(raw, "\"status\""));
    assert_int_equal(raw_tls_exchange("GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                      "Connection: close\r\n\r\n",
                                      raw, sizeof(raw)) > 0, 1);
    assert_non_null(strstr(raw, "\"status\""));

    /* /healthz takes no parameters. */
    get("/healthz?verbose=1", NULL, 400, &rs);
    assert_error(&rs, "bad_request", "verbose");
    response_free(&rs);
}

static void test_unauthorized(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/summary", NULL, 401, &rs);
    assert_error(&rs, "unauthorized", NULL);
    assert_true(has_header(&rs, "WWW-Authenticate: Bearer"));
    response_free(&rs);

    get("/v1/summary", "not-a-configured-token", 401, &rs);
    assert_error(&rs, "unauthorized", NULL);
    assert_true(has_header(&rs, "WWW-Authenticate: Bearer"));
    assert_true(has_header(&rs, "invalid_token"));
    response_free(&rs);

    /* Wrong scheme, empty token, characters outside b64token. */
    const char *bad[] = {"Basic c3RhZmY6eA==", "Bearer ", "Bearer " STAFF_TOKEN " x",
                         STAFF_TOKEN};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct request rq = {.path = "/v1/nations/DEU", .raw_auth = bad[i]};
        perform(&rq, &rs);
        assert_int_equal(rs.curl, CURLE_OK);
        assert_int_equal(rs.status, 401);
        response_free(&rs);
    }
    /* The scheme is case-insensitive (RFC 7235). */
    struct request ok = {.path = "/v1/nations/DEU", .raw_auth = "bearer " STAFF_TOKEN};
    perform(&ok, &rs);
    assert_int_equal(rs.status, 200);
    response_free(&rs);
}

static void test_forbidden(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/summary", EU_TOKEN, 403, &rs);
    assert_error(&rs, "forbidden", NULL);
    response_free(&rs);
    get("/v1/nations/DEU", EU_TOKEN, 403, &rs);
    response_free(&rs);
    get("/v1/nations/FRA", DEU_TOKEN, 403, &rs);
    assert_error(&rs, "forbidden", NULL);
    response_free(&rs);
    /* A nation token cannot probe which codes exist. */
    get("/v1/nations/ZZZ", DEU_TOKEN, 403, &rs);
    response_free(&rs);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/nope", STAFF_TOKEN, 404, &rs);
    assert_error(&rs, "not_found", NULL);
    response_free(&rs);
    get("/v1/nations/ZZZ", STAFF_TOKEN, 404, &rs);
    assert_error(&rs, "not_found", NULL);
    response_free(&rs);
    get("/v1/nations/DEUX", STAFF_TOKEN, 404, &rs);
    response_free(&rs);
    get("/v1/nations/", STAFF_TOKEN, 404, &rs);
    response_free(&rs);
    get("/v1/summary/", STAFF_TOKEN, 404, &rs);
    response_free(&rs);
    /* Template variables take one plain segment only: no escapes, no
     * slashes, no dot segments, at most 64 characters. */
    static const char *const odd[] = {
        "/v1/nations/%44EU", "/v1/indicators/../history", "/v1/indicators//history",
        "/v1/indicators/a/b/history", "/v1/partners/EU%2F/summary", "/v1/nations/DEU/",
        "/v1/indicators/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/history",
        "//", "/assets/app.js/x", "/v1/me/x"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        get(odd[i], STAFF_TOKEN, 404, &rs);
        response_free(&rs);
    }
    /* Dot segments are not resolved by the server (curl would resolve them
     * itself, hence a raw request). */
    char raw[4096];
    assert_true(raw_tls_exchange("GET /assets/../healthz HTTP/1.1\r\nHost: localhost\r\n"
                                 "Connection: close\r\n\r\n", raw, sizeof(raw)) > 0);
    assert_non_null(strstr(raw, "HTTP/1.1 404"));

    const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        struct request rq = {.method = methods[i], .path = "/v1/summary", .token = STAFF_TOKEN};
        perform(&rq, &rs);
        assert_int_equal(rs.curl, CURLE_OK);
        assert_int_equal(rs.status, 405);
        assert_error(&rs, "method_not_allowed", NULL);
        assert_true(has_header(&rs, "Allow: GET, HEAD"));
        response_free(&rs);
    }
}

static void test_bad_query(void **state)
{
    (void)state;
    struct response rs;
    const char *cases[][2] = {
        {"/v1/summary?at=yesterday", "'at'"},
        {"/v1/summary?at=", "'at'"},
        {"/v1/summary?at", "'at'"},
        {"/v1/summary?at=1&at=2", "more than once"},
        {"/v1/summary?foo=1", "'foo'"},
        {"/v1/summary?at=1&", "empty"},
        {"/v1/summary?at=%zz", "'at'"},
        {"/v1/summary?at=%00", "'at'"},
        {"/v1/nations/DEU?at=-5", "'at'"},
        {"/v1/summary?at=99999999999999999", "'at'"},
        {"/v1/summary?at=2026-02-30T00:00:00Z", "'at'"},
        {"/v1/nations/DEU?format=xml", "'format'"},
        {"/v1/indicators/x/history?step=1s&from=1", "points"},
        {"/healthz?format=csv", "'format'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        get(cases[i][0], STAFF_TOKEN, 400, &rs);
        assert_error(&rs, "bad_request", cases[i][1]);
        response_free(&rs);
    }
    /* Over-long query strings are refused, not truncated. */
    char path[1200] = "/v1/summary?at=";
    memset(path + strlen(path), '1', 1100);
    path[sizeof(path) - 1] = '\0';
    get(path, STAFF_TOKEN, 400, &rs);
    response_free(&rs);
    /* Parameter errors are not shown to callers without a token. */
    get("/v1/summary?foo=1", NULL, 401, &rs);
    response_free(&rs);
}

static void test_summary_now_and_at(void **state)
{
    (void)state;
    struct response rs;
    char path[128];

    /* Now: DEU 30 and FRA 20 current. */
    get("/v1/summary", STAFF_TOKEN, 200, &rs);
    json_t *e = indicator_entry(rs.json);
    assert_int_equal(json_integer_value(json_object_get(e, "nations_reporting")), 2);
    assert_int_equal(json_integer_value(json_object_get(e, "nations_missing")),
                     fx.cfg->taxonomy->n_nations - 2);
    assert_true(json_number_value(json_object_get(e, "min")) == 20.0);
    assert_true(json_number_value(json_object_get(e, "max")) == 30.0);
    assert_true(json_number_value(json_object_get(e, "median")) == 25.0);
    json_t *br = json_array_get(json_object_get(rs.json, "requirements"), 0);
    assert_int_equal(json_object_size(json_object_get(br, "nations")), fx.cfg->taxonomy->n_nations);
    response_free(&rs);

    /* 45 minutes ago DEU still had 10. */
    snprintf(path, sizeof(path), "/v1/summary?at=%lld", (long long)(fx.now - 45 * 60000));
    get(path, STAFF_TOKEN, 200, &rs);
    e = indicator_entry(rs.json);
    assert_int_equal(json_integer_value(json_object_get(e, "nations_reporting")), 2);
    assert_true(json_number_value(json_object_get(e, "min")) == 10.0);
    assert_true(json_number_value(json_object_get(e, "max")) == 20.0);
    assert_int_equal(json_integer_value(json_object_get(rs.json, "at_ms")), fx.now - 45 * 60000);
    response_free(&rs);

    /* Two hours ago nothing was observed yet (RFC 3339 form this time). */
    char text[40];
    rsl_format_time_ms(fx.now - 2 * 60 * 60000, text, sizeof(text));
    snprintf(path, sizeof(path), "/v1/summary?at=%s", text);
    get(path, STAFF_TOKEN, 200, &rs);
    e = indicator_entry(rs.json);
    assert_int_equal(json_integer_value(json_object_get(e, "nations_reporting")), 0);
    assert_true(json_is_null(json_object_get(e, "value")));
    response_free(&rs);

    /* A nation sees the aggregates but only its own requirement row. */
    get("/v1/summary", DEU_TOKEN, 200, &rs);
    e = indicator_entry(rs.json);
    assert_int_equal(json_integer_value(json_object_get(e, "nations_reporting")), 2);
    br = json_array_get(json_object_get(rs.json, "requirements"), 0);
    assert_int_equal(json_object_size(json_object_get(br, "nations")), 1);
    assert_non_null(json_object_get(json_object_get(br, "nations"), "DEU"));
    response_free(&rs);
}

static void test_nation_view(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/nations/DEU", DEU_TOKEN, 200, &rs);
    assert_string_equal(json_string_value(json_object_get(rs.json, "nation")), "DEU");
    json_t *inds = json_object_get(rs.json, "indicators");
    assert_int_equal(json_array_size(inds), fx.cfg->taxonomy->n_indicators);
    json_t *e = NULL;
    for (size_t i = 0; i < json_array_size(inds); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(inds, i), "id")),
                   fx.ind->id) == 0)
            e = json_array_get(inds, i);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "state")), "current");
    assert_true(json_number_value(json_object_get(e, "value")) == 30.0);
    assert_string_equal(json_string_value(json_object_get(e, "agent_id")), "DEU-BMI-01");
    assert_int_equal(json_integer_value(json_object_get(e, "observed_at_ms")), fx.now - 30 * 60000);
    response_free(&rs);

    /* Staff may read any nation; FRA's value as of 45 minutes ago. */
    char path[128];
    snprintf(path, sizeof(path), "/v1/nations/FRA?at=%lld", (long long)(fx.now - 45 * 60000));
    get(path, STAFF_TOKEN, 200, &rs);
    assert_string_equal(json_string_value(json_object_get(rs.json, "nation")), "FRA");
    response_free(&rs);
}

/* Over the 8 KiB header limit: refused by libevent before any handler. */
static void test_header_limit(void **state)
{
    (void)state;
    struct response rs;
    struct request rq = {.path = "/v1/summary", .token = STAFF_TOKEN, .padding = 10000};
    perform(&rq, &rs);
    assert_true(rs.curl != CURLE_OK || rs.status != 200);
    response_free(&rs);
    /* A modest extra header is fine (the limit is not absurdly low). */
    struct request small = {.path = "/healthz", .padding = 1000};
    perform(&small, &rs);
    assert_int_equal(rs.status, 200);
    response_free(&rs);
}

/* TLS floor. The client lowers its own security level so that a refusal can
 * only come from the server; the 1.2 control shows the same client set-up
 * otherwise works. */
static void test_tls_floor(void **state)
{
    (void)state;
    struct response rs;
    struct request tls11 = {.path = "/healthz",
                            .tls_min = CURL_SSLVERSION_TLSv1_1,
                            .tls_max = CURL_SSLVERSION_MAX_TLSv1_1,
                            .ciphers = "DEFAULT:@SECLEVEL=0"};
    perform(&tls11, &rs);
    assert_int_not_equal(rs.curl, CURLE_OK);
    response_free(&rs);

    struct request weak = {.path = "/healthz",
                           .tls_min = CURL_SSLVERSION_TLSv1_2,
                           .tls_max = CURL_SSLVERSION_MAX_TLSv1_2,
                           .ciphers = "AES128-SHA:AES256-GCM-SHA384:@SECLEVEL=0"};
    perform(&weak, &rs);
    assert_int_not_equal(rs.curl, CURLE_OK);
    response_free(&rs);

    struct request tls12 = {.path = "/healthz",
                            .tls_min = CURL_SSLVERSION_TLSv1_2,
                            .tls_max = CURL_SSLVERSION_MAX_TLSv1_2,
                            .ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305:@SECLEVEL=0"};
    perform(&tls12, &rs);
    assert_int_equal(rs.curl, CURLE_OK);
    assert_int_equal(rs.status, 200);
    response_free(&rs);

    /* Clear-text HTTP on the TLS port gets no HTTP answer. */
    struct request plain = {.path = "/healthz", .scheme = "http"};
    perform(&plain, &rs);
    assert_true(rs.curl != CURLE_OK || rs.status != 200);
    response_free(&rs);
}

/* Many requests at once over separate connections: both workers serve,
 * each with its own store handle; every answer is complete and correct. */
static void test_concurrent_requests(void **state)
{
    (void)state;
    enum { N = 24 };
    CURLM *multi = curl_multi_init();
    CURL *easy[N];
    struct buffer bodies[N];
    struct curl_slist *headers = curl_slist_append(NULL, "Authorization: Bearer " STAFF_TOKEN);
    char url[128];
    assert_non_null(multi);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/summary", fx.port);
    memset(bodies, 0, sizeof(bodies));
    for (int i = 0; i < N; i++) {
        easy[i] = curl_easy_init();
        assert_non_null(easy[i]);
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_CAINFO, fx.cert);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy[i], CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &bodies[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    int running = 1;
    while (running > 0) {
        assert_int_equal(curl_multi_perform(multi, &running), CURLM_OK);
        if (running > 0)
            assert_int_equal(curl_multi_poll(multi, NULL, 0, 1000, NULL), CURLM_OK);
    }
    int done = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE) {
            assert_int_equal(msg->data.result, CURLE_OK);
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            assert_int_equal(status, 200);
            done++;
        }
    }
    assert_int_equal(done, N);
    for (int i = 0; i < N; i++) {
        json_t *doc = json_loads(bodies[i].data, 0, NULL);
        assert_non_null(doc);
        assert_int_equal(json_integer_value(json_object_get(indicator_entry(doc), "nations_reporting")), 2);
        json_decref(doc);
        free(bodies[i].data);
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_slist_free_all(headers);
    curl_multi_cleanup(multi);
}

/* Stopping with clients still connected (one idle TCP connection, one in
 * the middle of a request) returns and frees everything. */
static void test_stop_with_open_connections(void **state)
{
    (void)state;
    struct rsl_error err = {0};
    struct agg_http *http = NULL;
    struct agg_config cfg_copy;
    memcpy(&cfg_copy, fx.cfg, sizeof(cfg_copy));
    cfg_copy.https_threads = 3;
    assert_int_equal(agg_http_start(&cfg_copy, &http, &err), RSL_OK);
    int port = agg_http_port(http);
    assert_true(port > 0 && port != fx.port);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int idle = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(idle >= 0);
    assert_int_equal(connect(idle, (struct sockaddr *)&sa, sizeof(sa)), 0);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(busy >= 0);
    assert_int_equal(connect(busy, (struct sockaddr *)&sa, sizeof(sa)), 0);
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    SSL_set_fd(ssl, busy);
    assert_int_equal(SSL_connect(ssl), 1);
    const char partial[] = "GET /v1/summary HTTP/1.1\r\nHost: x\r\n"; /* no end of headers */
    assert_true(SSL_write(ssl, partial, (int)strlen(partial)) > 0);

    agg_http_stop(&http);
    assert_null(http);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(busy);
    close(idle);
}

/* Start-up failures are clean and name the cause. */
static void test_start_errors(void **state)
{
    (void)state;
    struct rsl_error err = {0};
    struct agg_http *http = NULL;
    struct agg_config cfg_copy;
    char bad_key[160];

    /* A key readable by others is refused. */
    snprintf(bad_key, sizeof(bad_key), "%s/bad.key", fx.dir);
    char bad_cert[160];
    snprintf(bad_cert, sizeof(bad_cert), "%s/bad.crt", fx.dir);
    assert_int_equal(make_certificate(bad_cert, bad_key, 0644), 0);
    unlink(bad_cert);
    memcpy(&cfg_copy, fx.cfg, sizeof(cfg_copy));
    snprintf(cfg_copy.https_key, sizeof(cfg_copy.https_key), "%s", bad_key);
    assert_int_equal(agg_http_start(&cfg_copy, &http, &err), RSL_EPERM);
    assert_null(http);
    assert_non_null(strstr(err.text, "bad.key"));

    /* A key that does not match the certificate. */
    chmod(bad_key, 0600);
    assert_int_equal(agg_http_start(&cfg_copy, &http, &err), RSL_ECRYPTO);
    assert_null(http);
    assert_non_null(strstr(err.text, "bad.key"));

    /* The port in use. */
    memcpy(&cfg_copy, fx.cfg, sizeof(cfg_copy));
    cfg_copy.https_port = (uint16_t)fx.port;
    assert_int_equal(agg_http_start(&cfg_copy, &http, &err), RSL_EIO);
    assert_null(http);
    assert_non_null(strstr(err.text, "listen"));

    /* A missing certificate. */
    memcpy(&cfg_copy, fx.cfg, sizeof(cfg_copy));
    snprintf(cfg_copy.https_cert, sizeof(cfg_copy.https_cert), "%s/none.crt", fx.dir);
    assert_int_equal(agg_http_start(&cfg_copy, &http, &err), RSL_ECRYPTO);
    assert_non_null(strstr(err.text, "none.crt"));

    agg_http_stop(&http); /* NULL-safe */
    agg_http_stop(NULL);
    assert_int_equal(agg_http_port(NULL), -1);
}

/* ---- issue 5: CSV, history, page, metrics, readiness, OpenAPI, cache ---- */

static bool content_type_is(const struct response *rs, const char *type)
{
    char line[160];
    snprintf(line, sizeof(line), "Content-Type: %s", type);
    return has_header(rs, line);
}

static void test_csv_and_requirements(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/summary?format=csv", STAFF_TOKEN, 200, &rs);
    assert_true(content_type_is(&rs, "text/csv"));
    assert_non_null(strstr(rs.body.data, "at,indicator,requirement,unit,direction,method,value,"));
    /* The row of fx.ind: median of DEU 30 and FRA 20. */
    char needle[160];
    snprintf(needle, sizeof(needle), ",%s,%s,%s,", fx.ind->id, fx.ind->requirement, fx.ind->unit);
    const char *row = strstr(rs.body.data, needle);
    assert_non_null(row);
    assert_non_null(strstr(row, ",25,20,25,30,2,0,"));
    response_free(&rs);

    struct request rq = {.path = "/v1/nations/DEU", .token = DEU_TOKEN, .header = "Accept: text/csv"};
    perform(&rq, &rs);
    assert_int_equal(rs.status, 200);
    assert_true(content_type_is(&rs, "text/csv"));
    assert_non_null(strstr(rs.body.data, ",DEU,"));
    response_free(&rs);

    get("/v1/requirements", DEU_TOKEN, 200, &rs);
    json_t *reqs = json_object_get(rs.json, "requirements");
    assert_int_equal(json_array_size(reqs), AGG_N_REQUIREMENTS);
    /* A nation sees only its own column. */
    assert_int_equal(json_object_size(json_object_get(json_array_get(reqs, 0), "nations")), 1);
    response_free(&rs);
}

/* fx.ind is a median indicator: DEU 10 (60 min ago) then 30 (30 min ago),
 * FRA 20 (60 min ago). */
static void test_history(void **state)
{
    (void)state;
    struct response rs;
    char path[256];
    snprintf(path, sizeof(path), "/v1/indicators/%s/history?from=%lld&to=%lld&step=10m",
             fx.ind->id, (long long)(fx.now - 70 * 60000), (long long)fx.now);
    get(path, DEU_TOKEN, 200, &rs);
    json_t *points = json_object_get(rs.json, "points");
    assert_int_equal(json_array_size(points), 8);
    const double want[8] = {-1, 15, 15, 15, 25, 25, 25, 25}; /* -1: no value */
    for (size_t k = 0; k < 8; k++) {
        json_t *p = json_array_get(points, k);
        assert_int_equal(json_integer_value(json_object_get(p, "at_ms")),
                         fx.now - 70 * 60000 + (int64_t)k * 10 * 60000);
        if (want[k] < 0)
            assert_true(json_is_null(json_object_get(p, "value")));
        else
            assert_true(json_number_value(json_object_get(p, "value")) == want[k]);
    }
    response_free(&rs);
    get("/v1/indicators/no.such/history", STAFF_TOKEN, 404, &rs);
    response_free(&rs);
    get("/v1/indicators/no.such/history", EU_TOKEN, 403, &rs);
    response_free(&rs);
}

static void test_page_and_assets(void **state)
{
    (void)state;
    struct response rs;
    get("/", NULL, 200, &rs);
    assert_true(content_type_is(&rs, "text/html"));
    assert_true(has_header(&rs, "Content-Security-Policy: default-src 'none'; script-src 'self'"));
    assert_non_null(strstr(rs.body.data, "/assets/app.js"));
    assert_null(strstr(rs.body.data, "<script>"));
    const char *etag = strcasestr(rs.headers.data, "ETag: ");
    assert_non_null(etag);
    char inm[96];
    snprintf(inm, sizeof(inm), "If-None-Match: %.*s", (int)strcspn(etag + 6, "\r\n"), etag + 6);
    response_free(&rs);
    struct request rq = {.path = "/", .header = inm};
    perform(&rq, &rs);
    assert_int_equal(rs.status, 304);
    response_free(&rs);
    get("/assets/app.js", NULL, 200, &rs);
    assert_true(content_type_is(&rs, "text/javascript"));
    response_free(&rs);
    get("/assets/app.css", DEU_TOKEN, 200, &rs);
    assert_true(content_type_is(&rs, "text/css"));
    response_free(&rs);
    get("/", EU_TOKEN, 403, &rs);
    response_free(&rs);
    get("/", "bad-token", 401, &rs);
    response_free(&rs);
}

static void test_metrics_readyz_me_partner(void **state)
{
    (void)state;
    struct response rs;
    get("/metrics", DEU_TOKEN, 403, &rs);
    response_free(&rs);
    get("/metrics", STAFF_TOKEN, 200, &rs);
    assert_true(content_type_is(&rs, "text/plain; version=0.0.4"));
    assert_non_null(strstr(rs.body.data, "# TYPE resilience_http_requests_total counter"));
    assert_non_null(strstr(rs.body.data, "resilience_http_requests_total{route=\"/healthz\",code=\"200\"}"));
    assert_non_null(strstr(rs.body.data, "resilience_reports_rejected_total{reason=\"bad_signature\"}"));
    assert_non_null(strstr(rs.body.data, "resilience_store_reports 3"));
    response_free(&rs);
    /* No ingest runs in this test: the server is alive but not ready. */
    get("/readyz", NULL, 503, &rs);
    assert_string_equal(json_string_value(json_object_get(rs.json, "ingest")), "stopped");
    assert_string_equal(json_string_value(json_object_get(rs.json, "store")), "ok");
    response_free(&rs);
    /* /v1/nations: the agents table through agg_store_agents. */
    get("/v1/nations", STAFF_TOKEN, 200, &rs);
    json_t *nations = json_object_get(rs.json, "nations");
    assert_int_equal(json_array_size(nations), fx.cfg->taxonomy->n_nations);
    bool deu_seen = false;
    for (size_t i = 0; i < json_array_size(nations); i++) {
        json_t *n = json_array_get(nations, i);
        if (strcmp(json_string_value(json_object_get(n, "nation")), "DEU") != 0)
            continue;
        json_t *agent = json_array_get(json_object_get(n, "agents"), 0);
        assert_string_equal(json_string_value(json_object_get(agent, "agent_id")), "DEU-BMI-01");
        assert_int_equal(json_integer_value(json_object_get(agent, "reports")), 2);
        assert_int_equal(json_integer_value(json_object_get(agent, "last_sequence")), 2);
        deu_seen = true;
    }
    assert_true(deu_seen);
    response_free(&rs);
    get("/v1/me", DEU_TOKEN, 200, &rs);
    assert_string_equal(json_string_value(json_object_get(rs.json, "role")), "nation");
    assert_string_equal(json_string_value(json_object_get(rs.json, "nation")), "DEU");
    response_free(&rs);
    /* No [partner] is configured here: its own id is unknown (404), another
     * partner's is out of scope (403). */
    get("/v1/partners/EU/summary", EU_TOKEN, 404, &rs);
    response_free(&rs);
    get("/v1/partners/UA/summary", EU_TOKEN, 403, &rs);
    response_free(&rs);
    get("/v1/partners/EU/summary", DEU_TOKEN, 403, &rs);
    response_free(&rs);
}

/* Every route of the server's table is in the OpenAPI document it serves,
 * with GET, and the document has no path the table lacks. */
static void test_openapi_matches_route_table(void **state)
{
    (void)state;
    struct response rs;
    get("/v1/openapi.json", NULL, 200, &rs);
    assert_non_null(rs.json);
    assert_true(strncmp(json_string_value(json_object_get(rs.json, "openapi")), "3.", 2) == 0);
    json_t *paths = json_object_get(rs.json, "paths");
    assert_true(json_is_object(paths));
    for (size_t i = 0; i < agg_api_route_count(); i++) {
        const struct agg_api_route_info *r = agg_api_route(i);
        json_t *item = json_object_get(paths, r->pattern);
        if (item == NULL)
            fail_msg("route %s is not in the OpenAPI document", r->pattern);
        assert_string_equal(r->method, "GET");
        assert_non_null(json_object_get(item, "get"));
    }
    const char *key;
    json_t *value;
    json_object_foreach(paths, key, value) {
        bool found = false;
        for (size_t i = 0; i < agg_api_route_count(); i++)
            if (strcmp(agg_api_route(i)->pattern, key) == 0)
                found = true;
        if (!found)
            fail_msg("the OpenAPI document has %s, which the server does not serve", key);
    }
    assert_int_equal(json_object_size(paths), agg_api_route_count());
    assert_null(agg_api_route(agg_api_route_count()));
    response_free(&rs);
}

/* The present summary is cached per worker; a commit must show up (after
 * at most AGG_API_CACHE_RECHECK_MS). Polls, no timing assertion. Runs last:
 * it changes DEU's value. */
static void test_cache_sees_commits(void **state)
{
    (void)state;
    struct response rs;
    struct agg_store *st = NULL;
    struct rsl_error err = {0};
    for (int i = 0; i < 4; i++) { /* warm both workers' caches */
        get("/v1/summary", STAFF_TOKEN, 200, &rs);
        assert_true(json_number_value(json_object_get(indicator_entry(rs.json), "max")) == 30.0);
        response_free(&rs);
    }
    assert_int_equal(agg_store_open(fx.store, false, &st, &err), RSL_OK);
    assert_int_equal(agg_store_begin(st, &err), RSL_OK);
    append_report(st, "DEU-BMI-01", "DEU", 3, 40, fx.now - 60000);
    assert_int_equal(agg_store_commit(st, &err), RSL_OK);
    agg_store_close(&st);
    bool seen = false;
    for (int attempt = 0; attempt < 200 && !seen; attempt++) {
        get("/v1/summary", STAFF_TOKEN, 200, &rs);
        seen = json_number_value(json_object_get(indicator_entry(rs.json), "max")) == 40.0;
        response_free(&rs);
        if (!seen)
            usleep(50 * 1000);
    }
    assert_true(seen);
    /* Once the recheck interval has passed (a lower bound: waiting longer
     * only makes it truer), every worker answers with the new value. */
    usleep(2 * AGG_API_CACHE_RECHECK_MS * 1000);
    for (int i = 0; i < 6; i++) {
        get("/v1/summary?format=json", STAFF_TOKEN, 200, &rs);
        assert_true(json_number_value(json_object_get(indicator_entry(rs.json), "max")) == 40.0);
        response_free(&rs);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_unauthorized),
        cmocka_unit_test(test_forbidden),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_bad_query),
        cmocka_unit_test(test_summary_now_and_at),
        cmocka_unit_test(test_nation_view),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_tls_floor),
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_stop_with_open_connections),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_csv_and_requirements),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_page_and_assets),
        cmocka_unit_test(test_metrics_readyz_me_partner),
        cmocka_unit_test(test_openapi_matches_route_table),
        cmocka_unit_test(test_cache_sees_commits),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
