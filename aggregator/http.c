/*
 * http.c - the aggregator's HTTPS transport: libevent evhttp over
 * bufferevent_openssl (ARCHITECTURE sections 6 and 10). What each route
 * answers is decided in api.c; this file owns sockets, TLS, threads,
 * credentials and the limits that keep slow or hostile clients from
 * holding the server.
 *
 * Threads. agg_http_start binds ONE listening socket and gives it to
 * `threads` workers. Each worker owns an event_base, an evhttp, an
 * evconnlistener on the shared socket, a read-only store handle, its
 * agg_api (routes + response cache) and an eventfd used only to wake it
 * for shutdown. Nothing mutable is shared between workers except the
 * request counters (relaxed atomics in agg_api_metrics): the configuration
 * and the SSL_CTX are read-only after start (OpenSSL locks what it needs
 * inside SSL_new), so no request path takes a lock of ours. No event_base
 * is ever touched by two threads at once: the main thread builds each
 * base before the worker starts and frees it after the worker has been
 * joined; shutdown goes through the eventfd.
 *
 * Latency. TCP_NODELAY is set on the listening socket; Linux copies it to
 * every accepted socket. Without it evhttp's separate header and body
 * writes meet Nagle + delayed ACK and every response stalls ~40 ms.
 *
 * TLS. 1.2 and 1.3 only; for 1.2 the Mozilla "intermediate" suites (ECDHE
 * with AES-GCM or ChaCha20-Poly1305), for 1.3 OpenSSL's defaults (the same
 * families); groups X25519, P-256, P-384; no renegotiation, no
 * compression. With [https] client_ca the server asks for (but does not
 * require) a client certificate: a browser or script may sign in with one
 * instead of a bearer token. The handshake accepts any certificate; only a
 * chain that verified against client_ca AND whose subject (RFC 2253) is
 * configured in a [client NAME] section becomes a principal, so a wrong
 * certificate yields a clear 401 instead of an opaque handshake failure.
 *
 * Credentials. An Authorization header, if present, decides alone (a bad
 * token is a 401 even with a good certificate: the caller said who it is).
 * Tokens are hashed and compared against every configured digest in
 * constant time (agg_config_token_find). The certificate's principal is
 * worked out once per connection and kept with the connection guard.
 *
 * Limits. Headers at most 8 KiB, bodies 1 KiB (every route is a GET),
 * evhttp's per-read timeout for idle peers, and a connection guard: a
 * per-connection timer started at accept. A connection must complete the
 * TLS handshake and its first request within HTTP_REQUEST_DEADLINE_SECONDS
 * of being accepted, and each further request within the same time of the
 * previous one; otherwise its socket is shut down. evhttp's own timeout
 * restarts with every byte read, so without the guard a client sending one
 * header byte a second would hold a connection forever (slowloris).
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
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "api.h"
#include "config.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "store.h"

#define LOG_MODULE "https"

/* Limits. Requests are small GETs: a bearer token, a short query. */
#define HTTP_MAX_HEADERS_BYTES (8 * 1024)
#define HTTP_MAX_BODY_BYTES 1024
#define HTTP_TIMEOUT_SECONDS 10
#ifndef HTTP_REQUEST_DEADLINE_SECONDS /* overridable for experiments only */
#define HTTP_REQUEST_DEADLINE_SECONDS 10
#endif
#define HTTP_MAX_TOKEN_BYTES 1024
#define HTTP_LISTEN_BACKLOG 1024

/* Mozilla "intermediate" TLS 1.2 suites with forward secrecy and AEAD only;
 * TLS 1.3 keeps OpenSSL's default suites (all of them AEAD). */
#define HTTP_TLS12_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                  \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                  \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define HTTP_TLS_GROUPS "X25519:P-256:P-384"
#define HTTP_SESSION_ID_CONTEXT "resilience-aggregator"

struct agg_http;
struct conn_guard;

struct http_worker {
    struct agg_http *server;        /* back pointer, borrowed */
    size_t index;
    struct event_base *base;
    struct evhttp *http;
    struct event *wake_event;       /* reads wake_fd, breaks the loop */
    int wake_fd;                    /* eventfd, -1 when not created */
    struct agg_store *store;        /* read-only, used by this worker only */
    struct agg_api *api;            /* routes and cache of this worker */
    struct conn_guard *guards;      /* every live guard of this worker (list) */
    pthread_t thread;
    bool running;                   /* thread created and not yet joined */
};

struct agg_http {
    const struct agg_config *cfg;   /* borrowed, outlives the server */
    SSL_CTX *ssl_ctx;
    int listen_fd;
    int port;
    struct agg_api_metrics *metrics;
    struct http_worker *workers;
    size_t n_workers;
};

/* ---- connection guard ------------------------------------------------ */

/* One per accepted connection, owned by its worker (list `guards`). The
 * connection's SSL points to it (ex_data); when OpenSSL frees the SSL,
 * i.e. when libevent has closed the connection, the free callback only
 * clears `ssl`, and the guard's own timer frees the guard on its next
 * firing. So the guard never dangles whichever side goes first, and it
 * needs no hook into libevent's private connection object. */
struct conn_guard {
    struct http_worker *worker;
    struct event *timer;
    SSL *ssl;                        /* NULL once the connection is gone */
    bool cut;                        /* deadline passed, socket shut down */
    bool cert_resolved;              /* cert_state/client computed */
    enum agg_auth_state cert_state;  /* NONE, BAD_CERT or OK */
    const struct agg_client *client; /* AGG_AUTH_OK: the [client] entry */
    struct conn_guard *prev;
    struct conn_guard *next;
};

static int guard_ex_index = -1;
static pthread_once_t guard_ex_once = PTHREAD_ONCE_INIT;

static void guard_ssl_freed(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                            void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    struct conn_guard *g = ptr;
    if (g != NULL)
        g->ssl = NULL;
}

static void guard_ex_init(void)
{
    guard_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, guard_ssl_freed);
}

static void guard_unlink_free(struct conn_guard *g)
{
    struct http_worker *w = g->worker;
    if (g->prev != NULL)
        g->prev->next = g->next;
    else
        w->guards = g->next;
    if (g->next != NULL)
        g->next->prev = g->prev;
    if (g->timer != NULL)
        event_free(g->timer);
    free(g);
}

static void guard_arm(struct conn_guard *g, int seconds)
{
    struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
    evtimer_add(g->timer, &tv);
}

static void guard_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn_guard *g = arg;
    if (g->ssl == NULL) {
        guard_unlink_free(g); /* the connection is gone: collect */
        return;
    }
    if (!g->cut) {
        /* Shut the socket down rather than free libevent's objects from
         * here: libevent sees end-of-file, fails the connection through its
         * own path and frees it (and the SSL) itself. */
        int sock = SSL_get_fd(g->ssl);
        RSL_DEBUG(LOG_MODULE, "worker %zu: closing a connection without a complete request "
                  "within %d s", g->worker->index, HTTP_REQUEST_DEADLINE_SECONDS);
        if (sock >= 0)
            shutdown(sock, SHUT_RDWR);
        g->cut = true;
    }
    guard_arm(g, 1); /* look again until the SSL has been freed */
}

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

/* Accept any client certificate during the handshake; the request path
 * reads SSL_get_verify_result and refuses unverified ones with a 401. */
static int verify_accept_cb(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

static int tls_client_ca(const struct agg_config *cfg, SSL_CTX *ctx, struct rsl_error *err)
{
    char text[256];
    if (SSL_CTX_load_verify_locations(ctx, cfg->https_client_ca, NULL) != 1) {
        ssl_error_text(text, sizeof(text));
        return rsl_error_set(err, RSL_ECRYPTO, "https: client_ca %s: cannot load: %s",
                             cfg->https_client_ca, text);
    }
    /* The CA names sent in the CertificateRequest let a browser offer only
     * the certificates this server can accept. */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->https_client_ca);
    if (names == NULL) {
        ssl_error_text(text, sizeof(text));
        return rsl_error_set(err, RSL_ECRYPTO, "https: client_ca %s: no certificates: %s",
                             cfg->https_client_ca, text);
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_accept_cb);
    SSL_CTX_set_verify_depth(ctx, 4);
    return RSL_OK;
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
        SSL_CTX_set_cipher_list(ctx, HTTP_TLS12_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, HTTP_TLS_GROUPS) != 1) {
        ssl_error_text(text, sizeof(text));
        rsl_error_set(err, rc, "https: TLS settings: %s", text);
        goto out;
    }
    /* Mozilla intermediate: let the client pick among our (all strong)
     * suites, since it knows whether it has AES hardware. No renegotiation
     * (a client certificate cannot change mid-connection), no compression. */
    SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Not SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the 16 KiB
     * record buffers around every read and write, which costs more in
     * malloc than the memory it saves on a keep-alive connection. */
    /* No SSL_CTX_set_read_ahead: it would save a read() per record, but
     * bytes OpenSSL reads ahead are invisible to libevent 2.1, which then
     * waits on the socket for a request that is already in memory. */
    /* Session resumption with client certificates needs a context id. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)HTTP_SESSION_ID_CONTEXT,
                                   sizeof(HTTP_SESSION_ID_CONTEXT) - 1);
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
    if (cfg->https_client_ca[0] != '\0' && (rc = tls_client_ca(cfg, ctx, err)) != RSL_OK)
        goto out;
    *out = ctx;
    ctx = NULL; /* transferred */
    rc = RSL_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

/* evhttp asks for a bufferevent per accepted connection: a TLS one with
 * its guard. Returning NULL would make libevent 2.1 fall back to a PLAIN
 * socket bufferevent, so the request handler also refuses any connection
 * that is not TLS (see connection_guard). */
static struct bufferevent *tls_bufferevent_new(struct event_base *base, void *arg)
{
    struct http_worker *w = arg;
    SSL *ssl = NULL;
    struct conn_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->worker = w;
    g->timer = evtimer_new(base, guard_timeout_cb, g);
    ssl = SSL_new(w->server->ssl_ctx);
    if (g->timer == NULL || ssl == NULL)
        goto fail;
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl,
                                                             BUFFEREVENT_SSL_ACCEPTING,
                                                             BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        goto fail; /* the SSL was not taken over */
    /* From here the SSL belongs to the bufferevent. */
    g->ssl = ssl;
    SSL_set_ex_data(ssl, guard_ex_index, g);
    g->next = w->guards;
    if (w->guards != NULL)
        w->guards->prev = g;
    w->guards = g;
    guard_arm(g, HTTP_REQUEST_DEADLINE_SECONDS);
    return bev;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    if (g->timer != NULL)
        event_free(g->timer);
    free(g);
    return NULL;
}

/* The guard of a request's connection, NULL if it is not one of our TLS
 * connections. */
static struct conn_guard *connection_guard(struct evhttp_request *req)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn == NULL)
        return NULL;
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    return ssl != NULL ? SSL_get_ex_data(ssl, guard_ex_index) : NULL;
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

/* ---- credentials ---------------------------------------------------- */

static bool b64token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

static void principal_from_token(struct agg_principal *pr, const struct agg_token *t)
{
    pr->state = AGG_AUTH_OK;
    pr->role = t->role;
    pr->name = t->name;
    pr->nation = t->nation;
    pr->partner = t->partner;
    pr->via_certificate = false;
}

/* RFC 6750 section 2.1: "Bearer" (case-insensitive), spaces, b64token.
 * Returns true if an Authorization header was present (and so decided). */
static bool authenticate_token(const struct agg_config *cfg, struct evhttp_request *req,
                               struct agg_principal *pr)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const char *value = NULL;
    int count = 0;
    for (struct evkeyval *h = headers->tqh_first; h != NULL; h = h->next.tqe_next) {
        if (strcasecmp(h->key, "Authorization") == 0) {
            value = h->value;
            count++;
        }
    }
    if (count == 0)
        return false;
    pr->state = AGG_AUTH_BAD_TOKEN;
    if (count > 1 || strncasecmp(value, "Bearer ", 7) != 0)
        return true;
    const char *t = value + 7;
    while (*t == ' ')
        t++;
    size_t len = strlen(t);
    if (len == 0 || len > HTTP_MAX_TOKEN_BYTES)
        return true;
    for (size_t i = 0; i < len; i++)
        if (!b64token_char(t[i]))
            return true;
    uint8_t digest[32];
    rsl_sha256(t, len, digest);
    const struct agg_token *token = agg_config_token_find(cfg, digest);
    rsl_secure_zero(digest, sizeof(digest));
    if (token != NULL)
        principal_from_token(pr, token);
    return true;
}

/* The RFC 2253 form of a certificate subject, as `openssl x509 -subject
 * -nameopt RFC2253` prints it. Returns 0, or -1 if it does not fit. */
static int subject_rfc2253(X509 *cert, char *out, size_t outlen)
{
    int rc = -1;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return -1;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        if (len >= 0 && (size_t)len < outlen && data != NULL) {
            memcpy(out, data, (size_t)len);
            out[len] = '\0';
            rc = 0;
        }
    }
    BIO_free(bio);
    return rc;
}

/* Work out, once per connection, who its client certificate says it is. */
static void resolve_certificate(const struct agg_config *cfg, struct conn_guard *g)
{
    char subject[AGG_CLIENT_SUBJECT_MAX + 2];
    g->cert_resolved = true;
    g->cert_state = AGG_AUTH_NONE;
    g->client = NULL;
    if (cfg->https_client_ca[0] == '\0' || g->ssl == NULL)
        return;
    X509 *cert = SSL_get0_peer_certificate(g->ssl);
    if (cert == NULL)
        return;
    g->cert_state = AGG_AUTH_BAD_CERT;
    long verify = SSL_get_verify_result(g->ssl);
    if (verify != X509_V_OK) {
        RSL_INFO(LOG_MODULE, "client certificate refused: %s",
                 X509_verify_cert_error_string(verify));
        return;
    }
    if (subject_rfc2253(cert, subject, sizeof(subject)) != 0)
        return;
    g->client = agg_config_client_find(cfg, subject);
    if (g->client == NULL) {
        char shown[160];
        RSL_INFO(LOG_MODULE, "client certificate '%s' is not in any [client] section",
                 rsl_text_show(subject, shown, sizeof(shown)));
        return;
    }
    g->cert_state = AGG_AUTH_OK;
}

static void authenticate(const struct agg_config *cfg, struct evhttp_request *req,
                         struct conn_guard *g, struct agg_principal *pr)
{
    memset(pr, 0, sizeof(*pr));
    pr->state = AGG_AUTH_NONE;
    pr->nation = "";
    pr->partner = "";
    if (authenticate_token(cfg, req, pr))
        return;
    if (!g->cert_resolved)
        resolve_certificate(cfg, g);
    pr->state = g->cert_state;
    if (g->cert_state == AGG_AUTH_OK) {
        pr->role = g->client->role;
        pr->name = g->client->name;
        pr->nation = g->client->nation;
        pr->partner = g->client->partner;
        pr->via_certificate = true;
    }
}

/* ---- requests ------------------------------------------------------- */

static const char *reason_phrase(int code)
{
    switch (code) {
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
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

/* Put an api response on the wire. */
static void send_response(struct evhttp_request *req, const struct agg_api_response *rs)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (rs->content_type != NULL && rs->status != 304)
        evhttp_add_header(h, "Content-Type", rs->content_type);
    for (size_t i = 0; i < rs->n_headers; i++)
        evhttp_add_header(h, rs->headers[i].name, rs->headers[i].value);
    if (rs->status == 304) {
        evhttp_send_reply(req, rs->status, reason_phrase(rs->status), NULL);
        return;
    }
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* libevent 2.1 would send a body queued for HEAD after the headers
         * (a protocol error on keep-alive connections), so HEAD gets only
         * the length the GET body would have. */
        char length[32];
        snprintf(length, sizeof(length), "%zu", rs->len);
        evhttp_add_header(h, "Content-Length", length);
    } else {
        evbuffer_add(evhttp_request_get_output_buffer(req), rs->body, rs->len);
    }
    evhttp_send_reply(req, rs->status, reason_phrase(rs->status), NULL);
}

static void handle_request(struct evhttp_request *req, void *arg)
{
    struct http_worker *w = arg;
    const struct agg_config *cfg = w->server->cfg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct conn_guard *g = connection_guard(req);
    struct agg_api_request rq;
    struct agg_api_response rs;

    if (g == NULL) {
        /* Only reachable if the TLS set-up failed (out of memory): never
         * serve anything in clear text. */
        static const char body[] = "{\"error\":\"internal\",\"detail\":\"TLS unavailable\"}\n";
        RSL_ERR(LOG_MODULE, "refusing a connection without TLS");
        evhttp_connection_free_on_completion(evhttp_request_get_connection(req));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), body, sizeof(body) - 1);
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }
    /* A complete request arrived: the next one has its own deadline. */
    guard_arm(g, HTTP_REQUEST_DEADLINE_SECONDS);
    RSL_DEBUG(LOG_MODULE, "worker %zu: %s %s", w->index, method_name(method),
              evhttp_request_get_uri(req));

    memset(&rq, 0, sizeof(rq));
    rq.method = method_name(method);
    rq.path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    rq.query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    rq.accept = evhttp_find_header(in, "Accept");
    rq.if_none_match = evhttp_find_header(in, "If-None-Match");
    authenticate(cfg, req, g, &rq.principal);
    agg_api_handle(w->api, &rq, &rs);
    send_response(req, &rs);
    agg_api_response_clear(&rs);
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

/* Build one worker's event_base, evhttp, listener, store handle and api (in
 * the calling thread; the worker thread is started separately). */
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
    rc = agg_api_new(server->cfg, w->store, server->metrics, &w->api, err);
    if (rc != RSL_OK)
        return rc;
    /* epoll with a change list: evhttp enables and disables read and write
     * interest several times per request; the change list folds those into
     * at most one epoll_ctl per descriptor and loop turn. Safe here since
     * no descriptor is ever dup'ed. */
    struct event_config *ecfg = event_config_new();
    if (ecfg == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "https: event_config_new failed");
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
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

/* Free one worker; its thread must have been joined. Guards lose their
 * timers while the base still exists; libevent then frees the connections
 * (their SSLs clear guard->ssl, possibly as late as event_base_free, which
 * runs pending finalizers), and only then is guard memory released. */
static void worker_free(struct http_worker *w)
{
    for (struct conn_guard *g = w->guards; g != NULL; g = g->next) {
        if (g->timer != NULL) {
            event_free(g->timer);
            g->timer = NULL;
        }
    }
    if (w->wake_event != NULL)
        event_free(w->wake_event);
    if (w->http != NULL)
        evhttp_free(w->http); /* frees its listener and open connections */
    if (w->base != NULL)
        event_base_free(w->base);
    while (w->guards != NULL) {
        struct conn_guard *g = w->guards;
        w->guards = g->next;
        if (g->ssl != NULL)
            SSL_set_ex_data(g->ssl, guard_ex_index, NULL); /* never reached in practice */
        free(g);
    }
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    agg_api_free(&w->api);
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
    agg_api_metrics_free(&s->metrics);
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
    pthread_once(&guard_ex_once, guard_ex_init);
    if (guard_ex_index < 0) {
        rc = rsl_error_set(err, RSL_ECRYPTO, "https: SSL_get_ex_new_index failed");
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
    if (s->workers == NULL || agg_api_metrics_new(&s->metrics) != RSL_OK) {
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
    RSL_INFO(LOG_MODULE, "listening on %s (port %d, %zu threads%s)", cfg->https_listen, s->port,
             s->n_workers, cfg->https_client_ca[0] != '\0' ? ", client certificates" : "");
    *out = s;
    s = NULL; /* transferred */
    rc = RSL_OK;
out:
    if (mask_changed)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    agg_http_stop(&s);
    return rc;
}
