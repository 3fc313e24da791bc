/*
 * http.h - the aggregator's HTTPS API (ARCHITECTURE section 6).
 *
 * One listening socket (bound here, TCP_NODELAY set on it so accepted
 * sockets inherit it) is shared by `cfg->https threads` worker threads. Each
 * worker owns its own libevent event_base, its own evhttp and its own
 * read-only store handle, so no request path takes a lock; the kernel spreads
 * accepted connections over the workers. TLS (1.2 minimum, modern ciphers)
 * comes from one SSL_CTX shared read-only by all workers.
 *
 * Routes, roles, documents and the response cache live in api.c (api.h);
 * this module is the transport: TLS 1.2/1.3 with the Mozilla intermediate
 * suites, optional client certificates ([https] client_ca, [client NAME]),
 * bearer tokens checked against the SHA-256 digests in the configuration
 * in constant time, and limits on header size, body size and the time a
 * connection may take to deliver each complete request.
 *
 * The daemon owns the configuration; it must outlive the server (the workers
 * read the taxonomy and tokens from it without copying).
 */
#ifndef AGG_HTTP_H
#define AGG_HTTP_H

#include "rsl/error.h"

struct agg_config;
struct agg_http;

/* Bind the listener, load the certificate chain and key (the key file must
 * not be readable by group/others), open one read-only store handle per
 * worker and start the worker threads. On return RSL_OK the server is
 * accepting connections. On failure nothing is left running, *out is NULL
 * and err names the cause ("https: listen 0.0.0.0:8443: Address already in
 * use", "https: tls/server.key: mode 0644 ..."). */
int agg_http_start(const struct agg_config *cfg, struct agg_http **out, struct rsl_error *err);

/* Stop the workers (in-flight requests are dropped), join them, close the
 * listener and free everything. NULL-safe; sets *http to NULL. Must not be
 * called from a worker thread. */
void agg_http_stop(struct agg_http **http);

/* The TCP port actually bound (useful when the configuration asked for port
 * 0, as the tests do); -1 if http is NULL. */
int agg_http_port(const struct agg_http *http);

#endif
