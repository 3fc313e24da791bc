/*
 * test_agent_status.c - `resilience-agent status`, the status file behind
 * it, the daemon's lock, and `submit`'s argument parser.
 *
 * The status file round-trips; its parser refuses hostile content (not an
 * object, wrong member types, negative counts, NUL bytes, duplicates, over
 * the size cap) naming the member, and ignores unknown members. The lock
 * admits one daemon per spool and tells `status` whether one runs and its
 * pid. The report, human and JSON, shows what the spool holds (depth,
 * bytes, oldest unacked age, drops from the counters file, rejected,
 * corrupt) and what the status file adds (endpoint, last ack), with and
 * without a spool. `submit` arguments INDICATOR=VALUE[:UNIT] are parsed
 * strictly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/config.h"
#include "agent/spool.h"
#include "agent/status.h"
#include "agent/submit.h"
#include "rsl/log.h"
#include "rsl/util.h"

struct st_state {
    char dir[64];
};

static int setup(void **state)
{
    struct st_state *s = calloc(1, sizeof(*s));
    if (s == NULL || rsl_test_mkdtemp(s->dir, sizeof(s->dir), "status") != 0)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct st_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", text, needle);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static struct agent_status sample_status(void)
{
    struct agent_status st;
    memset(&st, 0, sizeof(st));
    snprintf(st.agent_id, sizeof(st.agent_id), "DEU-BMI-01");
    st.pid = 4242;
    st.started_at_ms = 1790000000000LL;
    st.updated_at_ms = 1790000060000LL;
    snprintf(st.endpoint, sizeof(st.endpoint), "tcp://backup.example:7450");
    st.connected = true;
    st.pending = 3;
    st.bytes = 1234;
    st.in_flight = 2;
    st.awaiting_ack = 1;
    st.window = 16;
    st.last_ack_at_ms = 1790000059000LL;
    st.spooled = 77;
    st.sender.sent = 70;
    st.sender.resent = 5;
    st.sender.accepted = 66;
    st.sender.duplicate = 1;
    st.sender.rejected = 1;
    st.sender.retry_later = 2;
    st.sender.failovers = 3;
    return st;
}

static void test_status_file_round_trip(void **state)
{
    struct st_state *s = *state;
    struct agent_status st = sample_status();
    struct agent_status back;
    char path[128];
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(agent_status_write(s->dir, &st, NULL), RSL_OK);
    snprintf(path, sizeof(path), "%s/status", s->dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(rsl_file_read_all(path, 1 << 16, &buf, &len, NULL), RSL_OK);
    assert_int_equal(agent_status_parse((char *)buf, len, path, &back, NULL), RSL_OK);
    free(buf);
    assert_memory_equal(&st, &back, sizeof(st));

    /* Rewritten in place: a shorter status leaves nothing of the longer
     * one behind (same file, cut to length). */
    ino_t inode = sb.st_ino;
    memset(&st, 0, sizeof(st));
    st.pid = 1;
    assert_int_equal(agent_status_write(s->dir, &st, NULL), RSL_OK);
    snprintf(path, sizeof(path), "%s/status", s->dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_ino, inode);
    assert_int_equal(rsl_file_read_all(path, 1 << 16, &buf, &len, NULL), RSL_OK);
    assert_int_equal(agent_status_parse((char *)buf, len, path, &back, NULL), RSL_OK);
    assert_int_equal(back.pid, 1);
    assert_int_equal(back.sender.failovers, 0);
    free(buf);
}

static void test_status_file_hostile(void **state)
{
    (void)state;
    struct agent_status st;
    struct rsl_error err;
    static const struct {
        const char *text;
        const char *needle;
    } bad[] = {
        {"", "o:1:"},
        {"not json", "o:1:"},
        {"[1, 2]", "not a JSON object"},
        {"{\"pid\": \"4242\"}", "'pid' is not a non-negative integer"},
        {"{\"pending\": -1}", "'pending' is not a non-negative integer"},
        {"{\"window\": -4}", "'window' is not a non-negative integer"},
        {"{\"window\": \"16\"}", "'window'"},
        {"{\"bytes\": 1.5}", "'bytes'"},
        {"{\"connected\": 1}", "'connected' is not true or false"},
        {"{\"endpoint\": 7}", "'endpoint' is not a string"},
        {"{\"sender\": [1]}", "'sender' is not an object"},
        {"{\"sender\": {\"sent\": null}}", "'sent'"},
        {"{\"pid\": 1, \"pid\": 2}", "duplicate"},
        {"{\"pid\": 1} {}", "o:1:"},
        {"{\"agent_id\": \"a\\u0000b\"}", "o:1:"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rsl_error_clear(&err);
        if (agent_status_parse(bad[i].text, strlen(bad[i].text), "o", &st, &err) == RSL_OK)
            fail_msg("accepted %s", bad[i].text);
        if (strstr(err.text, bad[i].needle) == NULL)
            fail_msg("%s: '%s' lacks '%s'", bad[i].text, err.text, bad[i].needle);
    }
    /* An endpoint longer than any we write. */
    char longer[600] = "{\"endpoint\": \"";
    memset(longer + strlen(longer), 'x', 400);
    strcat(longer, "\"}");
    assert_int_equal(agent_status_parse(longer, strlen(longer), "o", &st, NULL), RSL_EPARSE);
    assert_int_equal(agent_status_parse("{\"a\": 1}\0", 9, "o", &st, NULL), RSL_EPARSE);
    char *big = malloc(AGENT_STATUS_FILE_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', AGENT_STATUS_FILE_MAX + 1);
    big[0] = '{';
    big[AGENT_STATUS_FILE_MAX] = '}';
    assert_int_equal(agent_status_parse(big, AGENT_STATUS_FILE_MAX + 1, "o", &st, NULL),
                     RSL_ETOOBIG);
    free(big);
    /* Unknown members are ignored, missing ones stay 0. */
    const char *ok = "{\"future_member\": {\"x\": [1]}, \"pid\": 9}";
    assert_int_equal(agent_status_parse(ok, strlen(ok), "o", &st, NULL), RSL_OK);
    assert_int_equal(st.pid, 9);
    assert_int_equal(st.pending, 0);
    assert_false(st.connected);
}

static void test_lock(void **state)
{
    struct st_state *s = *state;
    int fd = -1, fd2 = -1;
    int64_t pid = 0;
    struct rsl_error err;
    assert_false(agent_status_daemon_running(s->dir, &pid));
    assert_int_equal(agent_status_lock(s->dir, &fd, NULL), RSL_OK);
    assert_true(fd >= 0);
    assert_true(agent_status_daemon_running(s->dir, &pid));
    assert_int_equal(pid, (int64_t)getpid());
    rsl_error_clear(&err);
    assert_int_equal(agent_status_lock(s->dir, &fd2, &err), RSL_EEXIST);
    assert_int_equal(fd2, -1);
    char needle[64];
    snprintf(needle, sizeof(needle), "another resilience-agent (pid %ld)", (long)getpid());
    assert_contains(err.text, needle);
    close(fd);
    assert_false(agent_status_daemon_running(s->dir, &pid));
    assert_int_equal(pid, 0);
    assert_int_equal(agent_status_lock(s->dir, &fd, NULL), RSL_OK);
    close(fd);
}

/* A config good enough for the report: id, spool, endpoint, limits. */
static struct agent_config *report_config(const struct st_state *s)
{
    struct agent_config *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(cfg);
    snprintf(cfg->id, sizeof(cfg->id), "DEU-BMI-01");
    snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s/spool", s->dir);
    snprintf(cfg->endpoints[0], sizeof(cfg->endpoints[0]), "tcp://central.example:7450");
    cfg->n_endpoints = 1;
    cfg->spool_max_bytes = 512ULL * 1024 * 1024;
    cfg->spool_max_age_ms = 30LL * 86400 * 1000;
    cfg->spool_full_policy = AGENT_SPOOL_DROP_OLDEST;
    return cfg;
}

static char *report(const struct agent_config *cfg, bool json, int64_t now)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_status_report(cfg, json, now, out, &err) != RSL_OK)
        fail_msg("%s", err.text);
    fclose(out);
    return text;
}

static void test_report(void **state)
{
    struct st_state *s = *state;
    struct agent_config *cfg = report_config(s);
    char path[AGENT_PATH_MAX + 16];

    /* Never run: no spool folder. */
    char *text = report(cfg, false, rsl_now_ms());
    assert_contains(text, "resilience-agent DEU-BMI-01: not running (no spool yet");
    assert_contains(text, "0 reports pending");
    free(text);

    /* A spool with 3 pending (100-byte payloads), 1 rejected, drops. */
    struct agent_spool *sp = NULL;
    uint8_t payload[100] = {0};
    assert_int_equal(agent_spool_open(cfg->spool_dir, &sp, NULL), RSL_OK);
    for (uint64_t seq = 5; seq <= 8; seq++)
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    assert_int_equal(agent_spool_reject(sp, 8, "no", NULL), RSL_OK);
    agent_spool_close(&sp);
    snprintf(path, sizeof(path), "%s/counters", cfg->spool_dir);
    write_text(path, "dropped_oldest 4\nexpired 2\nrefused 1\n");
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    write_text(path, "9\n");
    struct agent_status st = sample_status();
    int64_t now = rsl_now_ms();
    st.last_ack_at_ms = now - 5000;
    assert_int_equal(agent_status_write(cfg->spool_dir, &st, NULL), RSL_OK);

    text = report(cfg, true, now + 60000);
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    if (root == NULL)
        fail_msg("not JSON: %s\n%s", jerr.text, text);
    assert_string_equal(json_string_value(json_object_get(root, "agent_id")), "DEU-BMI-01");
    assert_true(json_is_false(json_object_get(root, "daemon_running")));
    assert_true(json_is_null(json_object_get(root, "pid")));
    assert_int_equal(json_integer_value(json_object_get(root, "spool_depth")), 3);
    assert_int_equal(json_integer_value(json_object_get(root, "spool_bytes")), 3 * 164);
    assert_int_equal(json_integer_value(json_object_get(root, "oldest_unacked_sequence")), 5);
    double age = json_number_value(json_object_get(root, "oldest_unacked_age_s"));
    assert_true(age >= 59.0 && age < 600.0);
    assert_int_equal(json_integer_value(json_object_get(root, "drops")), 7);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "drops_detail"), "expired")), 2);
    assert_int_equal(json_integer_value(json_object_get(root, "rejected")), 1);
    assert_int_equal(json_integer_value(json_object_get(root, "corrupt")), 0);
    assert_int_equal(json_integer_value(json_object_get(root, "next_sequence")), 9);
    /* From the status file: where it last sent, when it was last acked. */
    assert_string_equal(json_string_value(json_object_get(root, "endpoint")),
                        "tcp://backup.example:7450");
    assert_true(json_is_false(json_object_get(root, "connected"))); /* not running */
    assert_non_null(json_string_value(json_object_get(root, "last_ack_at")));
    double ack_age = json_number_value(json_object_get(root, "last_ack_age_s"));
    assert_true(ack_age > 64.0 && ack_age < 66.0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(root, "since_start"), "failovers")), 3);
    json_decref(root);
    free(text);

    /* The human form says the same. */
    text = report(cfg, false, now + 60000);
    assert_contains(text, "resilience-agent DEU-BMI-01: not running\n");
    assert_contains(text, "endpoint        tcp://backup.example:7450 (when last running)");
    assert_contains(text,
                    "3 reports pending, 492 B (limit 512.0 MiB, drop_oldest, max age 30d 0h)");
    assert_contains(text, "oldest unacked  1m 0");
    assert_contains(text, "(sequence 5)");
    assert_contains(text, "last ack        1m 05s ago");
    assert_contains(text, "drops           7 (spool full 4, expired 2, refused 1)");
    assert_contains(text, "rejected        1 (reasons in ");
    free(text);

    /* With the lock held (a daemon runs): running, connected, pid. */
    int fd = -1;
    assert_int_equal(agent_status_lock(cfg->spool_dir, &fd, NULL), RSL_OK);
    text = report(cfg, false, now);
    char needle[96];
    snprintf(needle, sizeof(needle), "running (pid %ld)", (long)getpid());
    assert_contains(text, needle);
    assert_contains(text, "tcp://backup.example:7450 (connected)");
    free(text);
    close(fd);

    /* A damaged status file and counters file are reported, not fatal. */
    snprintf(path, sizeof(path), "%s/status", cfg->spool_dir);
    write_text(path, "{\"pid\": \"x\"}");
    snprintf(path, sizeof(path), "%s/counters", cfg->spool_dir);
    write_text(path, "dropped_oldest many\n");
    text = report(cfg, false, now);
    assert_contains(text, "warning         ");
    assert_contains(text, "'pid' is not a non-negative integer");
    assert_contains(text, "'many' is not a count");
    assert_contains(text, "endpoint        tcp://central.example:7450\n");
    free(text);
    free(cfg);
}

static void test_submit_args(void **state)
{
    (void)state;
    struct rsl_sample sm;
    struct rsl_error err;
    assert_int_equal(agent_submit_parse_arg("energy.oil_stock_days=91.5:days", &sm, NULL), RSL_OK);
    assert_string_equal(sm.indicator, "energy.oil_stock_days");
    assert_true(sm.value == 91.5);
    assert_string_equal(sm.unit, "days");
    assert_int_equal(sm.observed_at_ms, 0);
    assert_int_equal(agent_submit_parse_arg("a=-3e2", &sm, NULL), RSL_OK);
    assert_true(sm.value == -300.0);
    assert_string_equal(sm.unit, "");
    assert_int_equal(agent_submit_parse_arg("x.pct=12:%", &sm, NULL), RSL_OK);
    assert_string_equal(sm.unit, "%");

    static const struct {
        const char *arg;
        const char *needle;
    } bad[] = {
        {"", "expected INDICATOR=VALUE[:UNIT]"},
        {"energy.oil", "expected INDICATOR=VALUE[:UNIT]"},
        {"=5", "'' is not an indicator id"},
        {"Energy=5", "'Energy' is not an indicator id"},
        {"a b=5", "is not an indicator id"},
        {"a=", "'' is not a finite number"},
        {"a=five", "'five' is not a finite number"},
        {"a=nan", "not a finite number"},
        {"a=inf", "not a finite number"},
        {"a=1e999", "not a finite number"},
        {"a=5 ", "not a finite number"},
        {"a=5=6", "not a finite number"},
        {"a=5:", "'' is not a unit"},
        {"a=5:da ys", "is not a unit"},
        {"a=5:d:x", "is not a unit"},
        {"a=5:0123456789012345678901234567890123456789", "is not a unit"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rsl_error_clear(&err);
        if (agent_submit_parse_arg(bad[i].arg, &sm, &err) == RSL_OK)
            fail_msg("accepted '%s'", bad[i].arg);
        if (strstr(err.text, bad[i].needle) == NULL)
            fail_msg("'%s': '%s' lacks '%s'", bad[i].arg, err.text, bad[i].needle);
    }
    /* Very long arguments and control characters are quoted safely. */
    char longarg[2048];
    memset(longarg, 'a', sizeof(longarg) - 1);
    longarg[sizeof(longarg) - 1] = '\0';
    rsl_error_clear(&err);
    assert_int_not_equal(agent_submit_parse_arg(longarg, &sm, &err), RSL_OK);
    assert_contains(err.text, "longer than");
    assert_true(strlen(err.text) < 200);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_submit_parse_arg("a\nb=1", &sm, &err), RSL_OK);
    assert_null(strchr(err.text, '\n'));
}

int main(void)
{
    rsl_log_init("test_agent_status", RSL_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_file_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_file_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_args, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
