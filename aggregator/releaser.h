/*
 * releaser.h - partner releases made, signed, stored and pushed (issue 6,
 * ARCHITECTURE section 7).
 *
 * One generator thread makes each partner's release on a schedule
 * ([partner] interval) and when the picture changes (the store's data
 * version moved and the partner's figures differ from its last release;
 * at most every min_interval), signs it as a JWS with the aggregator's
 * sign.key, and appends it to the partner's durable outbox (store_outbox.h)
 * before anyone can see it.
 *
 * One delivery thread per partner with a url POSTs the outbox oldest first
 * (HTTPS by libcurl: the server certificate verified, optional client
 * certificate and bearer token, timeouts; header Idempotency-Key: the
 * release_id), marks each release delivered only after a 2xx answer, and
 * retries failures with exponential backoff and jitter, capped at
 * backoff_max. Each partner has its own thread, connection and backoff,
 * so a partner that is down or slow never delays another. Delivery is at
 * least once, in order: a receiver must treat a release_id it already has
 * as success.
 *
 * Pulls (GET /v1/partners/{ID}/summary) read the newest stored release
 * through the HTTPS worker's own outbox handle, not through this module.
 */
#ifndef AGG_RELEASER_H
#define AGG_RELEASER_H

#include <stddef.h>

#include "config.h"
#include "rsl/error.h"

struct agg_releaser;

/* Load the signing key, make every partner's first release of this run if
 * its figures differ from the last stored one (synchronously: a pull right
 * after start-up finds a release), then start the threads. With no
 * [partner] sections it starts nothing and *out stays NULL (RSL_OK). */
int agg_releaser_start(const struct agg_config *cfg, struct agg_releaser **out,
                       struct rsl_error *err);

/* Stop the threads (a POST in flight is aborted; its release stays in the
 * outbox) and free. NULL-safe. */
void agg_releaser_stop(struct agg_releaser **releaser);

/* Prometheus text of the per-partner release and delivery metrics of the
 * running releaser (empty when none runs). *out is malloc'd. */
int agg_release_metrics_text(char **out, size_t *len);

#endif
