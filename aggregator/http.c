/*
 * http.c - the aggregator's HTTPS API: libevent evhttp over
 * bufferevent_openssl (ARCHITECTURE sections 6 and 10).
 *
 * Threads. agg_http_start binds ONE listening socket and gives it to
 * `threads` workers. Each worker owns an event_base, an evhttp, an
 * evconnlistener on the shared socket, a read-only store handle and an
 * eventfd used only to wake it for shutdown. Nothing mutable is shared
 * between workers: the configuration and the SSL_CTX are read-only after
 * start (OpenSSL locks what it needs inside SSL_new), so no request path
 * takes a lock of ours. libevent threading support is not needed either,
 * because no event_base is ever touched by two threads at once: the main
 * thread builds each base before the worker starts and frees it after the
 * worker has been joined; shutdown goes through the eventfd, not through
 * cross-thread libevent calls.
 *
 * Latency. TCP_NODELAY is set on the listening socket; Linux copies it to
 * every accepted socket. Without it evhttp's separate header and body writes
 * meet Nagle + delayed ACK and every response stalls ~40 ms (section 10).
 *
 * Requests. Only GET and HEAD are served (others: 405); the route is matched
 * first (404), then the bearer token (401/403), then the query string
 * (400: strict, unknown parameters rejected), so callers without a token
 * learn nothing from parameter errors. Every response, errors included, is
 * JSON with Cache-Control: no-store and Strict-Transport-Security.
 *
 * Tokens. The configuration holds SHA-256 digests of bearer tokens; a
 * presented token is hashed and compared against every configured digest in
 * constant time (agg_config_token_find), and the copies are zeroed.
 */
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "store.h"
#include "summary.h"

#define LOG_MODULE "https"

/* Limits. Requests are small GETs: a bearer token, a short query. */
#define HTTP_MAX_HEADERS_BYTES (8 * 1024)
#define HTTP_MAX_BODY_BYTES 1024
#define HTTP_TIMEOUT_SECONDS 10
#define HTTP_MAX_QUERY_BYTES 1024
#define HTTP_MAX_PARAM_VALUE 128
#define HTTP_MAX_TOKEN_BYTES 1024
#define HTTP_LISTEN_BACKLOG 1024
#define HTTP_MAX_TIME_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

/* Mozilla "intermediate" TLS 1.2 suites with forward secrecy and AEAD only;
 * TLS 1.3 keeps OpenSSL's default suites (all of them AEAD). */
#define HTTP_TLS12_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                  \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                  \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct agg_http;

struct http_worker {
    struct agg_http *server;        /* back pointer, borrowed */
    size_t index;
    struct event_base *base;
    struct evhttp *http;
    struct event *wake_event;       /* reads wake_fd, breaks the loop */
    int wake_fd;                    /* eventfd, -1 when not created */
    struct agg_store *store;        /* read-only, used by this worker only */
    pthread_t thread;
    bool running;                   /* thread created and not yet joined */
};

struct agg_http {
    const struct agg_config *cfg;   /* borrowed, outlives the server */
    SSL_CTX *ssl_ctx;
    int listen_fd;
    int port;
    struct http_worker *workers;
    size_t n_workers;
};

/* ---- TLS ------------------------------------------------------------ */

/* The oldest queued OpenSSL error as text, and clear the queue so a stale
 * error never shows up in a later message. */
static void ssl_error_text(char *out, size_t outlen)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(out, outlen, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, out, outlen);
    ERR_clear_error();
}

static int tls_context_new(const struct agg_config *cfg, SSL_CTX **out, struct rsl_error *err)
{
    char text[256];
    int rc = RSL_ECRYPTO;
    SSL_CTX *ctx = NULL;

    *out = NULL;
    /* Refuse a key readable by others before OpenSSL ever reads it. */
    rc = rsl_key_file_check_private(cfg->https_key, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "https: key");
        goto out;
    }
    rc = RSL_ECRYPTO;
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: SSL_CTX_new: %s", text);
        goto out;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, HTTP_TLS12_CIPHERS) != 1) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: TLS settings: %s", text);
        goto out;
    }
    /* Mozilla intermediate: let the client pick among our (all strong)
     * suites, since it knows whether it has AES hardware. No renegotiation,
     * no compression. */
    SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->https_cert) != 1) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: %s: cannot load certificate chain: %s", cfg->https_cert,
                      text);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->https_key, SSL_FILETYPE_PEM) != 1) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: %s: cannot load private key: %s", cfg->https_key, text);
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: %s does not match the certificate %s: %s", cfg->https_key,
                      cfg->https_cert, text);
        goto out;
    }
    *out = ctx;
    ctx = NULL; /* transferred */
    rc = RSL_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/* evhttp asks for a bufferevent per accepted connection. Returning NULL
 * would make libevent 2.1 fall back to a PLAIN socket bufferevent, so the
 * request handler also refuses any connection that is not TLS (see
 * connection_is_tls). */
static struct bufferevent *tls_bufferevent_new(struct event_base *base, void *arg)
{
    struct http_worker *w = arg;
    SSL *ssl = SSL_new(w->server->ssl_ctx);
    if (ssl == NULL) {
        ERR_clear_error();
        return NULL;
    }
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        SSL_free(ssl); /* not taken over on failure */
    return bev;
}

static bool connection_is_tls(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn == NULL)
        return false;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    return bev != NULL && bufferevent_openssl_get_ssl(bev) != NULL;
}

/* ---- listening socket ----------------------------------------------- */

static int listen_socket_open(const struct agg_config *cfg, int *fd_out, int *port_out,
                              struct rsl_error *err)
{
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port[8];
    int fd = -1;
    int rc = RSL_EIO;
    int last_errno = 0;

    *fd_out = -1;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", (unsigned)cfg->https_port);
    int gai = getaddrinfo(cfg->https_host[0] != '\0' ? cfg->https_host : NULL, port, &hints, &res);
    if (gai != 0) {
        rsl_error_set(err, RSL_ECONFIG, "https: listen on %s port %s: %s", cfg->https_host,
                      port, gai_strerror(gai));
        rc = RSL_ECONFIG;
        goto out;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        /* SO_REUSEADDR: restart without waiting out TIME_WAIT. TCP_NODELAY on
         * the listener so accepted sockets inherit it (section 10). */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, HTTP_LISTEN_BACKLOG) != 0) {
            last_errno = errno;
            close(fd);
            fd = -1;
            continue;
        }
        break;
    }
    if (fd < 0) {
        rsl_error_set(err, RSL_EIO, "https: listen on %s port %s: %s", cfg->https_host, port,
                      strerror(last_errno != 0 ? last_errno : EADDRNOTAVAIL));
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0) {
        rsl_error_set(err, RSL_EIO, "https: getsockname: %s", strerror(errno));
        goto out;
    }
    if (ss.ss_family == AF_INET6)
        *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    fd = -1; /* transferred */
    rc = RSL_OK;
out:
    if (fd >= 0)
        close(fd);
    if (res != NULL)
        freeaddrinfo(res);
    return rc;
}

/* ---- responses ------------------------------------------------------ */

static void add_common_headers(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
}

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* Send `doc` (consumed) with status `code`. A document that cannot be
 * serialized becomes a bare 500 so the client is never left hanging. */
static void send_json(struct evhttp_request *req, int code, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    static const char oom[] = "{\"error\":\"internal\",\"detail\":\"out of memory\"}";
    const char *payload = text != NULL ? text : oom;
    size_t len = strlen(payload);
    if (text == NULL)
        code = 500;
    add_common_headers(req);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* libevent 2.1 would send a body queued for HEAD after the headers
         * (a protocol error on keep-alive connections), so HEAD gets only
         * the length the GET body would have. */
        char length[32];
        snprintf(length, sizeof(length), "%zu", len + 1);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", length);
    } else {
        struct evbuffer *body = evhttp_request_get_output_buffer(req);
        evbuffer_add(body, payload, len);
        evbuffer_add(body, "\n", 1);
    }
    free(text);
    evhttp_send_reply(req, code, reason_phrase(code), NULL);
}

static void send_error(struct evhttp_request *req, int code, const char *error,
                       const char *detail)
{
    send_json(req, code, json_pack("{s:s,s:s}", "error", error, "detail", detail));
}

/* ---- query strings -------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

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
            int hi = hex_value(src[i + 1]);
            int lo = hex_value(src[i + 2]);
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
    char value[HTTP_MAX_PARAM_VALUE + 1];
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
    if (qlen > HTTP_MAX_QUERY_BYTES) {
        snprintf(detail, detaillen, "query string longer than %d bytes", HTTP_MAX_QUERY_BYTES);
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
            snprintf(detail, detaillen, "unknown query parameter '%s'", name);
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
                     name, HTTP_MAX_PARAM_VALUE);
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

/* ---- authentication ------------------------------------------------- */

enum auth_result { AUTH_OK, AUTH_MISSING, AUTH_INVALID };

static bool b64token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

/* RFC 6750 section 2.1: "Bearer" (case-insensitive), spaces, b64token. */
static enum auth_result authenticate(const struct agg_config *cfg, struct evhttp_request *req,
                                     const struct agg_token **token)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const char *value = NULL;
    int count = 0;

    *token = NULL;
    for (struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "Authorization") == 0) {
            value = h->value;
            count++;
        }
    }
    if (count == 0)
        return AUTH_MISSING;
    if (count > 1 || strncasecmp(value, "Bearer ", 7) != 0)
        return AUTH_INVALID;
    const char *t = value + 7;
    while (*t == ' ')
        t++;
    size_t len = strlen(t);
    if (len == 0 || len > HTTP_MAX_TOKEN_BYTES)
        return AUTH_INVALID;
    for (size_t i = 0; i < len; i++)
        if (!b64token_char(t[i]))
            return AUTH_INVALID;
    uint8_t digest[32];
    rsl_sha256(t, len, digest);
    *token = agg_config_token_find(cfg, digest);
    rsl_secure_zero(digest, sizeof(digest));
    return *token != NULL ? AUTH_OK : AUTH_INVALID;
}

static void send_unauthorized(struct evhttp_request *req, enum auth_result why)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (why == AUTH_MISSING) {
        evhttp_add_header(h, "WWW-Authenticate", "Bearer realm=\"resilience\"");
        send_error(req, 401, "unauthorized", "an Authorization: Bearer token is required");
    } else {
        evhttp_add_header(h, "WWW-Authenticate", "Bearer realm=\"resilience\", error=\"invalid_token\"");
        send_error(req, 401, "unauthorized", "the bearer token is not valid");
    }
}

/* ---- routes --------------------------------------------------------- */

/* Parse the optional `at` parameter. *at_ms is the query time T; *store_at
 * is what agg_store_latest gets: -1 (the incrementally kept present) when
 * no `at` was given, else T. Returns 0, or -1 after sending a 400. */
static int parse_at(struct evhttp_request *req, const struct query_param *at, int64_t *at_ms,
                    int64_t *store_at)
{
    if (!at->present) {
        *at_ms = rsl_now_ms();
        *store_at = -1;
        return 0;
    }
    int64_t t = 0;
    /* Up to 9999-12-31T23:59:59.999Z, so every time we print back is an
     * RFC 3339 time with a four-digit year. */
    if (rsl_parse_time_ms(at->value, &t) != RSL_OK || t <= 0 || t > HTTP_MAX_TIME_MS) {
        send_error(req, 400, "bad_request",
                   "query parameter 'at': expected RFC 3339 (2026-11-27T09:00:00Z) or unix "
                   "milliseconds");
        return -1;
    }
    *at_ms = t;
    *store_at = t;
    return 0;
}

/* Fill a snapshot from this worker's store. Returns 0, or -1 after sending
 * a 503 (the store is unreadable: a server problem, not the client's). */
static int load_snapshot(struct http_worker *w, struct evhttp_request *req, int64_t store_at,
                         struct agg_snapshot **out)
{
    struct rsl_error err = {0};
    struct agg_snapshot *snap = NULL;
    *out = NULL;
    if (agg_snapshot_new(w->server->cfg->taxonomy, &snap) != RSL_OK) {
        send_error(req, 500, "internal", "out of memory");
        return -1;
    }
    int rc = agg_store_latest(w->store, store_at, agg_snapshot_value_cb, snap, &err);
    if (rc != RSL_OK) {
        RSL_ERR(LOG_MODULE, "store read failed: %s", err.text);
        agg_snapshot_free(&snap);
        send_error(req, 503, "unavailable", "the store cannot be read");
        return -1;
    }
    *out = snap;
    return 0;
}

static void route_healthz(struct http_worker *w, struct evhttp_request *req, const char *query)
{
    char detail[256];
    if (query_parse(query, NULL, 0, detail, sizeof(detail)) != 0) {
        send_error(req, 400, "bad_request", detail);
        return;
    }
    struct agg_store_stats stats = {0};
    struct rsl_error err = {0};
    if (agg_store_stats(w->store, &stats, &err) != RSL_OK) {
        RSL_ERR(LOG_MODULE, "healthz: store: %s", err.text);
        send_json(req, 503, json_pack("{s:s,s:s}", "status", "error", "store", "error"));
        return;
    }
    send_json(req, 200, json_pack("{s:s,s:s,s:I}", "status", "ok", "store", "ok", "reports",
                                  (json_int_t)stats.reports));
}

static void route_summary(struct http_worker *w, struct evhttp_request *req, const char *query,
                          const struct agg_token *token)
{
    struct query_param params[] = {{.name = "at"}};
    char detail[256];
    int64_t at_ms = 0;
    int64_t store_at = -1;
    struct agg_snapshot *snap = NULL;
    struct agg_summary *summary = NULL;
    struct rsl_error err = {0};

    if (token->role != AGG_ROLE_STAFF && token->role != AGG_ROLE_NATION) {
        send_error(req, 403, "forbidden", "this token's role may not read the alliance summary");
        goto out;
    }
    if (query_parse(query, params, 1, detail, sizeof(detail)) != 0) {
        send_error(req, 400, "bad_request", detail);
        goto out;
    }
    if (parse_at(req, &params[0], &at_ms, &store_at) != 0)
        goto out;
    if (load_snapshot(w, req, store_at, &snap) != 0)
        goto out;
    if (agg_summary_compute(snap, at_ms, &summary, &err) != RSL_OK) {
        send_error(req, 500, "internal", err.text);
        goto out;
    }
    /* A nation sees the alliance aggregates and only its own row of the
     * per-nation requirement statuses. */
    send_json(req, 200,
              agg_summary_to_json(summary, token->role == AGG_ROLE_NATION ? token->nation : NULL));
out:
    agg_summary_free(&summary);
    agg_snapshot_free(&snap);
}

static void route_nation(struct http_worker *w, struct evhttp_request *req, const char *query,
                         const struct agg_token *token, const char *code)
{
    struct query_param params[] = {{.name = "at"}};
    char detail[256];
    int64_t at_ms = 0;
    int64_t store_at = -1;
    struct agg_snapshot *snap = NULL;
    struct agg_nation_view *view = NULL;
    struct rsl_error err = {0};

    /* Scope before existence: a nation token asking for another code,
     * known or not, gets 403, so it cannot probe the nation list. */
    if (token->role == AGG_ROLE_PARTNER ||
        (token->role == AGG_ROLE_NATION && strcmp(token->nation, code) != 0)) {
        send_error(req, 403, "forbidden", "this token may not read that nation's values");
        goto out;
    }
    if (query_parse(query, params, 1, detail, sizeof(detail)) != 0) {
        send_error(req, 400, "bad_request", detail);
        goto out;
    }
    if (rsl_taxonomy_nation_index(w->server->cfg->taxonomy, code) < 0) {
        send_error(req, 404, "not_found", "no such nation in the nation list");
        goto out;
    }
    if (parse_at(req, &params[0], &at_ms, &store_at) != 0)
        goto out;
    if (load_snapshot(w, req, store_at, &snap) != 0)
        goto out;
    if (agg_nation_view_compute(snap, code, at_ms, &view, &err) != RSL_OK) {
        send_error(req, 500, "internal", err.text);
        goto out;
    }
    send_json(req, 200, agg_nation_view_to_json(view));
out:
    agg_nation_view_free(&view);
    agg_snapshot_free(&snap);
}

/* "/v1/nations/DEU" -> "DEU" if the rest is 1..3 characters of [A-Za-z0-9]
 * (anything longer or stranger cannot be a nation code: 404 either way). */
static bool nation_path(const char *path, char code[4])
{
    static const char prefix[] = "/v1/nations/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *rest = path + sizeof(prefix) - 1;
    size_t len = strlen(rest);
    if (len == 0 || len > 3)
        return false;
    memcpy(code, rest, len + 1);
    return true;
}

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "?";
}

static void handle_request(struct evhttp_request *req, void *arg)
{
    struct http_worker *w = arg;
    const struct agg_config *cfg = w->server->cfg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    char code[4] = "";

    if (!connection_is_tls(req)) {
        /* Only reachable if SSL_new failed (out of memory): never serve
         * anything in clear text. */
        RSL_ERR(LOG_MODULE, "refusing a connection without TLS");
        evhttp_connection_free_on_completion(evhttp_request_get_connection(req));
        send_error(req, 500, "internal", "TLS unavailable");
        return;
    }
    RSL_DEBUG(LOG_MODULE, "worker %zu: %s %s", w->index, method_name(method),
              evhttp_request_get_uri(req));
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        send_error(req, 405, "method_not_allowed", "only GET and HEAD are supported");
        return;
    }
    if (path == NULL) {
        send_error(req, 400, "bad_request", "malformed request target");
        return;
    }
    bool is_health = strcmp(path, "/healthz") == 0;
    bool is_summary = strcmp(path, "/v1/summary") == 0;
    bool is_nation = nation_path(path, code);
    if (!is_health && !is_summary && !is_nation) {
        send_error(req, 404, "not_found", "no such resource");
        return;
    }
    if (is_health) {
        route_healthz(w, req, query);
        return;
    }
    const struct agg_token *token = NULL;
    enum auth_result auth = authenticate(cfg, req, &token);
    if (auth != AUTH_OK) {
        send_unauthorized(req, auth);
        return;
    }
    if (is_summary)
        route_summary(w, req, query, token);
    else
        route_nation(w, req, query, token, code);
}

/* ---- workers -------------------------------------------------------- */

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct http_worker *w = arg;
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof(v));
    (void)r;
    event_base_loopbreak(w->base);
}

static void *worker_main(void *arg)
{
    struct http_worker *w = arg;
    if (event_base_dispatch(w->base) < 0)
        RSL_ERR(LOG_MODULE, "worker %zu: event loop failed", w->index);
    return NULL;
}

/* Build one worker's event_base, evhttp, listener and store handle (in the
 * calling thread; the worker thread is started separately). */
static int worker_init(struct agg_http *server, struct http_worker *w, size_t index,
                       struct rsl_error *err)
{
    struct evconnlistener *listener = NULL;
    w->server = server;
    w->index = index;
    w->wake_fd = -1;

    int rc = agg_store_open(server->cfg->store_path, true, &w->store, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "https: worker %zu", index);
        return rc;
    }
    w->base = event_base_new();
    if (w->base == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "https: event_base_new failed");
    w->http = evhttp_new(w->base);
    if (w->http == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "https: evhttp_new failed");
    /* Accept every method at the libevent level: it would answer others
     * with its own 501 HTML page; we answer 405 in JSON. */
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(w->http, HTTP_MAX_HEADERS_BYTES);
    evhttp_set_max_body_size(w->http, HTTP_MAX_BODY_BYTES);
    evhttp_set_timeout(w->http, HTTP_TIMEOUT_SECONDS);
    evhttp_set_bevcb(w->http, tls_bufferevent_new, w);
    evhttp_set_gencb(w->http, handle_request, w);
    /* The listener must not close the shared socket when freed (the server
     * closes it once); backlog 0: already listening. */
    listener = evconnlistener_new(w->base, NULL, NULL, LEV_OPT_CLOSE_ON_EXEC, 0, server->listen_fd);
    if (listener == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "https: evconnlistener_new failed");
    if (evhttp_bind_listener(w->http, listener) == NULL) {
        evconnlistener_free(listener);
        return rsl_error_set(err, RSL_ENOMEM, "https: evhttp_bind_listener failed");
    }
    /* listener now belongs to w->http */
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0)
        return rsl_error_set(err, RSL_EIO, "https: eventfd: %s", strerror(errno));
    w->wake_event = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, wake_cb, w);
    if (w->wake_event == NULL || event_add(w->wake_event, NULL) != 0)
        return rsl_error_set(err, RSL_ENOMEM, "https: cannot watch the wake-up eventfd");
    return RSL_OK;
}

static void worker_wake(struct http_worker *w)
{
    uint64_t one = 1;
    if (w->wake_fd >= 0) {
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r; /* a full counter still wakes the loop */
    }
}

/* Free one worker; its thread must have been joined. */
static void worker_free(struct http_worker *w)
{
    if (w->wake_event != NULL)
        event_free(w->wake_event);
    if (w->http != NULL)
        evhttp_free(w->http); /* frees its listener and open connections */
    if (w->base != NULL)
        event_base_free(w->base);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    agg_store_close(&w->store);
    memset(w, 0, sizeof(*w));
    w->wake_fd = -1;
}

int agg_http_port(const struct agg_http *http)
{
    return http != NULL ? http->port : -1;
}

void agg_http_stop(struct agg_http **http)
{
    if (http == NULL || *http == NULL)
        return;
    struct agg_http *s = *http;
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i].running)
            worker_wake(&s->workers[i]);
    for (size_t i = 0; i < s->n_workers; i++) {
        if (s->workers[i].running) {
            pthread_join(s->workers[i].thread, NULL);
            s->workers[i].running = false;
        }
    }
    for (size_t i = 0; i < s->n_workers; i++)
        worker_free(&s->workers[i]);
    free(s->workers);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    SSL_CTX_free(s->ssl_ctx);
    free(s);
    *http = NULL;
}

int agg_http_start(const struct agg_config *cfg, struct agg_http **out, struct rsl_error *err)
{
    struct agg_http *s = NULL;
    int rc = RSL_ENOMEM;
    sigset_t all;
    sigset_t old;
    bool mask_changed = false;

    *out = NULL;
    if (cfg->https_threads < 1 || cfg->taxonomy == NULL) {
        rc = rsl_error_set(err, RSL_EINVAL, "https: need at least one thread and a taxonomy");
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rsl_error_set(err, rc, "https: out of memory");
        goto out;
    }
    s->cfg = cfg;
    s->listen_fd = -1;
    s->workers = calloc((size_t)cfg->https_threads, sizeof(*s->workers));
    if (s->workers == NULL) {
        rsl_error_set(err, rc, "https: out of memory");
        goto out;
    }
    for (int i = 0; i < cfg->https_threads; i++)
        s->workers[i].wake_fd = -1;
    s->n_workers = (size_t)cfg->https_threads;

    rc = tls_context_new(cfg, &s->ssl_ctx, err);
    if (rc != RSL_OK)
        goto out;
    rc = listen_socket_open(cfg, &s->listen_fd, &s->port, err);
    if (rc != RSL_OK)
        goto out;
    for (size_t i = 0; i < s->n_workers; i++) {
        rc = worker_init(s, &s->workers[i], i, err);
        if (rc != RSL_OK)
            goto out;
    }
    /* Workers block every signal so SIGTERM/SIGINT/SIGHUP reach the main
     * thread, which owns signal handling; they inherit the mask. */
    sigfillset(&all);
    if (pthread_sigmask(SIG_SETMASK, &all, &old) == 0)
        mask_changed = true;
    for (size_t i = 0; i < s->n_workers; i++) {
        int e = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
        if (e != 0) {
            rc = rsl_error_set(err, RSL_EIO, "https: cannot start worker thread: %s", strerror(e));
            goto out;
        }
        s->workers[i].running = true;
    }
    RSL_INFO(LOG_MODULE, "listening on %s (port %d, %zu threads)", cfg->https_listen, s->port,
             s->n_workers);
    *out = s;
    s = NULL; /* transferred */
    rc = RSL_OK;
out:
    if (mask_changed)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    agg_http_stop(&s);
    return rc;
}
