/*
 * test_seq.c - the agent's sequence counter: starts at 1, persists before a
 * number is used, never repeats across reopen (including "kill -9", i.e. a
 * second open while the first was never closed), refuses a damaged file,
 * and hands out nothing when it cannot persist. Reserved blocks: one
 * durable write per block, never reused by another opener, given back at a
 * clean stop only when nobody moved past them. Two processes (a daemon
 * with blocks and a submit taking one at a time) hammering the same file
 * through the flock never get the same number.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rsl/util.h"
#include "agent/seq.h"

struct seq_state {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct seq_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-seq-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    snprintf(s->path, sizeof(s->path), "%s/sequence", s->dir);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct seq_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static uint64_t file_value(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t v = 0;
    assert_int_equal(rsl_file_read_all(path, 64, &buf, &len, NULL), RSL_OK);
    char *text = rsl_trim((char *)buf);
    assert_int_equal(rsl_parse_uint64(text, &v), RSL_OK);
    free(buf);
    return v;
}

static void test_fresh_starts_at_one(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *seq = NULL;
    uint64_t n = 0;
    assert_int_equal(agent_seq_open(s->path, &seq, NULL), RSL_OK);
    assert_int_equal(agent_seq_peek(seq), 1);
    /* Nothing is written until a number is taken. */
    assert_int_equal(access(s->path, F_OK), -1);
    assert_int_equal(agent_seq_take(seq, &n, NULL), RSL_OK);
    assert_int_equal(n, 1);
    /* The file already holds the next free number. */
    assert_int_equal(file_value(s->path), 2);
    assert_int_equal(agent_seq_take(seq, &n, NULL), RSL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(file_value(s->path), 3);
    agent_seq_close(&seq);
    assert_null(seq);
    agent_seq_close(&seq); /* NULL-safe */

    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_never_repeats_across_reopen(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *a = NULL;
    struct agent_seq *b = NULL;
    uint64_t seen[64];
    size_t n_seen = 0;
    uint64_t n = 0;

    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
        seen[n_seen++] = n;
    }
    /* "kill -9": a is never closed, a new process opens the same file. */
    assert_int_equal(agent_seq_open(s->path, &b, NULL), RSL_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(agent_seq_take(b, &n, NULL), RSL_OK);
        seen[n_seen++] = n;
    }
    agent_seq_close(&b);
    agent_seq_close(&a);
    /* Orderly reopen after close. */
    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
    seen[n_seen++] = n;
    agent_seq_close(&a);

    for (size_t i = 0; i < n_seen; i++) {
        assert_true(seen[i] >= 1);
        for (size_t j = i + 1; j < n_seen; j++)
            assert_true(seen[i] != seen[j]);
    }
    assert_int_equal(seen[n_seen - 1], 11);
}

static void test_raise(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *seq = NULL;
    uint64_t n = 0;
    assert_int_equal(agent_seq_open(s->path, &seq, NULL), RSL_OK);
    assert_int_equal(agent_seq_raise(seq, 42, NULL), RSL_OK);
    assert_int_equal(file_value(s->path), 42);
    /* Lower values never move it back. */
    assert_int_equal(agent_seq_raise(seq, 7, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(seq, &n, NULL), RSL_OK);
    assert_int_equal(n, 42);
    agent_seq_close(&seq);
    assert_int_equal(agent_seq_open(s->path, &seq, NULL), RSL_OK);
    assert_int_equal(agent_seq_peek(seq), 43);
    agent_seq_close(&seq);
}

static void test_reads_existing_value(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *seq = NULL;
    uint64_t n = 0;
    write_file(s->path, "  17\n", 5);
    assert_int_equal(agent_seq_open(s->path, &seq, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(seq, &n, NULL), RSL_OK);
    assert_int_equal(n, 17);
    agent_seq_close(&seq);
}

static void test_damaged_file_refused(void **state)
{
    struct seq_state *s = *state;
    static const struct {
        const char *data;
        size_t len;
    } bad[] = {
        {"", 0},
        {"\n", 1},
        {"abc\n", 4},
        {"0\n", 2},
        {"-3\n", 3},
        {"+3\n", 3},
        {"12x\n", 4},
        {"1 2\n", 4},
        {"12\0003\n", 5},
        {"9223372036854775808\n", 20},   /* INT64_MAX + 1 */
        {"99999999999999999999999\n", 24},
        {"1111111111111111111111111111111111111111111111111111111111111111111111\n", 71},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct agent_seq *seq = NULL;
        struct rsl_error err;
        rsl_error_clear(&err);
        write_file(s->path, bad[i].data, bad[i].len);
        assert_int_equal(agent_seq_open(s->path, &seq, &err), RSL_ECORRUPT);
        assert_null(seq);
        assert_non_null(strstr(err.text, s->path));
    }
}

static void test_exhausted(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *seq = NULL;
    struct rsl_error err;
    uint64_t n = 99;
    write_file(s->path, "9223372036854775807\n", 20);
    assert_int_equal(agent_seq_open(s->path, &seq, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(seq, &n, &err), RSL_ETOOBIG);
    assert_int_equal(n, 0);
    agent_seq_close(&seq);
}

/* When the counter cannot be persisted, no number is handed out, and the
 * number is still the next one once persisting works again. */
static void test_persist_failure_hands_out_nothing(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *seq = NULL;
    struct rsl_error err;
    char sub[128];
    char path[160];
    uint64_t n = 99;
    snprintf(sub, sizeof(sub), "%s/not-yet", s->dir);
    snprintf(path, sizeof(path), "%s/sequence", sub);
    assert_int_equal(agent_seq_open(path, &seq, NULL), RSL_OK);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_seq_take(seq, &n, &err), RSL_OK);
    assert_int_equal(n, 0);
    assert_true(err.text[0] != '\0');
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(agent_seq_take(seq, &n, NULL), RSL_OK);
    assert_int_equal(n, 1);
    agent_seq_close(&seq);
}

/* Blocks: the file moves a block ahead, numbers come from memory, a second
 * opener starts after the block, release gives back only an untouched tail. */
static void test_reserved_blocks(void **state)
{
    struct seq_state *s = *state;
    struct agent_seq *a = NULL;
    struct agent_seq *b = NULL;
    uint64_t n = 0;
    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    agent_seq_set_reserve(a, 16);
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(file_value(s->path), 17);
    for (uint64_t want = 2; want <= 5; want++) {
        assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
        assert_int_equal(n, want);
    }
    assert_int_equal(file_value(s->path), 17); /* no write per number */

    /* Another process (a submit) starts after the block. */
    assert_int_equal(agent_seq_open(s->path, &b, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(b, &n, NULL), RSL_OK);
    assert_int_equal(n, 17);
    assert_int_equal(file_value(s->path), 18);
    /* a goes on inside its block; its release must not move the file back
     * below 18: b took a number after the block. */
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
    assert_int_equal(n, 6);
    assert_int_equal(agent_seq_release(a, NULL), RSL_OK);
    assert_int_equal(file_value(s->path), 18);
    agent_seq_close(&a);
    agent_seq_close(&b);

    /* Nobody moved past the block: release gives the tail back. */
    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    agent_seq_set_reserve(a, 100);
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
    assert_int_equal(n, 18);
    assert_int_equal(file_value(s->path), 118);
    assert_int_equal(agent_seq_release(a, NULL), RSL_OK);
    assert_int_equal(file_value(s->path), 19);
    assert_int_equal(agent_seq_release(a, NULL), RSL_OK); /* nothing left: no-op */
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK);
    assert_int_equal(n, 19);
    agent_seq_close(&a);

    /* "kill -9" with a block out: the rest of the block is a gap, never
     * handed out again. */
    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    assert_int_equal(agent_seq_peek(a), 119);
    agent_seq_close(&a);

    /* The lock nests and is released by the last unlock. */
    assert_int_equal(agent_seq_open(s->path, &a, NULL), RSL_OK);
    assert_int_equal(agent_seq_lock(a, NULL), RSL_OK);
    assert_int_equal(agent_seq_take(a, &n, NULL), RSL_OK); /* takes it again inside */
    agent_seq_unlock(a);
    agent_seq_unlock(a);
    agent_seq_unlock(a); /* one too many: harmless */
    agent_seq_close(&a);
}

/* Two processes share the counter through the flock: a "daemon" with
 * blocks of 8 and a "submit" taking one at a time, each taking 300 numbers
 * as fast as it can and writing them to its own file. No number twice. */
static void take_many(const char *path, unsigned reserve, const char *out_path)
{
    struct agent_seq *seq = NULL;
    FILE *out = fopen(out_path, "w");
    if (out == NULL || agent_seq_open(path, &seq, NULL) != RSL_OK)
        _exit(2);
    agent_seq_set_reserve(seq, reserve);
    for (int i = 0; i < 300; i++) {
        uint64_t n = 0;
        if (agent_seq_take(seq, &n, NULL) != RSL_OK)
            _exit(3);
        fprintf(out, "%llu\n", (unsigned long long)n);
    }
    agent_seq_release(seq, NULL);
    agent_seq_close(&seq);
    fclose(out);
}

static void test_two_processes_never_share_a_number(void **state)
{
    struct seq_state *s = *state;
    char out_a[160], out_b[160];
    snprintf(out_a, sizeof(out_a), "%s/a.txt", s->dir);
    snprintf(out_b, sizeof(out_b), "%s/b.txt", s->dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        take_many(s->path, 1, out_b);
        _exit(0);
    }
    take_many(s->path, 8, out_a);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    static uint8_t seen[4096];
    memset(seen, 0, sizeof(seen));
    unsigned total = 0;
    const char *files[] = {out_a, out_b};
    for (int f = 0; f < 2; f++) {
        FILE *in = fopen(files[f], "r");
        unsigned long long v;
        assert_non_null(in);
        while (fscanf(in, "%llu", &v) == 1) {
            assert_true(v >= 1 && v < sizeof(seen));
            if (seen[v])
                fail_msg("number %llu handed out twice", v);
            seen[v] = 1;
            total++;
        }
        fclose(in);
    }
    assert_int_equal(total, 600);
    /* Both released what they did not use (if nobody had moved past it):
     * the file never goes below the highest number used + 1. */
    uint64_t highest = 0;
    for (uint64_t v = 1; v < sizeof(seen); v++)
        if (seen[v])
            highest = v;
    assert_true(file_value(s->path) > highest);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_starts_at_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_repeats_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_existing_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_failure_hands_out_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserved_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_processes_never_share_a_number, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
