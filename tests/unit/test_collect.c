/*
 * test_collect.c - collectors and the reports made from their runs.
 *
 * Collectors run for real: exec collectors fork /bin/sh, and the tests
 * drive the same tick / poll_fill / zmq_poll / poll_handle cycle as the
 * daemon. Covered: static delivery; exec output parsed (also across many
 * pipe reads); non-zero exit and parse errors give nothing and a log line;
 * stderr is logged at warning; output over the cap is refused; a command
 * that outlives its timeout is killed with its whole process group
 * (background children included); the child gets an empty signal mask,
 * default SIGPIPE and none of our descriptors; scheduling by interval and
 * --once.
 *
 * Reports: a built report decodes, validates and verifies with the agent's
 * public key; defaults (observed_at, releasable_to, source, marking) apply;
 * an oversized report is refused.
 *
 * Log lines are checked by pointing stderr (where rsl_log writes) at a file
 * for the duration of a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "agent/collect.h"
#include "agent/config.h"
#include "agent/report.h"
#include "rsl/codec.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/util.h"

/* ---- fixtures ------------------------------------------------------------------- */

#define MAX_RESULTS 16

struct result {
    char collector[AGENT_COLLECTOR_NAME_MAX + 1];
    struct rsl_sample *samples;
    size_t n;
    int64_t collected_at_ms;
};

struct collect_state {
    char dir[64];
    struct agent_config *cfg;
    struct result results[MAX_RESULTS];
    size_t n_results;
    int saved_stderr;
    char log_path[128];
    char *log;                 /* captured stderr after log_stop */
};

static int setup(void **state)
{
    struct collect_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-collect-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    s->cfg = calloc(1, sizeof(*s->cfg));
    s->cfg->collectors = calloc(8, sizeof(struct agent_collector_config));
    snprintf(s->cfg->id, sizeof(s->cfg->id), "DEU-TEST-01");
    snprintf(s->cfg->nation, sizeof(s->cfg->nation), "DEU");
    snprintf(s->cfg->organisation, sizeof(s->cfg->organisation), "Test Ministry");
    snprintf(s->cfg->marking, sizeof(s->cfg->marking), "NATO UNCLASSIFIED");
    s->cfg->max_message_bytes = RSL_MAX_MESSAGE_BYTES_DEFAULT;
    s->saved_stderr = -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct collect_state *s = *state;
    for (size_t i = 0; i < s->n_results; i++)
        free(s->results[i].samples);
    free(s->log);
    free(s->cfg->collectors);
    free(s->cfg);
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static struct agent_collector_config *add_collector(struct collect_state *s, const char *name,
                                                    enum agent_collector_type type)
{
    struct agent_collector_config *c = &s->cfg->collectors[s->cfg->n_collectors++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->type = type;
    c->interval_ms = 60000;
    c->timeout_ms = 10000;
    return c;
}

static struct agent_collector_config *add_exec(struct collect_state *s, const char *name,
                                               const char *command)
{
    struct agent_collector_config *c = add_collector(s, name, AGENT_COLLECTOR_EXEC);
    snprintf(c->command, sizeof(c->command), "%s", command);
    return c;
}

static void on_result(void *ctx, const struct agent_collector_config *cc,
                      const struct rsl_sample *samples, size_t n, int64_t collected_at_ms)
{
    struct collect_state *s = ctx;
    assert_true(s->n_results < MAX_RESULTS);
    assert_true(n > 0);
    struct result *r = &s->results[s->n_results++];
    snprintf(r->collector, sizeof(r->collector), "%s", cc->name);
    r->samples = malloc(n * sizeof(*samples));
    assert_non_null(r->samples);
    memcpy(r->samples, samples, n * sizeof(*samples));
    r->n = n;
    r->collected_at_ms = collected_at_ms;
}

static void log_start(struct collect_state *s)
{
    snprintf(s->log_path, sizeof(s->log_path), "%s/log.txt", s->dir);
    int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    s->saved_stderr = dup(2);
    assert_true(s->saved_stderr >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);
}

static const char *log_stop(struct collect_state *s)
{
    size_t len = 0;
    dup2(s->saved_stderr, 2);
    close(s->saved_stderr);
    s->saved_stderr = -1;
    free(s->log);
    s->log = NULL;
    assert_int_equal(rsl_file_read_all(s->log_path, 1 << 20, (uint8_t **)&s->log, &len, NULL),
                     RSL_OK);
    fputs(s->log, stderr); /* keep it visible in the test output */
    return s->log;
}

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", text, needle);
}

/* One round of the daemon's loop, waiting at most max_wait_ms. */
static void loop_once(struct agent_collectors *set, long max_wait_ms)
{
    zmq_pollitem_t items[64];
    int64_t now = rsl_monotonic_ms();
    agent_collectors_tick(set, now);
    if (agent_collectors_idle(set))
        return;
    size_t n = agent_collectors_poll_fill(set, items, 64);
    int64_t deadline = agent_collectors_next_deadline(set);
    long timeout = max_wait_ms;
    if (deadline >= 0 && deadline - now < timeout)
        timeout = deadline <= now ? 0 : (long)(deadline - now);
    int rc = zmq_poll(items, (int)n, timeout);
    assert_true(rc >= 0);
    agent_collectors_poll_handle(set, items, n, rsl_monotonic_ms());
}

/* --once: run every collector one time, to the end. */
static void run_once(struct collect_state *s)
{
    struct agent_collectors *set = NULL;
    assert_int_equal(agent_collectors_new(s->cfg, on_result, s, &set, NULL), RSL_OK);
    agent_collectors_set_once(set);
    int64_t give_up = rsl_monotonic_ms() + 60000;
    while (!agent_collectors_idle(set)) {
        assert_true(rsl_monotonic_ms() < give_up);
        loop_once(set, 1000);
    }
    agent_collectors_free(&set);
    assert_null(set);
}

/* True if any process in group `pgid` is still alive (zombies don't count:
 * they are dead, just not yet reaped by whoever inherited them). */
static bool group_alive(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    bool alive = false;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL && !alive) {
        char path[300];
        char buf[1024];
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        const char *p = strrchr(buf, ')'); /* the command name may hold anything */
        char st = 0;
        int ppid = 0, pgrp = 0;
        if (p != NULL && sscanf(p + 1, " %c %d %d", &st, &ppid, &pgrp) == 3 && pgrp == pgid &&
            st != 'Z')
            alive = true;
    }
    closedir(d);
    return alive;
}

/* SIGKILL is delivered asynchronously: a killed process may still show as
 * running for a moment. Wait (bounded) for the group to be gone. */
static bool group_gone_eventually(pid_t pgid)
{
    for (int i = 0; i < 1000; i++) {
        if (!group_alive(pgid))
            return true;
        usleep(10000);
    }
    return false;
}

/* ---- static ------------------------------------------------------------------------ */

static void test_static(void **state)
{
    struct collect_state *s = *state;
    struct agent_collector_config *c = add_collector(s, "stock", AGENT_COLLECTOR_STATIC);
    snprintf(c->indicator, sizeof(c->indicator), "energy.oil_stock_days");
    c->value = 91.5;
    snprintf(c->unit, sizeof(c->unit), "days");
    run_once(s);
    assert_int_equal(s->n_results, 1);
    assert_string_equal(s->results[0].collector, "stock");
    assert_int_equal(s->results[0].n, 1);
    assert_string_equal(s->results[0].samples[0].indicator, "energy.oil_stock_days");
    assert_true(s->results[0].samples[0].value == 91.5);
    assert_string_equal(s->results[0].samples[0].unit, "days");
    assert_int_equal(s->results[0].samples[0].observed_at_ms, 0);
    assert_true(s->results[0].collected_at_ms > 0);
}

/* ---- exec ---------------------------------------------------------------------------- */

static void test_exec_output_parsed(void **state)
{
    struct collect_state *s = *state;
    add_exec(s, "fuel",
             "echo '# fuel stocks'; echo 'energy.fuel_days 45 days'; echo; "
             "printf 'health.beds\\t1200.5\\tbeds\\t1700000000000\\n'");
    run_once(s);
    assert_int_equal(s->n_results, 1);
    const struct result *r = &s->results[0];
    assert_string_equal(r->collector, "fuel");
    assert_int_equal(r->n, 2);
    assert_string_equal(r->samples[0].indicator, "energy.fuel_days");
    assert_true(r->samples[0].value == 45.0);
    assert_string_equal(r->samples[0].unit, "days");
    assert_int_equal(r->samples[0].observed_at_ms, 0);
    assert_string_equal(r->samples[1].indicator, "health.beds");
    assert_true(r->samples[1].value == 1200.5);
    assert_int_equal(r->samples[1].observed_at_ms, 1700000000000LL);
}

/* 2000 lines (about 30 KB) arrive in many reads and make one report. */
static void test_exec_large_output(void **state)
{
    struct collect_state *s = *state;
    add_exec(s, "many", "i=0; while [ $i -lt 2000 ]; do echo test.value_$i $i; i=$((i+1)); done");
    run_once(s);
    assert_int_equal(s->n_results, 1);
    assert_int_equal(s->results[0].n, 2000);
    assert_string_equal(s->results[0].samples[1999].indicator, "test.value_1999");
    assert_true(s->results[0].samples[1999].value == 1999.0);
}

static void test_exec_failures_give_nothing(void **state)
{
    struct collect_state *s = *state;
    add_exec(s, "failing", "echo test.a 1; exit 3");
    add_exec(s, "garbled", "echo test.a 1; echo 'Not An Indicator 5'");
    add_exec(s, "killed", "echo test.a 1; kill -9 $$");
    add_exec(s, "flood", "head -c 70000 /dev/zero | tr '\\000' a; echo");
    add_exec(s, "silent", "true");
    log_start(s);
    run_once(s);
    const char *log = log_stop(s);
    assert_int_equal(s->n_results, 0);
    assert_contains(log, "collector failing exited with status 3; no measurements");
    assert_contains(log, "collector garbled:2:");
    assert_contains(log, "collector killed killed by signal 9");
    assert_contains(log, "collector flood: output larger than 65536 bytes");
    assert_contains(log, "collector silent produced no measurements");
}

static void test_exec_stderr_logged(void **state)
{
    struct collect_state *s = *state;
    add_exec(s, "chatty", "echo 'disk nearly full' >&2; echo test.a 1; printf 'no newline' >&2");
    log_start(s);
    run_once(s);
    const char *log = log_stop(s);
    assert_int_equal(s->n_results, 1);
    assert_contains(log, "warning collector: collector chatty: stderr: disk nearly full");
    assert_contains(log, "collector chatty: stderr: no newline");
}

/* A command that outlives its timeout is killed together with everything
 * it started, and the run gives nothing. */
static void test_exec_timeout_kills_group(void **state)
{
    struct collect_state *s = *state;
    char cmd[512];
    char pidfile[128];
    snprintf(pidfile, sizeof(pidfile), "%s/leader.pid", s->dir);
    /* A background job too: it is in the same group, and must die as well. */
    snprintf(cmd, sizeof(cmd), "sleep 100 & echo $$ > %s; echo test.a 1; sleep 100", pidfile);
    struct agent_collector_config *c = add_exec(s, "slow", cmd);
    c->timeout_ms = 1000;

    struct agent_collectors *set = NULL;
    assert_int_equal(agent_collectors_new(s->cfg, on_result, s, &set, NULL), RSL_OK);
    agent_collectors_set_once(set);
    log_start(s);
    /* Run until the command has written its pid, then look at its group. */
    uint8_t *text = NULL;
    size_t len = 0;
    int64_t give_up = rsl_monotonic_ms() + 30000;
    while (rsl_file_read_all(pidfile, 64, &text, &len, NULL) != RSL_OK || len == 0 ||
           text[len - 1] != '\n') {
        free(text);
        text = NULL;
        assert_true(rsl_monotonic_ms() < give_up);
        loop_once(set, 20);
    }
    pid_t pgid = (pid_t)atoi((char *)text);
    free(text);
    assert_true(pgid > 1);
    assert_true(group_alive(pgid));
    assert_int_equal(agent_collectors_running(set), 1);
    while (!agent_collectors_idle(set)) {
        assert_true(rsl_monotonic_ms() < give_up);
        loop_once(set, 1000);
    }
    agent_collectors_free(&set);
    const char *log = log_stop(s);
    assert_contains(log, "collector slow timed out after 1s");
    assert_int_equal(s->n_results, 0);
    assert_true(group_gone_eventually(pgid));
}

/* Leftover background jobs of a run that exited normally are killed too:
 * a collector run never leaves processes behind. */
static void test_exec_leftovers_killed(void **state)
{
    struct collect_state *s = *state;
    char cmd[256];
    char pidfile[128];
    snprintf(pidfile, sizeof(pidfile), "%s/leader.pid", s->dir);
    snprintf(cmd, sizeof(cmd), "sleep 100 >/dev/null 2>&1 & echo $$ > %s; echo test.a 1",
             pidfile);
    add_exec(s, "leaky", cmd);
    run_once(s);
    assert_int_equal(s->n_results, 1);
    uint8_t *text = NULL;
    size_t len = 0;
    assert_int_equal(rsl_file_read_all(pidfile, 64, &text, &len, NULL), RSL_OK);
    pid_t pgid = (pid_t)atoi((char *)text);
    free(text);
    assert_true(group_gone_eventually(pgid));
}

/* The child starts clean whatever the daemon blocked, ignored or opened. */
static void test_exec_child_environment(void **state)
{
    struct collect_state *s = *state;
    sigset_t block, old;
    char cmd[512];
    int leaked = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
    assert_true(leaked > 2);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);

    /* grep reports on itself (/proc/self): what the shell passed on. The
     * shell's own status would race with dash blocking signals around its
     * forks. */
    snprintf(cmd, sizeof(cmd),
             "grep -q 'SigBlk:.0000000000000000' /proc/self/status && echo test.mask 0 || echo "
             "test.mask 1; grep -q 'SigIgn:.0000000000000000' /proc/self/status && echo "
             "test.ignored 0 || echo test.ignored 1; [ -e /proc/$$/fd/%d ] && echo test.fd 1 || "
             "echo test.fd 0",
             leaked);
    add_exec(s, "env", cmd);
    run_once(s);

    signal(SIGPIPE, old_pipe);
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(leaked);
    assert_int_equal(s->n_results, 1);
    assert_int_equal(s->results[0].n, 3);
    for (size_t i = 0; i < 3; i++) {
        if (s->results[0].samples[i].value != 0.0)
            fail_msg("%s = 1", s->results[0].samples[i].indicator);
    }
}

/* Without --once: first run at once, the next one an interval later. */
static void test_schedule(void **state)
{
    struct collect_state *s = *state;
    struct agent_collector_config *c = add_collector(s, "tick", AGENT_COLLECTOR_STATIC);
    snprintf(c->indicator, sizeof(c->indicator), "test.tick");
    c->interval_ms = 200;
    struct agent_collectors *set = NULL;
    assert_int_equal(agent_collectors_new(s->cfg, on_result, s, &set, NULL), RSL_OK);
    assert_int_equal(agent_collectors_next_deadline(set), 0); /* due at the first tick */
    int64_t t0 = rsl_monotonic_ms();
    agent_collectors_tick(set, t0);
    assert_int_equal(s->n_results, 1);
    assert_int_equal(agent_collectors_next_deadline(set), t0 + 200);
    agent_collectors_tick(set, t0 + 199);
    assert_int_equal(s->n_results, 1);
    agent_collectors_tick(set, t0 + 200);
    assert_int_equal(s->n_results, 2);
    /* After a stall, skip ahead instead of catching up in a burst. */
    agent_collectors_tick(set, t0 + 5000);
    assert_int_equal(s->n_results, 3);
    assert_int_equal(agent_collectors_next_deadline(set), t0 + 5200);
    assert_false(agent_collectors_idle(set));
    agent_collectors_stop(set);
    assert_true(agent_collectors_idle(set));
    agent_collectors_tick(set, t0 + 100000);
    assert_int_equal(s->n_results, 3);
    agent_collectors_free(&set);
}

/* ---- reports ----------------------------------------------------------------------------- */

static void test_report_build_verifies(void **state)
{
    struct collect_state *s = *state;
    char keys_dir[128];
    char path[160];
    struct rsl_signer *signer = NULL;
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    uint8_t *frame = NULL;
    size_t len = 0;
    struct rsl_error err;

    snprintf(keys_dir, sizeof(keys_dir), "%s/keys", s->dir);
    assert_int_equal(rsl_keys_generate(keys_dir, NULL), RSL_OK);
    snprintf(path, sizeof(path), "%s/sign.key", keys_dir);
    assert_int_equal(rsl_signer_load(path, &signer, NULL), RSL_OK);
    snprintf(path, sizeof(path), "%s/sign.pub", keys_dir);
    assert_int_equal(rsl_public_key_load_pem(path, pub, NULL), RSL_OK);

    s->cfg->releasable_to.n = 1;
    snprintf(s->cfg->releasable_to.id[0], sizeof(s->cfg->releasable_to.id[0]), "EU");
    struct agent_collector_config *def = add_collector(s, "fuel", AGENT_COLLECTOR_EXEC);
    struct agent_collector_config *own = add_collector(s, "secret", AGENT_COLLECTOR_EXEC);
    own->releasable_set = true; /* explicitly: releasable to nobody */

    struct rsl_sample samples[2];
    memset(samples, 0, sizeof(samples));
    snprintf(samples[0].indicator, sizeof(samples[0].indicator), "energy.fuel_days");
    samples[0].value = 45;
    snprintf(samples[0].unit, sizeof(samples[0].unit), "days");
    snprintf(samples[1].indicator, sizeof(samples[1].indicator), "health.beds");
    samples[1].value = 3;
    samples[1].observed_at_ms = 1700000000000LL;

    rsl_error_clear(&err);
    if (agent_report_build(s->cfg, def, signer, 42, 1800000000000LL, 1799999999000LL, samples, 2,
                           &frame, &len, &err) != RSL_OK)
        fail_msg("%s", err.text);

    rsl_signed_report *sr = NULL;
    rsl_report *report = NULL;
    assert_int_equal(rsl_signed_report_decode(frame, len, len, &sr, NULL), RSL_OK);
    assert_string_equal(sr->key_id, rsl_signer_key_id(signer));
    assert_int_equal(rsl_verify_report(pub, sr->report.data, sr->report.len, sr->signature.data,
                                       sr->signature.len),
                     RSL_OK);
    /* One changed byte and it no longer verifies. */
    sr->report.data[sr->report.len / 2] ^= 1;
    assert_int_equal(rsl_verify_report(pub, sr->report.data, sr->report.len, sr->signature.data,
                                       sr->signature.len),
                     RSL_EVERIFY);
    sr->report.data[sr->report.len / 2] ^= 1;
    assert_int_equal(rsl_report_decode(sr->report.data, sr->report.len, &report, NULL), RSL_OK);
    assert_string_equal(report->agent_id, "DEU-TEST-01");
    assert_string_equal(report->nation, "DEU");
    assert_string_equal(report->organisation, "Test Ministry");
    assert_string_equal(report->marking, "NATO UNCLASSIFIED");
    assert_int_equal(report->sequence, 42);
    assert_int_equal(report->created_at_ms, 1800000000000LL);
    assert_int_equal(report->n_measurements, 2);
    const rsl_measurement *m0 = report->measurements[0];
    const rsl_measurement *m1 = report->measurements[1];
    assert_string_equal(m0->indicator, "energy.fuel_days");
    assert_true(m0->value == 45.0);
    assert_string_equal(m0->unit, "days");
    assert_int_equal(m0->observed_at_ms, 1799999999000LL); /* collection time */
    assert_string_equal(m0->source, "fuel");
    assert_int_equal(m0->n_releasable_to, 1);
    assert_string_equal(m0->releasable_to[0], "EU");
    assert_int_equal(m1->observed_at_ms, 1700000000000LL); /* the collector's own */
    assert_string_equal(m1->unit, "");
    rsl_report_free(&report);
    rsl_signed_report_free(&sr);
    free(frame);

    /* The collector's own (empty) list overrides the agent default. */
    assert_int_equal(agent_report_build(s->cfg, own, signer, 43, 1800000000000LL,
                                        1800000000000LL, samples, 1, &frame, &len, NULL),
                     RSL_OK);
    assert_int_equal(rsl_signed_report_decode(frame, len, len, &sr, NULL), RSL_OK);
    assert_int_equal(rsl_report_decode(sr->report.data, sr->report.len, &report, NULL), RSL_OK);
    assert_int_equal(report->measurements[0]->n_releasable_to, 0);
    assert_string_equal(report->measurements[0]->source, "secret");
    rsl_report_free(&report);
    rsl_signed_report_free(&sr);
    free(frame);

    /* Over max_message_bytes: refused, nothing returned. */
    s->cfg->max_message_bytes = 150;
    rsl_error_clear(&err);
    assert_int_equal(agent_report_build(s->cfg, def, signer, 44, 1800000000000LL,
                                        1800000000000LL, samples, 2, &frame, &len, &err),
                     RSL_ETOOBIG);
    assert_null(frame);
    assert_contains(err.text, "max_message_bytes");
    s->cfg->max_message_bytes = RSL_MAX_MESSAGE_BYTES_DEFAULT;

    /* Content the aggregator would refuse is refused here, naming it. */
    samples[0].indicator[0] = 'X';
    rsl_error_clear(&err);
    assert_int_not_equal(agent_report_build(s->cfg, def, signer, 45, 1800000000000LL,
                                            1800000000000LL, samples, 2, &frame, &len, &err),
                         RSL_OK);
    assert_null(frame);
    assert_contains(err.text, "measurements[0]");
    assert_int_equal(agent_report_build(s->cfg, def, signer, 46, 1800000000000LL,
                                        1800000000000LL, samples, 0, &frame, &len, NULL),
                     RSL_EINVAL);
    rsl_signer_free(&signer);
}

int main(void)
{
    rsl_log_init("test_collect", RSL_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_static, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_output_parsed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_large_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_failures_give_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_stderr_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_leftovers_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_child_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schedule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_build_verifies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
