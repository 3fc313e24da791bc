/*
 * test_agentconfig.c - agent.conf loading and the key folder it names.
 *
 * A valid file loads with its defaults and with relative paths resolved
 * against the config's folder; every kind of mistake is an error that names
 * FILE:LINE (or FILE and the section for what is missing): unknown keys and
 * sections, duplicates, missing required keys, bad nation / id / endpoint /
 * server key / durations, keys that do not apply to a collector type,
 * unknown collector types, file/http collectors without path/url, bad URLs
 * and public-key pins, bad spool bounds / window / heartbeat, a nation
 * missing from a given nation list. New keys have their documented
 * defaults (spool 512 MiB / 30 d / drop_oldest, window 512, backoff_max 5m,
 * heartbeat 10s; a file collector's max_age is 3 x its interval).
 * Key loading refuses a group-readable sign.key naming it, and a curve.pub
 * that does not belong to curve.key. A server key made of the Z85
 * characters that trip INI parsers survives loading unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "agent/config.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/util.h"

struct cfg_state {
    char dir[64];
    char path[128];      /* <dir>/agent.conf */
    char server_key[41];
};

static int setup(void **state)
{
    struct cfg_state *s = calloc(1, sizeof(*s));
    char secret[41];
    char keys[128];
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-agentconfig-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    snprintf(s->path, sizeof(s->path), "%s/agent.conf", s->dir);
    snprintf(keys, sizeof(keys), "%s/keys", s->dir);
    if (rsl_keys_generate(keys, NULL) != RSL_OK)
        return -1;
    if (zmq_curve_keypair(s->server_key, secret) != 0)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct cfg_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A valid config with `agent_extra` appended to [agent] and `tail` after
 * everything (more sections). Placeholders: none; the server key is ours. */
static void write_config(const struct cfg_state *s, const char *agent_extra, const char *tail)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "; test agent\n"                                  /* 1 */
             "[agent]\n"                                       /* 2 */
             "id = DEU-BMI-01\n"                               /* 3 */
             "nation = DEU\n"                                  /* 4 */
             "organisation = Federal Ministry of the Interior\n" /* 5 */
             "keys = keys/\n"                                  /* 6 */
             "spool = spool\n"                                 /* 7 */
             "%s"
             "[aggregator]\n"
             "endpoints = tcp://127.0.0.1:7450, tcp://backup.example:7450\n"
             "server_key = %s\n"
             "[collector fuel]\n"
             "type = exec\n"
             "command = /usr/lib/resilience/collectors/fuel.sh --fast\n"
             "%s",
             agent_extra, s->server_key, tail);
    write_text(s->path, text);
}

/* Load and expect failure; returns the message for further checks. */
static const char *load_fails(const struct cfg_state *s, int expect_rc)
{
    static struct rsl_error err;
    struct agent_config *cfg = NULL;
    rsl_error_clear(&err);
    int rc = agent_config_load(s->path, &cfg, &err);
    if (rc == RSL_OK)
        fail_msg("loaded, expected an error");
    assert_int_equal(rc, expect_rc);
    assert_null(cfg);
    return err.text;
}

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", text, needle);
}

static void expect_error_at(const struct cfg_state *s, int line, const char *needle)
{
    char where[160];
    const char *msg = load_fails(s, RSL_ECONFIG);
    snprintf(where, sizeof(where), "%s:%d: ", s->path, line);
    assert_contains(msg, where);
    assert_contains(msg, needle);
}

static void test_valid_defaults_and_paths(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    struct rsl_error err;
    char expect[256];
    write_config(s, "",
                 "[collector stock]\ntype = static\nvalue = 42.5\nunit = days\n"
                 "interval = 5m\nreleasable_to = EU, NATO_X, EU\n"
                 "[log]\nlevel = debug\n");
    rsl_error_clear(&err);
    assert_int_equal(agent_config_load(s->path, &cfg, &err), RSL_OK);
    assert_string_equal(cfg->id, "DEU-BMI-01");
    assert_string_equal(cfg->nation, "DEU");
    assert_string_equal(cfg->organisation, "Federal Ministry of the Interior");
    snprintf(expect, sizeof(expect), "%s/keys/", s->dir);
    assert_string_equal(cfg->keys_dir, expect);
    snprintf(expect, sizeof(expect), "%s/spool", s->dir);
    assert_string_equal(cfg->spool_dir, expect);
    assert_string_equal(cfg->marking, "NATO UNCLASSIFIED");
    assert_int_equal(cfg->releasable_to.n, 0);
    assert_int_equal(cfg->resend_timeout_ms, 30000);
    assert_int_equal(cfg->max_message_bytes, 262144);
    assert_int_equal(cfg->n_endpoints, 2);
    assert_string_equal(cfg->endpoints[0], "tcp://127.0.0.1:7450");
    assert_string_equal(cfg->endpoints[1], "tcp://backup.example:7450");
    assert_string_equal(cfg->server_key, s->server_key);
    assert_int_equal(cfg->log_level, RSL_LOG_DEBUG);
    assert_int_equal(cfg->n_collectors, 2);

    const struct agent_collector_config *fuel = &cfg->collectors[0];
    assert_string_equal(fuel->name, "fuel");
    assert_int_equal(fuel->type, AGENT_COLLECTOR_EXEC);
    assert_string_equal(fuel->command, "/usr/lib/resilience/collectors/fuel.sh --fast");
    assert_int_equal(fuel->interval_ms, 60000);
    assert_int_equal(fuel->timeout_ms, 10000);
    assert_false(fuel->releasable_set);

    const struct agent_collector_config *stock = &cfg->collectors[1];
    assert_int_equal(stock->type, AGENT_COLLECTOR_STATIC);
    assert_string_equal(stock->indicator, "stock"); /* defaults to the name */
    assert_true(stock->value == 42.5);
    assert_string_equal(stock->unit, "days");
    assert_int_equal(stock->interval_ms, 300000);
    assert_true(stock->releasable_set);
    assert_int_equal(stock->releasable_to.n, 2); /* duplicate EU dropped */
    assert_string_equal(stock->releasable_to.id[0], "EU");
    assert_string_equal(stock->releasable_to.id[1], "NATO_X");

    /* The generated keys load; the signer and CURVE pair are usable. */
    struct agent_keys *keys = NULL;
    rsl_error_clear(&err);
    if (agent_keys_load(cfg, &keys, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_non_null(keys->signer);
    assert_int_equal(strlen(keys->curve_secret), 40);
    assert_int_equal(strlen(keys->curve_public), 40);
    agent_keys_free(&keys);
    assert_null(keys);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
    assert_null(cfg);
    agent_config_free(&cfg);
}

static void test_agent_options(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    write_config(s,
                 "marking = NATO RESTRICTED\nreleasable_to = EU\nresend_timeout = 500ms\n"
                 "max_message_bytes = 65536\n",
                 "");
    assert_int_equal(agent_config_load(s->path, &cfg, NULL), RSL_OK);
    assert_string_equal(cfg->marking, "NATO RESTRICTED");
    assert_int_equal(cfg->releasable_to.n, 1);
    assert_int_equal(cfg->resend_timeout_ms, 500);
    assert_int_equal(cfg->max_message_bytes, 65536);
    agent_config_free(&cfg);
}

/* Phase 2 keys: spool bounds, window, backoff, heartbeat; defaults first. */
static void test_spool_and_delivery_options(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    write_config(s, "", "");
    assert_int_equal(agent_config_load(s->path, &cfg, NULL), RSL_OK);
    assert_int_equal(cfg->spool_max_bytes, 512ULL * 1024 * 1024);
    assert_int_equal(cfg->spool_max_age_ms, 30LL * 86400 * 1000);
    assert_int_equal(cfg->spool_full_policy, AGENT_SPOOL_DROP_OLDEST);
    assert_int_equal(cfg->window, 512);
    assert_int_equal(cfg->backoff_max_ms, 300000);
    assert_int_equal(cfg->heartbeat_ms, 10000);
    agent_config_free(&cfg);

    write_config(s,
                 "spool_max_mb = 0.5\nspool_max_age = 2d\nspool_full_policy = refuse_new\n"
                 "window = 7\nbackoff_max = 90s\nheartbeat = 2s\n",
                 "");
    assert_int_equal(agent_config_load(s->path, &cfg, NULL), RSL_OK);
    assert_int_equal(cfg->spool_max_bytes, 512 * 1024);
    assert_int_equal(cfg->spool_max_age_ms, 2LL * 86400 * 1000);
    assert_int_equal(cfg->spool_full_policy, AGENT_SPOOL_REFUSE_NEW);
    assert_int_equal(cfg->window, 7);
    assert_int_equal(cfg->backoff_max_ms, 90000);
    assert_int_equal(cfg->heartbeat_ms, 2000);
    agent_config_free(&cfg);

    /* heartbeat = 0 turns heartbeats off; 365 days of spool age is fine. */
    write_config(s, "heartbeat = 0\nspool_max_age = 365d\n", "");
    assert_int_equal(agent_config_load(s->path, &cfg, NULL), RSL_OK);
    assert_int_equal(cfg->heartbeat_ms, 0);
    assert_int_equal(cfg->spool_max_age_ms, 365LL * 86400 * 1000);
    agent_config_free(&cfg);
}

/* file and http collectors: keys, defaults, resolved paths. */
static void test_file_and_http_collectors(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    struct rsl_error err;
    char expect[256];
    write_config(s, "",
                 "[collector drop]\ntype = file\npath = textfiles\ninterval = 20s\n"
                 "[collector old]\ntype = file\npath = /var/lib/x\nmax_age = 1h\n"
                 "[collector web]\ntype = http\nurl = https://stats.example:8443/v1/now?x=1\n"
                 "ca_file = tls/ca.pem\ntimeout = 3s\nformat = json\n"
                 "pinned_public_key = sha256//YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=;"
                 "sha256//YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI=\n"
                 "bearer_token_file = /etc/resilience/token\nreleasable_to = EU\n"
                 "[collector plain]\ntype = http\nurl = http://127.0.0.1:9100/metrics\n");
    rsl_error_clear(&err);
    if (agent_config_load(s->path, &cfg, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_int_equal(cfg->n_collectors, 5);
    const struct agent_collector_config *drop = &cfg->collectors[1];
    assert_int_equal(drop->type, AGENT_COLLECTOR_FILE);
    snprintf(expect, sizeof(expect), "%s/textfiles", s->dir);
    assert_string_equal(drop->path, expect);
    assert_int_equal(drop->max_age_ms, 60000); /* 3 x interval */
    const struct agent_collector_config *old = &cfg->collectors[2];
    assert_string_equal(old->path, "/var/lib/x");
    assert_int_equal(old->max_age_ms, 3600000);
    assert_int_equal(old->interval_ms, 60000);
    const struct agent_collector_config *web = &cfg->collectors[3];
    assert_int_equal(web->type, AGENT_COLLECTOR_HTTP);
    assert_string_equal(web->url, "https://stats.example:8443/v1/now?x=1");
    snprintf(expect, sizeof(expect), "%s/tls/ca.pem", s->dir);
    assert_string_equal(web->ca_file, expect);
    assert_int_equal(web->timeout_ms, 3000);
    assert_int_equal(web->format, AGENT_HTTP_JSON);
    assert_non_null(strstr(web->pinned_public_key, ";sha256//YmJi"));
    assert_string_equal(web->bearer_token_file, "/etc/resilience/token");
    assert_true(web->releasable_set);
    const struct agent_collector_config *plain = &cfg->collectors[4];
    assert_int_equal(plain->format, AGENT_HTTP_AUTO);
    assert_null(plain->ca_file);
    assert_null(plain->pinned_public_key);
    assert_null(plain->bearer_token_file);
    assert_int_equal(plain->timeout_ms, 10000);
    assert_string_equal(agent_collector_type_name(AGENT_COLLECTOR_FILE), "file");
    assert_string_equal(agent_collector_type_name(AGENT_COLLECTOR_HTTP), "http");
    agent_config_free(&cfg);

    /* A failure after heap strings were set frees them (LeakSanitizer). */
    write_config(s, "", "[collector web]\ntype = http\nurl = https://x/\nca_file = a\n"
                 "format = yaml\n");
    expect_error_at(s, 18, "invalid format");
}

static void test_missing_file(void **state)
{
    struct cfg_state *s = *state;
    const char *msg = load_fails(s, RSL_ENOENT);
    assert_contains(msg, s->path);
}

static void test_unknown_key_and_section(void **state)
{
    struct cfg_state *s = *state;
    write_config(s, "", "intervall = 5\n");
    /* line 14: the first line after "command" */
    expect_error_at(s, 14, "unknown key 'intervall' in [collector fuel]");

    write_config(s, "colour = blue\n", "");
    expect_error_at(s, 8, "unknown key 'colour' in [agent]");

    write_config(s, "", "[agnet]\nid = x\n");
    expect_error_at(s, 15, "unknown section [agnet]");

    write_config(s, "", "[aggregator extra]\nendpoints = tcp://a:1\n");
    expect_error_at(s, 15, "unknown section [aggregator extra]");

    write_text(s->path, "id = x\n[agent]\n");
    expect_error_at(s, 1, "outside any section");
}

static void test_duplicate_key(void **state)
{
    struct cfg_state *s = *state;
    write_config(s, "nation = FRA\n", "");
    expect_error_at(s, 8, "duplicate key 'nation' in [agent] (first set on line 4)");
    write_config(s, "", "[collector fuel]\ntype = static\n");
    expect_error_at(s, 15, "duplicate key 'type'");
}

static void test_missing_required(void **state)
{
    struct cfg_state *s = *state;
    char text[4096];

    /* No id: points at the [agent] header. */
    snprintf(text, sizeof(text),
             "\n[agent]\nnation = DEU\norganisation = X\nkeys = keys\nspool = spool\n"
             "[aggregator]\nendpoints = tcp://127.0.0.1:7450\nserver_key = %s\n"
             "[collector a]\ntype = static\nvalue = 1\n",
             s->server_key);
    write_text(s->path, text);
    expect_error_at(s, 2, "missing required key 'id' in [agent]");

    /* No server_key. */
    snprintf(text, sizeof(text),
             "[agent]\nid = A1\nnation = DEU\norganisation = X\nkeys = keys\nspool = spool\n"
             "[aggregator]\nendpoints = tcp://127.0.0.1:7450\n"
             "[collector a]\ntype = static\nvalue = 1\n");
    write_text(s->path, text);
    expect_error_at(s, 7, "missing required key 'server_key' in [aggregator]");

    /* No [aggregator] at all: no line to point at. */
    snprintf(text, sizeof(text),
             "[agent]\nid = A1\nnation = DEU\norganisation = X\nkeys = keys\nspool = spool\n"
             "[collector a]\ntype = static\nvalue = 1\n");
    write_text(s->path, text);
    assert_contains(load_fails(s, RSL_ECONFIG), "missing required key 'endpoints' in [aggregator]");

    /* No collector. */
    snprintf(text, sizeof(text),
             "[agent]\nid = A1\nnation = DEU\norganisation = X\nkeys = keys\nspool = spool\n"
             "[aggregator]\nendpoints = tcp://127.0.0.1:7450\nserver_key = %s\n",
             s->server_key);
    write_text(s->path, text);
    assert_contains(load_fails(s, RSL_ECONFIG), "at least one collector");

    /* Collector without type / static without value / exec without command. */
    write_config(s, "", "[collector b]\ninterval = 10\n");
    expect_error_at(s, 14, "missing required key 'type' in [collector b]");
    write_config(s, "", "[collector b]\ntype = static\n");
    expect_error_at(s, 14, "missing required key 'value' in [collector b]");
    write_config(s, "", "[collector b]\ntype = exec\n");
    expect_error_at(s, 14, "missing required key 'command' in [collector b]");
}

static void test_bad_values(void **state)
{
    struct cfg_state *s = *state;
    struct {
        const char *agent_extra;
        const char *tail;
        int line;
        const char *needle;
    } cases[] = {
        {"", "[collector b]\ntype = http\n", 14, "missing required key 'url' in [collector b]"},
        {"", "[collector b]\ntype = file\n", 14, "missing required key 'path' in [collector b] (the drop folder)"},
        {"", "[collector b]\ntype = file\npath = d\nmax_age = 0\n", 17, "'max_age' must be between"},
        {"", "[collector b]\ntype = file\npath =\n", 16, "'path' is empty"},
        {"", "[collector b]\ntype = file\npath = d\nurl = http://x/\n", 17, "key 'url' does not apply to a file collector"},
        {"", "[collector b]\ntype = file\npath = d\ntimeout = 5\n", 17, "key 'timeout' does not apply to a file collector"},
        {"", "[collector b]\ntype = exec\ncommand = x\npath = d\n", 17, "key 'path' does not apply to a exec collector"},
        {"", "[collector b]\ntype = http\nurl = https://x/\npath = d\n", 17, "key 'path' does not apply to a http collector"},
        {"", "[collector b]\ntype = http\nurl = ftp://x/\n", 16, "'url' must start with https:// or http://"},
        {"", "[collector b]\ntype = http\nurl = https://\n", 16, "'url' has no host"},
        {"", "[collector b]\ntype = http\nurl = https:///x\n", 16, "'url' has no host"},
        {"", "[collector b]\ntype = http\nurl = https://a b/\n", 16, "'url' contains a space"},
        {"", "[collector b]\ntype = http\nurl = https://x/\nformat = xml\n", 17, "invalid format 'xml'"},
        {"", "[collector b]\ntype = http\nurl = https://x/\npinned_public_key = abc\n", 17, "'pinned_public_key' must be sha256//BASE64"},
        {"", "[collector b]\ntype = http\nurl = https://x/\npinned_public_key = sha256//abc\n", 17, "44 base64 characters"},
        {"", "[collector b]\ntype = http\nurl = https://x/\npinned_public_key = sha256//!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=\n", 17, "is not base64"},
        {"", "[collector b]\ntype = http\nurl = https://x/\npinned_public_key = sha256//YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=;md5//x\n", 17, "must be sha256//BASE64"},
        {"", "[collector b]\ntype = http\nurl = http://x/\npinned_public_key = sha256//YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=\n", 17, "'pinned_public_key' needs an https:// url"},
        {"spool_max_mb = 0\n", "", 8, "'spool_max_mb' must be a number of MiB"},
        {"spool_max_mb = lots\n", "", 8, "'spool_max_mb' must be a number of MiB"},
        {"spool_max_mb = 2000000\n", "", 8, "'spool_max_mb' must be a number of MiB"},
        {"spool_max_age = 0\n", "", 8, "'spool_max_age' must be between"},
        {"spool_max_age = forever\n", "", 8, "invalid duration for 'spool_max_age'"},
        {"spool_full_policy = drop_newest\n", "", 8, "invalid spool_full_policy 'drop_newest' (drop_oldest | refuse_new)"},
        {"window = 0\n", "", 8, "'window' must be a number of reports from 1 to 4096"},
        {"window = 5000\n", "", 8, "'window' must be a number of reports"},
        {"window = 8x\n", "", 8, "'window' must be a number of reports"},
        {"backoff_max = 1ms\n", "", 8, "'backoff_max' must be between"},
        {"heartbeat = 50ms\n", "", 8, "'heartbeat' must be between"},
        {"heartbeat = 1h\n", "", 8, "'heartbeat' must be between"},
        {"", "[collector b]\ntype = snmp\n", 15, "unknown collector type 'snmp'"},
        {"", "[collector b]\ntype = static\nvalue = nan\n", 16, "'value' is not a finite number"},
        {"", "[collector b]\ntype = static\nvalue = 1e999\n", 16, "'value' is not a finite number"},
        {"", "[collector b]\ntype = static\nvalue = 1\nindicator = Bad-Id\n", 17, "invalid indicator"},
        {"", "[collector b]\ntype = static\nvalue = 1\nunit = a b\n", 17, "invalid unit"},
        {"", "[collector b]\ninterval = 0\n", 15, "'interval' must be between"},
        {"", "[collector b]\ninterval = soon\n", 15, "invalid duration for 'interval'"},
        {"", "[collector b]\ntype = exec\ncommand = x\ntimeout = -1\n", 17, "invalid duration for 'timeout'"},
        {"", "[collector b]\ntype = static\nvalue = 1\nreleasable_to = E U\n", 17, "invalid partner id"},
        {"", "[collector b]\ntype = static\nvalue = 1\ncommand = ls\n", 17, "key 'command' does not apply to a static collector"},
        {"", "[collector b]\ntype = exec\ncommand = ls\nvalue = 1\n", 17, "key 'value' does not apply to a exec collector"},
        {"", "[collector B-1]\ntype = static\nvalue = 1\n", 15, "not a valid indicator id"},
        {"", "[collector bad/name]\ntype = static\n", 15, "invalid collector name"},
        {"", "[collector fuel]\ncommand = x\n", 15, "duplicate key 'command'"},
        {"", "[log]\nlevel = loud\n", 15, "invalid log level 'loud'"},
        {"marking = " "0123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789012345678901234567890123456789012345678901234567890123456789\n",
         "", 8, "'marking' is longer than 128 characters"},
        {"resend_timeout = 10ms\n", "", 8, "'resend_timeout' must be between"},
        {"max_message_bytes = 100\n", "", 8, "'max_message_bytes' must be"},
        {"max_message_bytes = 1MB\n", "", 8, "'max_message_bytes' must be"},
        {"organisation =\n", "", 8, "duplicate key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_config(s, cases[i].agent_extra, cases[i].tail);
        expect_error_at(s, cases[i].line, cases[i].needle);
    }
}

/* Values of required keys, replaced one at a time in a minimal file. */
static void test_bad_identity_and_aggregator(void **state)
{
    struct cfg_state *s = *state;
    char text[4096];
    struct {
        const char *id, *nation, *endpoints, *server_key;
        int line;
        const char *needle;
    } cases[] = {
        {"DEU BMI", "DEU", "tcp://h:1", NULL, 2, "invalid agent id"},
        {"-DEU", "DEU", "tcp://h:1", NULL, 2, "invalid agent id"},
        {"A1", "de", "tcp://h:1", NULL, 3, "invalid nation 'de'"},
        {"A1", "DEUX", "tcp://h:1", NULL, 3, "invalid nation 'DEUX'"},
        {"A1", "D3U", "tcp://h:1", NULL, 3, "invalid nation"},
        {"A1", "DEU", "http://h:1", NULL, 8, "invalid endpoint 'http://h:1'"},
        {"A1", "DEU", "tcp://h", NULL, 8, "invalid endpoint 'tcp://h'"},
        {"A1", "DEU", "tcp://h:1,tcp://:", NULL, 8, "invalid endpoint"},
        {"A1", "DEU", ",", NULL, 8, "'endpoints' is empty"},
        {"A1", "DEU", "tcp://h:1", "short", 9, "not a valid Z85 CURVE public key"},
        {"A1", "DEU", "tcp://h:1", "0123456789012345678901234567890123456789x", 9,
         "not a valid Z85"},
        {"A1", "DEU", "tcp://h:1", "012345678901234567890123456789012345678\"", 9,
         "not a valid Z85"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text),
                 "[agent]\nid = %s\nnation = %s\norganisation = X\nkeys = keys\nspool = spool\n"
                 "[aggregator]\nendpoints = %s\nserver_key = %s\n"
                 "[collector a]\ntype = static\nvalue = 1\n",
                 cases[i].id, cases[i].nation, cases[i].endpoints,
                 cases[i].server_key != NULL ? cases[i].server_key : s->server_key);
        write_text(s->path, text);
        expect_error_at(s, cases[i].line, cases[i].needle);
    }
}

/* '#', '%', '&', '(', '[', ']' and friends are Z85 characters. */
static void test_server_key_with_awkward_characters(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    struct rsl_error err;
    /* Eight 5-character groups; a group's first character is kept small so
     * its value fits 32 bits, the others are the awkward ones. */
    const char *key = "0#%$@0}{][0)(<>0&?*/0!^=+0:-.Z0#[%]0&#(;";
    char text[4096];
    char awkward[41];
    memcpy(awkward, key, 40);
    awkward[40] = '\0';
    awkward[39] = ')'; /* ';' is not Z85: keep the group valid */
    assert_true(rsl_z85_key_valid(awkward));
    snprintf(text, sizeof(text),
             "[agent]\nid = A1\nnation = DEU\norganisation = X\nkeys = keys\nspool = spool\n"
             "[aggregator]\nendpoints = tcp://h:1\nserver_key = %s\n"
             "[collector a]\ntype = static\nvalue = 1\n",
             awkward);
    write_text(s->path, text);
    rsl_error_clear(&err);
    if (agent_config_load(s->path, &cfg, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_string_equal(cfg->server_key, awkward);
    agent_config_free(&cfg);
}

static void test_nation_list(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    struct rsl_error err;
    char extra[512];

    /* DEU is an Ally: fine. */
    snprintf(extra, sizeof(extra), "[taxonomy]\nnations = %s/nations.csv\n", RSL_SHARE_DIR);
    write_config(s, "", extra);
    rsl_error_clear(&err);
    if (agent_config_load(s->path, &cfg, &err) != RSL_OK)
        fail_msg("%s", err.text);
    agent_config_free(&cfg);

    /* Well-formed but not on the list. */
    char text[4096];
    snprintf(text, sizeof(text),
             "[agent]\nid = A1\nnation = XYZ\norganisation = X\nkeys = keys\nspool = spool\n"
             "[aggregator]\nendpoints = tcp://h:1\nserver_key = %s\n"
             "[collector a]\ntype = static\nvalue = 1\n"
             "[taxonomy]\npath = %s/indicators.csv\n",
             s->server_key, RSL_SHARE_DIR);
    write_text(s->path, text);
    expect_error_at(s, 3, "nation 'XYZ' is not in");

    /* A nation list that does not exist. */
    write_config(s, "", "[taxonomy]\nnations = no-such.csv\n");
    expect_error_at(s, 15, "no-such.csv");
}

static void test_group_readable_sign_key(void **state)
{
    struct cfg_state *s = *state;
    struct agent_config *cfg = NULL;
    struct agent_keys *keys = NULL;
    struct rsl_error err;
    char key[160];

    write_config(s, "", "");
    assert_int_equal(agent_config_load(s->path, &cfg, NULL), RSL_OK);
    snprintf(key, sizeof(key), "%s/keys/sign.key", s->dir);
    assert_int_equal(chmod(key, 0640), 0);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_keys_load(cfg, &keys, &err), RSL_OK);
    assert_null(keys);
    assert_contains(err.text, "sign.key");
    char where[160];
    snprintf(where, sizeof(where), "%s:6: keys", s->path);
    assert_contains(err.text, where);

    /* The same for curve.key. */
    assert_int_equal(chmod(key, 0600), 0);
    snprintf(key, sizeof(key), "%s/keys/curve.key", s->dir);
    assert_int_equal(chmod(key, 0644), 0);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_keys_load(cfg, &keys, &err), RSL_OK);
    assert_contains(err.text, "curve.key");
    assert_int_equal(chmod(key, 0600), 0);

    /* A curve.pub from another pair. */
    char pub[41], sec[41], path[160];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    snprintf(path, sizeof(path), "%s/keys/curve.pub", s->dir);
    char line[48];
    snprintf(line, sizeof(line), "%s\n", pub);
    write_text(path, line);
    rsl_error_clear(&err);
    assert_int_equal(agent_keys_load(cfg, &keys, &err), RSL_ECONFIG);
    assert_contains(err.text, "does not belong to curve.key");

    /* A missing key file. */
    assert_int_equal(unlink(path), 0);
    rsl_error_clear(&err);
    assert_int_not_equal(agent_keys_load(cfg, &keys, &err), RSL_OK);
    assert_contains(err.text, "curve.pub");
    agent_config_free(&cfg);
}

int main(void)
{
    rsl_log_init("test_agentconfig", RSL_LOG_WARNING);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_defaults_and_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_and_delivery_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_and_http_collectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_and_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_identity_and_aggregator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_key_with_awkward_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nation_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_readable_sign_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
