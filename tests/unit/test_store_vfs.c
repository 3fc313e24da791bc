/*
 * test_store_vfs.c - the store writer's VFS (aggregator/store_vfs.c): WAL
 * appends gathered into fewer writes must leave exactly what SQLite wrote,
 * visible to readers on the default VFS after each commit, and a process
 * that dies with frames still buffered must leave the last commit intact.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aggregator/store_vfs.h"
#include "testutil.h"

struct fixture {
    char dir[256];
    char path[300];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(rsl_test_mkdtemp(f->dir, sizeof(f->dir), "storevfs"), 0);
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rsl_test_rmtree(f->dir);
    free(f);
    return 0;
}

/* Row i's blob: a size from a spread that includes pages, many pages and
 * more than the shim's buffer (128 KiB), and bytes that depend on i. */
static size_t blob_size(int i)
{
    static const size_t sizes[] = {10, 700, 4096, 5000, 40000, 200000, 3, 131071, 131073};
    return sizes[i % (int)(sizeof(sizes) / sizeof(sizes[0]))];
}

static void blob_fill(unsigned char *b, size_t n, int i)
{
    uint32_t x = 2166136261u ^ (uint32_t)i;
    for (size_t k = 0; k < n; k++) {
        x = x * 16777619u + 7u;
        b[k] = (unsigned char)(x >> 24);
    }
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg != NULL ? msg : sqlite3_errstr(rc));
}

static sqlite3 *open_writer(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(agg_store_vfs_register(), SQLITE_OK);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     AGG_STORE_VFS),
                     SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                "PRAGMA wal_autocheckpoint = 0;"
                "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)");
    return db;
}

static void insert_rows(sqlite3 *db, int from, int to)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t (id, b) VALUES (?1, ?2)", -1, &s, NULL),
                     SQLITE_OK);
    for (int i = from; i < to; i++) {
        size_t n = blob_size(i);
        unsigned char *b = malloc(n);
        assert_non_null(b);
        blob_fill(b, n, i);
        sqlite3_bind_int(s, 1, i);
        sqlite3_bind_blob(s, 2, b, (int)n, free);
        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
}

/* Every row below `n` present with its exact bytes, nothing else. */
static void check_rows(sqlite3 *db, int n)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, b FROM t ORDER BY id", -1, &s, NULL),
                     SQLITE_OK);
    int want = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        int id = sqlite3_column_int(s, 0);
        if (id != want)
            fail_msg("row %d where %d was expected", id, want);
        size_t len = (size_t)sqlite3_column_bytes(s, 1);
        const unsigned char *b = sqlite3_column_blob(s, 1);
        size_t size = blob_size(id);
        unsigned char *expect = malloc(size);
        assert_non_null(expect);
        blob_fill(expect, size, id);
        if (len != size || memcmp(b, expect, size) != 0)
            fail_msg("row %d: %zu bytes, not the %zu written", id, len, size);
        free(expect);
        want++;
    }
    sqlite3_finalize(s);
    assert_int_equal(want, n);
}

static void integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
}

/* Commits of every size, each read back at once by a reader on the default
 * VFS from the WAL (no checkpoint runs), then after close and reopen. */
static void test_commits_read_back(void **state)
{
    struct fixture *f = *state;
    sqlite3 *w = open_writer(f->path);
    char *vfsname = NULL;
    assert_int_equal(sqlite3_file_control(w, "main", SQLITE_FCNTL_VFSNAME, &vfsname), SQLITE_OK);
    assert_non_null(vfsname);
    assert_true(strncmp(vfsname, AGG_STORE_VFS "/", strlen(AGG_STORE_VFS) + 1) == 0);
    sqlite3_free(vfsname);

    sqlite3 *r = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &r, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    int n = 0;
    for (int batch = 1; batch <= 24; batch++) {
        exec_ok(w, "BEGIN IMMEDIATE");
        insert_rows(w, n, n + batch);
        exec_ok(w, "COMMIT");
        n += batch;
        check_rows(r, n);
    }
    /* A rolled-back transaction that spilled frames leaves nothing. */
    exec_ok(w, "PRAGMA cache_size = 8; BEGIN IMMEDIATE");
    insert_rows(w, n, n + 40);
    exec_ok(w, "ROLLBACK");
    check_rows(r, n);
    check_rows(w, n);
    integrity_ok(r);
    sqlite3_close(r);
    sqlite3_close(w);

    sqlite3 *again = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &again, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    check_rows(again, n);
    integrity_ok(again);
    sqlite3_close(again);
}

/* In a forked child: a writer with rows 0..committed-1 committed, six per
 * transaction (exit 2 or 3 if that fails). */
static sqlite3 *child_writer_with_commits(const char *path, int committed)
{
    sqlite3 *w = open_writer(path);
    for (int i = 0; i < committed; i += 6) {
        if (sqlite3_exec(w, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            _exit(2);
        insert_rows(w, i, i + 6);
        if (sqlite3_exec(w, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            _exit(3);
    }
    return w;
}

/* The child exited 0, and the store, opened afresh (recovering the WAL),
 * holds exactly the committed rows and passes integrity_check. */
static void child_exited_0_and_rows_committed(const char *path, pid_t pid, int committed)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    check_rows(db, committed);
    integrity_ok(db);
    sqlite3_close(db);
}

/* A writer process that dies (no exit handlers, no close) in the middle of
 * a transaction whose frames the shim holds: the next open recovers every
 * committed row and nothing of the open transaction. */
static void test_death_mid_transaction(void **state)
{
    struct fixture *f = *state;
    const int committed = 60;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *w = child_writer_with_commits(f->path, committed);
        /* A small cache: the transaction's pages spill into the WAL (and
         * into the shim's buffer) before any commit. */
        if (sqlite3_exec(w, "PRAGMA cache_size = 8; BEGIN IMMEDIATE", NULL, NULL, NULL) !=
            SQLITE_OK)
            _exit(4);
        insert_rows(w, committed, committed + 50);
        _exit(0);
    }
    child_exited_0_and_rows_committed(f->path, pid, committed);
}

/* The WAL cannot grow (RLIMIT_FSIZE) while a transaction's frames sit in
 * the buffer: the failed write must fail that transaction - never a
 * COMMIT that returns OK without its frames - and the committed rows
 * stay. The child reports by exit status: 0 when the failure surfaced. */
static void test_write_failure_fails_the_commit(void **state)
{
    struct fixture *f = *state;
    const int committed = 12;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *w = child_writer_with_commits(f->path, committed);
        char wal[320];
        struct stat sb;
        snprintf(wal, sizeof(wal), "%s-wal", f->path);
        if (stat(wal, &sb) != 0)
            _exit(4);
        signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead */
        struct rlimit lim = {(rlim_t)sb.st_size + 16384, (rlim_t)sb.st_size + 16384};
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
            _exit(5);
        int rc = sqlite3_exec(w, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        sqlite3_stmt *s = NULL;
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(w, "INSERT INTO t (id, b) VALUES (?1, ?2)", -1, &s, NULL);
        for (int i = committed; rc == SQLITE_OK && i < committed + 12; i++) {
            size_t n = blob_size(i);
            unsigned char *b = malloc(n);
            if (b == NULL)
                _exit(6);
            blob_fill(b, n, i);
            sqlite3_bind_int(s, 1, i);
            sqlite3_bind_blob(s, 2, b, (int)n, free);
            rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(w);
            sqlite3_reset(s);
        }
        sqlite3_finalize(s);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(w, "COMMIT", NULL, NULL, NULL);
        _exit(rc == SQLITE_OK ? 7 : 0); /* 7: it committed without its frames */
    }
    child_exited_0_and_rows_committed(f->path, pid, committed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commits_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death_mid_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_fails_the_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
