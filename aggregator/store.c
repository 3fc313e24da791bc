/*
 * store.c - the SQLite backend of store.h.
 *
 * Durability: WAL with synchronous=FULL (NORMAL can lose committed
 * transactions on power loss); the ingest thread groups many reports per
 * transaction so the fsync cost is shared. The writer opens the store
 * through store_vfs.c, which hands a commit's WAL frames to the kernel in
 * writes of up to 128 KiB instead of two per frame, before the same sync.
 *
 * Schema (version 4, PRAGMA user_version; older versions are upgraded by
 * the writer when it opens them):
 *   reports       one row per accepted report: (agent_id, sequence) unique,
 *                 the original SignedReport bytes and SHA-256 of the Report
 *                 bytes (so a resend is told apart from equivocation without
 *                 reading the blob).
 *   measurements  history: one row per measurement, including excluded ones
 *                 (kept for audit, flagged), rowid in insertion order:
 *                 the rows of one report are consecutive, and reports'
 *                 rows follow each other in report id order (the audit
 *                 walks both tables side by side, without an index).
 *                 Column `pair` is store_pair(nation, indicator), an integer;
 *                 the partial index measurements_pair_latest on (pair,
 *                 observed_at_ms, received_at_ms) WHERE excluded=0 answers
 *                 "latest at or before T" for one pair with a single index
 *                 seek (its implicit trailing rowid breaks full ties; the
 *                 queries also compare nation and indicator, since pair ids
 *                 may collide).
 *   current       per (nation, indicator) the winning observation, updated in
 *                 the same transaction as the insert. Order of "winning":
 *                 (observed_at_ms, received_at_ms, measurement rowid), highest
 *                 wins - the same order the historical query uses, so "now"
 *                 and "at a time after everything" always agree.
 *   agents        per agent: nation, highest sequence, last report time,
 *                 report count, clock offset (created_at_ms - received_at_ms
 *                 of its latest received report), written in the same
 *                 transaction as the report.
 *
 * The write path (perf of issue 4), per report: one INSERT of the report
 * row whose ON CONFLICT DO NOTHING doubles as the duplicate check (the
 * stored digest is read only when the insert did nothing), one multi-row
 * INSERT for all its measurements, and nothing else until the commit:
 * `current` and `agents` are staged in memory and written once per pair
 * and per agent just before COMMIT, in the same transaction. Indexes
 * written per measurement: only measurements_pair_latest (the audit walk
 * needs none). About half the CPU of one INSERT per row with a second
 * index; the integer key took another sixth off the store thread (text
 * keys: ~30 bytes per entry compared with memcmp).
 *
 * agg_store_latest(at >= 0) walks `current` (it lists every pair that ever
 * had a non-excluded observation) and for each pair runs the indexed seek
 * above: cost O(pairs x log history), not a scan of history.
 *
 * Each handle is used by one thread (store.h); SQLite is built threadsafe,
 * and we open with SQLITE_OPEN_NOMUTEX since no handle is shared. SQLite's
 * memory statistics are switched off before its first use
 * (agg_store_sqlite_setup): they take a process-wide mutex on every one of
 * its allocations, and nothing here reads them.
 */
#include "store.h"
#include "store_vfs.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/log.h"
#include "rsl/util.h"

/* Version 2 (issue 4) added agents.clock_offset_ms; a version 1 store is
 * upgraded in place when the writer opens it. */
#define STORE_SCHEMA_VERSION 4
/* Version 3 (perf of issue 4) only dropped the index measurements_report,
 * which nothing but the audit walk used. Version 4 keys the history index
 * by an integer pair id (store_pair) instead of (nation, indicator) text;
 * its queries need the new column, so read-only handles want version 4
 * and say to start the aggregator once on an older store. */
#define STORE_SCHEMA_READABLE_MIN 4
#define STORE_BUSY_TIMEOUT_MS 5000
/* Page cache per handle, as PRAGMA cache_size takes it (negative: KiB). */
#define STORE_WRITER_CACHE_KIB "-65536"
#define STORE_READER_CACHE_KIB "-16384"
#define STORE_WAL_CHECKPOINT_PAGES "4096"
/* Room for the comma-joined releasable_to list of one measurement. */
#define RELEASABLE_TEXT_MAX (RSL_MAX_RELEASABLE * (RSL_PARTNER_ID_MAX + 1) + 1)

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_LOOKUP,
    ST_INSERT_REPORT,
    ST_NEXT_MEASUREMENT_ID,
    ST_UPSERT_CURRENT,
    ST_UPSERT_AGENT,
    ST_LATEST_NOW,
    ST_LATEST_AT,
    ST_LATEST_AT_ONE,
    ST_STATS,
    ST_REPORTS_ALL,
    ST_MEASUREMENTS_ALL,
    ST_CURRENT_CHECK,
    ST_CURRENT_MISSING,
    ST_PAIR_CHECK,
    ST_COUNT,
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_LOOKUP] = "SELECT digest FROM reports WHERE agent_id = ?1 AND sequence = ?2",
    /* DO NOTHING on (agent_id, sequence): the unique index is searched
     * once, by the insert itself; only when nothing was inserted does
     * agg_store_append look the stored digest up (duplicate or
     * equivocation). */
    [ST_INSERT_REPORT] =
        "INSERT INTO reports (agent_id, sequence, nation, key_id, created_at_ms, "
        "received_at_ms, digest, signed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (agent_id, sequence) DO NOTHING",
    /* Measurement ids are counted from here in each transaction (the one
     * writer holds the write lock): SQLite gives each new row max(id) + 1,
     * so the id of every row of a multi-row insert is known without asking
     * (insert_measurements checks the last one). */
    [ST_NEXT_MEASUREMENT_ID] = "SELECT coalesce(max(id), 0) + 1 FROM measurements",
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
    /* Once per agent and transaction, with what its reports in the batch
     * add up to (staged_agent_offer): the same result as one upsert per
     * report in append order. */
    [ST_UPSERT_AGENT] =
        "INSERT INTO agents (agent_id, nation, last_sequence, last_seen_ms, reports, "
        "clock_offset_ms) VALUES (?1, ?2, ?3, ?4, ?6, ?5) "
        "ON CONFLICT (agent_id) DO UPDATE SET nation = excluded.nation, "
        "last_sequence = max(agents.last_sequence, excluded.last_sequence), "
        "clock_offset_ms = CASE WHEN excluded.last_seen_ms >= agents.last_seen_ms "
        "THEN excluded.clock_offset_ms ELSE agents.clock_offset_ms END, "
        "last_seen_ms = max(agents.last_seen_ms, excluded.last_seen_ms), "
        "reports = agents.reports + excluded.reports",
    [ST_LATEST_NOW] =
        "SELECT nation, indicator, unit, agent_id, value, observed_at_ms, received_at_ms, "
        "releasable_to FROM current ORDER BY nation, indicator",
    /* Per pair in `current`, one seek in measurements_pair_latest, answered
     * from the index alone (the literal `excluded = 0` lets SQLite use the
     * partial index). Two pairs could share a pair id: the row found is then
     * another pair's, which agg_store_latest sees (the first two columns
     * are the pair asked for) and asks ST_LATEST_AT_ONE instead. */
    [ST_LATEST_AT] =
        "SELECT c.nation, c.indicator, m.nation, m.indicator, m.unit, m.agent_id, m.value, "
        "m.observed_at_ms, m.received_at_ms, m.releasable_to "
        "FROM current AS c JOIN measurements AS m ON m.id = ("
        " SELECT m2.id FROM measurements AS m2"
        " WHERE m2.pair = rsl_pair(c.nation, c.indicator) AND m2.excluded = 0"
        " AND m2.observed_at_ms <= ?1"
        " ORDER BY m2.observed_at_ms DESC, m2.received_at_ms DESC, m2.id DESC LIMIT 1) "
        "ORDER BY c.nation, c.indicator",
    /* The same for one pair, comparing nation and indicator row by row. */
    [ST_LATEST_AT_ONE] =
        "SELECT unit, agent_id, value, observed_at_ms, received_at_ms, releasable_to "
        "FROM measurements WHERE pair = rsl_pair(?1, ?2) AND nation = ?1 AND indicator = ?2 "
        "AND excluded = 0 AND observed_at_ms <= ?3 "
        "ORDER BY observed_at_ms DESC, received_at_ms DESC, id DESC LIMIT 1",
    /* Rows are never deleted and rowids are assigned max+1, so max(rowid)
     * is the row count, found in O(log n) instead of count(*)'s full scan. */
    [ST_STATS] = "SELECT (SELECT coalesce(max(id), 0) FROM reports), "
                 "(SELECT coalesce(max(id), 0) FROM measurements)",
    /* The audit walk (agg_store_reports): every report in storage order,
     * beside every measurement row in storage order (a merge of two rowid
     * scans: no index, one pass over each table). */
    [ST_REPORTS_ALL] =
        "SELECT id, agent_id, sequence, nation, key_id, created_at_ms, received_at_ms, digest, "
        "signed FROM reports ORDER BY id",
    [ST_MEASUREMENTS_ALL] =
        "SELECT report_id, idx, nation, indicator, value, unit, observed_at_ms, received_at_ms, "
        "agent_id, excluded, releasable_to, source, id FROM measurements ORDER BY id",
    /* History rows whose pair id is not their (nation, indicator)'s: the
     * index would hide them from every query by time. A full scan, for the
     * audit only. */
    [ST_PAIR_CHECK] =
        "SELECT nation, indicator, count(*) FROM measurements "
        "WHERE pair <> rsl_pair(nation, indicator) GROUP BY nation, indicator "
        "ORDER BY nation, indicator",
    /* agg_store_check_current: a `current` row whose measurement is gone,
     * differs from it, is excluded, or is not the winner any more (a later
     * aggregated observation of the pair exists: one seek in
     * measurements_pair_latest). `IS NOT` compares NULLs too. */
    [ST_CURRENT_CHECK] =
        "SELECT c.nation, c.indicator, CASE "
        " WHEN m.id IS NULL THEN 'its measurement row is missing'"
        " WHEN m.excluded <> 0 THEN 'its measurement is excluded from aggregation'"
        " WHEN m.nation IS NOT c.nation OR m.indicator IS NOT c.indicator"
        "  OR m.value IS NOT c.value OR m.unit IS NOT c.unit OR m.agent_id IS NOT c.agent_id"
        "  OR m.observed_at_ms IS NOT c.observed_at_ms OR m.received_at_ms IS NOT c.received_at_ms"
        "  OR m.releasable_to IS NOT c.releasable_to THEN 'differs from its measurement row'"
        " ELSE 'a later observation exists' END "
        "FROM current AS c LEFT JOIN measurements AS m ON m.id = c.measurement_id "
        "WHERE m.id IS NULL OR m.excluded <> 0 OR m.nation IS NOT c.nation"
        " OR m.indicator IS NOT c.indicator OR m.value IS NOT c.value OR m.unit IS NOT c.unit"
        " OR m.agent_id IS NOT c.agent_id OR m.observed_at_ms IS NOT c.observed_at_ms"
        " OR m.received_at_ms IS NOT c.received_at_ms OR m.releasable_to IS NOT c.releasable_to"
        " OR EXISTS (SELECT 1 FROM measurements AS m2"
        "  WHERE m2.pair = rsl_pair(c.nation, c.indicator) AND m2.nation = c.nation"
        "  AND m2.indicator = c.indicator AND m2.excluded = 0"
        "  AND (m2.observed_at_ms, m2.received_at_ms, m2.id) >"
        "      (c.observed_at_ms, c.received_at_ms, c.measurement_id)) "
        "ORDER BY c.nation, c.indicator",
    /* Pairs with an aggregated observation but no `current` row. A scan of
     * the whole history (audit only). */
    [ST_CURRENT_MISSING] =
        "SELECT DISTINCT nation, indicator FROM measurements AS m WHERE excluded = 0 AND NOT "
        "EXISTS (SELECT 1 FROM current AS c WHERE c.nation = m.nation AND "
        "c.indicator = m.indicator) ORDER BY nation, indicator",
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
    " source TEXT NOT NULL,"
    " pair INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS measurements_pair_latest ON measurements"
    " (pair, observed_at_ms, received_at_ms) WHERE excluded = 0;"
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
    " reports INTEGER NOT NULL,"
    " clock_offset_ms INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;";

/* Upgrades, indexed by the version they start from; each runs inside the
 * same transaction as the user_version bump. */
static const char *const upgrade_sql[STORE_SCHEMA_VERSION] = {
    [1] = "ALTER TABLE agents ADD COLUMN clock_offset_ms INTEGER NOT NULL DEFAULT 0;",
    /* Ten index entries per report that only the audit read. */
    [2] = "DROP INDEX IF EXISTS measurements_report;",
    /* The history index on an integer key: rows and index entries less
     * than half the size, integer comparisons (store thread: about 5 us
     * less per report). Rewrites every history row once. */
    [3] = "ALTER TABLE measurements ADD COLUMN pair INTEGER NOT NULL DEFAULT 0;"
          "UPDATE measurements SET pair = rsl_pair(nation, indicator);"
          "DROP INDEX IF EXISTS measurements_latest;"
          "CREATE INDEX measurements_pair_latest ON measurements"
          " (pair, observed_at_ms, received_at_ms) WHERE excluded = 0;",
};

/* A `current` candidate staged during a write transaction: the winner so
 * far, in this transaction, for its (nation, indicator). */
struct staged_current {
    char nation[4]; /* the key: nation and indicator (stage_table) */
    char indicator[RSL_INDICATOR_ID_MAX + 1];
    char unit[RSL_UNIT_MAX + 1];
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char releasable[RELEASABLE_TEXT_MAX];
    sqlite3_int64 measurement_id;
    double value;
    int64_t observed_at_ms;
    int64_t received_at_ms;
};

/* An agent's row in `agents` as its reports in this transaction leave it:
 * written once per agent just before COMMIT (ST_UPSERT_AGENT). */
struct staged_agent {
    char agent_id[RSL_AGENT_ID_MAX + 1]; /* the key (stage_table) */
    char nation[4];                      /* of the last report appended */
    int64_t last_sequence;               /* highest */
    int64_t last_seen_ms;                /* highest received_at_ms */
    int64_t clock_offset_ms;             /* of the last report appended with it */
    int64_t reports;                     /* appended */
};

/* Entries staged during one write transaction, found by a key of one or
 * two strings that lie at fixed offsets in each entry: an array of
 * entries plus an open-addressing hash table of entry numbers + 1 (0:
 * empty), at most half full. Used for `current` candidates (key: nation,
 * indicator) and `agents` rows (key: agent id). */
struct stage_table {
    char *entries;
    size_t entry_size;
    size_t n;
    size_t cap;
    uint32_t *index;
    size_t index_size;                   /* a power of two, > 2 * n */
    size_t key_off[2];                   /* key strings in an entry */
    size_t key_size[2];                  /* their buffers; 0: no second key */
};

/* Rows per multi-row measurement insert: one statement (cursors opened
 * once, one VDBE run) for a whole report of up to this many measurements;
 * larger reports take several. */
#define INSERT_ROWS_MAX 16
/* Parameters per row of that insert (four more are shared by the rows). */
#define ROW_PARAMS 10

struct agg_store {
    sqlite3 *db;
    char *path;
    bool read_only;
    bool in_transaction;
    sqlite3_stmt *stmt[ST_COUNT];
    /* Group commit of `current` (issue 4): within one transaction the
     * candidates are staged here (struct staged_current), one per (nation,
     * indicator), and written just before COMMIT - one upsert per pair and
     * batch instead of one per measurement, in the same transaction all
     * the same. */
    struct stage_table staged;
    /* The agents table, staged the same way (struct staged_agent; one
     * upsert per agent and batch instead of one per report). */
    struct stage_table agents;
    /* insert_rows[k]: INSERT of k measurement rows, prepared on first use. */
    sqlite3_stmt *insert_rows[INSERT_ROWS_MAX + 1];
    sqlite3_int64 next_measurement_id;   /* in the open transaction */
    /* Read-only queries of the HTTPS API, prepared on first use (see the
     * section at the end of this file). */
    sqlite3_stmt *read_stmt[4];
};

/* ---- stage_table ---------------------------------------------------------- */

static void stage_init(struct stage_table *t, size_t entry_size, size_t off0, size_t size0,
                       size_t off1, size_t size1)
{
    memset(t, 0, sizeof(*t));
    t->entry_size = entry_size;
    t->key_off[0] = off0;
    t->key_size[0] = size0;
    t->key_off[1] = off1;
    t->key_size[1] = size1;
}

static void stage_free(struct stage_table *t)
{
    free(t->entries);
    free(t->index);
    t->entries = NULL;
    t->index = NULL;
    t->n = t->cap = t->index_size = 0;
}

static void stage_clear(struct stage_table *t)
{
    t->n = 0;
    if (t->index != NULL)
        memset(t->index, 0, t->index_size * sizeof(*t->index));
}

static void *stage_entry(const struct stage_table *t, size_t e)
{
    return t->entries + e * t->entry_size;
}

static const char *stage_key(const struct stage_table *t, size_t e, int k)
{
    return t->key_size[k] != 0 ? (const char *)stage_entry(t, e) + t->key_off[k] : "";
}

static uint32_t stage_hash(const char *k0, const char *k1)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = k0; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* separator */
    for (const char *p = k1; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

/* The index slot of a key: its entry's, or the empty slot where it
 * belongs. */
static size_t stage_slot(const struct stage_table *t, const char *k0, const char *k1)
{
    size_t mask = t->index_size - 1;
    size_t i = stage_hash(k0, k1) & mask;
    while (t->index[i] != 0) {
        size_t e = t->index[i] - 1;
        if (strcmp(stage_key(t, e, 0), k0) == 0 && strcmp(stage_key(t, e, 1), k1) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

/* Room for one more entry, the index at most half full. */
static int stage_reserve(struct stage_table *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char *entries = realloc(t->entries, cap * t->entry_size);
        if (entries == NULL)
            return RSL_ENOMEM;
        t->entries = entries;
        t->cap = cap;
    }
    if (2 * (t->n + 1) > t->index_size) {
        size_t size = t->index_size ? t->index_size * 2 : 256;
        uint32_t *index = calloc(size, sizeof(*index));
        if (index == NULL)
            return RSL_ENOMEM;
        free(t->index);
        t->index = index;
        t->index_size = size;
        for (size_t e = 0; e < t->n; e++)
            t->index[stage_slot(t, stage_key(t, e, 0), stage_key(t, e, 1))] = (uint32_t)(e + 1);
    }
    return RSL_OK;
}

/* The entry of key (k0, k1; k1 NULL for a one-string key): the staged one
 * (*added false), or a new one holding only the key (*added true). */
static int stage_get(struct stage_table *t, const char *k0, const char *k1, void **entry,
                     bool *added, struct rsl_error *err)
{
    if (k1 == NULL)
        k1 = "";
    if (stage_reserve(t) != RSL_OK)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    size_t slot = stage_slot(t, k0, k1);
    *added = t->index[slot] == 0;
    if (!*added) {
        *entry = stage_entry(t, t->index[slot] - 1);
        return RSL_OK;
    }
    char *e = stage_entry(t, t->n);
    const char *keys[2] = {k0, k1};
    for (int k = 0; k < 2; k++) {
        if (t->key_size[k] == 0) {
            if (keys[k][0] != '\0')
                return rsl_error_set(err, RSL_EINVAL, "store: unexpected second key");
            continue;
        }
        if (rsl_strlcpy(e + t->key_off[k], keys[k], t->key_size[k]) != RSL_OK)
            return rsl_error_set(err, RSL_EINVAL, "store: key '%.40s' too long", keys[k]);
    }
    t->index[slot] = (uint32_t)(++t->n);
    *entry = e;
    return RSL_OK;
}

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
/* The check could not run. Only what SQLite calls corruption is called
 * corruption: a full disk (the -shm or WAL file cannot grow, errno ENOSPC
 * behind an I/O error) or another I/O error must not send an operator to
 * restore a backup of a healthy store. */
static int quick_check_failed(struct agg_store *st, int rc, struct rsl_error *err)
{
    if ((rc & 0xff) == SQLITE_FULL || sqlite3_system_errno(st->db) == ENOSPC)
        return rsl_error_set(err, RSL_ENOSPC, "store %s: the file system is full (%s): free "
                             "some space and start again; the store itself was not checked "
                             "and is not known to be damaged", st->path, sqlite3_errmsg(st->db));
    if ((rc & 0xff) == SQLITE_IOERR)
        return rsl_error_set(err, RSL_EIO, "store %s: I/O error while checking it (%s, errno "
                             "%d)", st->path, sqlite3_errmsg(st->db), sqlite3_system_errno(st->db));
    int code = store_code(rc);
    return rsl_error_set(err, code == RSL_ESTORE ? RSL_ECORRUPT : code,
                         "store %s: integrity check failed: %s", st->path, sqlite3_errmsg(st->db));
}

static int store_quick_check(struct agg_store *st, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &s, NULL);
    if (rc != SQLITE_OK) {
        /* A garbage header fails here already, as "file is not a database". */
        return quick_check_failed(st, rc, err);
    }
    int result = RSL_OK;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(s, 0);
        if (text == NULL || strcmp(text, "ok") != 0) {
            /* SQLite's report spans lines ("*** in database main ***\nPage
             * 34: ..."); the message must stay one line. */
            char shown[256];
            snprintf(shown, sizeof(shown), "%s", text != NULL ? text : "(no result)");
            for (char *c = shown; *c != '\0'; c++)
                if (*c == '\n' || *c == '\r' || *c == '\t')
                    *c = ' ';
            result = rsl_error_set(err, RSL_ECORRUPT, "store %s: integrity check failed: %s "
                                   "(refusing to use it; restore a backup or investigate with "
                                   "sqlite3)", st->path, shown);
        }
    } else {
        result = quick_check_failed(st, rc, err);
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

/* The history index's key for (nation, indicator): 32-bit FNV-1a over
 * both, with a separator, cut to 31 bits (a 4-byte integer in SQLite's
 * record format, against ~30 bytes of text). Two pairs may share an id
 * (for a thousand pairs the chance that any two do is about 1 in 4,000);
 * every answer compares nation and indicator as well, so a shared id is
 * never a wrong answer, but a query for the quieter of the two then reads
 * the other's newer rows. A collision-free id (a table of pairs) would
 * remove that cost. The same function is
 * registered on every connection as SQL rsl_pair(nation, indicator), for
 * queries and the schema upgrade: C and SQL must agree, so both are this. */
static int64_t store_pair(const char *nation, const char *indicator)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)nation; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    h = (h ^ 0x1fu) * 16777619u; /* unit separator: ("AB","C") is not ("A","BC") */
    for (const unsigned char *p = (const unsigned char *)indicator; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return (int64_t)(h & 0x7fffffffu);
}

static void sql_rsl_pair(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    const unsigned char *nation = sqlite3_value_text(argv[0]);
    const unsigned char *indicator = sqlite3_value_text(argv[1]);
    if (nation == NULL || indicator == NULL) {
        /* Not NULL, so SQLite could not convert it: out of memory. An error,
         * not NULL, which a query would take as "no such pair". */
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_int64(ctx, store_pair((const char *)nation, (const char *)indicator));
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
        if (version == 0)
            return rsl_error_set(err, RSL_ESTORE,
                                 "store %s: not initialised (start the aggregator once)",
                                 st->path);
        if (version < STORE_SCHEMA_READABLE_MIN)
            return rsl_error_set(err, RSL_ESTORE,
                                 "store %s: schema version %" PRId64 " is older than this "
                                 "version's %d (start the aggregator once to upgrade it)",
                                 st->path, version, STORE_SCHEMA_VERSION);
        return RSL_OK;
    }
    if (version == STORE_SCHEMA_VERSION)
        return RSL_OK;
    /* One transaction: a crash mid-way leaves the file as it was (empty, or
     * the older version), never half a schema. A new file gets the whole
     * schema; an older one the upgrade steps from its version on. */
    char *msg = NULL;
    char sql[sizeof(schema_sql) + 1024];
    size_t off = (size_t)snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE;");
    if (version == 0) {
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s", schema_sql);
    } else {
        if (version < 4)
            RSL_NOTICE("store", "store %s: upgrading the schema from version %" PRId64
                       " to %d: every history row is rewritten once (about 2 s per "
                       "million measurements)", st->path, version, STORE_SCHEMA_VERSION);
        for (int64_t v = version; v < STORE_SCHEMA_VERSION && off < sizeof(sql); v++)
            off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s", upgrade_sql[v]);
    }
    if (off < sizeof(sql))
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, "PRAGMA user_version = %d;COMMIT;",
                                STORE_SCHEMA_VERSION);
    if (off >= sizeof(sql))
        return rsl_error_set(err, RSL_ESTORE, "store %s: schema text too long", st->path);
    rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK && version != 0)
        RSL_NOTICE("store", "store %s: upgraded the schema from version %" PRId64 " to %d",
                   st->path, version, STORE_SCHEMA_VERSION);
    if (rc != SQLITE_OK) {
        int r = rsl_error_set(err, store_code(rc), "store %s: %s the schema: %s", st->path,
                              version == 0 ? "creating" : "upgrading",
                              msg != NULL ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    return RSL_OK;
}

static void sqlite_setup_once(void)
{
    /* SQLITE_MISUSE when SQLite is already initialized (something opened a
     * database first): then the statistics stay on, which costs speed only. */
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc != SQLITE_OK)
        RSL_DEBUG("store", "SQLite memory statistics stay on: %s", sqlite3_errstr(rc));
}

void agg_store_sqlite_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup_once);
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
    agg_store_sqlite_setup();
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->path = strdup(path)) == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    st->read_only = read_only;
    stage_init(&st->staged, sizeof(struct staged_current),
               offsetof(struct staged_current, nation), sizeof(((struct staged_current *)0)->nation),
               offsetof(struct staged_current, indicator), RSL_INDICATOR_ID_MAX + 1);
    stage_init(&st->agents, sizeof(struct staged_agent), offsetof(struct staged_agent, agent_id),
               RSL_AGENT_ID_MAX + 1, 0, 0);

    int flags = SQLITE_OPEN_NOMUTEX |
                (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    /* The writer gathers its WAL appends into one write per commit
     * (store_vfs.c); readers use the default VFS. */
    const char *vfs = NULL;
    if (!read_only && agg_store_vfs_register() == SQLITE_OK)
        vfs = AGG_STORE_VFS;
    int src = sqlite3_open_v2(path, &st->db, flags, vfs);
    if (src != SQLITE_OK) {
        rc = rsl_error_set(err, store_code(src), "store %s: cannot open: %s", path,
                           st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
        goto out;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    src = sqlite3_create_function(st->db, "rsl_pair", 2,
                                  SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                  sql_rsl_pair, NULL, NULL);
    if (src != SQLITE_OK) {
        rc = store_fail(st, src, err, "registering rsl_pair");
        goto out;
    }

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
    /* FULL on readers too: harmless, and it keeps checkpoints they run safe.
     * Foreign keys are enforced on readers (nothing to enforce) but not on
     * the writer: the only reference, measurements.report_id, is the id of
     * the report row the same agg_store_append call has just inserted, and
     * checking it cost a table seek per measurement - and, since a foreign
     * key failure always aborts the statement, a statement journal for the
     * multi-row insert (see insert_rows_sql).
     * A page cache larger than SQLite's 2 MiB default: the writer touches
     * the right edge of every table and index in each transaction and, with
     * millions of rows, would otherwise re-read index pages from the OS on
     * every batch; readers walk the indexes of `current` and history.
     * The writer checkpoints the WAL every STORE_WAL_CHECKPOINT_PAGES
     * instead of SQLite's 1000: index pages that every batch touches are
     * then copied into the database file once per 16 MiB of WAL, not once
     * per 4 MiB (10-15% less work per report in the store thread, at the
     * price of a larger WAL file). */
    char *msg = NULL;
    src = sqlite3_exec(st->db,
                       read_only ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
                                   "PRAGMA cache_size = " STORE_READER_CACHE_KIB ";"
                                 : "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; "
                                   "PRAGMA cache_size = " STORE_WRITER_CACHE_KIB "; "
                                   "PRAGMA wal_autocheckpoint = " STORE_WAL_CHECKPOINT_PAGES ";",
                       NULL, NULL, &msg);
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
    for (int i = 0; i <= INSERT_ROWS_MAX; i++)
        sqlite3_finalize(st->insert_rows[i]);
    stage_free(&st->staged);
    stage_free(&st->agents);
    for (size_t i = 0; i < sizeof(st->read_stmt) / sizeof(st->read_stmt[0]); i++)
        sqlite3_finalize(st->read_stmt[i]);
    /* close_v2 never fails with busy statements: all were finalized above. */
    if (st->db != NULL)
        sqlite3_close_v2(st->db);
    free(st->path);
    free(st);
    *store = NULL;
}

/* ---- staged `current` ------------------------------------------------------ */

static void staged_clear(struct agg_store *st)
{
    stage_clear(&st->staged);
    stage_clear(&st->agents);
}

/* Offer one aggregated observation; it replaces the staged one for its
 * pair if it is later by (observed, received, measurement id) - the order
 * of the upsert's WHERE and of the historical query. */
static int staged_offer(struct agg_store *st, const char *nation, const char *indicator,
                        const char *unit, const char *agent_id, const char *releasable,
                        sqlite3_int64 measurement_id, double value, int64_t observed_at_ms,
                        int64_t received_at_ms, struct rsl_error *err)
{
    bool added;
    struct staged_current *c;
    int rc = stage_get(&st->staged, nation, indicator, (void **)&c, &added, err);
    if (rc != RSL_OK)
        return rc;
    if (!added) {
        bool later = observed_at_ms != c->observed_at_ms ? observed_at_ms > c->observed_at_ms
                     : received_at_ms != c->received_at_ms ? received_at_ms > c->received_at_ms
                     : measurement_id > c->measurement_id;
        if (!later)
            return RSL_OK;
    }
    if (rsl_strlcpy(c->unit, unit, sizeof(c->unit)) != RSL_OK ||
        rsl_strlcpy(c->agent_id, agent_id, sizeof(c->agent_id)) != RSL_OK ||
        rsl_strlcpy(c->releasable, releasable, sizeof(c->releasable)) != RSL_OK)
        return rsl_error_set(err, RSL_EINVAL, "store: unit, agent id or releasable_to too long");
    c->measurement_id = measurement_id;
    c->value = value;
    c->observed_at_ms = observed_at_ms;
    c->received_at_ms = received_at_ms;
    return RSL_OK;
}

/* Write every staged candidate into `current` (the upsert still keeps a
 * stored row that is later, e.g. after an out-of-order backfill). */
static int staged_flush(struct agg_store *st, struct rsl_error *err)
{
    for (size_t e = 0; e < st->staged.n; e++) {
        const struct staged_current *c = stage_entry(&st->staged, e);
        sqlite3_stmt *s = st->stmt[ST_UPSERT_CURRENT];
        sqlite3_bind_text(s, 1, c->nation, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, c->indicator, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, c->measurement_id);
        sqlite3_bind_double(s, 4, c->value);
        sqlite3_bind_text(s, 5, c->unit, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, c->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, c->observed_at_ms);
        sqlite3_bind_int64(s, 8, c->received_at_ms);
        sqlite3_bind_text(s, 9, c->releasable, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        stmt_done(s);
        if (rc != SQLITE_DONE)
            return store_fail(st, rc, err, "updating current values");
    }
    staged_clear(st);
    return RSL_OK;
}

/* ---- staged `agents` -------------------------------------------------------- */

/* Fold one appended report into its agent's staged row, with the rules
 * ST_UPSERT_AGENT applies against the stored row: highest sequence,
 * latest receive time, the clock offset of the report received last
 * (ties: appended last), the nation of the report appended last. */
static int staged_agent_offer(struct agg_store *st, const struct agg_report_in *in,
                              struct rsl_error *err)
{
    bool added;
    struct staged_agent *a;
    int rc = stage_get(&st->agents, in->agent_id, NULL, (void **)&a, &added, err);
    if (rc != RSL_OK)
        return rc;
    int64_t offset = agg_clock_offset_ms(in->created_at_ms, in->received_at_ms);
    if (added) {
        a->last_sequence = (int64_t)in->sequence;
        a->last_seen_ms = in->received_at_ms;
        a->clock_offset_ms = offset;
        a->reports = 0;
    } else {
        if ((int64_t)in->sequence > a->last_sequence)
            a->last_sequence = (int64_t)in->sequence;
        if (in->received_at_ms >= a->last_seen_ms) {
            a->last_seen_ms = in->received_at_ms;
            a->clock_offset_ms = offset;
        }
    }
    if (rsl_strlcpy(a->nation, in->nation, sizeof(a->nation)) != RSL_OK)
        return rsl_error_set(err, RSL_EINVAL, "store: nation too long");
    a->reports++;
    return RSL_OK;
}

static int staged_agents_flush(struct agg_store *st, struct rsl_error *err)
{
    sqlite3_stmt *s = st->stmt[ST_UPSERT_AGENT];
    for (size_t e = 0; e < st->agents.n; e++) {
        const struct staged_agent *a = stage_entry(&st->agents, e);
        sqlite3_bind_text(s, 1, a->agent_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, a->nation, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, a->last_sequence);
        sqlite3_bind_int64(s, 4, a->last_seen_ms);
        sqlite3_bind_int64(s, 5, a->clock_offset_ms);
        sqlite3_bind_int64(s, 6, a->reports);
        int rc = sqlite3_step(s);
        stmt_done(s);
        if (rc != SQLITE_DONE)
            return store_fail(st, rc, err, "updating the agents");
    }
    return RSL_OK;
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
    staged_clear(st);
    int rc = exec_simple(st, ST_BEGIN, err);
    if (rc != RSL_OK)
        return rc;
    st->in_transaction = true;
    /* Under the write lock nobody else inserts: ids from here on are ours. */
    sqlite3_stmt *s = st->stmt[ST_NEXT_MEASUREMENT_ID];
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        st->next_measurement_id = sqlite3_column_int64(s, 0);
    stmt_done(s);
    if (src != SQLITE_ROW) {
        rc = store_fail(st, src, err, "reading the next measurement id");
        agg_store_rollback(st);
    }
    return rc;
}

int agg_store_commit(struct agg_store *st, struct rsl_error *err)
{
    if (st == NULL || !st->in_transaction)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_commit: no transaction open");
    /* The staged agents and present go in first, in this same
     * transaction. */
    int rc = staged_agents_flush(st, err);
    if (rc != RSL_OK)
        return rc;
    rc = staged_flush(st, err);
    if (rc != RSL_OK)
        return rc;
    rc = exec_simple(st, ST_COMMIT, err);
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
    staged_clear(st);
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

void agg_store_join_releasable(const rsl_measurement *m, char *out, size_t outlen)
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

/* The SQL of an INSERT of `rows` measurement rows. Parameters shared by
 * every row: ?1 report id, ?2 nation, ?3 received_at_ms, ?4 agent id; then
 * per row j (0-based) from ?5 + 9j: id (bound NULL: SQLite's max + 1),
 * idx, indicator, value, unit, observed_at_ms, excluded, releasable_to,
 * source.
 * OR FAIL, not the default ABORT: a statement that writes several rows and
 * may abort half-way makes SQLite keep a statement journal - a copy of
 * every page the statement touches that the transaction had already
 * changed, i.e. nearly all of them in a big batch, spilled to a temporary
 * file (it multiplied the store thread's write() calls by seven). With
 * FAIL a failing row stops the statement and keeps the rows before it,
 * which is harmless here: any error fails agg_store_append and the caller
 * rolls the whole transaction back. */
static int insert_rows_sql(size_t rows, char *out, size_t outlen)
{
    size_t off = (size_t)snprintf(out, outlen,
                                  "INSERT OR FAIL INTO measurements (id, report_id, idx, nation, "
                                  "indicator, value, unit, observed_at_ms, received_at_ms, "
                                  "agent_id, excluded, releasable_to, source, pair) VALUES ");
    for (size_t j = 0; j < rows && off < outlen; j++) {
        unsigned b = 5 + ROW_PARAMS * (unsigned)j;
        off += (size_t)snprintf(out + off, outlen - off,
                                "%s(?%u, ?1, ?%u, ?2, ?%u, ?%u, ?%u, ?%u, ?3, ?4, ?%u, ?%u, ?%u, "
                                "?%u)",
                                j > 0 ? ", " : "", b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6,
                                b + 7, b + 8, b + 9);
    }
    return off < outlen ? RSL_OK : RSL_ETOOBIG;
}

static int insert_rows_stmt(struct agg_store *st, size_t rows, sqlite3_stmt **out,
                            struct rsl_error *err)
{
    if (st->insert_rows[rows] == NULL) {
        /* The column list, then per row at most 90 characters (ten
         * three-digit parameter numbers and four shared ones). */
        char sql[256 + INSERT_ROWS_MAX * 90];
        if (insert_rows_sql(rows, sql, sizeof(sql)) != RSL_OK)
            return rsl_error_set(err, RSL_ESTORE, "store: measurement insert too long");
        int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                    &st->insert_rows[rows], NULL);
        if (rc != SQLITE_OK)
            return store_fail(st, rc, err, "preparing the measurement insert");
    }
    *out = st->insert_rows[rows];
    return RSL_OK;
}

/* History rows for every measurement, INSERT_ROWS_MAX per statement;
 * `current` candidates only for those that count (not excluded). The
 * upsert's WHERE at commit makes an out-of-order backfill a no-op for
 * `current` while it still lands in history. */
static int insert_measurements(struct agg_store *st, const struct agg_report_in *in,
                               sqlite3_int64 report_id, struct rsl_error *err)
{
    const rsl_report *r = in->report;
    /* One joined releasable_to list per row of a statement: the bindings
     * point into these until the statement has run. */
    char (*releasable)[RELEASABLE_TEXT_MAX] = NULL;
    int rc = RSL_OK;
    for (size_t first = 0; first < r->n_measurements && rc == RSL_OK;
         first += INSERT_ROWS_MAX) {
        size_t rows = r->n_measurements - first;
        if (rows > INSERT_ROWS_MAX)
            rows = INSERT_ROWS_MAX;
        sqlite3_stmt *s = NULL;
        if ((rc = insert_rows_stmt(st, rows, &s, err)) != RSL_OK)
            break;
        sqlite3_bind_int64(s, 1, report_id);
        sqlite3_bind_text(s, 2, in->nation, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, in->received_at_ms);
        sqlite3_bind_text(s, 4, in->agent_id, -1, SQLITE_STATIC);
        for (size_t j = 0; j < rows; j++) {
            size_t i = first + j;
            const rsl_measurement *m = r->measurements[i];
            bool excluded = in->excluded != NULL && in->excluded[i];
            int b = 5 + ROW_PARAMS * (int)j;
            const char *joined = "";
            if (m->n_releasable_to > 0) {
                /* Rare: most measurements go to nobody; the buffers are
                 * allocated only for a report that needs them. */
                if (releasable == NULL &&
                    (releasable = malloc(INSERT_ROWS_MAX * sizeof(*releasable))) == NULL) {
                    stmt_done(s);
                    rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
                    goto out;
                }
                agg_store_join_releasable(m, releasable[j], sizeof(releasable[j]));
                joined = releasable[j];
            }
            sqlite3_bind_null(s, b); /* SQLite's max + 1: next_measurement_id + j */
            sqlite3_bind_int64(s, b + 1, (sqlite3_int64)i);
            sqlite3_bind_text(s, b + 2, m->indicator, -1, SQLITE_STATIC);
            sqlite3_bind_double(s, b + 3, m->value);
            sqlite3_bind_text(s, b + 4, m->unit != NULL ? m->unit : "", -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, b + 5, m->observed_at_ms);
            sqlite3_bind_int(s, b + 6, excluded ? 1 : 0);
            sqlite3_bind_text(s, b + 7, joined, -1, SQLITE_STATIC);
            sqlite3_bind_text(s, b + 8, m->source != NULL ? m->source : "", -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, b + 9, store_pair(in->nation, m->indicator));
        }
        int src = sqlite3_step(s);
        stmt_done(s);
        if (src != SQLITE_DONE) {
            rc = store_fail(st, src, err, "inserting measurements");
            break;
        }
        /* Each row got max(id) + 1 in turn (rows are never deleted), so
         * the rows of this statement are next_measurement_id .. + rows - 1;
         * checked, since `current` keeps these ids. */
        if (sqlite3_last_insert_rowid(st->db) != st->next_measurement_id + (sqlite3_int64)rows - 1) {
            rc = rsl_error_set(err, RSL_ESTORE, "store %s: measurement ids are not consecutive "
                               "(expected %lld, got %lld)", st->path,
                               (long long)(st->next_measurement_id + (sqlite3_int64)rows - 1),
                               (long long)sqlite3_last_insert_rowid(st->db));
            break;
        }
        for (size_t j = 0; j < rows && rc == RSL_OK; j++) {
            size_t i = first + j;
            const rsl_measurement *m = r->measurements[i];
            if (in->excluded != NULL && in->excluded[i])
                continue;
            rc = staged_offer(st, in->nation, m->indicator, m->unit != NULL ? m->unit : "",
                              in->agent_id, m->n_releasable_to > 0 ? releasable[j] : "",
                              st->next_measurement_id + (sqlite3_int64)j, m->value,
                              m->observed_at_ms, in->received_at_ms, err);
        }
        st->next_measurement_id += (sqlite3_int64)rows;
    }
out:
    free(releasable);
    return rc;
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

    /* Hashed by the caller (ingest: on a verify worker, off this serial
     * path) or here. */
    uint8_t computed[32];
    const uint8_t *digest = in->report_digest;
    if (digest == NULL) {
        rsl_sha256(in->report_bytes, in->report_len, computed);
        digest = computed;
    }

    /* Insert unless (agent_id, sequence) is taken - inside the
     * transaction, so a repeat within the same batch is seen too. */
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
    if (sqlite3_changes(st->db) == 0) {
        /* Taken: the same report again, or different bytes (equivocation). */
        bool found;
        uint8_t stored[32];
        int rc = lookup_digest(st, in->agent_id, in->sequence, &found, stored, err);
        if (rc != RSL_OK)
            return rc;
        if (!found)
            return rsl_error_set(err, RSL_ESTORE, "store %s: report %s/%" PRIu64 " was neither "
                                 "inserted nor found", st->path, in->agent_id, in->sequence);
        *result = memcmp(stored, digest, 32) == 0 ? AGG_APPEND_DUPLICATE : AGG_APPEND_CONFLICT;
        return RSL_OK;
    }
    sqlite3_int64 report_id = sqlite3_last_insert_rowid(st->db);

    int rc = insert_measurements(st, in, report_id, err);
    if (rc == RSL_OK)
        rc = staged_agent_offer(st, in, err);
    if (rc != RSL_OK)
        return rc;
    *result = AGG_APPEND_INSERTED;
    return RSL_OK;
}

static const char *column_text(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t != NULL ? (const char *)t : "";
}

/* agg_store_latest for a pair whose pair id another pair shares: the
 * checked query. *called false when the pair has nothing at or before
 * at_ms. */
static int latest_one(struct agg_store *st, const char *nation, const char *indicator,
                      int64_t at_ms, agg_value_cb cb, void *ctx, bool *called,
                      struct rsl_error *err)
{
    sqlite3_stmt *one = st->stmt[ST_LATEST_AT_ONE];
    sqlite3_bind_text(one, 1, nation, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(one, 2, indicator, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(one, 3, at_ms);
    int result = RSL_OK;
    int rc = sqlite3_step(one);
    *called = false;
    if (rc == SQLITE_ROW) {
        struct agg_value v = {
            .nation = nation,
            .indicator = indicator,
            .unit = column_text(one, 0),
            .agent_id = column_text(one, 1),
            .value = sqlite3_column_double(one, 2),
            .observed_at_ms = sqlite3_column_int64(one, 3),
            .received_at_ms = sqlite3_column_int64(one, 4),
            .releasable_to = column_text(one, 5),
        };
        *called = true;
        result = cb(ctx, &v);
    } else if (rc != SQLITE_DONE) {
        result = store_fail(st, rc, err, "reading a latest value");
    }
    stmt_done(one);
    return result;
}

int agg_store_latest(struct agg_store *st, int64_t at_ms, agg_value_cb cb, void *ctx,
                     struct rsl_error *err)
{
    if (st == NULL || cb == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_latest: NULL argument");
    bool now = at_ms < 0;
    sqlite3_stmt *s = st->stmt[now ? ST_LATEST_NOW : ST_LATEST_AT];
    if (!now)
        sqlite3_bind_int64(s, 1, at_ms);
    /* Column offset of the value columns: ST_LATEST_AT starts with the
     * pair asked for, then the row found. */
    int o = now ? 0 : 2;
    /* A read outside an explicit transaction is one implicit transaction
     * for the whole walk: a consistent snapshot even while ingest commits. */
    int result = RSL_OK;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (!now && (strcmp(column_text(s, 0), column_text(s, 2)) != 0 ||
                     strcmp(column_text(s, 1), column_text(s, 3)) != 0)) {
            /* Another pair with the same pair id: ask for this one. */
            bool called;
            result = latest_one(st, column_text(s, 0), column_text(s, 1), at_ms, cb, ctx,
                                &called, err);
            if (result != 0)
                break;
            continue;
        }
        struct agg_value v = {
            .nation = column_text(s, o + 0),
            .indicator = column_text(s, o + 1),
            .unit = column_text(s, o + 2),
            .agent_id = column_text(s, o + 3),
            .value = sqlite3_column_double(s, o + 4),
            .observed_at_ms = sqlite3_column_int64(s, o + 5),
            .received_at_ms = sqlite3_column_int64(s, o + 6),
            .releasable_to = column_text(s, o + 7),
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

int64_t agg_clock_offset_ms(int64_t created_at_ms, int64_t received_at_ms)
{
    /* Saturating: both come from clocks we do not control (created_at is
     * the agent's, and validated only to be positive). */
    if (received_at_ms < 0 && created_at_ms > INT64_MAX + received_at_ms)
        return INT64_MAX;
    if (received_at_ms > 0 && created_at_ms < INT64_MIN + received_at_ms)
        return INT64_MIN;
    return created_at_ms - received_at_ms;
}

/* ---- the audit walk ------------------------------------------------------ */

/* Measurement rows of one report, copied out of the statement (its text
 * pointers die at the next step). One allocation per string; the audit is
 * not a hot path. */
struct row_buffer {
    struct agg_stored_measurement *rows;
    size_t n;
    size_t cap;
};

static void row_buffer_reset(struct row_buffer *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)(uintptr_t)b->rows[i].nation);
        free((char *)(uintptr_t)b->rows[i].indicator);
        free((char *)(uintptr_t)b->rows[i].unit);
        free((char *)(uintptr_t)b->rows[i].agent_id);
        free((char *)(uintptr_t)b->rows[i].releasable_to);
        free((char *)(uintptr_t)b->rows[i].source);
    }
    b->n = 0;
}

/* The measurement rows in storage order, read beside the reports: rows
 * of one report are consecutive and follow the rows of every earlier
 * report (agg_store_append writes them so), so one forward pass over each
 * table pairs them up without an index. */
struct row_walk {
    sqlite3_stmt *s;           /* ST_MEASUREMENTS_ALL */
    bool have;                 /* s is on a row not consumed yet */
    bool done;                 /* no rows left */
};

/* Copy the rows of `report_id` (at most AGG_STORE_AUDIT_MAX_ROWS of them,
 * *truncated if there are more) into b, ordered by idx then storage order.
 * Rows naming a report id below it (no report of the walk: a row whose
 * report is gone, or one moved out of place) are passed over, so they show
 * as missing from their report, as they would through an index. */
static int load_report_rows(struct agg_store *st, struct row_walk *w, sqlite3_int64 report_id,
                            struct row_buffer *b, bool *truncated, struct rsl_error *err)
{
    sqlite3_stmt *s = w->s;
    row_buffer_reset(b);
    *truncated = false;
    for (;;) {
        if (!w->have && !w->done) {
            int rc = sqlite3_step(s);
            if (rc == SQLITE_ROW)
                w->have = true;
            else if (rc == SQLITE_DONE)
                w->done = true;
            else
                return store_fail(st, rc, err, "reading measurements");
        }
        if (w->done)
            break;
        sqlite3_int64 rid = sqlite3_column_int64(s, 0);
        if (rid > report_id)
            break; /* the next report's */
        w->have = false; /* consumed, whatever happens below */
        if (rid < report_id)
            continue;
        if (b->n >= AGG_STORE_AUDIT_MAX_ROWS) {
            *truncated = true;
            continue;
        }
        if (b->n == b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 16;
            struct agg_stored_measurement *r = realloc(b->rows, cap * sizeof(*r));
            if (r == NULL)
                return rsl_error_set(err, RSL_ENOMEM, "out of memory");
            b->rows = r;
            b->cap = cap;
        }
        struct agg_stored_measurement *m = &b->rows[b->n];
        memset(m, 0, sizeof(*m));
        b->n++; /* counted now so row_buffer_reset frees whatever was copied */
        m->idx = sqlite3_column_int64(s, 1);
        m->nation = strdup(column_text(s, 2));
        m->indicator = strdup(column_text(s, 3));
        m->value = sqlite3_column_double(s, 4);
        m->unit = strdup(column_text(s, 5));
        m->observed_at_ms = sqlite3_column_int64(s, 6);
        m->received_at_ms = sqlite3_column_int64(s, 7);
        m->agent_id = strdup(column_text(s, 8));
        m->excluded = sqlite3_column_int64(s, 9) != 0;
        m->releasable_to = strdup(column_text(s, 10));
        m->source = strdup(column_text(s, 11));
        if (m->nation == NULL || m->indicator == NULL || m->unit == NULL ||
            m->agent_id == NULL || m->releasable_to == NULL || m->source == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    }
    /* Storage order is idx order unless the rows were tampered with; a
     * stable insertion sort keeps storage order among equal idx and costs
     * one pass when already sorted. */
    for (size_t i = 1; i < b->n; i++) {
        struct agg_stored_measurement m = b->rows[i];
        size_t j = i;
        while (j > 0 && b->rows[j - 1].idx > m.idx) {
            b->rows[j] = b->rows[j - 1];
            j--;
        }
        b->rows[j] = m;
    }
    return RSL_OK;
}

/* A read transaction around a walk of several statements, unless the
 * caller already has one open: one snapshot for the whole walk. */
static int read_begin(struct agg_store *st, bool *began, struct rsl_error *err)
{
    *began = false;
    if (st->in_transaction || sqlite3_get_autocommit(st->db) == 0)
        return RSL_OK;
    int src = sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL);
    if (src != SQLITE_OK)
        return store_fail(st, src, err, "BEGIN (read)");
    *began = true;
    return RSL_OK;
}

static void read_end(struct agg_store *st, bool began)
{
    if (began)
        sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
}

int agg_store_reports(struct agg_store *st, agg_report_cb cb, void *ctx, struct rsl_error *err)
{
    struct row_buffer rows = {0};
    bool began = false;
    if (st == NULL || cb == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_reports: NULL argument");
    int result = read_begin(st, &began, err);
    if (result != RSL_OK)
        return result;
    sqlite3_stmt *s = st->stmt[ST_REPORTS_ALL];
    struct row_walk walk = {st->stmt[ST_MEASUREMENTS_ALL], false, false};
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(s, 0);
        sqlite3_int64 seq = sqlite3_column_int64(s, 2);
        struct agg_stored_report r = {
            .id = id,
            .agent_id = column_text(s, 1),
            .sequence = seq > 0 ? (uint64_t)seq : 0,
            .nation = column_text(s, 3),
            .key_id = column_text(s, 4),
            .created_at_ms = sqlite3_column_int64(s, 5),
            .received_at_ms = sqlite3_column_int64(s, 6),
        };
        /* Blob pointers stay valid until the next step of `s`; the inner
         * statement runs on another sqlite3_stmt and does not touch them. */
        r.digest = sqlite3_column_blob(s, 7);
        r.digest_len = (size_t)sqlite3_column_bytes(s, 7);
        r.signed_bytes = sqlite3_column_blob(s, 8);
        r.signed_len = (size_t)sqlite3_column_bytes(s, 8);
        result = load_report_rows(st, &walk, id, &rows, &r.measurements_truncated, err);
        if (result != RSL_OK)
            break;
        r.measurements = rows.rows;
        r.n_measurements = rows.n;
        result = cb(ctx, &r);
        if (result != 0)
            break;
    }
    if (result == RSL_OK && rc != SQLITE_DONE)
        result = store_fail(st, rc, err, "reading reports");
    stmt_done(s);
    stmt_done(walk.s);
    read_end(st, began);
    row_buffer_reset(&rows);
    free(rows.rows);
    return result;
}

int agg_store_check_current(struct agg_store *st, agg_current_problem_cb cb, void *ctx,
                            struct rsl_error *err)
{
    bool began = false;
    if (st == NULL || cb == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_check_current: NULL argument");
    int result = read_begin(st, &began, err);
    if (result != RSL_OK)
        return result;
    static const enum stmt_id walks[] = {ST_CURRENT_CHECK, ST_CURRENT_MISSING, ST_PAIR_CHECK};
    for (size_t w = 0; w < sizeof(walks) / sizeof(walks[0]) && result == RSL_OK; w++) {
        sqlite3_stmt *s = st->stmt[walks[w]];
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *problem = walks[w] == ST_CURRENT_MISSING
                                      ? "aggregated observations but no current row"
                                  : walks[w] == ST_PAIR_CHECK
                                      ? "history rows with a wrong pair key (hidden from "
                                        "queries by time)"
                                      : column_text(s, 2);
            result = cb(ctx, column_text(s, 0), column_text(s, 1), problem);
            if (result != 0)
                break;
        }
        if (result == RSL_OK && rc != SQLITE_DONE)
            result = store_fail(st, rc, err, "checking current values");
        stmt_done(s);
    }
    read_end(st, began);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Read-only queries for the HTTPS API (issue 5, api5). Nothing here writes:
 * they run on the HTTPS workers' read-only handles. Statements are
 * prepared on first use and kept in st->read_stmt (finalized by
 * agg_store_close), so a handle that never serves these routes never pays
 * for them. */
/* ------------------------------------------------------------------------ */

enum read_stmt_id {
    RD_DATA_VERSION = 0,
    RD_AGENTS,
    RD_HISTORY_NATIONS,
    RD_LATEST_ONE,
    RD_COUNT,
};

static const char *const read_stmt_sql[RD_COUNT] = {
    /* Changes whenever ANOTHER connection committed since this one last
     * asked: exactly "has ingest written something", read from the WAL
     * index in shared memory (no disk I/O). */
    [RD_DATA_VERSION] = "PRAGMA data_version",
    [RD_AGENTS] = "SELECT agent_id, nation, last_sequence, last_seen_ms, reports, "
                  "clock_offset_ms FROM agents ORDER BY nation, agent_id",
    /* `current` lists every (nation, indicator) that ever had an aggregated
     * observation: the nations worth a seek for one indicator. */
    [RD_HISTORY_NATIONS] = "SELECT nation FROM current WHERE indicator = ?1 ORDER BY nation",
    /* The same winner order as ST_LATEST_AT, for one pair, one seek in the
     * partial index measurements_pair_latest. */
    [RD_LATEST_ONE] =
        "SELECT unit, agent_id, value, observed_at_ms, received_at_ms FROM measurements "
        "WHERE pair = rsl_pair(?1, ?2) AND nation = ?1 AND indicator = ?2 AND excluded = 0 "
        "AND observed_at_ms <= ?3 "
        "ORDER BY observed_at_ms DESC, received_at_ms DESC, id DESC LIMIT 1",
};

_Static_assert(RD_COUNT <= sizeof(((struct agg_store *)0)->read_stmt) /
                              sizeof(((struct agg_store *)0)->read_stmt[0]),
               "read_stmt too small");

static int read_stmt_get(struct agg_store *st, enum read_stmt_id id, sqlite3_stmt **out,
                         struct rsl_error *err)
{
    if (st->read_stmt[id] == NULL) {
        int rc = sqlite3_prepare_v3(st->db, read_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                    &st->read_stmt[id], NULL);
        if (rc != SQLITE_OK)
            return store_fail(st, rc, err, read_stmt_sql[id]);
    }
    *out = st->read_stmt[id];
    return RSL_OK;
}

int agg_store_data_version(struct agg_store *st, uint64_t *out, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    if (out != NULL)
        *out = 0;
    if (st == NULL || out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_data_version: NULL argument");
    int rc = read_stmt_get(st, RD_DATA_VERSION, &s, err);
    if (rc != RSL_OK)
        return rc;
    int src = sqlite3_step(s);
    if (src == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(s, 0);
    else
        rc = store_fail(st, src, err, "reading the data version");
    stmt_done(s);
    return rc;
}

int agg_store_agents(struct agg_store *st, agg_agent_cb cb, void *ctx, struct rsl_error *err)
{
    sqlite3_stmt *s = NULL;
    if (st == NULL || cb == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_store_agents: NULL argument");
    int result = read_stmt_get(st, RD_AGENTS, &s, err);
    if (result != RSL_OK)
        return result;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        sqlite3_int64 seq = sqlite3_column_int64(s, 2);
        struct agg_agent_row row = {
            .agent_id = column_text(s, 0),
            .nation = column_text(s, 1),
            .last_sequence = seq > 0 ? (uint64_t)seq : 0,
            .last_seen_ms = sqlite3_column_int64(s, 3),
            .reports = sqlite3_column_int64(s, 4),
            .clock_offset_ms = sqlite3_column_int64(s, 5),
        };
        result = cb(ctx, &row);
        if (result != 0)
            break;
    }
    if (result == 0 && rc != SQLITE_DONE)
        result = store_fail(st, rc, err, "reading agents");
    stmt_done(s);
    return result;
}

/* Per nation, the points are visited from the last to the first: the
 * observation found for point k (observed at x) is also the answer for
 * every earlier point t >= x, so a seek is needed only when a point falls
 * before the last answer. The cost is at most min(points, observations)
 * seeks per nation, never a scan of the history between points. The whole
 * walk runs in one read transaction: one consistent snapshot even while
 * ingest commits. */
int agg_store_history(struct agg_store *st, const char *indicator, const int64_t *points,
                      size_t n_points, agg_point_value_cb cb, void *ctx, struct rsl_error *err)
{
    sqlite3_stmt *nations = NULL;
    sqlite3_stmt *one = NULL;
    bool in_read = false;
    int result;

    if (st == NULL || indicator == NULL || cb == NULL || (points == NULL && n_points > 0))
        return rsl_error_set(err, RSL_EINVAL, "agg_store_history: NULL argument");
    for (size_t i = 1; i < n_points; i++)
        if (points[i] < points[i - 1])
            return rsl_error_set(err, RSL_EINVAL, "agg_store_history: points not ascending");
    if ((result = read_stmt_get(st, RD_HISTORY_NATIONS, &nations, err)) != RSL_OK ||
        (result = read_stmt_get(st, RD_LATEST_ONE, &one, err)) != RSL_OK)
        return result;
    if (!st->in_transaction) {
        int src = sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL);
        if (src != SQLITE_OK)
            return store_fail(st, src, err, "BEGIN (read)");
        in_read = true;
    }
    sqlite3_bind_text(nations, 1, indicator, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (result == RSL_OK && (rc = sqlite3_step(nations)) == SQLITE_ROW) {
        const char *nation = column_text(nations, 0);
        bool have = false;
        int64_t have_observed = 0;
        for (size_t k = n_points; k-- > 0 && result == RSL_OK;) {
            if (have && points[k] >= have_observed) {
                /* Same answer as point k+1: re-read the row kept in `one`. */
            } else {
                sqlite3_reset(one);
                sqlite3_bind_text(one, 1, nation, -1, SQLITE_STATIC);
                sqlite3_bind_text(one, 2, indicator, -1, SQLITE_STATIC);
                sqlite3_bind_int64(one, 3, points[k]);
                int orc = sqlite3_step(one);
                if (orc == SQLITE_DONE) {
                    /* Nothing observed at or before this point, nor before
                     * any earlier one. */
                    break;
                }
                if (orc != SQLITE_ROW) {
                    result = store_fail(st, orc, err, "reading history");
                    break;
                }
                have = true;
                have_observed = sqlite3_column_int64(one, 3);
            }
            struct agg_value v = {
                .nation = nation,
                .indicator = indicator,
                .unit = column_text(one, 0),
                .agent_id = column_text(one, 1),
                .value = sqlite3_column_double(one, 2),
                .observed_at_ms = sqlite3_column_int64(one, 3),
                .received_at_ms = sqlite3_column_int64(one, 4),
            };
            result = cb(ctx, k, &v);
        }
        stmt_done(one);
    }
    if (result == RSL_OK && rc != SQLITE_DONE)
        result = store_fail(st, rc, err, "reading history nations");
    stmt_done(nations);
    if (in_read)
        sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    return result;
}
