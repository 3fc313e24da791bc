/*
 * test_store.c - the SQLite store (aggregator/store.h) on real files in a
 * fresh mkdtemp folder: append, duplicate, equivocation, the incrementally
 * kept current table versus history queries at past times, rollback,
 * read-only handles, persistence and refusal of corrupt files; and (issue 4)
 * the agents table written in the report's transaction (last sequence,
 * clock offset), the upgrade of a version 1 store, the audit walk
 * (agg_store_reports) and the check of `current` against history on a
 * store tampered with through SQLite directly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "rsl/codec.h"
#include "rsl/util.h"
#include "aggregator/store.h"

struct fixture {
    char dir[64];
    char path[128];
    struct agg_store *store;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rsl-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/aggregator.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    agg_store_close(&f->store);
    rsl_test_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- building reports --------------------------------------------------- */

#define MAX_TEST_MEASUREMENTS 4

struct test_measurement {
    const char *indicator;
    double value;
    const char *unit;
    int64_t observed_at_ms;
    bool excluded;
};

/* A report and its encoded bytes, owning everything. */
struct test_report {
    rsl_report report;
    rsl_measurement m[MAX_TEST_MEASUREMENTS];
    rsl_measurement *mp[MAX_TEST_MEASUREMENTS];
    bool excluded[MAX_TEST_MEASUREMENTS];
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    uint8_t *bytes;
    size_t len;
    uint8_t signed_bytes[64];
};

static void report_build(struct test_report *t, const char *agent_id, const char *nation,
                         uint64_t sequence, const struct test_measurement *ms, size_t n)
{
    assert_true(n <= MAX_TEST_MEASUREMENTS);
    memset(t, 0, sizeof(*t));
    resilience__v1__report__init(&t->report);
    snprintf(t->agent_id, sizeof(t->agent_id), "%s", agent_id);
    snprintf(t->nation, sizeof(t->nation), "%s", nation);
    t->report.agent_id = t->agent_id;
    t->report.nation = t->nation;
    t->report.organisation = (char *)"Test Ministry";
    t->report.sequence = sequence;
    t->report.created_at_ms = 1000;
    t->report.marking = (char *)"NATO UNCLASSIFIED";
    for (size_t i = 0; i < n; i++) {
        resilience__v1__measurement__init(&t->m[i]);
        t->m[i].indicator = (char *)ms[i].indicator;
        t->m[i].value = ms[i].value;
        t->m[i].unit = (char *)(ms[i].unit != NULL ? ms[i].unit : "");
        t->m[i].observed_at_ms = ms[i].observed_at_ms;
        t->m[i].source = (char *)"test";
        t->mp[i] = &t->m[i];
        t->excluded[i] = ms[i].excluded;
    }
    t->report.n_measurements = n;
    t->report.measurements = t->mp;
    assert_int_equal(rsl_report_encode(&t->report, &t->bytes, &t->len), RSL_OK);
    /* The store keeps the signed frame opaque; any bytes do here. */
    memset(t->signed_bytes, (int)(sequence & 0xff), sizeof(t->signed_bytes));
}

static void report_free(struct test_report *t)
{
    free(t->bytes);
    t->bytes = NULL;
}

static int append(struct agg_store *st, struct test_report *t, int64_t received_at_ms,
                  enum agg_append_result *result)
{
    struct rsl_error err;
    struct agg_report_in in = {
        .agent_id = t->report.agent_id,
        .nation = t->report.nation,
        .sequence = t->report.sequence,
        .created_at_ms = t->report.created_at_ms,
        .received_at_ms = received_at_ms,
        .key_id = "00112233445566778899aabbccddeeff",
        .signed_bytes = t->signed_bytes,
        .signed_len = sizeof(t->signed_bytes),
        .report_bytes = t->bytes,
        .report_len = t->len,
        .report = &t->report,
        .excluded = t->excluded,
    };
    rsl_error_clear(&err);
    int rc = agg_store_append(st, &in, result, &err);
    if (rc != RSL_OK)
        print_error("append: %s\n", err.text);
    return rc;
}

/* Append one report in its own transaction and expect `expected`. */
static void append_one(struct agg_store *st, const char *agent, const char *nation,
                       uint64_t seq, const struct test_measurement *ms, size_t n,
                       int64_t received_at_ms, enum agg_append_result expected)
{
    struct test_report t;
    enum agg_append_result result;
    report_build(&t, agent, nation, seq, ms, n);
    assert_int_equal(agg_store_begin(st, NULL), RSL_OK);
    assert_int_equal(append(st, &t, received_at_ms, &result), RSL_OK);
    assert_int_equal(agg_store_commit(st, NULL), RSL_OK);
    assert_int_equal(result, expected);
    report_free(&t);
}

/* ---- collecting agg_store_latest --------------------------------------- */

#define MAX_ROWS 16

struct row {
    char nation[4];
    char indicator[RSL_INDICATOR_ID_MAX + 1];
    char unit[RSL_UNIT_MAX + 1];
    char agent_id[RSL_AGENT_ID_MAX + 1];
    double value;
    int64_t observed_at_ms;
    int64_t received_at_ms;
};

struct rows {
    struct row r[MAX_ROWS];
    size_t n;
};

static int collect(void *ctx, const struct agg_value *v)
{
    struct rows *rows = ctx;
    if (rows->n >= MAX_ROWS)
        return -1;
    struct row *r = &rows->r[rows->n++];
    snprintf(r->nation, sizeof(r->nation), "%s", v->nation);
    snprintf(r->indicator, sizeof(r->indicator), "%s", v->indicator);
    snprintf(r->unit, sizeof(r->unit), "%s", v->unit);
    snprintf(r->agent_id, sizeof(r->agent_id), "%s", v->agent_id);
    r->value = v->value;
    r->observed_at_ms = v->observed_at_ms;
    r->received_at_ms = v->received_at_ms;
    return 0;
}

static void latest(struct agg_store *st, int64_t at_ms, struct rows *rows)
{
    struct rsl_error err;
    memset(rows, 0, sizeof(*rows));
    rsl_error_clear(&err);
    int rc = agg_store_latest(st, at_ms, collect, rows, &err);
    if (rc != RSL_OK)
        print_error("latest: %s\n", err.text);
    assert_int_equal(rc, RSL_OK);
}

static const struct row *find_row(const struct rows *rows, const char *nation,
                                  const char *indicator)
{
    for (size_t i = 0; i < rows->n; i++)
        if (strcmp(rows->r[i].nation, nation) == 0 && strcmp(rows->r[i].indicator, indicator) == 0)
            return &rows->r[i];
    return NULL;
}

static void open_store(struct fixture *f)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    int rc = agg_store_open(f->path, false, &f->store, &err);
    if (rc != RSL_OK)
        print_error("open: %s\n", err.text);
    assert_int_equal(rc, RSL_OK);
}

/* ---- tests --------------------------------------------------------------- */

/* First in main(): the store switches SQLite's memory statistics off
 * before SQLite's first use (a process-wide mutex per allocation), so after
 * a store has been opened and written SQLite counts no memory, and its
 * configuration can no longer be changed (it is initialized). */
static void test_sqlite_memory_statistics_off(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 5000, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, ms, 1, 6000, AGG_APPEND_INSERTED);
    assert_int_equal(sqlite3_memory_used(), 0);
    assert_int_equal(sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1), SQLITE_MISUSE);
    agg_store_sqlite_setup(); /* again: harmless */
    assert_int_equal(sqlite3_memory_used(), 0);
}

static void test_append_and_lookup(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {
        {"energy.oil_stock_days", 90.0, "days", 5000, false},
        {"comms.public_warning_reach_pct", 97.5, "", 5000, false},
    };
    struct test_report t;
    enum agg_append_result result;
    report_build(&t, "DEU-BMI-01", "DEU", 1, ms, 2);
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(append(f->store, &t, 6000, &result), RSL_OK);
    assert_int_equal(result, AGG_APPEND_INSERTED);
    assert_int_equal(agg_store_commit(f->store, NULL), RSL_OK);

    bool found = false;
    uint8_t digest[32];
    uint8_t expected[32];
    rsl_sha256(t.bytes, t.len, expected);
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 1, &found, digest, NULL), RSL_OK);
    assert_true(found);
    assert_memory_equal(digest, expected, 32);
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 2, &found, digest, NULL), RSL_OK);
    assert_false(found);
    assert_int_equal(agg_store_lookup(f->store, "FRA-X-01", 1, &found, digest, NULL), RSL_OK);
    assert_false(found);

    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 1);
    assert_int_equal(stats.measurements, 2);

    struct rows rows;
    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 2);
    const struct row *r = find_row(&rows, "DEU", "energy.oil_stock_days");
    assert_non_null(r);
    assert_true(r->value == 90.0);
    assert_string_equal(r->unit, "days");
    assert_string_equal(r->agent_id, "DEU-BMI-01");
    assert_int_equal(r->observed_at_ms, 5000);
    assert_int_equal(r->received_at_ms, 6000);
    report_free(&t);
}

static void test_duplicate_and_conflict(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement a[] = {{"energy.oil_stock_days", 90.0, "days", 5000, false}};
    const struct test_measurement b[] = {{"energy.oil_stock_days", 10.0, "days", 5000, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 7, a, 1, 6000, AGG_APPEND_INSERTED);
    /* Same bytes again (a resend after a lost ack): duplicate, not stored. */
    append_one(f->store, "DEU-BMI-01", "DEU", 7, a, 1, 7000, AGG_APPEND_DUPLICATE);
    /* Same sequence, different content: equivocation. */
    append_one(f->store, "DEU-BMI-01", "DEU", 7, b, 1, 8000, AGG_APPEND_CONFLICT);
    /* The same sequence of another agent is unrelated. */
    append_one(f->store, "DEU-BMI-02", "DEU", 7, b, 1, 8000, AGG_APPEND_INSERTED);

    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 2);
    assert_int_equal(stats.measurements, 2);

    /* Neither the duplicate nor the conflict touched current: the value is
     * from DEU-BMI-02 (same observed time, received later). */
    struct rows rows;
    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 1);
    assert_true(rows.r[0].value == 10.0);
    assert_string_equal(rows.r[0].agent_id, "DEU-BMI-02");

    /* Within one batch, a repeat of a report appended earlier in the same
     * transaction is recognised too. */
    struct test_report t;
    enum agg_append_result r1;
    enum agg_append_result r2;
    report_build(&t, "FRA-MI-01", "FRA", 1, a, 1);
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(append(f->store, &t, 9000, &r1), RSL_OK);
    assert_int_equal(append(f->store, &t, 9000, &r2), RSL_OK);
    assert_int_equal(agg_store_commit(f->store, NULL), RSL_OK);
    assert_int_equal(r1, AGG_APPEND_INSERTED);
    assert_int_equal(r2, AGG_APPEND_DUPLICATE);
    report_free(&t);
}

static void test_current_out_of_order_and_history(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const char *ind = "energy.oil_stock_days";
    /* seq 1: observed at 2000. */
    const struct test_measurement m1[] = {{ind, 1.0, "days", 2000, false}};
    /* seq 2 arrives later but was observed earlier (backfill): must not
     * replace the current value. */
    const struct test_measurement m2[] = {{ind, 2.0, "days", 1000, false}};
    /* seq 3: same observed time as seq 1, received later: wins the tie. */
    const struct test_measurement m3[] = {{ind, 3.0, "days", 2000, false}};
    /* seq 4: newest observation but excluded (e.g. wrong unit): stored in
     * history, never current. Plus a second indicator. */
    const struct test_measurement m4[] = {
        {ind, 9.0, "litres", 9000, true},
        {"comms.public_warning_reach_pct", 50.0, "pct", 1500, false},
    };
    /* Another nation, to see that pairs are independent. */
    const struct test_measurement m5[] = {{ind, 40.0, "days", 500, false}};

    append_one(f->store, "DEU-BMI-01", "DEU", 1, m1, 1, 10000, AGG_APPEND_INSERTED);
    append_one(f->store, "DEU-BMI-01", "DEU", 2, m2, 1, 11000, AGG_APPEND_INSERTED);

    struct rows rows;
    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 1);
    assert_true(rows.r[0].value == 1.0);

    append_one(f->store, "DEU-BMI-02", "DEU", 1, m3, 1, 12000, AGG_APPEND_INSERTED);
    append_one(f->store, "DEU-BMI-01", "DEU", 3, m4, 2, 13000, AGG_APPEND_INSERTED);
    append_one(f->store, "FRA-MI-01", "FRA", 1, m5, 1, 14000, AGG_APPEND_INSERTED);

    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 3);
    const struct row *r = find_row(&rows, "DEU", ind);
    assert_non_null(r);
    assert_true(r->value == 3.0);
    assert_string_equal(r->agent_id, "DEU-BMI-02");
    assert_int_equal(r->observed_at_ms, 2000);
    assert_int_equal(r->received_at_ms, 12000);
    r = find_row(&rows, "DEU", "comms.public_warning_reach_pct");
    assert_non_null(r);
    assert_true(r->value == 50.0);
    r = find_row(&rows, "FRA", ind);
    assert_non_null(r);
    assert_true(r->value == 40.0);
    /* Ordered by nation, then indicator. */
    assert_string_equal(rows.r[0].nation, "DEU");
    assert_string_equal(rows.r[0].indicator, "comms.public_warning_reach_pct");
    assert_string_equal(rows.r[2].nation, "FRA");

    /* History: at 1500 DEU's latest is the backfilled value observed at 1000. */
    latest(f->store, 1500, &rows);
    r = find_row(&rows, "DEU", ind);
    assert_non_null(r);
    assert_true(r->value == 2.0);
    assert_int_equal(r->observed_at_ms, 1000);
    r = find_row(&rows, "DEU", "comms.public_warning_reach_pct");
    assert_non_null(r);
    assert_true(r->value == 50.0);
    assert_non_null(find_row(&rows, "FRA", ind));
    assert_int_equal(rows.n, 3);

    /* At 999 only FRA (observed 500) existed. */
    latest(f->store, 999, &rows);
    assert_int_equal(rows.n, 1);
    assert_string_equal(rows.r[0].nation, "FRA");

    /* Before everything: nothing. */
    latest(f->store, 0, &rows);
    assert_int_equal(rows.n, 0);

    /* At 2000 the tie rule matches the current table's. */
    latest(f->store, 2000, &rows);
    r = find_row(&rows, "DEU", ind);
    assert_non_null(r);
    assert_true(r->value == 3.0);

    /* Far in the future (after the excluded 9000): same as "now" - the
     * excluded measurement never counts. */
    struct rows now;
    latest(f->store, -1, &now);
    latest(f->store, INT64_MAX, &rows);
    assert_int_equal(rows.n, now.n);
    for (size_t i = 0; i < rows.n; i++) {
        assert_string_equal(rows.r[i].nation, now.r[i].nation);
        assert_string_equal(rows.r[i].indicator, now.r[i].indicator);
        assert_true(rows.r[i].value == now.r[i].value);
        assert_int_equal(rows.r[i].observed_at_ms, now.r[i].observed_at_ms);
    }
}

static int stop_after_one(void *ctx, const struct agg_value *v)
{
    (void)v;
    int *calls = ctx;
    (*calls)++;
    return 42;
}

static void test_callback_stops_walk(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {
        {"a.one", 1.0, "", 100, false},
        {"a.two", 2.0, "", 100, false},
    };
    append_one(f->store, "DEU-BMI-01", "DEU", 1, ms, 2, 200, AGG_APPEND_INSERTED);
    int calls = 0;
    assert_int_equal(agg_store_latest(f->store, -1, stop_after_one, &calls, NULL), 42);
    assert_int_equal(calls, 1);
    calls = 0;
    assert_int_equal(agg_store_latest(f->store, 150, stop_after_one, &calls, NULL), 42);
    assert_int_equal(calls, 1);
}

static void test_rollback_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 5000, false}};
    struct test_report t;
    enum agg_append_result result;
    report_build(&t, "DEU-BMI-01", "DEU", 1, ms, 1);
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(append(f->store, &t, 6000, &result), RSL_OK);
    assert_int_equal(result, AGG_APPEND_INSERTED);
    agg_store_rollback(f->store);

    bool found = true;
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 1, &found, NULL, NULL), RSL_OK);
    assert_false(found);
    struct rows rows;
    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 0);
    latest(f->store, 10000, &rows);
    assert_int_equal(rows.n, 0);
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 0);
    assert_int_equal(stats.measurements, 0);

    /* The handle is usable again and the same sequence can be stored. */
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(append(f->store, &t, 6000, &result), RSL_OK);
    assert_int_equal(result, AGG_APPEND_INSERTED);
    assert_int_equal(agg_store_commit(f->store, NULL), RSL_OK);
    report_free(&t);
}

static void test_misuse_is_refused(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    struct rsl_error err;
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 5000, false}};
    struct test_report t;
    enum agg_append_result result;
    report_build(&t, "DEU-BMI-01", "DEU", 1, ms, 1);
    /* Append and commit outside a transaction. */
    rsl_error_clear(&err);
    assert_int_equal(append(f->store, &t, 6000, &result), RSL_EINVAL);
    assert_int_equal(agg_store_commit(f->store, &err), RSL_EINVAL);
    /* Nested begin. */
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(agg_store_begin(f->store, &err), RSL_EINVAL);
    /* Sequence out of the signed 64-bit range. */
    t.report.sequence = (uint64_t)INT64_MAX + 1;
    assert_int_equal(append(f->store, &t, 6000, &result), RSL_EINVAL);
    agg_store_rollback(f->store);
    report_free(&t);
}

static void test_persistence_and_read_only(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    struct agg_store *ro = NULL;

    /* A read-only handle cannot create a store. */
    rsl_error_clear(&err);
    assert_int_not_equal(agg_store_open(f->path, true, &ro, &err), RSL_OK);
    assert_null(ro);
    assert_non_null(strstr(err.text, f->path));

    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 5000, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, ms, 1, 6000, AGG_APPEND_INSERTED);

    /* A reader sees what the writer committed, while the writer is open. */
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, true, &ro, &err), RSL_OK);
    struct rows rows;
    latest(ro, -1, &rows);
    assert_int_equal(rows.n, 1);
    /* ...and cannot write. */
    assert_int_not_equal(agg_store_begin(ro, NULL), RSL_OK);
    /* Later commits by the writer are visible to the reader's next query. */
    append_one(f->store, "DEU-BMI-01", "DEU", 2, ms, 1, 7000, AGG_APPEND_INSERTED);
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(ro, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 2);
    agg_store_close(&ro);
    assert_null(ro);

    /* Close and reopen: everything is still there, schema not recreated. */
    agg_store_close(&f->store);
    open_store(f);
    bool found = false;
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 2, &found, NULL, NULL), RSL_OK);
    assert_true(found);
    latest(f->store, -1, &rows);
    assert_int_equal(rows.n, 1);
    assert_int_equal(rows.r[0].received_at_ms, 7000);
}

/* A write failure at commit (here: the file size limit, which fails
 * write(2) exactly like a full disk) must leave nothing of the batch
 * behind, and the same batch must go through once space is back. */
static void test_write_failure_rolls_back(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 1.0, "days", 100, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, ms, 1, 200, AGG_APPEND_INSERTED);

    /* A report with a large signed blob so the commit must write a lot. */
    struct test_report t;
    report_build(&t, "DEU-BMI-01", "DEU", 2, ms, 1);
    size_t big_len = 4u * 1024 * 1024;
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 1024 * 1024; /* below the blob: the write must fail */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);

    struct rsl_error err;
    enum agg_append_result result;
    struct agg_report_in in = {
        .agent_id = t.report.agent_id, .nation = t.report.nation,
        .sequence = t.report.sequence, .created_at_ms = 150, .received_at_ms = 300,
        .key_id = "00112233445566778899aabbccddeeff", .signed_bytes = big,
        .signed_len = big_len, .report_bytes = t.bytes, .report_len = t.len,
        .report = &t.report, .excluded = t.excluded,
    };
    rsl_error_clear(&err);
    int rc = agg_store_begin(f->store, &err);
    assert_int_equal(rc, RSL_OK);
    rc = agg_store_append(f->store, &in, &result, &err);
    if (rc == RSL_OK)
        rc = agg_store_commit(f->store, &err);
    assert_int_not_equal(rc, RSL_OK);
    print_message("expected failure: %s (%s)\n", err.text, rsl_strerror(rc));
    assert_non_null(strstr(err.text, f->path));
    agg_store_rollback(f->store);

    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);

    /* Nothing of the failed batch is visible; the earlier report is. */
    bool found = true;
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 2, &found, NULL, NULL), RSL_OK);
    assert_false(found);
    assert_int_equal(agg_store_lookup(f->store, "DEU-BMI-01", 1, &found, NULL, NULL), RSL_OK);
    assert_true(found);
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 1);

    /* The retry succeeds on the same handle. */
    assert_int_equal(agg_store_begin(f->store, &err), RSL_OK);
    assert_int_equal(agg_store_append(f->store, &in, &result, &err), RSL_OK);
    assert_int_equal(result, AGG_APPEND_INSERTED);
    assert_int_equal(agg_store_commit(f->store, &err), RSL_OK);
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 2);

    /* And the file is still sound. */
    agg_store_close(&f->store);
    open_store(f);
    free(big);
    report_free(&t);
}

/* Fill a store with enough rows to span many pages, then close it. */
static void make_populated_store(struct fixture *f)
{
    open_store(f);
    for (uint64_t seq = 1; seq <= 200; seq++) {
        const struct test_measurement ms[] = {
            {"energy.oil_stock_days", (double)seq, "days", (int64_t)seq * 10, false},
            {"comms.public_warning_reach_pct", 1.0, "pct", (int64_t)seq * 10, false},
        };
        append_one(f->store, "DEU-BMI-01", "DEU", seq, ms, 2, 100000, AGG_APPEND_INSERTED);
    }
    agg_store_close(&f->store);
}

static void overwrite(const char *path, off_t offset, size_t len)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    uint8_t *junk = malloc(len);
    assert_non_null(junk);
    for (size_t i = 0; i < len; i++)
        junk[i] = (uint8_t)(i * 131u + 17u);
    assert_int_equal(pwrite(fd, junk, len, offset), (ssize_t)len);
    free(junk);
    close(fd);
}

static void test_corrupt_pages_refused(void **state)
{
    struct fixture *f = *state;
    make_populated_store(f);
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    /* Everything was checkpointed into the main file on close. */
    assert_true(sb.st_size >= 8 * 4096);
    /* Garbage over pages 2.. (keeping the header page intact). */
    overwrite(f->path, 4096, (size_t)sb.st_size - 4096);

    struct rsl_error err;
    rsl_error_clear(&err);
    int rc = agg_store_open(f->path, false, &f->store, &err);
    assert_int_equal(rc, RSL_ECORRUPT);
    assert_null(f->store);
    assert_non_null(strstr(err.text, f->path));
}

static void test_corrupt_header_refused(void **state)
{
    struct fixture *f = *state;
    make_populated_store(f);
    overwrite(f->path, 0, 4096);
    struct rsl_error err;
    rsl_error_clear(&err);
    int rc = agg_store_open(f->path, false, &f->store, &err);
    assert_int_equal(rc, RSL_ECORRUPT);
    assert_null(f->store);
    assert_non_null(strstr(err.text, f->path));
    /* Read-only opening refuses it as well. */
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, true, &f->store, &err), RSL_ECORRUPT);
}

static void test_not_a_database(void **state)
{
    struct fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs("this is a text file, not a database\n", fp);
    fclose(fp);
    struct rsl_error err;
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, false, &f->store, &err), RSL_ECORRUPT);
    assert_non_null(strstr(err.text, f->path));
}

static void test_open_missing_folder(void **state)
{
    struct fixture *f = *state;
    char path[192];
    struct rsl_error err;
    snprintf(path, sizeof(path), "%s/no/such/folder/db", f->dir);
    rsl_error_clear(&err);
    assert_int_not_equal(agg_store_open(path, false, &f->store, &err), RSL_OK);
    assert_null(f->store);
    assert_non_null(strstr(err.text, path));
}

/* ---- issue 4: agents table, upgrade, audit walk, current check ----------- */

struct agent_rows {
    char id[4][RSL_AGENT_ID_MAX + 1];
    uint64_t last_sequence[4];
    int64_t clock_offset_ms[4];
    int64_t reports[4];
    size_t n;
};

static int collect_agent(void *ctx, const struct agg_agent_row *row)
{
    struct agent_rows *a = ctx;
    if (a->n >= 4)
        return -1;
    snprintf(a->id[a->n], sizeof(a->id[0]), "%s", row->agent_id);
    a->last_sequence[a->n] = row->last_sequence;
    a->clock_offset_ms[a->n] = row->clock_offset_ms;
    a->reports[a->n] = row->reports;
    a->n++;
    return 0;
}

/* Run one SQL statement on the file behind the store's back (a tamperer,
 * or an older version of the program). */
static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        print_error("sql: %s: %s\n", sql, msg != NULL ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    assert_int_equal(rc, SQLITE_OK);
}

static void test_agents_row_in_the_same_transaction(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 900, false}};
    struct test_report t;
    enum agg_append_result result;
    struct agent_rows a;

    /* created_at_ms is 1000 in every test report. */
    append_one(f->store, "DEU-BMI-01", "DEU", 5, ms, 1, 1500, AGG_APPEND_INSERTED);
    memset(&a, 0, sizeof(a));
    assert_int_equal(agg_store_agents(f->store, collect_agent, &a, NULL), RSL_OK);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.id[0], "DEU-BMI-01");
    assert_int_equal(a.last_sequence[0], 5);
    assert_int_equal(a.clock_offset_ms[0], 1000 - 1500);

    /* An older sequence received later: last_sequence keeps the highest,
     * the clock offset follows the latest receipt. */
    append_one(f->store, "DEU-BMI-01", "DEU", 3, ms, 1, 900, AGG_APPEND_INSERTED);
    append_one(f->store, "DEU-BMI-01", "DEU", 4, ms, 1, 2000, AGG_APPEND_INSERTED);
    memset(&a, 0, sizeof(a));
    assert_int_equal(agg_store_agents(f->store, collect_agent, &a, NULL), RSL_OK);
    assert_int_equal(a.last_sequence[0], 5);
    assert_int_equal(a.clock_offset_ms[0], 1000 - 2000);
    assert_int_equal(a.reports[0], 3);

    /* Rolled back with the report: the agents row is not ahead of it. */
    report_build(&t, "DEU-BMI-01", "DEU", 9, ms, 1);
    assert_int_equal(agg_store_begin(f->store, NULL), RSL_OK);
    assert_int_equal(append(f->store, &t, 3000, &result), RSL_OK);
    agg_store_rollback(f->store);
    report_free(&t);
    memset(&a, 0, sizeof(a));
    assert_int_equal(agg_store_agents(f->store, collect_agent, &a, NULL), RSL_OK);
    assert_int_equal(a.last_sequence[0], 5);
    assert_int_equal(a.reports[0], 3);
    assert_int_equal(a.clock_offset_ms[0], 1000 - 2000);
}

static void test_clock_offset_saturates(void **state)
{
    (void)state;
    assert_int_equal(agg_clock_offset_ms(1000, 400), 600);
    assert_int_equal(agg_clock_offset_ms(400, 1000), -600);
    assert_true(agg_clock_offset_ms(INT64_MAX, -5) == INT64_MAX);
    assert_true(agg_clock_offset_ms(INT64_MIN + 3, 10) == INT64_MIN);
    assert_true(agg_clock_offset_ms(INT64_MAX, INT64_MIN) == INT64_MAX);
    assert_true(agg_clock_offset_ms(INT64_MIN, INT64_MAX) == INT64_MIN);
}

struct problems {
    size_t n;
    char text[8][200];
};

static int problem_cb(void *ctx, const char *nation, const char *indicator, const char *problem)
{
    struct problems *p = ctx;
    if (p->n < 8)
        snprintf(p->text[p->n], sizeof(p->text[0]), "%s/%s: %s", nation, indicator, problem);
    p->n++;
    return 0;
}

static void check_current(struct fixture *f, struct problems *p)
{
    struct rsl_error err;
    memset(p, 0, sizeof(*p));
    rsl_error_clear(&err);
    int rc = agg_store_check_current(f->store, problem_cb, p, &err);
    if (rc != RSL_OK)
        print_error("check_current: %s\n", err.text);
    assert_int_equal(rc, RSL_OK);
}

/* A store as version 1 of the program left it: no clock_offset_ms, the
 * history index on (nation, indicator, ...) text and no pair column. The
 * writer upgrades it in place, keeping its data (and filling the pair key,
 * so queries by time find the old rows); a reader refuses it with a
 * message saying what to do. */
static void test_version_1_store_is_upgraded(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement ms[] = {{"energy.oil_stock_days", 90.0, "days", 900, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, ms, 1, 1500, AGG_APPEND_INSERTED);
    agg_store_close(&f->store);
    sql_exec(f->path, "BEGIN; DROP INDEX measurements_pair_latest; "
                      "ALTER TABLE measurements DROP COLUMN pair; "
                      "CREATE INDEX measurements_latest ON measurements (nation, indicator, "
                      "observed_at_ms, received_at_ms) WHERE excluded = 0; "
                      "CREATE INDEX measurements_report ON measurements (report_id, idx); "
                      "COMMIT; "
                      "BEGIN; CREATE TABLE agents_v1 (agent_id TEXT PRIMARY KEY, nation TEXT "
                      "NOT NULL, last_sequence INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, "
                      "reports INTEGER NOT NULL) WITHOUT ROWID; INSERT INTO agents_v1 SELECT "
                      "agent_id, nation, last_sequence, last_seen_ms, reports FROM agents; "
                      "DROP TABLE agents; ALTER TABLE agents_v1 RENAME TO agents; "
                      "PRAGMA user_version = 1; COMMIT;");

    struct rsl_error err;
    struct agg_store *ro = NULL;
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, true, &ro, &err), RSL_ESTORE);
    assert_null(ro);
    assert_non_null(strstr(err.text, "start the aggregator once to upgrade it"));

    open_store(f); /* the writer upgrades */
    struct agent_rows a;
    memset(&a, 0, sizeof(a));
    assert_int_equal(agg_store_agents(f->store, collect_agent, &a, NULL), RSL_OK);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.last_sequence[0], 1);
    assert_int_equal(a.clock_offset_ms[0], 0); /* unknown before the upgrade */
    /* The row from before the upgrade is found by time (pair key filled). */
    struct rows l;
    latest(f->store, 1000, &l);
    assert_int_equal(l.n, 1);
    assert_true(l.r[0].value == 90.0);
    append_one(f->store, "DEU-BMI-01", "DEU", 2, ms, 1, 1700, AGG_APPEND_INSERTED);
    memset(&a, 0, sizeof(a));
    assert_int_equal(agg_store_agents(f->store, collect_agent, &a, NULL), RSL_OK);
    assert_int_equal(a.clock_offset_ms[0], 1000 - 1700);
    struct problems p;
    check_current(f, &p);
    assert_int_equal(p.n, 0);
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, true, &ro, &err), RSL_OK);
    agg_store_close(&ro);

    /* A version from the future is refused, by writer and reader. */
    agg_store_close(&f->store);
    sql_exec(f->path, "PRAGMA user_version = 99");
    rsl_error_clear(&err);
    assert_int_equal(agg_store_open(f->path, false, &f->store, &err), RSL_ESTORE);
    assert_non_null(strstr(err.text, "schema version 99"));
}

/* What the audit walk hands out, copied. */
struct walked {
    size_t n;
    int64_t ids[8];
    uint64_t sequences[8];
    size_t rows[8];
    bool truncated[8];
    double first_value[8];
    size_t signed_len[8];
    uint8_t signed_first[8];
    size_t digest_len[8];
    int stop_after;
};

static int walk_cb(void *ctx, const struct agg_stored_report *r)
{
    struct walked *w = ctx;
    if (w->n >= 8)
        return -1;
    w->ids[w->n] = r->id;
    w->sequences[w->n] = r->sequence;
    w->rows[w->n] = r->n_measurements;
    w->truncated[w->n] = r->measurements_truncated;
    w->first_value[w->n] = r->n_measurements > 0 ? r->measurements[0].value : -1;
    w->signed_len[w->n] = r->signed_len;
    w->signed_first[w->n] = r->signed_len > 0 ? r->signed_bytes[0] : 0;
    w->digest_len[w->n] = r->digest_len;
    /* Strings must be whole and in order. */
    for (size_t i = 0; i < r->n_measurements; i++) {
        assert_int_equal(r->measurements[i].idx, (int64_t)i);
        assert_string_equal(r->measurements[i].agent_id, r->agent_id);
        assert_string_equal(r->measurements[i].nation, r->nation);
        assert_string_equal(r->measurements[i].source, "test");
    }
    w->n++;
    return w->stop_after > 0 && (int)w->n >= w->stop_after ? 42 : 0;
}

static void test_audit_walk(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement two[] = {
        {"energy.oil_stock_days", 90.0, "days", 900, false},
        {"bogus.indicator", 1.0, "", 900, true},
    };
    const struct test_measurement one[] = {{"energy.oil_stock_days", 77.0, "days", 950, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, two, 2, 1500, AGG_APPEND_INSERTED);
    append_one(f->store, "FRA-SGDSN-01", "FRA", 7, one, 1, 1600, AGG_APPEND_INSERTED);

    struct walked w;
    memset(&w, 0, sizeof(w));
    assert_int_equal(agg_store_reports(f->store, walk_cb, &w, NULL), RSL_OK);
    assert_int_equal(w.n, 2);
    assert_true(w.ids[0] < w.ids[1]);
    assert_int_equal(w.sequences[0], 1);
    assert_int_equal(w.rows[0], 2);     /* excluded measurements are walked too */
    assert_int_equal(w.rows[1], 1);
    assert_true(w.first_value[1] == 77.0);
    assert_int_equal(w.signed_len[0], 64);
    assert_int_equal(w.signed_first[0], 1); /* report_build: sequence & 0xff */
    assert_int_equal(w.digest_len[0], 32);
    assert_false(w.truncated[0]);

    /* A non-zero return stops the walk and is returned. */
    memset(&w, 0, sizeof(w));
    w.stop_after = 1;
    assert_int_equal(agg_store_reports(f->store, walk_cb, &w, NULL), 42);
    assert_int_equal(w.n, 1);

    /* Also on a read-only handle, as resilience-ctl audit uses it. */
    struct agg_store *ro = NULL;
    assert_int_equal(agg_store_open(f->path, true, &ro, NULL), RSL_OK);
    memset(&w, 0, sizeof(w));
    assert_int_equal(agg_store_reports(ro, walk_cb, &w, NULL), RSL_OK);
    assert_int_equal(w.n, 2);
    agg_store_close(&ro);
    assert_int_equal(agg_store_reports(NULL, walk_cb, &w, NULL), RSL_EINVAL);
    assert_int_equal(agg_store_reports(f->store, NULL, &w, NULL), RSL_EINVAL);
}

static void test_check_current_finds_tampering(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement old[] = {{"energy.oil_stock_days", 90.0, "days", 900, false}};
    const struct test_measurement new[] = {{"energy.oil_stock_days", 80.0, "days", 950, false}};
    const struct test_measurement fra[] = {{"energy.oil_stock_days", 70.0, "days", 950, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, old, 1, 1500, AGG_APPEND_INSERTED);
    append_one(f->store, "DEU-BMI-01", "DEU", 2, new, 1, 1600, AGG_APPEND_INSERTED);
    append_one(f->store, "FRA-SGDSN-01", "FRA", 1, fra, 1, 1600, AGG_APPEND_INSERTED);
    struct problems p;
    check_current(f, &p);
    assert_int_equal(p.n, 0);
    agg_store_close(&f->store);

    /* The present pointed back at the older observation. */
    sql_exec(f->path, "UPDATE current SET measurement_id = 1, value = 90.0, observed_at_ms = "
                      "900, received_at_ms = 1500 WHERE nation = 'DEU'");
    open_store(f);
    check_current(f, &p);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.text[0], "DEU/energy.oil_stock_days: a later observation exists");
    agg_store_close(&f->store);

    /* A value changed in `current` only; a pair missing from it. */
    sql_exec(f->path, "UPDATE current SET measurement_id = 2, value = 1000, observed_at_ms = 950, "
                      "received_at_ms = 1600 WHERE nation = 'DEU'; "
                      "DELETE FROM current WHERE nation = 'FRA'");
    open_store(f);
    check_current(f, &p);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.text[0], "DEU/energy.oil_stock_days: differs from its measurement row");
    assert_string_equal(p.text[1],
                        "FRA/energy.oil_stock_days: aggregated observations but no current row");
    agg_store_close(&f->store);

    /* The measurement behind a current row removed. */
    sql_exec(f->path, "PRAGMA foreign_keys = OFF; UPDATE current SET value = 80.0 WHERE "
                      "nation = 'DEU'; DELETE FROM measurements WHERE id = 2");
    open_store(f);
    check_current(f, &p);
    assert_true(p.n >= 1);
    assert_string_equal(p.text[0], "DEU/energy.oil_stock_days: its measurement row is missing");
    agg_store_close(&f->store);

    /* A history row whose pair key is not its (nation, indicator)'s: the
     * index would hide it from queries by time. */
    sql_exec(f->path, "UPDATE measurements SET pair = pair + 1 WHERE nation = 'FRA'");
    open_store(f);
    check_current(f, &p);
    bool found = false;
    for (size_t i = 0; i < p.n && i < 8; i++)
        found = found || strcmp(p.text[i], "FRA/energy.oil_stock_days: history rows with a "
                                           "wrong pair key (hidden from queries by time)") == 0;
    assert_true(found);
}

/* Two (nation, indicator) pairs with the same pair id (found by search:
 * FNV-1a of "DEU" and these two names collide in 31 bits). Queries by
 * time must still answer each pair with its own rows. */
static void test_pair_id_collision(void **state)
{
    struct fixture *f = *state;
    open_store(f);
    const struct test_measurement a[] = {{"energy.c512789", 1.0, "days", 100, false}};
    const struct test_measurement b[] = {{"energy.c749192", 2.0, "days", 200, false}};
    append_one(f->store, "DEU-BMI-01", "DEU", 1, a, 1, 1000, AGG_APPEND_INSERTED);
    append_one(f->store, "DEU-BMI-01", "DEU", 2, b, 1, 1001, AGG_APPEND_INSERTED);
    /* They do share one id (else this test tests nothing). */
    {
        sqlite3 *db = NULL;
        sqlite3_stmt *q = NULL;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), count(DISTINCT pair) FROM "
                                                "measurements", -1, &q, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), 2);
        assert_int_equal(sqlite3_column_int(q, 1), 1);
        sqlite3_finalize(q);
        sqlite3_close(db);
    }

    struct rows r;
    latest(f->store, 250, &r); /* b's row is the newest under the shared id */
    assert_int_equal(r.n, 2);
    const struct row *ra = find_row(&r, "DEU", "energy.c512789");
    const struct row *rb = find_row(&r, "DEU", "energy.c749192");
    assert_non_null(ra);
    assert_non_null(rb);
    assert_true(ra->value == 1.0);
    assert_true(rb->value == 2.0);

    latest(f->store, 150, &r); /* only a has a value then */
    assert_int_equal(r.n, 1);
    assert_string_equal(r.r[0].indicator, "energy.c512789");
    assert_true(r.r[0].value == 1.0);

    latest(f->store, 50, &r); /* neither */
    assert_int_equal(r.n, 0);

    struct problems p;
    check_current(f, &p);
    assert_int_equal(p.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sqlite_memory_statistics_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_and_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_current_out_of_order_and_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_stops_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misuse_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence_and_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_pages_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_header_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_missing_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agents_row_in_the_same_transaction, setup, teardown),
        cmocka_unit_test(test_clock_offset_saturates),
        cmocka_unit_test_setup_teardown(test_version_1_store_is_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_current_finds_tampering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pair_id_collision, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
