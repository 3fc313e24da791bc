/*
 * query.c - `resilience-ctl summary | nation CODE | history ID`: read the
 * aggregator's HTTPS API with libcurl and print a readable table, or the
 * API's own JSON (--json) or CSV (--csv) unchanged for scripts.
 *
 * Credentials, in this order: --token, --token-file (first line; refused if
 * group or others may read it, as for private keys), the environment
 * variable RESILIENCE_TOKEN; and/or a client certificate (--cert, --key;
 * the key file must be 0600). The server is --url, else RESILIENCE_URL,
 * else https://localhost:8443. TLS 1.2 at least; --cacert names the CA (or
 * self-signed certificate) to trust instead of the system store. There is
 * deliberately no option to skip certificate verification.
 *
 * Output discipline as for every command: the table (or body) on stdout,
 * one line naming the URL and the server's error on stderr, exit 1 for any
 * failure (including HTTP errors), 2 for usage errors.
 */
#include "ctl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "rsl/error.h"
#include "rsl/keys.h"
#include "rsl/util.h"

#define QUERY_DEFAULT_URL "https://localhost:8443"
#define QUERY_MAX_BODY (64u * 1024u * 1024u)
#define QUERY_MAX_TOKEN 1024
#define QUERY_MAX_URL 4096
#define QUERY_CONNECT_TIMEOUT_S 10L
#define QUERY_TIMEOUT_S 120L

#define COMMON_OPTIONS                                                                            \
    {"url", "URL", false, "aggregator base URL (default $RESILIENCE_URL or " QUERY_DEFAULT_URL ")"}, \
    {"token", "TOKEN", false, "bearer token (visible in the process list: prefer the next two)"}, \
    {"token-file", "FILE", false, "read the bearer token from FILE (mode 0600); else $RESILIENCE_TOKEN"}, \
    {"cacert", "FILE", false, "trust this CA or self-signed certificate (PEM) for the server"},   \
    {"cert", "FILE", false, "client certificate (PEM) instead of or besides a token"},            \
    {"key", "FILE", false, "private key of --cert (PEM, mode 0600)"},                             \
    {"json", NULL, false, "print the API's JSON document unchanged"},                             \
    {"csv", NULL, false, "print the API's CSV unchanged"}

const struct ctl_option ctl_summary_options[] = {
    COMMON_OPTIONS,
    {"at", "TIME", false, "as of this moment (RFC 3339 or unix ms) instead of now"},
    {NULL, NULL, false, NULL},
};

const struct ctl_option ctl_nation_options[] = {
    COMMON_OPTIONS,
    {"at", "TIME", false, "as of this moment (RFC 3339 or unix ms) instead of now"},
    {NULL, NULL, false, NULL},
};

const struct ctl_option ctl_history_options[] = {
    COMMON_OPTIONS,
    {"from", "TIME", false, "first point (RFC 3339 or unix ms; default: 24 h before --to)"},
    {"to", "TIME", false, "last point (default: now)"},
    {"step", "DURATION", false, "between points: 300, 15m, 1h, 1d (default 1h; at most 1000 points)"},
    {NULL, NULL, false, NULL},
};

const char ctl_query_description[] =
    "Reads the aggregator's HTTPS API (GET /v1/summary, /v1/nations/CODE or\n"
    "/v1/indicators/ID/history) and prints a table; --json or --csv print the\n"
    "server's document unchanged. Credentials: --token, --token-file or\n"
    "$RESILIENCE_TOKEN, and/or --cert/--key. Example:\n"
    "  RESILIENCE_TOKEN=... resilience-ctl summary --url https://agg:8443 --cacert ca.pem";

/* ---- HTTP ------------------------------------------------------------- */

struct body {
    char *data;
    size_t len;
    bool too_big;
};

/* libcurl's write callback: grow the body, refusing more than
 * QUERY_MAX_BODY so a misdirected URL (a huge download) cannot eat the
 * operator's memory. Returning less than asked aborts the transfer. */
static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > QUERY_MAX_BODY) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->len += n;
    p[b->len] = '\0';
    b->data = p;
    return n;
}

/* The bearer token from the options or the environment, into out; "" when
 * none is given. Returns CTL_EXIT_OK or the failure exit code (printed). */
static int load_token(const struct ctl_ctx *ctx, char *out, size_t outlen)
{
    const char *literal = ctl_option(ctx, "token");
    const char *file = ctl_option(ctx, "token-file");
    struct rsl_error err = {0};
    out[0] = '\0';
    if (literal != NULL && file != NULL)
        return ctl_usage_error(ctx, "--token and --token-file exclude each other");
    if (literal != NULL) {
        if (rsl_strlcpy(out, literal, outlen) != RSL_OK)
            return ctl_fail(ctx, "--token: longer than %d characters", QUERY_MAX_TOKEN);
        return CTL_EXIT_OK;
    }
    if (file != NULL) {
        uint8_t *data = NULL;
        size_t len = 0;
        /* A token is a secret: the same rule as private key files. */
        if (rsl_key_file_check_private(file, &err) != RSL_OK)
            return ctl_fail(ctx, "--token-file: %s", err.text);
        if (rsl_file_read_all(file, QUERY_MAX_TOKEN + 2, &data, &len, &err) != RSL_OK)
            return ctl_fail(ctx, "--token-file: %s", err.text);
        char *line = (char *)data;
        line[strcspn(line, "\r\n")] = '\0';
        rsl_trim(line);
        int rc = rsl_strlcpy(out, line, outlen);
        rsl_secure_zero(data, len);
        free(data);
        if (rc != RSL_OK || out[0] == '\0')
            return ctl_fail(ctx, "%s: expected the token on the first line", file);
        return CTL_EXIT_OK;
    }
    const char *env = getenv("RESILIENCE_TOKEN");
    if (env != NULL && env[0] != '\0' && rsl_strlcpy(out, env, outlen) != RSL_OK)
        return ctl_fail(ctx, "RESILIENCE_TOKEN: longer than %d characters", QUERY_MAX_TOKEN);
    return CTL_EXIT_OK;
}

/* Append "name=value" (escaped) to the query string being built. */
static int add_param(CURL *curl, char *url, size_t urllen, bool *first, const char *name,
                     const char *value)
{
    if (value == NULL)
        return 0;
    char *escaped = curl_easy_escape(curl, value, 0);
    if (escaped == NULL)
        return -1;
    size_t used = strlen(url);
    int n = snprintf(url + used, urllen - used, "%c%s=%s", *first ? '?' : '&', name, escaped);
    curl_free(escaped);
    *first = false;
    return n < 0 || (size_t)n >= urllen - used ? -1 : 0;
}

/* GET base + path (+ the given parameters) and return the body of a 200.
 * On failure prints one line and returns CTL_EXIT_FAILURE (or usage).
 * Usage problems (conflicting options, a non-https URL) are found before
 * any network traffic. The token lives in two stack buffers (the token and
 * the header line) and in libcurl's header list: all three are wiped or
 * freed on every path out. Only https is allowed, also for redirects
 * (CURLOPT_PROTOCOLS_STR), and redirects are not followed at all: an
 * Authorization header must not travel to another host. */
static int http_get(const struct ctl_ctx *ctx, const char *path, const char *const *params,
                    struct body *out)
{
    char token[QUERY_MAX_TOKEN + 1];
    char url[QUERY_MAX_URL];
    char errbuf[CURL_ERROR_SIZE];
    char auth[QUERY_MAX_TOKEN + 32];
    struct curl_slist *headers = NULL;
    struct rsl_error err = {0};
    CURL *curl = NULL;
    int rc = CTL_EXIT_FAILURE;
    long status = 0;

    memset(out, 0, sizeof(*out));
    memset(auth, 0, sizeof(auth));
    if ((rc = load_token(ctx, token, sizeof(token))) != CTL_EXIT_OK)
        goto out;
    rc = CTL_EXIT_FAILURE;
    const char *cert = ctl_option(ctx, "cert");
    const char *key = ctl_option(ctx, "key");
    if ((cert == NULL) != (key == NULL)) {
        rc = ctl_usage_error(ctx, "--cert and --key go together");
        goto out;
    }
    if (key != NULL && rsl_key_file_check_private(key, &err) != RSL_OK) {
        rc = ctl_fail(ctx, "--key: %s", err.text);
        goto out;
    }
    if (ctl_option(ctx, "json") != NULL && ctl_option(ctx, "csv") != NULL) {
        rc = ctl_usage_error(ctx, "--json and --csv exclude each other");
        goto out;
    }
    const char *base = ctl_option(ctx, "url");
    if (base == NULL)
        base = getenv("RESILIENCE_URL");
    if (base == NULL || base[0] == '\0')
        base = QUERY_DEFAULT_URL;
    if (strncmp(base, "https://", 8) != 0) {
        rc = ctl_usage_error(ctx, "--url: '%s' is not an https:// URL", base);
        goto out;
    }
    size_t blen = strlen(base);
    while (blen > 8 && base[blen - 1] == '/')
        blen--; /* "https://host:8443/" and "https://host:8443" alike */

    curl = curl_easy_init();
    if (curl == NULL) {
        rc = ctl_fail(ctx, "libcurl: initialisation failed");
        goto out;
    }
    int n = snprintf(url, sizeof(url), "%.*s%s", (int)blen, base, path);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        rc = ctl_usage_error(ctx, "--url: too long");
        goto out;
    }
    bool first = true;
    for (size_t i = 0; params != NULL && params[i] != NULL; i += 2) {
        if (add_param(curl, url, sizeof(url), &first, params[i], params[i + 1]) != 0) {
            rc = ctl_usage_error(ctx, "parameters too long");
            goto out;
        }
    }
    if (ctl_option(ctx, "csv") != NULL &&
        add_param(curl, url, sizeof(url), &first, "format", "csv") != 0) {
        rc = ctl_usage_error(ctx, "parameters too long");
        goto out;
    }

    errbuf[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, QUERY_CONNECT_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, QUERY_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, CTL_PROGRAM "/" RSL_VERSION);
    if (ctl_option(ctx, "cacert") != NULL)
        curl_easy_setopt(curl, CURLOPT_CAINFO, ctl_option(ctx, "cacert"));
    if (cert != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(curl, CURLOPT_SSLKEY, key);
    }
    if (token[0] != '\0') {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    headers = curl_slist_append(headers, ctl_option(ctx, "csv") != NULL ? "Accept: text/csv"
                                                                         : "Accept: application/json");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    CURLcode cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        if (out->too_big)
            rc = ctl_fail(ctx, "GET %s: answer larger than %u bytes", url, QUERY_MAX_BODY);
        else
            rc = ctl_fail(ctx, "GET %s: %s", url, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        /* The API's errors are {"error": ..., "detail": ...}. */
        json_t *doc = out->data != NULL ? json_loads(out->data, 0, NULL) : NULL;
        const char *error = json_string_value(json_object_get(doc, "error"));
        const char *detail = json_string_value(json_object_get(doc, "detail"));
        char shown[256];
        rc = ctl_fail(ctx, "GET %s: HTTP %ld %s%s%s", url, status, error != NULL ? error : "",
                      detail != NULL ? ": " : "",
                      detail != NULL ? rsl_text_show(detail, shown, sizeof(shown)) : "");
        json_decref(doc);
        goto out;
    }
    if (out->data == NULL) {
        rc = ctl_fail(ctx, "GET %s: empty answer", url);
        goto out;
    }
    rc = CTL_EXIT_OK;
out:
    rsl_secure_zero(token, sizeof(token));
    rsl_secure_zero(auth, sizeof(auth));
    curl_slist_free_all(headers); /* holds a copy of the Authorization line */
    curl_easy_cleanup(curl);
    if (rc != CTL_EXIT_OK) {
        free(out->data);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

/* ---- tables ----------------------------------------------------------- */

#define TABLE_MAX_COLS 12
#define TABLE_CELL 64

/* A small text table: rows of cells, each column as wide as its widest
 * cell. Numbers are right-aligned, text left-aligned. Cells are cut at
 * TABLE_CELL - 1 bytes: the widest real cell (an indicator id, an RFC 3339
 * time) is far shorter, and a hostile server cannot widen the table past
 * that. */
struct table {
    size_t n_cols;
    bool right[TABLE_MAX_COLS];
    size_t width[TABLE_MAX_COLS];
    char (*cells)[TABLE_MAX_COLS][TABLE_CELL];
    size_t n_rows;
    size_t cap;
    bool failed;
};

static void table_row(struct table *t, const char *const *cells)
{
    if (t->failed)
        return;
    if (t->n_rows == t->cap) {
        size_t cap = t->cap > 0 ? t->cap * 2 : 64;
        void *p = realloc(t->cells, cap * sizeof(*t->cells));
        if (p == NULL) {
            t->failed = true;
            return;
        }
        t->cells = p;
        t->cap = cap;
    }
    for (size_t c = 0; c < t->n_cols; c++) {
        snprintf(t->cells[t->n_rows][c], TABLE_CELL, "%s", cells[c] != NULL ? cells[c] : "");
        size_t w = strlen(t->cells[t->n_rows][c]);
        if (w > t->width[c])
            t->width[c] = w;
    }
    t->n_rows++;
}

static void table_print(struct table *t, FILE *f)
{
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            int w = (int)t->width[c];
            const char *sep = c + 1 < t->n_cols ? "  " : "";
            if (t->right[c])
                fprintf(f, "%*s%s", w, t->cells[r][c], sep);
            else if (c + 1 < t->n_cols)
                fprintf(f, "%-*s%s", w, t->cells[r][c], sep);
            else
                fprintf(f, "%s", t->cells[r][c]);
        }
        fputc('\n', f);
    }
    free(t->cells);
    t->cells = NULL;
}

/* A JSON number as the table shows it; "-" for null or absent. */
static void num(json_t *v, char *out, size_t outlen)
{
    if (json_is_integer(v))
        snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
    else if (json_is_number(v))
        snprintf(out, outlen, "%.6g", json_number_value(v));
    else
        snprintf(out, outlen, "-");
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "-";
}

/* Parse the 200 body, or print why not. */
static json_t *parse_body(const struct ctl_ctx *ctx, const struct body *b)
{
    json_error_t jerr;
    json_t *doc = json_loads(b->data, 0, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        ctl_fail(ctx, "the server's answer is not a JSON object (line %d: %s)", jerr.line,
                 jerr.text);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* --json / --csv: the body as the server sent it, byte for byte, so a
 * script gets exactly the API's document (tested against the API). */
static bool print_raw(const struct ctl_ctx *ctx, const struct body *b)
{
    if (ctl_option(ctx, "json") == NULL && ctl_option(ctx, "csv") == NULL)
        return false;
    fwrite(b->data, 1, b->len, ctx->out);
    if (b->len > 0 && b->data[b->len - 1] != '\n')
        fputc('\n', ctx->out);
    return true;
}

static int print_summary(const struct ctl_ctx *ctx, json_t *doc)
{
    struct table t = {.n_cols = 11};
    static const char *const head[] = {"INDICATOR", "REQ", "VALUE", "UNIT", "METHOD",
                                       "REPORTING", "STALE", "MISSING", "GREEN", "AMBER", "RED"};
    for (size_t c = 2; c < 11; c++)
        t.right[c] = c != 3 && c != 4;
    table_row(&t, head);
    json_t *ind;
    size_t i;
    json_array_foreach(json_object_get(doc, "indicators"), i, ind) {
        char v[32], rep[16], stale[16], miss[16], g[16], a[16], r[16];
        json_t *st = json_object_get(ind, "status");
        num(json_object_get(ind, "value"), v, sizeof(v));
        num(json_object_get(ind, "nations_reporting"), rep, sizeof(rep));
        num(json_object_get(ind, "nations_stale"), stale, sizeof(stale));
        num(json_object_get(ind, "nations_missing"), miss, sizeof(miss));
        num(json_object_get(st, "green"), g, sizeof(g));
        num(json_object_get(st, "amber"), a, sizeof(a));
        num(json_object_get(st, "red"), r, sizeof(r));
        const char *row[] = {str(ind, "id"), str(ind, "requirement"), v, str(ind, "unit"),
                             str(ind, "method"), rep, stale, miss, g, a, r};
        table_row(&t, row);
    }
    fprintf(ctx->out, "Alliance summary at %s (%lld nations)\n\n", str(doc, "at"),
            (long long)json_integer_value(json_object_get(doc, "nations")));
    table_print(&t, ctx->out);

    struct table q = {.n_cols = 6};
    static const char *const qhead[] = {"REQUIREMENT", "INDICATORS", "GREEN", "AMBER", "RED",
                                        "NO_DATA"};
    for (size_t c = 1; c < 6; c++)
        q.right[c] = true;
    table_row(&q, qhead);
    json_t *req;
    json_array_foreach(json_object_get(doc, "requirements"), i, req) {
        char n[16], g[16], a[16], r[16], nd[16];
        json_t *st = json_object_get(req, "status");
        num(json_object_get(req, "indicators"), n, sizeof(n));
        num(json_object_get(st, "green"), g, sizeof(g));
        num(json_object_get(st, "amber"), a, sizeof(a));
        num(json_object_get(st, "red"), r, sizeof(r));
        num(json_object_get(st, "no_data"), nd, sizeof(nd));
        const char *row[] = {str(req, "id"), n, g, a, r, nd};
        table_row(&q, row);
    }
    fprintf(ctx->out, "\nNations by worst status per baseline requirement\n\n");
    table_print(&q, ctx->out);
    return t.failed || q.failed ? ctl_fail(ctx, "out of memory") : CTL_EXIT_OK;
}

static int print_nation(const struct ctl_ctx *ctx, json_t *doc)
{
    struct table t = {.n_cols = 8};
    static const char *const head[] = {"INDICATOR", "REQ", "STATE", "VALUE", "UNIT", "STATUS",
                                       "OBSERVED", "AGENT"};
    t.right[3] = true;
    table_row(&t, head);
    json_t *ind;
    size_t i;
    json_array_foreach(json_object_get(doc, "indicators"), i, ind) {
        char v[32];
        num(json_object_get(ind, "value"), v, sizeof(v));
        const char *row[] = {str(ind, "id"), str(ind, "requirement"), str(ind, "state"), v,
                             str(ind, "unit"), str(ind, "status"), str(ind, "observed_at"),
                             str(ind, "agent_id")};
        table_row(&t, row);
    }
    json_t *counts = json_object_get(doc, "counts");
    fprintf(ctx->out, "%s (%s) at %s: %lld current, %lld stale, %lld missing\n",
            str(doc, "nation"), str(doc, "name"), str(doc, "at"),
            (long long)json_integer_value(json_object_get(counts, "current")),
            (long long)json_integer_value(json_object_get(counts, "stale")),
            (long long)json_integer_value(json_object_get(counts, "missing")));
    const char *key;
    json_t *value;
    fprintf(ctx->out, "Requirements:");
    json_object_foreach(json_object_get(doc, "requirements"), key, value)
        fprintf(ctx->out, " %s=%s", key, json_string_value(value) != NULL ? json_string_value(value) : "-");
    fprintf(ctx->out, "\n\n");
    table_print(&t, ctx->out);
    return t.failed ? ctl_fail(ctx, "out of memory") : CTL_EXIT_OK;
}

static int print_history(const struct ctl_ctx *ctx, json_t *doc)
{
    struct table t = {.n_cols = 8};
    static const char *const head[] = {"AT", "VALUE", "MIN", "MEDIAN", "MAX", "REPORTING",
                                       "STALE", "MISSING"};
    for (size_t c = 1; c < 8; c++)
        t.right[c] = true;
    table_row(&t, head);
    json_t *p;
    size_t i;
    json_array_foreach(json_object_get(doc, "points"), i, p) {
        char v[32], lo[32], med[32], hi[32], rep[16], stale[16], miss[16];
        num(json_object_get(p, "value"), v, sizeof(v));
        num(json_object_get(p, "min"), lo, sizeof(lo));
        num(json_object_get(p, "median"), med, sizeof(med));
        num(json_object_get(p, "max"), hi, sizeof(hi));
        num(json_object_get(p, "nations_reporting"), rep, sizeof(rep));
        num(json_object_get(p, "nations_stale"), stale, sizeof(stale));
        num(json_object_get(p, "nations_missing"), miss, sizeof(miss));
        const char *row[] = {str(p, "at"), v, lo, med, hi, rep, stale, miss};
        table_row(&t, row);
    }
    fprintf(ctx->out, "%s (%s of %s, %s) from %s to %s, every %lld s\n\n", str(doc, "indicator"),
            str(doc, "method"), str(doc, "unit"), str(doc, "requirement"), str(doc, "from"),
            str(doc, "to"), (long long)(json_integer_value(json_object_get(doc, "step_ms")) / 1000));
    table_print(&t, ctx->out);
    return t.failed ? ctl_fail(ctx, "out of memory") : CTL_EXIT_OK;
}

/* ---- commands --------------------------------------------------------- */

enum query_kind { Q_SUMMARY, Q_NATION, Q_HISTORY };

/* A path segment the API can name: what its route templates accept.
 * Checked here so that a CODE such as "../metrics" or "DEU?x=1" cannot
 * change which URL is requested. */
static bool valid_segment(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int run_query(struct ctl_ctx *ctx, enum query_kind kind)
{
    char path[256];
    const char *params[8] = {NULL};
    size_t np = 0;
    struct body b;
    json_t *doc = NULL;

    switch (kind) {
    case Q_SUMMARY:
        snprintf(path, sizeof(path), "/v1/summary");
        params[np++] = "at";
        params[np++] = ctl_option(ctx, "at");
        break;
    case Q_NATION:
        if (!valid_segment(ctx->positional[0]))
            return ctl_usage_error(ctx, "'%s' is not a nation code", ctx->positional[0]);
        snprintf(path, sizeof(path), "/v1/nations/%s", ctx->positional[0]);
        params[np++] = "at";
        params[np++] = ctl_option(ctx, "at");
        break;
    case Q_HISTORY:
        if (!valid_segment(ctx->positional[0]))
            return ctl_usage_error(ctx, "'%s' is not an indicator id", ctx->positional[0]);
        snprintf(path, sizeof(path), "/v1/indicators/%s/history", ctx->positional[0]);
        params[np++] = "from";
        params[np++] = ctl_option(ctx, "from");
        params[np++] = "to";
        params[np++] = ctl_option(ctx, "to");
        params[np++] = "step";
        params[np++] = ctl_option(ctx, "step");
        break;
    }
    /* Leave out parameters that were not given (value NULL), keeping pairs. */
    const char *given[9] = {NULL};
    size_t ng = 0;
    for (size_t i = 0; i < np; i += 2) {
        if (params[i + 1] != NULL) {
            given[ng++] = params[i];
            given[ng++] = params[i + 1];
        }
    }
    int rc = http_get(ctx, path, given, &b);
    if (rc != CTL_EXIT_OK)
        return rc;
    if (print_raw(ctx, &b)) {
        free(b.data);
        return CTL_EXIT_OK;
    }
    doc = parse_body(ctx, &b);
    free(b.data);
    if (doc == NULL)
        return CTL_EXIT_FAILURE;
    switch (kind) {
    case Q_SUMMARY: rc = print_summary(ctx, doc); break;
    case Q_NATION: rc = print_nation(ctx, doc); break;
    case Q_HISTORY: rc = print_history(ctx, doc); break;
    }
    json_decref(doc);
    return rc;
}

int ctl_cmd_summary(struct ctl_ctx *ctx)
{
    return run_query(ctx, Q_SUMMARY);
}

int ctl_cmd_nation(struct ctl_ctx *ctx)
{
    return run_query(ctx, Q_NATION);
}

int ctl_cmd_history(struct ctl_ctx *ctx)
{
    return run_query(ctx, Q_HISTORY);
}
