/*
 * test_outbox.c - the partner-release outbox (aggregator/store_outbox.c)
 * on a real SQLite file: order, delivery marks, the outbox_max drop (counted,
 * oldest first), pruning of delivered releases, the instance id, and a
 * read-only handle on a store whose release tables do not exist yet.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "aggregator/store.h"
#include "aggregator/store_outbox.h"
#include "testutil.h"

struct fixture {
    char dir[128];
    char path[256];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct agg_store *st = NULL;
    struct rsl_error err = {0};
    if (fx == NULL || rsl_test_mkdtemp(fx->dir, sizeof(fx->dir), "outbox") != 0)
        return -1;
    snprintf(fx->path, sizeof(fx->path), "%s/store.db", fx->dir);
    /* The report store creates and checks the file, as at start-up. */
    if (agg_store_open(fx->path, false, &st, &err) != RSL_OK)
        return -1;
    agg_store_close(&st);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    rsl_test_rmtree(fx->dir);
    free(fx);
    return 0;
}

static void append(struct agg_outbox *ob, const char *partner, int64_t seq, bool pushed,
                   int64_t outbox_max, int64_t *dropped)
{
    struct agg_release_row row;
    char jws[64];
    struct rsl_error err = {0};
    memset(&row, 0, sizeof(row));
    snprintf(row.partner, sizeof(row.partner), "%s", partner);
    row.seq = seq;
    snprintf(row.release_id, sizeof(row.release_id), "%s-test-%lld", partner, (long long)seq);
    row.generated_at_ms = 1000 * seq;
    memset(row.digest, (int)seq, sizeof(row.digest));
    snprintf(jws, sizeof(jws), "h.p%lld.s", (long long)seq);
    row.jws = jws;
    row.jws_len = strlen(jws);
    assert_int_equal(agg_outbox_append(ob, &row, pushed, outbox_max, dropped, &err), RSL_OK);
}

static void test_read_only_before_tables_exist(void **state)
{
    struct fixture *fx = *state;
    struct agg_outbox *ro = NULL;
    struct agg_release_row row;
    bool found = true;
    struct rsl_error err = {0};
    memset(&row, 0, sizeof(row));
    assert_int_equal(agg_outbox_open(fx->path, true, &ro, &err), RSL_OK);
    assert_int_equal(agg_outbox_last(ro, "EU", &row, &found, &err), RSL_OK);
    assert_false(found);
    agg_outbox_close(&ro);
    assert_null(ro);
    agg_outbox_close(&ro); /* NULL-safe */
}

static void test_order_delivery_and_drop(void **state)
{
    struct fixture *fx = *state;
    struct agg_outbox *ob = NULL;
    struct agg_release_row row;
    struct rsl_error err = {0};
    int64_t dropped = 0, count = 0, oldest = 0;
    bool found = false;
    char id1[17], id2[17];
    memset(&row, 0, sizeof(row));
    assert_int_equal(agg_outbox_open(fx->path, false, &ob, &err), RSL_OK);
    assert_int_equal(agg_outbox_instance(ob, id1, &err), RSL_OK);
    assert_int_equal(strlen(id1), 16);
    assert_int_equal(agg_outbox_instance(ob, id2, &err), RSL_OK);
    assert_string_equal(id1, id2); /* made once per store file */

    for (int64_t s = 1; s <= 3; s++) {
        append(ob, "EU", s, true, 3, &dropped);
        assert_int_equal(dropped, 0);
    }
    /* Other partners' releases never mix in. */
    append(ob, "UA", 1, true, 3, &dropped);
    assert_int_equal(agg_outbox_next(ob, "EU", 0, &row, &found, &err), RSL_OK);
    assert_true(found);
    assert_int_equal(row.seq, 1);
    assert_string_equal(row.release_id, "EU-test-1");
    assert_string_equal(row.jws, "h.p1.s");
    assert_int_equal(row.delivered_at_ms, 0);
    assert_int_equal(agg_outbox_mark_delivered(ob, "EU", 1, 5555, &err), RSL_OK);
    assert_int_equal(agg_outbox_next(ob, "EU", 0, &row, &found, &err), RSL_OK);
    assert_int_equal(row.seq, 2);
    assert_int_equal(agg_outbox_pending(ob, "EU", &count, &oldest, &err), RSL_OK);
    assert_int_equal(count, 2);
    assert_int_equal(oldest, 2000);

    /* Over outbox_max = 3: the oldest undelivered go first, and are counted. */
    append(ob, "EU", 4, true, 3, &dropped);
    assert_int_equal(dropped, 0);
    append(ob, "EU", 5, true, 3, &dropped);
    assert_int_equal(dropped, 1);
    assert_int_equal(agg_outbox_next(ob, "EU", 0, &row, &found, &err), RSL_OK);
    assert_int_equal(row.seq, 3);
    assert_int_equal(agg_outbox_pending(ob, "EU", &count, &oldest, &err), RSL_OK);
    assert_int_equal(count, 3);
    /* after_seq skips. */
    assert_int_equal(agg_outbox_next(ob, "EU", 4, &row, &found, &err), RSL_OK);
    assert_int_equal(row.seq, 5);
    assert_int_equal(agg_outbox_next(ob, "EU", 5, &row, &found, &err), RSL_OK);
    assert_false(found);
    /* Marking a dropped release is not an error. */
    assert_int_equal(agg_outbox_mark_delivered(ob, "EU", 2, 6666, &err), RSL_OK);
    assert_int_equal(agg_outbox_last(ob, "EU", &row, &found, &err), RSL_OK);
    assert_true(found);
    assert_int_equal(row.seq, 5);
    agg_release_row_clear(&row);
    agg_outbox_close(&ob);

    /* It is all on disk: a new handle sees the same. */
    assert_int_equal(agg_outbox_open(fx->path, false, &ob, &err), RSL_OK);
    assert_int_equal(agg_outbox_instance(ob, id2, &err), RSL_OK);
    assert_string_equal(id1, id2);
    assert_int_equal(agg_outbox_pending(ob, "EU", &count, &oldest, &err), RSL_OK);
    assert_int_equal(count, 3);
    /* A duplicate (partner, seq) is refused, nothing half-written. */
    struct agg_release_row dup;
    memset(&dup, 0, sizeof(dup));
    snprintf(dup.partner, sizeof(dup.partner), "EU");
    dup.seq = 5;
    snprintf(dup.release_id, sizeof(dup.release_id), "EU-other-5");
    dup.jws = (char *)(uintptr_t)"x.y.z";
    dup.jws_len = 5;
    assert_int_not_equal(agg_outbox_append(ob, &dup, true, 10, &dropped, &err), RSL_OK);
    assert_non_null(strstr(err.text, "releases"));
    assert_int_equal(agg_outbox_pending(ob, "EU", &count, &oldest, &err), RSL_OK);
    assert_int_equal(count, 3);
    agg_outbox_close(&ob);
}

/* Pull-only partners: published at once, the newest 100 kept. */
static void test_pull_only_pruning(void **state)
{
    struct fixture *fx = *state;
    struct agg_outbox *ob = NULL;
    struct agg_release_row row;
    struct rsl_error err = {0};
    int64_t dropped = 0, count = 0, oldest = 0;
    bool found = false;
    memset(&row, 0, sizeof(row));
    assert_int_equal(agg_outbox_open(fx->path, false, &ob, &err), RSL_OK);
    for (int64_t s = 1; s <= AGG_OUTBOX_KEEP_DELIVERED + 20; s++)
        append(ob, "NATO", s, false, 5, &dropped);
    assert_int_equal(dropped, 0);
    assert_int_equal(agg_outbox_pending(ob, "NATO", &count, &oldest, &err), RSL_OK);
    assert_int_equal(count, 0);
    assert_int_equal(agg_outbox_next(ob, "NATO", 0, &row, &found, &err), RSL_OK);
    assert_false(found);
    assert_int_equal(agg_outbox_last(ob, "NATO", &row, &found, &err), RSL_OK);
    assert_int_equal(row.seq, AGG_OUTBOX_KEEP_DELIVERED + 20);
    assert_int_equal(row.delivered_at_ms, row.generated_at_ms);
    agg_release_row_clear(&row);
    agg_outbox_close(&ob);

    /* Exactly the newest AGG_OUTBOX_KEEP_DELIVERED remain. */
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), min(seq), max(seq) FROM releases "
                                        "WHERE partner = 'NATO'", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), AGG_OUTBOX_KEEP_DELIVERED);
    assert_int_equal(sqlite3_column_int64(q, 1), 21);
    assert_int_equal(sqlite3_column_int64(q, 2), AGG_OUTBOX_KEEP_DELIVERED + 20);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_only_before_tables_exist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_delivery_and_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pull_only_pruning, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
