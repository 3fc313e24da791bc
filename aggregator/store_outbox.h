/*
 * store_outbox.h - the partner-release part of the store module (issue 6):
 * the durable per-partner outbox of signed releases (ARCHITECTURE section
 * 7), in the same SQLite file as the reports.
 *
 * Part of the one storage module: all of its SQL is in store_outbox.c, as
 * all report SQL is in store.c; a PostgreSQL backend would implement both
 * headers. It has handles of its own (not struct agg_store) because its
 * users are threads of their own: the release generator, one delivery
 * thread per pushed partner, and the HTTPS workers answering pulls. A
 * handle is used by one thread only.
 *
 * Tables (private): releases (partner, seq) -> release_id, generated_at_ms,
 * digest of the released figures, the compact JWS, delivered_at_ms (NULL
 * while waiting in the outbox); release_meta: the store's instance id,
 * made once per store file, so release ids stay unique even when a store
 * is started afresh for the same partner.
 *
 * Durability: WAL and synchronous=FULL as for reports, so a release that
 * agg_outbox_append returned is on disk before anything announces it, and
 * a delivery marked done stays done across kill -9.
 */
#ifndef AGG_STORE_OUTBOX_H
#define AGG_STORE_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"

struct agg_outbox;

/* Releases of one partner kept after delivery (for pulls, and for an
 * operator to look at): the newest this many. */
#define AGG_OUTBOX_KEEP_DELIVERED 100
#define AGG_RELEASE_ID_MAX 80

/* Open a handle on the store file at `path` (which the report store has
 * already created and checked). read_only: for HTTPS workers. A writable
 * handle creates the tables if needed. */
int agg_outbox_open(const char *path, bool read_only, struct agg_outbox **out,
                    struct rsl_error *err);
void agg_outbox_close(struct agg_outbox **ob);

/* The store's instance id (16 lowercase hex characters), created on first
 * use by a writable handle. */
int agg_outbox_instance(struct agg_outbox *ob, char out[17], struct rsl_error *err);

/* One release as stored. `jws` is owned by the row (agg_release_row_clear). */
struct agg_release_row {
    char partner[RSL_PARTNER_ID_MAX + 1];
    int64_t seq;                     /* 1, 2, ... per partner */
    char release_id[AGG_RELEASE_ID_MAX + 1];
    int64_t generated_at_ms;
    uint8_t digest[32];              /* SHA-256 of the released figures */
    char *jws;
    size_t jws_len;
    int64_t delivered_at_ms;         /* 0 while undelivered */
};
void agg_release_row_clear(struct agg_release_row *row);

/* The partner's newest release (any delivery state). *found false if none. */
int agg_outbox_last(struct agg_outbox *ob, const char *partner, struct agg_release_row *row,
                    bool *found, struct rsl_error *err);

/* Store a new release in one transaction. `pushed`: the partner has a push
 * url, so the release waits in the outbox (delivered_at NULL); otherwise it
 * is published for pulls only and counts as delivered at once. Then, in
 * the same transaction: delivered releases beyond the newest
 * AGG_OUTBOX_KEEP_DELIVERED are deleted, and undelivered ones beyond
 * `outbox_max` are dropped oldest first (*dropped says how many; the
 * caller logs and counts them: never silent). */
int agg_outbox_append(struct agg_outbox *ob, const struct agg_release_row *row, bool pushed,
                      int64_t outbox_max, int64_t *dropped, struct rsl_error *err);

/* The oldest undelivered release of the partner with seq > after_seq. */
int agg_outbox_next(struct agg_outbox *ob, const char *partner, int64_t after_seq,
                    struct agg_release_row *row, bool *found, struct rsl_error *err);

/* Mark (partner, seq) delivered at `now_ms` (durable on return). A row
 * dropped meanwhile is not an error. */
int agg_outbox_mark_delivered(struct agg_outbox *ob, const char *partner, int64_t seq,
                              int64_t now_ms, struct rsl_error *err);

/* Undelivered releases of the partner and the generated_at_ms of the
 * oldest (0 when none). */
int agg_outbox_pending(struct agg_outbox *ob, const char *partner, int64_t *count,
                       int64_t *oldest_ms, struct rsl_error *err);

#endif
