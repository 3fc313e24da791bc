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
 * File collectors read a real drop folder: fresh .prom, .txt and .rsl files
 * make one report (samples stamped with their file's mtime unless they
 * carry a time); a stale file is skipped with a log line; hidden and
 * temporary names, folders and FIFOs are ignored without hanging; a bad
 * file is skipped with FILE:LINE while the others still count; a missing
 * folder and an empty one are logged; a problem repeating run after run is
 * logged at warning once, then at info.
 *
 * Http collectors talk to a real HTTPS server running in a thread of this
 * test (OpenSSL, certificates made by the openssl CLI): the line format and
 * JSON (by Content-Type or forced), a bearer token read from a 0600 file
 * (a group-readable one is refused), a matching public-key pin; failures
 * give no measurements and a log line each: wrong CA, pin mismatch, HTTP
 * 500, a body over the cap, a server slower than the timeout, bad JSON
 * (naming URL:LINE:COLUMN), nothing listening.
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

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
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
    /* The heap strings of file/http collectors, as agent_config_free does. */
    agent_config_free(&s->cfg);
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
     * forks. Nothing ignored, except that glibc's posix_spawn leaves its two
     * internal signals (32 and 33, mask 0x180000000) ignored; SIGPIPE
     * (bit 12, ignored here) must be back to default. */
    snprintf(cmd, sizeof(cmd),
             "grep -q 'SigBlk:.0000000000000000' /proc/self/status && echo test.mask 0 || echo "
             "test.mask 1; grep -Eq 'SigIgn:.0000000(0|1)(0|8)0000000' /proc/self/status && echo "
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

/* ---- file ------------------------------------------------------------------------------- */

static struct agent_collector_config *add_file(struct collect_state *s, const char *name,
                                               const char *folder)
{
    struct agent_collector_config *c = add_collector(s, name, AGENT_COLLECTOR_FILE);
    c->path = strdup(folder);
    assert_non_null(c->path);
    c->max_age_ms = 3 * c->interval_ms;
    return c;
}

/* Write a drop file by atomic rename, `age_s` seconds old. */
static void drop_file(const char *folder, const char *name, const char *text, int age_s)
{
    char tmp[512], path[512];
    snprintf(tmp, sizeof(tmp), "%s/.%s.part", folder, name);
    snprintf(path, sizeof(path), "%s/%s", folder, name);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    if (age_s > 0) {
        struct timespec ts[2];
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[0].tv_sec -= age_s;
        ts[1] = ts[0];
        assert_int_equal(utimensat(AT_FDCWD, tmp, ts, 0), 0);
    }
    assert_int_equal(rename(tmp, path), 0);
}

static const struct rsl_sample *find_sample(const struct result *r, const char *indicator)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->samples[i].indicator, indicator) == 0)
            return &r->samples[i];
    return NULL;
}

static int64_t file_mtime_ms(const char *folder, const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", folder, name);
    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
}

static void test_file_fresh_stale_and_ignored(void **state)
{
    struct collect_state *s = *state;
    char folder[128], path[256];
    snprintf(folder, sizeof(folder), "%s/drop", s->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    drop_file(folder, "fuel.prom", "# fuel\nenergy.fuel_days 45 days\n", 0);
    drop_file(folder, "beds.txt", "health.beds 1200 beds 1700000000000\n", 0);
    drop_file(folder, "water.rsl", "water.supply_pct 97 pct\n", 0);
    drop_file(folder, "old.prom", "energy.old_value 1\n", 4 * 3600); /* stale */
    drop_file(folder, "notes.md", "not.read 1\n", 0);                 /* other extension */
    drop_file(folder, "next.prom.12345", "not.read 2\n", 0);          /* a write in progress */
    snprintf(path, sizeof(path), "%s/.hidden.prom", folder);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not.read 3\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/dir.prom", folder);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/pipe.prom", folder);
    assert_int_equal(mkfifo(path, 0600), 0); /* must not hang the loop */

    struct agent_collector_config *c = add_file(s, "drop", folder);
    c->max_age_ms = 3600 * 1000;
    log_start(s);
    run_once(s);
    const char *log = log_stop(s);
    assert_int_equal(s->n_results, 1);
    const struct result *r = &s->results[0];
    assert_int_equal(r->n, 3);
    const struct rsl_sample *fuel = find_sample(r, "energy.fuel_days");
    const struct rsl_sample *beds = find_sample(r, "health.beds");
    assert_non_null(fuel);
    assert_non_null(beds);
    assert_non_null(find_sample(r, "water.supply_pct"));
    assert_null(find_sample(r, "energy.old_value"));
    assert_null(find_sample(r, "not.read"));
    assert_true(fuel->value == 45.0);
    assert_string_equal(fuel->unit, "days");
    /* No time in the line: the file's mtime; a time in the line wins. */
    assert_int_equal(fuel->observed_at_ms, file_mtime_ms(folder, "fuel.prom"));
    assert_int_equal(beds->observed_at_ms, 1700000000000LL);
    assert_contains(log, "warning collector: collector drop: ");
    assert_contains(log, "/drop/old.prom is stale (written ");
    assert_contains(log, "older than max_age 3600s); skipped");
    assert_contains(log, "dir.prom: not a regular file; skipped");
    assert_contains(log, "pipe.prom: not a regular file; skipped");
}

static void test_file_bad_file_named_and_others_kept(void **state)
{
    struct collect_state *s = *state;
    char folder[128];
    snprintf(folder, sizeof(folder), "%s/drop", s->dir);
    assert_int_equal(mkdir(folder, 0700), 0);
    drop_file(folder, "good.prom", "energy.fuel_days 45 days\n", 0);
    drop_file(folder, "bad.prom", "energy.ok 1\nEnergy Not An Id 5\n", 0);
    drop_file(folder, "nan.prom", "energy.x NaN\n", 0);
    /* Larger than 1 MiB: skipped without reading it all. */
    char path[256];
    snprintf(path, sizeof(path), "%s/huge.prom", folder);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 70000; i++)
        fputs("energy.filler_value 1\n", f);
    fclose(f);
    add_file(s, "drop", folder);
    log_start(s);
    run_once(s);
    const char *log = log_stop(s);
    assert_int_equal(s->n_results, 1);
    assert_int_equal(s->results[0].n, 1);
    assert_string_equal(s->results[0].samples[0].indicator, "energy.fuel_days");
    char needle[256];
    snprintf(needle, sizeof(needle), "%s/bad.prom:2: ", folder);
    assert_contains(log, needle);
    assert_contains(log, "; file skipped");
    snprintf(needle, sizeof(needle), "%s/nan.prom:1: ", folder);
    assert_contains(log, needle);
    assert_contains(log, "huge.prom: larger than 1 MiB; skipped");
}

static void test_file_missing_and_empty_folder(void **state)
{
    struct collect_state *s = *state;
    char missing[128], empty[128];
    snprintf(missing, sizeof(missing), "%s/nowhere", s->dir);
    snprintf(empty, sizeof(empty), "%s/empty", s->dir);
    assert_int_equal(mkdir(empty, 0700), 0);
    add_file(s, "gone", missing);
    struct agent_collector_config *c = add_file(s, "quiet", empty);
    c->interval_ms = 100;
    s->cfg->collectors[0].interval_ms = 100;

    /* Three runs each: the problem is logged at its level once, then at
     * info ("again"); the empty folder once at notice, then at debug. */
    struct agent_collectors *set = NULL;
    assert_int_equal(agent_collectors_new(s->cfg, on_result, s, &set, NULL), RSL_OK);
    log_start(s);
    int64_t t0 = rsl_monotonic_ms();
    agent_collectors_tick(set, t0);
    agent_collectors_tick(set, t0 + 100);
    agent_collectors_tick(set, t0 + 200);
    agent_collectors_free(&set);
    const char *log = log_stop(s);
    assert_int_equal(s->n_results, 0);
    char needle[256];
    snprintf(needle, sizeof(needle), "error collector: collector gone: %s: No such file", missing);
    assert_contains(log, needle);
    snprintf(needle, sizeof(needle), "info collector: collector gone: %s: No such file", missing);
    assert_contains(log, needle);
    assert_contains(log, "no measurements (again)");
    assert_contains(log, "notice collector: collector quiet produced no measurements");
    assert_contains(log, "debug collector: collector quiet produced no measurements");
    /* Exactly one error line for the repeating problem. */
    const char *p = log;
    int errors = 0;
    while ((p = strstr(p, "error collector: collector gone")) != NULL) {
        errors++;
        p++;
    }
    assert_int_equal(errors, 1);
}

/* ---- http ------------------------------------------------------------------------------- */

struct route {
    const char *path;
    int status;
    const char *content_type;
    const char *body;       /* NULL: `big` bytes of filler */
    size_t big;
    int delay_ms;           /* before answering */
};

struct https_server {
    SSL_CTX *ctx;
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    const struct route *routes;
    size_t n_routes;
    atomic_int requests;                 /* requests answered (any route) */
    char last_authorization[256];        /* written by the thread, read after a run */
};

static void *https_thread(void *arg)
{
    struct https_server *srv = arg;
    while (!atomic_load(&srv->stop)) {
        struct pollfd pfd = {srv->listen_fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        SSL *ssl = SSL_new(srv->ctx);
        SSL_set_fd(ssl, fd);
        char req[8192];
        size_t got = 0;
        if (SSL_accept(ssl) == 1) {
            /* Read the request head. */
            while (got < sizeof(req) - 1) {
                int n = SSL_read(ssl, req + got, (int)(sizeof(req) - 1 - got));
                if (n <= 0)
                    break;
                got += (size_t)n;
                req[got] = '\0';
                if (strstr(req, "\r\n\r\n") != NULL)
                    break;
            }
            req[got] = '\0';
            char path[256] = "";
            sscanf(req, "GET %255s", path);
            const char *auth = strstr(req, "Authorization: ");
            if (auth != NULL) {
                size_t n = strcspn(auth, "\r\n");
                if (n >= sizeof(srv->last_authorization))
                    n = sizeof(srv->last_authorization) - 1;
                memcpy(srv->last_authorization, auth, n);
                srv->last_authorization[n] = '\0';
            }
            const struct route *r = NULL;
            for (size_t i = 0; i < srv->n_routes; i++)
                if (strcmp(srv->routes[i].path, path) == 0)
                    r = &srv->routes[i];
            char head[512];
            char *filler = NULL;
            const char *body = "not found\n";
            size_t blen = strlen(body);
            int status = 404;
            const char *ctype = "text/plain";
            if (r != NULL) {
                status = r->status;
                ctype = r->content_type;
                if (r->body != NULL) {
                    body = r->body;
                    blen = strlen(body);
                } else {
                    filler = malloc(r->big);
                    memset(filler, '#', r->big);
                    body = filler;
                    blen = r->big;
                }
                if (r->delay_ms > 0)
                    usleep((useconds_t)r->delay_ms * 1000);
            }
            int hl = snprintf(head, sizeof(head),
                              "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                              "Connection: close\r\n\r\n",
                              status, ctype, blen);
            if (SSL_write(ssl, head, hl) > 0)
                for (size_t off = 0; off < blen;) {
                    size_t chunk = blen - off > 16384 ? 16384 : blen - off;
                    int n = SSL_write(ssl, body + off, (int)chunk);
                    if (n <= 0)
                        break;
                    off += (size_t)n;
                }
            free(filler);
            atomic_fetch_add(&srv->requests, 1);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
    }
    return NULL;
}

/* A self-signed certificate for 127.0.0.1 made by the openssl CLI. */
static void make_cert(const char *dir, const char *name, char *crt, char *key, size_t len)
{
    char cmd[1024];
    snprintf(crt, len, "%s/%s.crt", dir, name);
    snprintf(key, len, "%s/%s.key", dir, name);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
             "-out %s -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 "
             ">/dev/null 2>&1",
             key, crt);
    assert_int_equal(system(cmd), 0);
}

/* "sha256//BASE64" of a certificate's public key, as curl --pinnedpubkey. */
static void cert_pin(const char *crt, char *out, size_t outlen)
{
    FILE *f = fopen(crt, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    unsigned char *der = NULL;
    int dlen = i2d_PUBKEY(X509_get0_pubkey(x), &der);
    assert_true(dlen > 0);
    uint8_t hash[32];
    char b64[64];
    rsl_sha256(der, (size_t)dlen, hash);
    rsl_base64_encode(hash, sizeof(hash), b64);
    snprintf(out, outlen, "sha256//%s", b64);
    OPENSSL_free(der);
    X509_free(x);
}

static void https_start(struct https_server *srv, const char *crt, const char *key,
                        const struct route *routes, size_t n_routes)
{
    memset(srv, 0, sizeof(*srv));
    srv->routes = routes;
    srv->n_routes = n_routes;
    srv->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(srv->ctx);
    assert_int_equal(SSL_CTX_use_certificate_file(srv->ctx, crt, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(srv->ctx, key, SSL_FILETYPE_PEM), 1);
    srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(srv->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(srv->listen_fd, 16), 0);
    assert_int_equal(getsockname(srv->listen_fd, (struct sockaddr *)&a, &alen), 0);
    srv->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&srv->thread, NULL, https_thread, srv), 0);
}

static void https_stop(struct https_server *srv)
{
    atomic_store(&srv->stop, 1);
    pthread_join(srv->thread, NULL);
    close(srv->listen_fd);
    SSL_CTX_free(srv->ctx);
}

static struct agent_collector_config *add_http(struct collect_state *s, const char *name,
                                               int port, const char *path, const char *ca_file)
{
    char url[256];
    struct agent_collector_config *c = add_collector(s, name, AGENT_COLLECTOR_HTTP);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
    c->url = strdup(url);
    c->ca_file = ca_file != NULL ? strdup(ca_file) : NULL;
    c->timeout_ms = 10000;
    return c;
}

static const struct result *result_of(const struct collect_state *s, const char *name)
{
    for (size_t i = 0; i < s->n_results; i++)
        if (strcmp(s->results[i].collector, name) == 0)
            return &s->results[i];
    return NULL;
}

static void test_http_formats_token_and_pin(void **state)
{
    struct collect_state *s = *state;
    char crt[256], key[256], pin[128], token_file[256];
    static const struct route routes[] = {
        {"/lines", 200, "text/plain; version=0.0.4", "energy.fuel_days 45 days\nhealth.beds 7\n",
         0, 0},
        {"/json", 200, "application/json; charset=utf-8",
         "{\"energy.oil_stock_days\": 91.5, \"health.beds\": 1200}", 0, 0},
        {"/json-as-text", 200, "text/plain", "{\"comms.reach_pct\": 87}", 0, 0},
    };
    struct https_server srv;
    make_cert(s->dir, "server", crt, key, sizeof(crt));
    cert_pin(crt, pin, sizeof(pin));
    https_start(&srv, crt, key, routes, 3);
    snprintf(token_file, sizeof(token_file), "%s/token", s->dir);
    FILE *f = fopen(token_file, "w");
    assert_non_null(f);
    fputs("  s3cret-token_value \n", f);
    fclose(f);
    chmod(token_file, 0600);

    add_http(s, "lines", srv.port, "/lines", crt);
    struct agent_collector_config *j = add_http(s, "json", srv.port, "/json", crt);
    j->bearer_token_file = strdup(token_file);
    j->pinned_public_key = strdup(pin);
    struct agent_collector_config *forced = add_http(s, "forced", srv.port, "/json-as-text", crt);
    forced->format = AGENT_HTTP_JSON;
    log_start(s);
    run_once(s);
    log_stop(s);
    https_stop(&srv);

    assert_int_equal(s->n_results, 3);
    const struct result *r = result_of(s, "lines");
    assert_non_null(r);
    assert_int_equal(r->n, 2);
    assert_string_equal(r->samples[0].indicator, "energy.fuel_days");
    assert_string_equal(r->samples[0].unit, "days");
    r = result_of(s, "json");
    assert_non_null(r);
    assert_int_equal(r->n, 2);
    assert_string_equal(r->samples[0].indicator, "energy.oil_stock_days");
    assert_true(r->samples[0].value == 91.5);
    assert_true(r->samples[1].value == 1200.0);
    assert_string_equal(srv.last_authorization, "Authorization: Bearer s3cret-token_value");
    r = result_of(s, "forced");
    assert_non_null(r);
    assert_int_equal(r->n, 1);
    assert_string_equal(r->samples[0].indicator, "comms.reach_pct");
}

static void test_http_failures_are_clean(void **state)
{
    struct collect_state *s = *state;
    char crt[256], key[256], other_crt[256], other_key[256], other_pin[128];
    static const struct route routes[] = {
        {"/a", 200, "text/plain", "energy.fuel_days 45 days\n", 0, 0},
        {"/fail", 500, "text/plain", "oops\n", 0, 0},
        {"/big", 200, "text/plain", NULL, 2 * 1024 * 1024, 0},
        {"/slow", 200, "text/plain", "energy.fuel_days 1\n", 0, 1500},
        {"/badjson", 200, "application/json", "{\"a\": 1,\n \"b\": }", 0, 0},
        {"/badlines", 200, "text/plain", "energy.fuel_days 45 days\nwhat is this\n", 0, 0},
    };
    struct https_server srv;
    make_cert(s->dir, "server", crt, key, sizeof(crt));
    make_cert(s->dir, "other", other_crt, other_key, sizeof(other_crt));
    cert_pin(other_crt, other_pin, sizeof(other_pin));
    https_start(&srv, crt, key, routes, sizeof(routes) / sizeof(routes[0]));

    add_http(s, "wrongca", srv.port, "/a", other_crt);
    struct agent_collector_config *wp = add_http(s, "wrongpin", srv.port, "/a", crt);
    wp->pinned_public_key = strdup(other_pin);
    add_http(s, "fail", srv.port, "/fail", crt);
    add_http(s, "big", srv.port, "/big", crt);
    struct agent_collector_config *slow = add_http(s, "slow", srv.port, "/slow", crt);
    slow->timeout_ms = 500;
    add_http(s, "badjson", srv.port, "/badjson", crt);
    add_http(s, "badlines", srv.port, "/badlines", crt);
    /* Nothing listens on the port of a closed socket. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    add_http(s, "refused", ntohs(a.sin_port), "/a", crt);

    log_start(s);
    run_once(s);
    const char *log = log_stop(s);
    https_stop(&srv);

    assert_int_equal(s->n_results, 0);
    assert_contains(log, "collector wrongca: GET https://127.0.0.1:");
    assert_contains(log, "SSL certificate problem");
    assert_contains(log, "collector wrongpin: GET");
    assert_contains(log, "public key does not match pinned public key");
    assert_contains(log, "/fail: HTTP status 500; no measurements");
    assert_contains(log, "/big: body larger than 1048576 bytes; no measurements");
    assert_contains(log, "collector slow: GET");
    assert_contains(log, "imed out");
    assert_contains(log, "/badjson:2:");
    assert_contains(log, "/badlines:2: ");
    assert_contains(log, "collector refused: GET");
}

static void test_http_token_file_must_be_private(void **state)
{
    struct collect_state *s = *state;
    char token_file[256];
    snprintf(token_file, sizeof(token_file), "%s/token", s->dir);
    FILE *f = fopen(token_file, "w");
    assert_non_null(f);
    fputs("tok\n", f);
    fclose(f);
    chmod(token_file, 0644);
    struct agent_collector_config *c = add_http(s, "web", 1, "/", NULL);
    c->bearer_token_file = strdup(token_file);
    struct agent_collectors *set = NULL;
    struct rsl_error err;
    rsl_error_clear(&err);
    assert_int_not_equal(agent_collectors_new(s->cfg, on_result, s, &set, &err), RSL_OK);
    assert_null(set);
    assert_contains(err.text, "collector web: bearer_token_file");
    assert_contains(err.text, "chmod 600");
    assert_int_not_equal(agent_collectors_check(s->cfg, NULL), RSL_OK);

    /* Private but not a token (two words). */
    chmod(token_file, 0600);
    f = fopen(token_file, "w");
    assert_non_null(f);
    fputs("two words\n", f);
    fclose(f);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_collectors_new(s->cfg, on_result, s, &set, &err), RSL_OK);
    assert_contains(err.text, "not a token");
    f = fopen(token_file, "w");
    assert_non_null(f);
    fputs("fine\n", f);
    fclose(f);
    assert_int_equal(agent_collectors_check(s->cfg, NULL), RSL_OK);
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
    signal(SIGPIPE, SIG_IGN); /* the test's HTTPS server writes to clients that left */
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
        cmocka_unit_test_setup_teardown(test_file_fresh_stale_and_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_bad_file_named_and_others_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_missing_and_empty_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_formats_token_and_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_failures_are_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_token_file_must_be_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_build_verifies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
