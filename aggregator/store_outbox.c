/*
 * store_outbox.c - SQL of the partner-release outbox (see store_outbox.h).
 *
 * Each handle is its own SQLite connection on the store file, with the
 * report store's settings that matter for safety: WAL, synchronous=FULL,
 * a busy timeout (the ingest thread holds the write lock for a batch at a
 * time; our transactions are a few rows and simply wait their turn).
 * wal_autocheckpoint is off here: the ingest writer checkpoints at its own
 * tuned size, and a checkpoint started from a delivery thread would only
 * steal that work at a worse moment.
 *
 * Statements are prepared per call: releases are made every few seconds at
 * most, so the simplicity is worth more than the microseconds.
 */
#include "store_outbox.h"
#include "store.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

#define OUTBOX_BUSY_TIMEOUT_MS 10000

struct agg_outbox {
    sqlite3 *db;
    char *path;
    bool read_only;
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS releases ("
    " partner TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " release_id TEXT NOT NULL UNIQUE,"
    " generated_at_ms INTEGER NOT NULL,"
    " digest BLOB NOT NULL,"
    " jws TEXT NOT NULL,"
    " delivered_at_ms INTEGER,"
    " PRIMARY KEY (partner, seq)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS releases_undelivered ON releases (partner, seq)"
    " WHERE delivered_at_ms IS NULL;"
    "CREATE TABLE IF NOT EXISTS release_meta ("
    " key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;";

static int outbox_fail(const struct agg_outbox *ob, int src, struct rsl_error *err,
                       const char *what)
{
    int code = (src & 0xff) == SQLITE_FULL                                  ? RSL_ENOSPC
               : (src & 0xff) == SQLITE_BUSY || (src & 0xff) == SQLITE_LOCKED ? RSL_EAGAIN
                                                                            : RSL_ESTORE;
    return rsl_error_set(err, code, "store %s: releases: %s: %s", ob->path, what,
                         ob->db != NULL ? sqlite3_errmsg(ob->db) : sqlite3_errstr(src));
}

int agg_outbox_open(const char *path, bool read_only, struct agg_outbox **out,
                    struct rsl_error *err)
{
    struct agg_outbox *ob = NULL;
    int rc;
    if (path == NULL || out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_outbox_open: NULL argument");
    *out = NULL;
    agg_store_sqlite_setup();
    ob = calloc(1, sizeof(*ob));
    if (ob == NULL || (ob->path = strdup(path)) == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    ob->read_only = read_only;
    int flags = SQLITE_OPEN_NOMUTEX | (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE);
    int src = sqlite3_open_v2(path, &ob->db, flags, NULL);
    if (src != SQLITE_OK) {
        rc = outbox_fail(ob, src, err, "cannot open");
        goto out;
    }
    sqlite3_extended_result_codes(ob->db, 1);
    sqlite3_busy_timeout(ob->db, OUTBOX_BUSY_TIMEOUT_MS);
    src = sqlite3_exec(ob->db,
                       read_only ? "PRAGMA query_only = ON;"
                                 : "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;",
                       NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = outbox_fail(ob, src, err, "settings");
        goto out;
    }
    if (!read_only && (src = sqlite3_exec(ob->db, schema_sql, NULL, NULL, NULL)) != SQLITE_OK) {
        rc = outbox_fail(ob, src, err, "creating tables");
        goto out;
    }
    *out = ob;
    ob = NULL;
    rc = RSL_OK;
out:
    agg_outbox_close(&ob);
    return rc;
}

void agg_outbox_close(struct agg_outbox **ob)
{
    if (ob == NULL || *ob == NULL)
        return;
    if ((*ob)->db != NULL)
        sqlite3_close_v2((*ob)->db);
    free((*ob)->path);
    free(*ob);
    *ob = NULL;
}

void agg_release_row_clear(struct agg_release_row *row)
{
    if (row == NULL)
        return;
    free(row->jws);
    memset(row, 0, sizeof(*row));
}

int agg_outbox_instance(struct agg_outbox *ob, char out[17], struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc = RSL_OK;
    int src = sqlite3_prepare_v2(ob->db, "SELECT value FROM release_meta WHERE key = 'instance'",
                                 -1, &s, NULL);
    if (src != SQLITE_OK)
        return outbox_fail(ob, src, err, "reading the instance id");
    src = sqlite3_step(s);
    if (src == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 16) {
        memcpy(out, sqlite3_column_text(s, 0), 16);
        out[16] = '\0';
        goto out;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = outbox_fail(ob, src, err, "reading the instance id");
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (ob->read_only) {
        rc = rsl_error_set(err, RSL_ENOENT, "store %s: no release instance id yet", ob->path);
        goto out;
    }
    uint8_t raw[8];
    randombytes_buf(raw, sizeof(raw));
    rsl_hex_encode(raw, sizeof(raw), out);
    /* INSERT OR IGNORE then read back: two writers racing agree on one id. */
    src = sqlite3_prepare_v2(ob->db, "INSERT OR IGNORE INTO release_meta (key, value) "
                             "VALUES ('instance', ?1)", -1, &s, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(s, 1, out, 16, SQLITE_STATIC);
        src = sqlite3_step(s);
    }
    if (src != SQLITE_DONE) {
        rc = outbox_fail(ob, src, err, "writing the instance id");
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    return agg_outbox_instance(ob, out, err);
out:
    sqlite3_finalize(s);
    return rc;
}

/* Read a full row from a statement whose columns are partner, seq,
 * release_id, generated_at_ms, digest, jws, delivered_at_ms. */
static int row_read(struct agg_outbox *ob, sqlite3_stmt *s, struct agg_release_row *row,
                    struct rsl_error *err)
{
    agg_release_row_clear(row);
    const char *partner = (const char *)sqlite3_column_text(s, 0);
    const char *release_id = (const char *)sqlite3_column_text(s, 2);
    const void *digest = sqlite3_column_blob(s, 4);
    int digest_len = sqlite3_column_bytes(s, 4);
    const char *jws = (const char *)sqlite3_column_text(s, 5);
    int jws_len = sqlite3_column_bytes(s, 5);
    if (partner == NULL || release_id == NULL || jws == NULL || digest_len != 32 ||
        rsl_strlcpy(row->partner, partner, sizeof(row->partner)) != RSL_OK ||
        rsl_strlcpy(row->release_id, release_id, sizeof(row->release_id)) != RSL_OK)
        return rsl_error_set(err, RSL_ECORRUPT, "store %s: releases: malformed row", ob->path);
    row->seq = sqlite3_column_int64(s, 1);
    row->generated_at_ms = sqlite3_column_int64(s, 3);
    memcpy(row->digest, digest, 32);
    row->delivered_at_ms = sqlite3_column_type(s, 6) == SQLITE_NULL ? 0 : sqlite3_column_int64(s, 6);
    row->jws = malloc((size_t)jws_len + 1);
    if (row->jws == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    memcpy(row->jws, jws, (size_t)jws_len);
    row->jws[jws_len] = '\0';
    row->jws_len = (size_t)jws_len;
    return RSL_OK;
}

#define ROW_COLUMNS "partner, seq, release_id, generated_at_ms, digest, jws, delivered_at_ms"

/* Run a one-row query bound to (partner, int64) and read the row if any. */
static int query_row(struct agg_outbox *ob, const char *sql, const char *partner, int64_t arg,
                     struct agg_release_row *row, bool *found, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc = RSL_OK;
    *found = false;
    int src = sqlite3_prepare_v2(ob->db, sql, -1, &s, NULL);
    if (src != SQLITE_OK) {
        /* A read-only handle on a store whose releases table the generator
         * has not created yet simply has no releases. */
        if (ob->read_only && strstr(sqlite3_errmsg(ob->db), "no such table") != NULL)
            return RSL_OK;
        return outbox_fail(ob, src, err, "query");
    }
    sqlite3_bind_text(s, 1, partner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, arg);
    src = sqlite3_step(s);
    if (src == SQLITE_ROW) {
        rc = row_read(ob, s, row, err);
        *found = rc == RSL_OK;
    } else if (src != SQLITE_DONE) {
        rc = outbox_fail(ob, src, err, "query");
    }
    sqlite3_finalize(s);
    return rc;
}

int agg_outbox_last(struct agg_outbox *ob, const char *partner, struct agg_release_row *row,
                    bool *found, struct rsl_error *err)
{
    return query_row(ob, "SELECT " ROW_COLUMNS " FROM releases WHERE partner = ?1 AND seq > ?2 "
                     "ORDER BY seq DESC LIMIT 1", partner, 0, row, found, err);
}

int agg_outbox_next(struct agg_outbox *ob, const char *partner, int64_t after_seq,
                    struct agg_release_row *row, bool *found, struct rsl_error *err)
{
    return query_row(ob, "SELECT " ROW_COLUMNS " FROM releases WHERE partner = ?1 AND seq > ?2 "
                     "AND delivered_at_ms IS NULL ORDER BY seq LIMIT 1", partner, after_seq, row,
                     found, err);
}

/* Run `sql` with ?1 = partner and ?2 = n (no result rows). */
static int exec_partner(struct agg_outbox *ob, const char *sql, const char *partner, int64_t n,
                        struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int src = sqlite3_prepare_v2(ob->db, sql, -1, &s, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(s, 1, partner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, n);
        src = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    if (src != SQLITE_DONE)
        return outbox_fail(ob, src, err, "update");
    return RSL_OK;
}

int agg_outbox_append(struct agg_outbox *ob, const struct agg_release_row *row, bool pushed,
                      int64_t outbox_max, int64_t *dropped, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc;
    *dropped = 0;
    /* IMMEDIATE: take the write lock now (waiting for the ingest batch),
     * not halfway through, where a busy upgrade could not be retried. */
    int src = sqlite3_exec(ob->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (src != SQLITE_OK)
        return outbox_fail(ob, src, err, "begin");
    src = sqlite3_prepare_v2(ob->db, "INSERT INTO releases (" ROW_COLUMNS ") "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", -1, &s, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(s, 1, row->partner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, row->seq);
        sqlite3_bind_text(s, 3, row->release_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, row->generated_at_ms);
        sqlite3_bind_blob(s, 5, row->digest, 32, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, row->jws, (int)row->jws_len, SQLITE_STATIC);
        if (pushed)
            sqlite3_bind_null(s, 7);
        else
            sqlite3_bind_int64(s, 7, row->generated_at_ms);
        src = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (src != SQLITE_DONE) {
        rc = outbox_fail(ob, src, err, "insert");
        goto fail;
    }
    rc = exec_partner(ob, "DELETE FROM releases WHERE partner = ?1 AND delivered_at_ms IS NOT "
                      "NULL AND seq NOT IN (SELECT seq FROM releases WHERE partner = ?1 AND "
                      "delivered_at_ms IS NOT NULL ORDER BY seq DESC LIMIT ?2)",
                      row->partner, AGG_OUTBOX_KEEP_DELIVERED, err);
    if (rc != RSL_OK)
        goto fail;
    int64_t pending = 0, oldest = 0;
    if ((rc = agg_outbox_pending(ob, row->partner, &pending, &oldest, err)) != RSL_OK)
        goto fail;
    if (pending > outbox_max) {
        rc = exec_partner(ob, "DELETE FROM releases WHERE partner = ?1 AND seq IN (SELECT seq "
                          "FROM releases WHERE partner = ?1 AND delivered_at_ms IS NULL ORDER BY "
                          "seq LIMIT ?2)", row->partner, pending - outbox_max, err);
        if (rc != RSL_OK)
            goto fail;
        *dropped = pending - outbox_max;
    }
    src = sqlite3_exec(ob->db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = outbox_fail(ob, src, err, "commit");
        goto fail;
    }
    return RSL_OK;
fail:
    sqlite3_exec(ob->db, "ROLLBACK", NULL, NULL, NULL);
    *dropped = 0;
    return rc;
}

int agg_outbox_mark_delivered(struct agg_outbox *ob, const char *partner, int64_t seq,
                              int64_t now_ms, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int src = sqlite3_prepare_v2(ob->db, "UPDATE releases SET delivered_at_ms = ?3 "
                                 "WHERE partner = ?1 AND seq = ?2", -1, &s, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(s, 1, partner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, seq);
        sqlite3_bind_int64(s, 3, now_ms);
        src = sqlite3_step(s);
    }
    sqlite3_finalize(s);
    if (src != SQLITE_DONE)
        return outbox_fail(ob, src, err, "marking delivered");
    return RSL_OK;
}

int agg_outbox_pending(struct agg_outbox *ob, const char *partner, int64_t *count,
                       int64_t *oldest_ms, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    *count = 0;
    *oldest_ms = 0;
    int src = sqlite3_prepare_v2(ob->db, "SELECT count(*), min(generated_at_ms) FROM releases "
                                 "WHERE partner = ?1 AND delivered_at_ms IS NULL", -1, &s, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(s, 1, partner, -1, SQLITE_STATIC);
        src = sqlite3_step(s);
        if (src == SQLITE_ROW) {
            *count = sqlite3_column_int64(s, 0);
            *oldest_ms = sqlite3_column_type(s, 1) == SQLITE_NULL ? 0 : sqlite3_column_int64(s, 1);
            src = SQLITE_DONE;
        }
    }
    sqlite3_finalize(s);
    if (src != SQLITE_DONE)
        return outbox_fail(ob, src, err, "counting pending");
    return RSL_OK;
}
