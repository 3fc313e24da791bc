/*
 * test_agent_limits.c - the spool's bounds (spool_max_mb, spool_max_age,
 * spool_full_policy) and its persisted drop counters.
 *
 * With a byte limit of ten entries: drop_oldest drops exactly the lowest
 * sequences needed to make room, calls the drop callback for each, and
 * the dropped_oldest counter equals the number of entries lost, also
 * after reopening; refuse_new refuses (RSL_ENOSPC) and counts each refusal
 * while the old entries stay; an entry larger than the whole limit is
 * refused under either policy. Entries whose mtime is older than the age
 * limit are dropped by agent_spool_enforce and counted as expired; reports
 * pushed over the limit by another writer are trimmed by enforce.
 *
 * Crash safety of drops: a counters file that names entries being dropped
 * (a crash between counting and unlinking) makes the next open remove them
 * without counting them again. The counters parser gets hostile input; a
 * damaged counters file is set aside and never stops the spool from
 * opening.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/spool.h"
#include "rsl/log.h"
#include "rsl/util.h"

#define PAYLOAD 436 /* + 64-byte header = 500 bytes an entry */
#define ENTRY 500

struct lim_state {
    char dir[64];
    uint64_t dropped[256];
    size_t n_dropped;
};

static int setup(void **state)
{
    struct lim_state *s = calloc(1, sizeof(*s));
    if (s == NULL || rsl_test_mkdtemp(s->dir, sizeof(s->dir), "limits") != 0)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct lim_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void on_drop(void *ctx, uint64_t sequence)
{
    struct lim_state *s = ctx;
    assert_true(s->n_dropped < 256);
    s->dropped[s->n_dropped++] = sequence;
}

static bool pending(const struct lim_state *s, uint64_t seq)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/pending/%020" PRIu64 ".rpt", s->dir, seq);
    return access(path, F_OK) == 0;
}

static char *read_text(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rsl_file_read_all(path, 1 << 16, &buf, &len, NULL) != RSL_OK)
        return NULL;
    return (char *)buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static struct agent_spool *open_limited(struct lim_state *s, uint64_t max_bytes, int64_t max_age_ms,
                                        enum agent_spool_policy policy)
{
    struct agent_spool *sp = NULL;
    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_spool_open(s->dir, &sp, &err) != RSL_OK)
        fail_msg("%s", err.text);
    struct agent_spool_limits lim = {
        .max_bytes = max_bytes, .max_age_ms = max_age_ms, .policy = policy};
    agent_spool_set_limits(sp, &lim);
    agent_spool_set_drop_callback(sp, on_drop, s);
    return sp;
}

/* What the daemon does per report: admit, then append. */
static int admit_append(struct agent_spool *sp, uint64_t seq)
{
    uint8_t payload[PAYLOAD];
    memset(payload, (int)(seq & 0xff), sizeof(payload));
    int rc = agent_spool_admit(sp, sizeof(payload), "test report", NULL);
    if (rc != RSL_OK)
        return rc;
    return agent_spool_append(sp, seq, payload, sizeof(payload), NULL);
}

static void test_drop_oldest(void **state)
{
    struct lim_state *s = *state;
    struct agent_spool *sp = open_limited(s, 10 * ENTRY, 0, AGENT_SPOOL_DROP_OLDEST);
    assert_int_equal(agent_spool_entry_bytes(sp, PAYLOAD), ENTRY);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 10);
    assert_int_equal(agent_spool_bytes(sp), 10 * ENTRY);
    assert_int_equal(s->n_dropped, 0);

    /* Full: each new report pushes out exactly the oldest. */
    for (uint64_t seq = 11; seq <= 35; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 10);
    assert_int_equal(agent_spool_bytes(sp), 10 * ENTRY);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 25);
    assert_int_equal(s->n_dropped, 25);
    for (uint64_t seq = 1; seq <= 25; seq++) {
        assert_int_equal(s->dropped[seq - 1], seq);
        assert_false(pending(s, seq));
    }
    for (uint64_t seq = 26; seq <= 35; seq++)
        assert_true(pending(s, seq));
    /* A sequence gap does not confuse "oldest": 36 and 100 go in, 26 and
     * 27 go out. */
    assert_int_equal(admit_append(sp, 100), RSL_OK);
    assert_false(pending(s, 26));
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 26);
    agent_spool_close(&sp);

    /* Persisted: the count survives a restart, the list of the last drop
     * is gone from the file once the entries are. */
    char path[160];
    snprintf(path, sizeof(path), "%s/counters", s->dir);
    char *text = read_text(path);
    assert_non_null(text);
    assert_non_null(strstr(text, "dropped_oldest 26\n"));
    free(text);
    sp = open_limited(s, 10 * ENTRY, 0, AGENT_SPOOL_DROP_OLDEST);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 26);
    assert_int_equal(agent_spool_counters(sp)->refused, 0);
    assert_int_equal(agent_spool_count(sp), 10);
    assert_int_equal(agent_spool_bytes(sp), 10 * ENTRY);

    /* A report bigger than the whole limit cannot make room by dropping:
     * refused and counted, nothing dropped for it. */
    size_t before = s->n_dropped;
    struct rsl_error err;
    rsl_error_clear(&err);
    assert_int_equal(agent_spool_admit(sp, 20 * ENTRY, "huge report", &err), RSL_ENOSPC);
    assert_int_equal(s->n_dropped, before);
    assert_int_equal(agent_spool_counters(sp)->refused, 1);
    agent_spool_close(&sp);
}

static void test_refuse_new(void **state)
{
    struct lim_state *s = *state;
    struct agent_spool *sp = open_limited(s, 10 * ENTRY, 0, AGENT_SPOOL_REFUSE_NEW);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    unsigned refused = 0;
    for (uint64_t seq = 11; seq <= 30; seq++) {
        struct rsl_error err;
        rsl_error_clear(&err);
        uint8_t payload[PAYLOAD] = {0};
        int rc = agent_spool_admit(sp, sizeof(payload), "report", &err);
        assert_int_equal(rc, RSL_ENOSPC);
        assert_non_null(strstr(err.text, "spool full"));
        refused++;
    }
    assert_int_equal(agent_spool_counters(sp)->refused, refused);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 0);
    assert_int_equal(s->n_dropped, 0);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_true(pending(s, seq)); /* the old ones stay */
    /* Room again after acks. */
    assert_int_equal(agent_spool_remove(sp, 1, NULL), RSL_OK);
    assert_int_equal(agent_spool_sync(sp, NULL), RSL_OK);
    assert_int_equal(admit_append(sp, 31), RSL_OK);
    agent_spool_close(&sp);
    sp = open_limited(s, 10 * ENTRY, 0, AGENT_SPOOL_REFUSE_NEW);
    assert_int_equal(agent_spool_counters(sp)->refused, 20);
    /* Losses before the spool (too big, disk full) count as refused too. */
    assert_int_equal(agent_spool_count_refused(sp, 2, NULL), RSL_OK);
    assert_int_equal(agent_spool_counters(sp)->refused, 22);
    agent_spool_close(&sp);
}

static void set_age(const struct lim_state *s, uint64_t seq, int64_t age_s)
{
    char path[160];
    struct timespec ts[2];
    snprintf(path, sizeof(path), "%s/pending/%020" PRIu64 ".rpt", s->dir, seq);
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= age_s;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_age_limit(void **state)
{
    struct lim_state *s = *state;
    struct agent_spool *sp = open_limited(s, 0, 3600 * 1000, AGENT_SPOOL_DROP_OLDEST);
    for (uint64_t seq = 1; seq <= 200; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    /* 1..150 written two hours ago (more than one drop batch), 151.. now. */
    for (uint64_t seq = 1; seq <= 150; seq++)
        set_age(s, seq, 7200);
    assert_int_equal(agent_spool_enforce(sp, rsl_now_ms(), NULL), RSL_OK);
    assert_int_equal(agent_spool_counters(sp)->expired, 150);
    assert_int_equal(s->n_dropped, 150);
    assert_int_equal(agent_spool_count(sp), 50);
    assert_false(pending(s, 150));
    assert_true(pending(s, 151));
    uint64_t oldest = 0;
    int64_t mtime = 0;
    assert_int_equal(agent_spool_oldest(sp, &oldest, &mtime, NULL), RSL_OK);
    assert_int_equal(oldest, 151);
    assert_true(mtime > rsl_now_ms() - 600000);
    /* Nothing more is old enough: enforce is a no-op. */
    assert_int_equal(agent_spool_enforce(sp, rsl_now_ms(), NULL), RSL_OK);
    assert_int_equal(agent_spool_counters(sp)->expired, 150);
    agent_spool_close(&sp);
}

/* Entries other writers added push the spool over its limit: enforce
 * trims it back under drop_oldest, leaves it under refuse_new. */
static void test_enforce_trims_over_limit(void **state)
{
    struct lim_state *s = *state;
    struct agent_spool *sp = open_limited(s, 0, 0, AGENT_SPOOL_DROP_OLDEST);
    for (uint64_t seq = 1; seq <= 15; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    struct agent_spool_limits lim = {.max_bytes = 10 * ENTRY, .policy = AGENT_SPOOL_REFUSE_NEW};
    agent_spool_set_limits(sp, &lim);
    assert_int_equal(agent_spool_enforce(sp, rsl_now_ms(), NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 15);
    lim.policy = AGENT_SPOOL_DROP_OLDEST;
    agent_spool_set_limits(sp, &lim);
    assert_int_equal(agent_spool_enforce(sp, rsl_now_ms(), NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 10);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 5);
    assert_false(pending(s, 5));
    assert_true(pending(s, 6));
    agent_spool_close(&sp);
}

/* A crash after the counters said "dropping 3 4" but before the unlinks:
 * the next open removes them, counting nothing twice. */
static void test_interrupted_drop_is_finished(void **state)
{
    struct lim_state *s = *state;
    char path[160];
    struct agent_spool *sp = open_limited(s, 0, 0, AGENT_SPOOL_DROP_OLDEST);
    for (uint64_t seq = 1; seq <= 5; seq++)
        assert_int_equal(admit_append(sp, seq), RSL_OK);
    agent_spool_close(&sp);
    snprintf(path, sizeof(path), "%s/counters", s->dir);
    write_text(path, "dropped_oldest 7\nexpired 1\nrefused 2\ndropping 3 4\n");

    sp = open_limited(s, 0, 0, AGENT_SPOOL_DROP_OLDEST);
    assert_int_equal(agent_spool_count(sp), 3);
    assert_false(pending(s, 3));
    assert_false(pending(s, 4));
    assert_true(pending(s, 5));
    const struct agent_spool_counters *c = agent_spool_counters(sp);
    assert_int_equal(c->dropped_oldest, 7);
    assert_int_equal(c->expired, 1);
    assert_int_equal(c->refused, 2);
    agent_spool_close(&sp);
    char *text = read_text(path);
    assert_non_null(text);
    assert_null(strstr(text, "dropping"));
    free(text);
}

static void test_counters_parse_hostile(void **state)
{
    (void)state;
    struct agent_spool_counters c;
    uint64_t dropping[4];
    size_t nd = 0;
    struct rsl_error err;
    const char *good = "# comment\n\ndropped_oldest 5\nexpired\t6\nrefused 18446744073709551615\n"
                       "dropping 1 2 3\n";
    assert_int_equal(
        agent_spool_counters_parse(good, strlen(good), "c", &c, dropping, 4, &nd, NULL), RSL_OK);
    assert_int_equal(c.dropped_oldest, 5);
    assert_int_equal(c.expired, 6);
    assert_true(c.refused == UINT64_MAX);
    assert_int_equal(nd, 3);
    assert_int_equal(dropping[2], 3);
    /* Empty file: all zero. */
    assert_int_equal(agent_spool_counters_parse("", 0, "c", &c, dropping, 4, &nd, NULL), RSL_OK);
    assert_int_equal(c.dropped_oldest + c.expired + c.refused, 0);

    static const struct {
        const char *text;
        const char *needle;
    } bad[] = {
        {"dropped_oldest -1\n", "c:1: '-1' is not a count"},
        {"dropped_oldest +1\n", "is not a count"},
        {"dropped_oldest 1x\n", "is not a count"},
        {"dropped_oldest 0x10\n", "is not a count"},
        {"dropped_oldest 18446744073709551616\n", "is not a count"},
        {"dropped_oldest 99999999999999999999999\n", "is not a count"},
        {"dropped_oldest 1 2\n", "takes one count"},
        {"dropped_oldest\n", "has no value"},
        {"expired 1\nexpired 2\n", "c:2: duplicate key 'expired'"},
        {"dropped 1\n", "unknown key 'dropped'"},
        {"\x01\x02 1\n", "unknown key '?"
                         "?'"},
        {"dropping 0\n", "out of range"},
        {"dropping 9223372036854775808\n", "out of range"},
        {"dropping 1 2 3 4 5\n", "more than 4 sequences"},
        {"refused 1\n\n\nrefused\x7f 1\n", "c:4: unknown key"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rsl_error_clear(&err);
        c.refused = 77;
        if (agent_spool_counters_parse(bad[i].text, strlen(bad[i].text), "c", &c, dropping, 4, &nd,
                                       &err) == RSL_OK)
            fail_msg("accepted %s", bad[i].text);
        if (strstr(err.text, bad[i].needle) == NULL)
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].text, err.text, bad[i].needle);
        assert_int_equal(c.refused, 0); /* cleared on error */
        assert_int_equal(nd, 0);
    }
    /* A NUL byte, an oversized file. */
    assert_int_equal(
        agent_spool_counters_parse("refused 1\0\n", 11, "c", &c, dropping, 4, &nd, NULL),
        RSL_EPARSE);
    char *big = malloc(AGENT_SPOOL_COUNTERS_MAX + 2);
    assert_non_null(big);
    memset(big, '#', AGENT_SPOOL_COUNTERS_MAX + 1);
    assert_int_equal(agent_spool_counters_parse(big, AGENT_SPOOL_COUNTERS_MAX + 1, "c", &c,
                                                dropping, 4, &nd, NULL),
                     RSL_ETOOBIG);
    free(big);
}

/* A damaged counters file never keeps the spool from opening: it is set
 * aside (counters.bad), counting restarts at 0, delivery goes on. */
static void test_damaged_counters_set_aside(void **state)
{
    struct lim_state *s = *state;
    char path[160];
    char aside[170];
    snprintf(path, sizeof(path), "%s/counters", s->dir);
    snprintf(aside, sizeof(aside), "%s/counters.bad", s->dir);
    assert_int_equal(mkdir(s->dir, 0700) == 0 || access(s->dir, F_OK) == 0, 1);
    write_text(path, "dropped_oldest lots\n");
    struct agent_spool *sp = open_limited(s, 10 * ENTRY, 0, AGENT_SPOOL_REFUSE_NEW);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 0);
    assert_int_equal(access(aside, F_OK), 0);
    assert_int_equal(admit_append(sp, 1), RSL_OK);
    agent_spool_close(&sp);
}

int main(void)
{
    rsl_log_init("test_agent_limits", RSL_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_age_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enforce_trims_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_drop_is_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters_parse_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_counters_set_aside, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
