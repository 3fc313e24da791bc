/*
 * store.c - the SQLite backend of store.h.
 *
 * Durability: WAL with synchronous=FULL (NORMAL can lose committed
 * transactions on power loss); the ingest thread groups many reports per
 * transaction so the fsync cost is shared.
 *
 * Schema (version 1, PRAGMA user_version):
 *   reports       one row per accepted report: (agent_id, sequence) unique,
 *                 the original SignedReport bytes and SHA-256 of the Report
 *                 bytes (so a resend is told apart from equivocation without
 *                 reading the blob).
 *   measurements  history: one row per measurement, including excluded ones
 *                 (kept for audit, flagged), rowid in insertion order.
 *                 The partial index measurements_latest on (nation,
 *                 indicator, observed_at_ms, received_at_ms) WHERE excluded=0
 *                 answers "latest at or before T" for one pair with a single
 *                 index seek (its implicit trailing rowid breaks full ties).
 *   current       per (nation, indicator) the winning observation, updated in
 *                 the same transaction as the insert. Order of "winning":
 *                 (observed_at_ms, received_at_ms, measurement rowid), highest
 *                 wins - the same order the historical query uses, so "now"
 *                 and "at a time after everything" always agree.
 *   agents        per agent: nation, highest sequence, last report time,
 *                 report count.
 *
 * agg_store_latest(at >= 0) walks `current` (it lists every pair that ever
 * had a non-excluded observation) and for each pair runs the indexed seek
 * above: cost O(pairs x log history), not a scan of history.
 *
 * Each handle is used by one thread (store.h); SQLite is built threadsafe,
 * and we open with SQLITE_OPEN_NOMUTEX since no handle is shared.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_BUSY_TIMEOUT_MS 5000
/* Room for the comma-joined releasable_to list of one measurement. */
#define RELEASABLE_TEXT_MAX (RSL_MAX_RELEASABLE * (RSL_PARTNER_ID_MAX + 1) + 1)

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_LOOKUP,
    ST_INSERT_REPORT,
    ST_INSERT_MEASUREMENT,
    ST_UPSERT_CURRENT,
    ST_UPSERT_AGENT,
    ST_LATEST_NOW,
    ST_LATEST_AT,
    ST_STATS,
    ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_LOOKUP] = "SELECT digest FROM reports WHERE agent_id = ?1 AND sequence = ?2",
    [ST_INSERT_REPORT] =
        "INSERT INTO reports (agent_id, sequence, nation, key_id, created_at_ms, "
        "received_at_ms, digest, signed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_INSERT_MEASUREMENT] =
        "INSERT INTO measurements (report_id, idx, nation, indicator, value, unit, "
        "observed_at_ms, received_at_ms, agent_id, excluded, releasable_to, source) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    /* The WHERE of DO UPDATE keeps the existing row unless the new one is
     * later by (observed, received, rowid); row values compare in order. */
    [ST_UPSERT_CURRENT] =
        "INSERT INTO current (nation, indicator, measurement_id, value, unit, agent_id, "
        "observed_at_ms, received_at_ms, releasable_to) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
        "ON CONFLICT (nation, indicator) DO UPDATE SET "
        "measurement_id = excluded.measurement_id, value = excluded.value, "
        "unit = excluded.unit, agent_id = excluded.agent_id, "
        "observed_at_ms = excluded.observed_at_ms, received_at_ms = excluded.received_at_ms, "
        "releasable_to = excluded.releasable_to "
        "WHERE (excluded.observed_at_ms, excluded.received_at_ms, excluded.measurement_id) > "
        "(current.observed_at_ms, current.received_at_ms, current.measurement_id)",
    [ST_UPSERT_AGENT] =
        "INSERT INTO agents (agent_id, nation, last_sequence, last_seen_ms, reports) "
        "VALUES (?1, ?2, ?3, ?4, 1) "
        "ON CONFLICT (agent_id) DO UPDATE SET nation = excluded.nation, "
        "last_sequence = max(agents.last_sequence, excluded.last_sequence), "
        "last_seen_ms = max(agents.last_seen_ms, excluded.last_seen_ms), "
        "reports = agents.reports + 1",
    [ST_LATEST_NOW] =
        "SELECT nation, indicator, unit, agent_id, value, observed_at_ms, received_at_ms "
        "FROM current ORDER BY nation, indicator",
    /* Per pair in `current`, one seek in measurements_latest. The literal
     * `excluded = 0` lets SQLite use the partial index. */
    [ST_LATEST_AT] =
        "SELECT m.nation, m.indicator, m.unit, m.agent_id, m.value, m.observed_at_ms, "
        "m.received_at_ms FROM current AS c JOIN measurements AS m ON m.id = ("
        " SELECT m2.id FROM measurements AS m2"
        " WHERE m2.nation = c.nation AND m2.indicator = c.indicator AND m2.excluded = 0"
        " AND m2.observed_at_ms <= ?1"
        " ORDER BY m2.observed_at_ms DESC, m2.received_at_ms DESC, m2.id DESC LIMIT 1) "
        "ORDER BY c.nation, c.indicator",
    /* Rows are never deleted and rowids are assigned max+1, so max(rowid)
     * is the row count, found in O(log n) instead of count(*)'s full scan. */
    [ST_STATS] = "SELECT (SELECT coalesce(max(id), 0) FROM reports), "
                 "(SELECT coalesce(max(id), 0) FROM measurements)",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS reports ("
    " id INTEGER PRIMARY KEY,"
    " agent_id TEXT NOT NULL,"
    " sequence INTEGER NOT NULL,"
    " nation TEXT NOT NULL,"
    " key_id TEXT NOT NULL,"
    " created_at_ms INTEGER NOT NULL,"
    " received_at_ms INTEGER NOT NULL,"
    " digest BLOB NOT NULL,"
    " signed BLOB NOT NULL,"
    " UNIQUE (agent_id, sequence));"
    "CREATE TABLE IF NOT EXISTS measurements ("
    " id INTEGER PRIMARY KEY,"
    " report_id INTEGER NOT NULL REFERENCES reports (id),"
    " idx INTEGER NOT NULL,"
    " nation TEXT NOT NULL,"
    " indicator TEXT NOT NULL,"
    " value REAL NOT NULL,"
    " unit TEXT NOT NULL,"
    " observed_at_ms INTEGER NOT NULL,"
    " received_at_ms INTEGER NOT NULL,"
    " agent_id TEXT NOT NULL,"
    " excluded INTEGER NOT NULL,"
    " releasable_to TEXT NOT NULL,"
    " source TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS measurements_latest ON measurements"
    " (nation, indicator, observed_at_ms, received_at_ms) WHERE excluded = 0;"
    "CREATE INDEX IF NOT EXISTS measurements_report ON measurements (report_id);"
    "CREATE TABLE IF NOT EXISTS current ("
    " nation TEXT NOT NULL,"
    " indicator TEXT NOT NULL,"
    " measurement_id INTEGER NOT NULL,"
    " value REAL NOT NULL,"
    " unit TEXT NOT NULL,"
    " agent_id TEXT NOT NULL,"
    " observed_at_ms INTEGER NOT NULL,"
    " received_at_ms INTEGER NOT NULL,"
    " releasable_to TEXT NOT NULL,"
    " PRIMARY KEY (nation, indicator)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS agents ("
    " agent_id TEXT PRIMARY KEY,"
    " nation TEXT NOT NULL,"
    " last_sequence INTEGER NOT NULL,"
    " last_seen_ms INTEGER NOT NULL,"
    " reports INTEGER NOT NULL) WITHOUT ROWID;";

struct agg_store {
    sqlite3 *db;
    char *path;
    bool read_only;
    bool in_transaction;
    sqlite3_stmt *stmt[ST_COUNT];
};

/* Map an SQLite result to our error space: full disk and corruption get
 * their own codes so callers (ingest: RETRY_LATER; start-up: refuse) and
 * operators can tell them apart. */
static int store_code(int sqlite_rc)
{
    switch (sqlite_rc & 0xff) {
    case SQLITE_FULL: return RSL_ENOSPC;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return RSL_ECORRUPT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return RSL_EAGAIN;
    case SQLITE_NOMEM: return RSL_ENOMEM;
    case SQLITE_CANTOPEN: return RSL_EIO;
    default: return RSL_ESTORE;
    }
}

static int store_fail(const struct agg_store *st, int sqlite_rc, struct rsl_error *err,
                      const char *what)
{
    return rsl_error_set(err, store_code(sqlite_rc), "store %s: %s: %s", st->path, what,
                         st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(sqlite_rc));
}

/* Reset a statement for reuse; reset's own result repeats the step error,
 * which the caller already handled. Clearing the bindings matters: they
 * were bound SQLITE_STATIC, i.e. pointing into the caller's buffers, which
 * must not be referenced after the call returns. */
static void stmt_done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static int exec_simple(struct agg_store *st, enum stmt_id id, struct rsl_error *err)
{
    sqlite3_stmt *s = st->stmt[id];
    int rc = sqlite3_step(s);
    stmt_done(s);
    if (rc != SQLITE_DONE)
        return store_fail(st, rc, err, stmt_sql[id]);
    return RSL_OK;
}

/* PRAGMA quick_check: "ok" or one row per problem. quick_check (not
 * integrity_check) because it is O(N) without index cross-checks: seconds
 * on a large store at start-up, where integrity_check could take minutes.
 * Any failure to even run it counts as corruption: the file is not
 * something we should write into. */
static int store_quick_check(struct agg_store *st, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &s, NULL);
    if (rc != SQLITE_OK) {
        /* A garbage header fails here already, as "file is not a database". */
        int code = store_code(rc);
        rsl_error_set(err, code == RSL_ESTORE ? RSL_ECORRUPT : code,
                      "store %s: integrity check failed: %s", st->path, sqlite3_errmsg(st->db));
        return err != NULL ? err->code : RSL_ECORRUPT;
    }
    int result = RSL_OK;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(s, 0);
        if (text == NULL || strcmp(text, "ok") != 0)
            result = rsl_error_set(err, RSL_ECORRUPT, "store %s: integrity check failed: %s",
                                   st->path, text != NULL ? text : "(no result)");
    } else {
        int code = store_code(rc);
        result = rsl_error_set(err, code == RSL_ESTORE ? RSL_ECORRUPT : code,
                               "store %s: integrity check failed: %s", st->path,
                               sqlite3_errmsg(st->db));
    }
    sqlite3_finalize(s);
    return result;
}

static int pragma_text(struct agg_store *st, const char *sql, char *out, size_t outlen,
                       struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, err, sql);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        int r = store_fail(st, rc, err, sql);
        sqlite3_finalize(s);
        return r;
    }
    out[0] = '\0';
    if (rc == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return RSL_OK;
}

/* Create the schema on first use, check its version otherwise. A store
 * written by a newer version is refused rather than half-understood; a
 * read-only handle never creates anything. */
static int store_setup_schema(struct agg_store *st, struct rsl_error *err)
{
    char text[64];
    int rc = pragma_text(st, "PRAGMA user_version", text, sizeof(text), err);
    if (rc != RSL_OK)
        return rc;
    int64_t version = 0;
    if (rsl_parse_int64(text, 0, INT32_MAX, &version) != RSL_OK)
        version = -1;
    if (version > STORE_SCHEMA_VERSION || version < 0)
        return rsl_error_set(err, RSL_ESTORE,
                             "store %s: schema version %s is not supported by this version "
                             "(expected %d)", st->path, text, STORE_SCHEMA_VERSION);
    if (st->read_only) {
        if (version != STORE_SCHEMA_VERSION)
            return rsl_error_set(err, RSL_ESTORE,
                                 "store %s: not initialised (start the aggregator once)",
                                 st->path);
        return RSL_OK;
    }
    if (version == STORE_SCHEMA_VERSION)
        return RSL_OK;
    /* One transaction: a crash mid-way leaves an empty file, not half a schema. */
    char *msg = NULL;
    char sql[sizeof(schema_sql) + 128];
    snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE;%sPRAGMA user_version = %d;COMMIT;", schema_sql,
             STORE_SCHEMA_VERSION);
    rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int r = rsl_error_set(err, store_code(rc), "store %s: creating the schema: %s", st->path,
                              msg != NULL ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    return RSL_OK;
}

/* Order: open, quick_check (before anything can write), WAL, FULL sync,
 * schema, prepared statements. The statements are prepared once with
 * SQLITE_PREPARE_PERSISTENT because the ingest thread runs them thousands
 * of times a second. */
int agg_store_open(const char *path, bool read_only, struct agg_store **out,
                   struct rsl_error *err)
{
    struct agg_store *st = NULL;
    int rc;

    if (out == NULL || path == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_open: NULL argument");
    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->path = strdup(path)) == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    st->read_only = read_only;

    int flags = SQLITE_OPEN_NOMUTEX |
                (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int src = sqlite3_open_v2(path, &st->db, flags, NULL);
    if (src != SQLITE_OK) {
        rc = rsl_error_set(err, store_code(src), "store %s: cannot open: %s", path,
                           st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
        goto out;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);

    /* Check integrity before anything writes to the file. */
    if ((rc = store_quick_check(st, err)) != RSL_OK)
        goto out;

    if (!read_only) {
        char mode[32];
        if ((rc = pragma_text(st, "PRAGMA journal_mode = WAL", mode, sizeof(mode), err)) !=
            RSL_OK)
            goto out;
        if (strcmp(mode, "wal") != 0) {
            rc = rsl_error_set(err, RSL_ESTORE,
                               "store %s: cannot switch to WAL mode (got '%s'); is the folder "
                               "on a network file system?", path, mode);
            goto out;
        }
    }
    /* FULL on readers too: harmless, and it keeps checkpoints they run safe. */
    char *msg = NULL;
    src = sqlite3_exec(st->db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;", NULL,
                       NULL, &msg);
    if (src != SQLITE_OK) {
        rc = rsl_error_set(err, store_code(src), "store %s: %s", path,
                           msg != NULL ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        goto out;
    }
    if ((rc = store_setup_schema(st, err)) != RSL_OK)
        goto out;
    if (read_only) {
        /* Belt and braces: no statement on this handle can write. */
        sqlite3_exec(st->db, "PRAGMA query_only = ON", NULL, NULL, NULL);
    }

    for (int i = 0; i < ST_COUNT; i++) {
        src = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                                 NULL);
        if (src != SQLITE_OK) {
            rc = store_fail(st, src, err, "preparing statements");
            goto out;
        }
    }

    *out = st;
    st = NULL; /* transferred */
    rc = RSL_OK;
out:
    agg_store_close(&st);
    return rc;
}

void agg_store_close(struct agg_store **store)
{
    if (store == NULL || *store == NULL)
        return;
    struct agg_store *st = *store;
    if (st->in_transaction)
        agg_store_rollback(st);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    /* close_v2 never fails with busy statements: all were finalized above. */
    if (st->db != NULL)
        sqlite3_close_v2(st->db);
    free(st->path);
    free(st);
    *store = NULL;
}

/* BEGIN IMMEDIATE takes the write lock now, so a conflicting writer (a
 * second aggregator on the same file by mistake) fails here after the busy
 * timeout, not halfway through a batch. */
int agg_store_begin(struct agg_store *st, struct rsl_error *err)
{
    if (st == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_begin: NULL store");
    if (st->read_only)
        return rsl_error_set(err, RSL_EINVAL, "store %s: opened read-only", st->path);
    if (st->in_transaction)
        return rsl_error_set(err, RSL_EINVAL, "store %s: transaction already open", st->path);
    /* A transaction SQLite still holds although we closed ours (a ROLLBACK
     * that itself failed after an I/O error) would make every BEGIN from
     * now on fail with "cannot start a transaction within a transaction",
     * i.e. RETRY_LATER for every report forever. Clear it first; what it
     * held was never acknowledged. */
    if (sqlite3_get_autocommit(st->db) == 0) {
        sqlite3_stmt *s = st->stmt[ST_ROLLBACK];
        int rrc = sqlite3_step(s);
        stmt_done(s);
        if (rrc != SQLITE_DONE && sqlite3_get_autocommit(st->db) == 0)
            return store_fail(st, rrc, err, "rolling back an abandoned transaction");
    }
    int rc = exec_simple(st, ST_BEGIN, err);
    if (rc == RSL_OK)
        st->in_transaction = true;
    return rc;
}

int agg_store_commit(struct agg_store *st, struct rsl_error *err)
{
    if (st == NULL || !st->in_transaction)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_commit: no transaction open");
    int rc = exec_simple(st, ST_COMMIT, err);
    if (rc == RSL_OK)
        st->in_transaction = false;
    /* On failure the transaction may still be open (e.g. SQLITE_BUSY): the
     * caller rolls back, as for any other error inside a batch. */
    return rc;
}

void agg_store_rollback(struct agg_store *st)
{
    if (st == NULL || !st->in_transaction)
        return;
    /* After some errors (SQLITE_FULL, IOERR) SQLite has already rolled
     * back; ROLLBACK then fails with "no transaction is active", which is
     * fine. */
    if (sqlite3_get_autocommit(st->db) == 0) {
        sqlite3_stmt *s = st->stmt[ST_ROLLBACK];
        sqlite3_step(s);
        stmt_done(s);
    }
    /* If the ROLLBACK failed too, agg_store_begin finds the transaction
     * still open and retries it before starting the next one. */
    st->in_transaction = false;
}

/* Join releasable_to ids with commas (ids are [A-Za-z0-9_-], so no escaping). */
static void join_releasable(const rsl_measurement *m, char *out, size_t outlen)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < m->n_releasable_to && off < outlen; i++) {
        int n = snprintf(out + off, outlen - off, "%s%s", i > 0 ? "," : "",
                         m->releasable_to[i] != NULL ? m->releasable_to[i] : "");
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

static int lookup_digest(struct agg_store *st, const char *agent_id, uint64_t sequence,
                         bool *found, uint8_t digest[32], struct rsl_error *err)
{
    sqlite3_stmt *s = st->stmt[ST_LOOKUP];
    *found = false;
    sqlite3_bind_text(s, 1, agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)sequence);
    int rc = sqlite3_step(s);
    int result = RSL_OK;
    if (rc == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(s, 0);
        int n = sqlite3_column_bytes(s, 0);
        *found = true;
        if (blob == NULL || n != 32) {
            result = rsl_error_set(err, RSL_ECORRUPT,
                                   "store %s: report %s/%" PRIu64 " has a digest of %d bytes",
                                   st->path, agent_id, sequence, n);
        } else if (digest != NULL) {
            memcpy(digest, blob, 32);
        }
    } else if (rc != SQLITE_DONE) {
        result = store_fail(st, rc, err, "looking up a report");
    }
    stmt_done(s);
    return result;
}

int agg_store_lookup(struct agg_store *st, const char *agent_id, uint64_t sequence, bool *found,
                     uint8_t digest[32], struct rsl_error *err)
{
    if (found != NULL)
        *found = false;
    if (st == NULL || agent_id == NULL || found == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_lookup: NULL argument");
    if (sequence > INT64_MAX)
        return RSL_OK; /* can never have been stored */
    return lookup_digest(st, agent_id, sequence, found, digest, err);
}

/* History rows for every measurement; `current` rows only for those that
 * count (not excluded). The upsert's WHERE makes an out-of-order backfill a
 * no-op for `current` while it still lands in history. */
static int insert_measurements(struct agg_store *st, const struct agg_report_in *in,
                               sqlite3_int64 report_id, struct rsl_error *err)
{
    const rsl_report *r = in->report;
    char releasable[RELEASABLE_TEXT_MAX];
    for (size_t i = 0; i < r->n_measurements; i++) {
        const rsl_measurement *m = r->measurements[i];
        bool excluded = in->excluded != NULL && in->excluded[i];
        const char *unit = m->unit != NULL ? m->unit : "";
        join_releasable(m, releasable, sizeof(releasable));

        sqlite3_stmt *s = st->stmt[ST_INSERT_MEASUREMENT];
        sqlite3_bind_int64(s, 1, report_id);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)i);
        sqlite3_bind_text(s, 3, in->nation, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, m->indicator, -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 5, m->value);
        sqlite3_bind_text(s, 6, unit, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, m->observed_at_ms);
        sqlite3_bind_int64(s, 8, in->received_at_ms);
        sqlite3_bind_text(s, 9, in->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 10, excluded ? 1 : 0);
        sqlite3_bind_text(s, 11, releasable, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 12, m->source != NULL ? m->source : "", -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        stmt_done(s);
        if (rc != SQLITE_DONE)
            return store_fail(st, rc, err, "inserting a measurement");
        if (excluded)
            continue;
        sqlite3_int64 mid = sqlite3_last_insert_rowid(st->db);

        s = st->stmt[ST_UPSERT_CURRENT];
        sqlite3_bind_text(s, 1, in->nation, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, m->indicator, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, mid);
        sqlite3_bind_double(s, 4, m->value);
        sqlite3_bind_text(s, 5, unit, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, in->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, m->observed_at_ms);
        sqlite3_bind_int64(s, 8, in->received_at_ms);
        sqlite3_bind_text(s, 9, releasable, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        stmt_done(s);
        if (rc != SQLITE_DONE)
            return store_fail(st, rc, err, "updating current values");
    }
    return RSL_OK;
}

/* Duplicate detection compares digests of the Report bytes, not of the
 * whole SignedReport: the same report re-signed (e.g. after a key rotation)
 * is the same report, while any change to the signed content is
 * equivocation. */
int agg_store_append(struct agg_store *st, const struct agg_report_in *in,
                     enum agg_append_result *result, struct rsl_error *err)
{
    if (st == NULL || in == NULL || result == NULL || in->report == NULL ||
        in->agent_id == NULL || in->nation == NULL || in->key_id == NULL ||
        in->signed_bytes == NULL || in->report_bytes == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_append: NULL argument");
    if (!st->in_transaction)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_append: no transaction open");
    if (in->sequence == 0 || in->sequence > INT64_MAX)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_append: sequence %" PRIu64
                             " out of range", in->sequence);
    if (in->signed_len > INT32_MAX || in->report_len > INT32_MAX)
        return rsl_error_set(err, RSL_ETOOBIG, "agg_store_append: report too large");

    uint8_t digest[32];
    rsl_sha256(in->report_bytes, in->report_len, digest);

    /* Duplicate or equivocation? Inside the transaction, so a repeat within
     * the same batch is seen too. */
    bool found;
    uint8_t stored[32];
    int rc = lookup_digest(st, in->agent_id, in->sequence, &found, stored, err);
    if (rc != RSL_OK)
        return rc;
    if (found) {
        *result = memcmp(stored, digest, 32) == 0 ? AGG_APPEND_DUPLICATE : AGG_APPEND_CONFLICT;
        return RSL_OK;
    }

    sqlite3_stmt *s = st->stmt[ST_INSERT_REPORT];
    sqlite3_bind_text(s, 1, in->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)in->sequence);
    sqlite3_bind_text(s, 3, in->nation, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, in->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, in->created_at_ms);
    sqlite3_bind_int64(s, 6, in->received_at_ms);
    sqlite3_bind_blob(s, 7, digest, 32, SQLITE_STATIC);
    sqlite3_bind_blob(s, 8, in->signed_bytes, (int)in->signed_len, SQLITE_STATIC);
    int src = sqlite3_step(s);
    stmt_done(s);
    if (src != SQLITE_DONE)
        return store_fail(st, src, err, "inserting a report");
    sqlite3_int64 report_id = sqlite3_last_insert_rowid(st->db);

    if ((rc = insert_measurements(st, in, report_id, err)) != RSL_OK)
        return rc;

    s = st->stmt[ST_UPSERT_AGENT];
    sqlite3_bind_text(s, 1, in->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, in->nation, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)in->sequence);
    sqlite3_bind_int64(s, 4, in->received_at_ms);
    src = sqlite3_step(s);
    stmt_done(s);
    if (src != SQLITE_DONE)
        return store_fail(st, src, err, "updating the agent");

    *result = AGG_APPEND_INSERTED;
    return RSL_OK;
}

static const char *column_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t != NULL ? (const char *)t : "";
}

int agg_store_latest(struct agg_store *st, int64_t at_ms, agg_value_cb cb, void *ctx,
                     struct rsl_error *err)
{
    if (st == NULL || cb == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_latest: NULL argument");
    sqlite3_stmt *s = st->stmt[at_ms < 0 ? ST_LATEST_NOW : ST_LATEST_AT];
    if (at_ms >= 0)
        sqlite3_bind_int64(s, 1, at_ms);
    /* A read outside an explicit transaction is one implicit transaction
     * for the whole walk: a consistent snapshot even while ingest commits. */
    int result = RSL_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct agg_value v = {
            .nation = column_text(s, 0),
            .indicator = column_text(s, 1),
            .unit = column_text(s, 2),
            .agent_id = column_text(s, 3),
            .value = sqlite3_column_double(s, 4),
            .observed_at_ms = sqlite3_column_int64(s, 5),
            .received_at_ms = sqlite3_column_int64(s, 6),
        };
        result = cb(ctx, &v);
        if (result != 0)
            break;
    }
    if (result == 0 && rc != SQLITE_DONE)
        result = store_fail(st, rc, err, "reading latest values");
    stmt_done(s);
    return result;
}

int agg_store_stats(struct agg_store *st, struct agg_store_stats *out, struct rsl_error *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (st == NULL || out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_stats: NULL argument");
    sqlite3_stmt *s = st->stmt[ST_STATS];
    int rc = sqlite3_step(s);
    int result = RSL_OK;
    if (rc == SQLITE_ROW) {
        out->reports = sqlite3_column_int64(s, 0);
        out->measurements = sqlite3_column_int64(s, 1);
    } else {
        result = store_fail(st, rc, err, "reading statistics");
    }
    stmt_done(s);
    return result;
}
