/*
 * test_aggconfig.c - aggregator.conf (aggregator/config.h) and the agent
 * registry (aggregator/registry.h): values, defaults, relative paths, and
 * every error naming FILE:LINE (or FILE and section for missing keys).
 * Files are real, written into a fresh mkdtemp folder; the taxonomy is the
 * shipped share/indicators.csv and nations.csv.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "aggregator/config.h"
#include "aggregator/daemon.h"
#include "aggregator/registry.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

#define TAXONOMY_LINE "[taxonomy]\npath = " RSL_SHARE_DIR "/indicators.csv\n"

struct fixture {
    char dir[64];
    char conf[128];
    char registry[128];
    struct agg_config *cfg;
    struct agg_registry *reg;
    struct rsl_taxonomy *tax;
    struct rsl_error err;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rsl-test-aggconfig-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->conf, sizeof(f->conf), "%s/aggregator.conf", f->dir);
    snprintf(f->registry, sizeof(f->registry), "%s/agents.conf", f->dir);
    rsl_error_clear(&f->err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    agg_config_free(&f->cfg);
    agg_registry_release(&f->reg);
    rsl_taxonomy_free(&f->tax);
    rsl_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* Load `text` as aggregator.conf; returns the load result. */
static int load_config(struct fixture *f, const char *text)
{
    write_file(f->conf, text);
    agg_config_free(&f->cfg);
    rsl_error_clear(&f->err);
    return agg_config_load(f->conf, &f->cfg, &f->err);
}

/* Expect failure with "CONF:LINE: ...substring...". */
static void expect_config_error(struct fixture *f, const char *text, int line,
                                const char *substring)
{
    int rc = load_config(f, text);
    if (rc == RSL_OK)
        fail_msg("config loaded but should fail with line %d '%s':\n%s", line, substring, text);
    assert_null(f->cfg);
    char prefix[192];
    if (line > 0)
        snprintf(prefix, sizeof(prefix), "%s:%d: ", f->conf, line);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", f->conf);
    if (strncmp(f->err.text, prefix, strlen(prefix)) != 0 ||
        strstr(f->err.text, substring) == NULL)
        fail_msg("expected '%s...%s', got '%s'", prefix, substring, f->err.text);
}

static const char minimal_required[] =
    "[ingest]\n"
    "keys = keys/\n"
    "registry = agents.conf\n"
    "[store]\n"
    "path = /var/lib/resilience/aggregator.db\n"
    "[https]\n"
    "cert = tls/server.crt\n"
    "key = tls/server.key\n" TAXONOMY_LINE;

/* ---- config: values ------------------------------------------------------ */

static void test_config_full(void **state)
{
    struct fixture *f = *state;
    const char *text =
        "; comment line\n"
        "[ingest]\n"
        "bind = tcp://*:7450, tcp://127.0.0.1:7451\n"
        "keys = keys/\n"
        "registry = agents.conf\n"
        "max_message_bytes = 65536\n"
        "max_future_skew = 2m\n"
        "[store]\n"
        "path = data/aggregator.db\n"
        "[https]\n"
        "listen = [::1]:9443\n"
        "cert = /etc/tls/server.crt\n"
        "key = tls/server.key\n"
        "threads = 4\n" TAXONOMY_LINE
        "[token central-staff]\n"
        "role = staff\n"
        "sha256 = 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n"
        "[token deu]\n"
        "role = nation:DEU\n"
        "sha256 = 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752\n"
        "[token eu]\n"
        "role = partner:EU\n"
        "sha256 = fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13\n"
        "[partner EU]\n"
        "include = BR2, BR5, energy.oil_stock_days\n"
        "min_nations = 5\n"
        "url = https://partner.example/resilience/inbox\n"
        "[log]\n"
        "level = debug\n";
    int rc = load_config(f, text);
    if (rc != RSL_OK)
        fail_msg("%s", f->err.text);
    const struct agg_config *c = f->cfg;
    char expect[256];

    assert_int_equal(c->n_bind, 2);
    assert_string_equal(c->bind[0], "tcp://*:7450");
    assert_string_equal(c->bind[1], "tcp://127.0.0.1:7451");
    /* Relative paths are relative to the config file's folder. */
    snprintf(expect, sizeof(expect), "%s/keys/", f->dir);
    assert_string_equal(c->keys_dir, expect);
    assert_string_equal(c->registry_path, f->registry);
    snprintf(expect, sizeof(expect), "%s/data/aggregator.db", f->dir);
    assert_string_equal(c->store_path, expect);
    assert_int_equal(c->max_message_bytes, 65536);
    assert_int_equal(c->max_future_skew_ms, 120000);

    assert_string_equal(c->https_listen, "[::1]:9443");
    assert_string_equal(c->https_host, "::1");
    assert_int_equal(c->https_port, 9443);
    assert_string_equal(c->https_cert, "/etc/tls/server.crt");
    snprintf(expect, sizeof(expect), "%s/tls/server.key", f->dir);
    assert_string_equal(c->https_key, expect);
    assert_int_equal(c->https_threads, 4);

    assert_string_equal(c->taxonomy_path, RSL_SHARE_DIR "/indicators.csv");
    /* nations default: nations.csv beside the indicators file. */
    assert_string_equal(c->nations_path, RSL_SHARE_DIR "/nations.csv");
    assert_non_null(c->taxonomy);
    assert_true(c->taxonomy->n_indicators > 0);
    assert_true(rsl_taxonomy_nation_index(c->taxonomy, "DEU") >= 0);

    assert_int_equal(c->n_tokens, 3);
    assert_string_equal(c->tokens[0].name, "central-staff");
    assert_int_equal(c->tokens[0].role, AGG_ROLE_STAFF);
    assert_int_equal(c->tokens[0].sha256[0], 0x9f);
    assert_int_equal(c->tokens[0].sha256[31], 0x08);
    assert_int_equal(c->tokens[1].role, AGG_ROLE_NATION);
    assert_string_equal(c->tokens[1].nation, "DEU");
    assert_int_equal(c->tokens[2].role, AGG_ROLE_PARTNER);
    assert_string_equal(c->tokens[2].partner, "EU");
    assert_string_equal(agg_role_kind_name(c->tokens[2].role), "partner");

    /* sha256("test") is the staff token's hash. */
    uint8_t digest[32];
    rsl_sha256("test", 4, digest);
    const struct agg_token *tok = agg_config_token_find(c, digest);
    assert_non_null(tok);
    assert_string_equal(tok->name, "central-staff");
    rsl_sha256("tesT", 4, digest);
    assert_null(agg_config_token_find(c, digest));

    assert_int_equal(c->n_partners, 1);
    assert_string_equal(c->partners[0].id, "EU");
    assert_int_equal(c->partners[0].n_include, 3);
    assert_string_equal(c->partners[0].include[0], "BR2");
    assert_string_equal(c->partners[0].include[2], "energy.oil_stock_days");
    assert_int_equal(c->partners[0].min_nations, 5);
    assert_string_equal(c->partners[0].url, "https://partner.example/resilience/inbox");
    assert_int_equal(c->log_level, 7);
}

static void test_config_defaults(void **state)
{
    struct fixture *f = *state;
    int rc = load_config(f, minimal_required);
    if (rc != RSL_OK)
        fail_msg("%s", f->err.text);
    const struct agg_config *c = f->cfg;
    assert_int_equal(c->n_bind, 1);
    assert_string_equal(c->bind[0], "tcp://*:7450");
    assert_int_equal(c->max_message_bytes, 262144);
    assert_int_equal(c->max_future_skew_ms, 5 * 60 * 1000);
    assert_string_equal(c->https_listen, "0.0.0.0:8443");
    assert_string_equal(c->https_host, "0.0.0.0");
    assert_int_equal(c->https_port, 8443);
    assert_int_equal(c->https_threads, 2);
    assert_int_equal(c->n_tokens, 0);
    assert_int_equal(c->n_partners, 0);
    assert_int_equal(c->log_level, 6);
}

static void test_config_listen_forms(void **state)
{
    struct fixture *f = *state;
    char text[1024];
    const char *forms[][3] = {
        {"127.0.0.1:0", "127.0.0.1", "0"},
        {"*:8443", "0.0.0.0", "8443"},
        {"localhost:443", "localhost", "443"},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        snprintf(text, sizeof(text),
                 "[ingest]\nkeys = k\nregistry = r\n[store]\npath = s\n"
                 "[https]\nlisten = %s\ncert = c\nkey = k\n" TAXONOMY_LINE, forms[i][0]);
        int rc = load_config(f, text);
        if (rc != RSL_OK)
            fail_msg("%s: %s", forms[i][0], f->err.text);
        assert_string_equal(f->cfg->https_host, forms[i][1]);
        assert_int_equal(f->cfg->https_port, atoi(forms[i][2]));
    }
}

/* ---- config: errors ------------------------------------------------------ */

static void test_config_missing_file(void **state)
{
    struct fixture *f = *state;
    rsl_error_clear(&f->err);
    assert_int_equal(agg_config_load(f->conf, &f->cfg, &f->err), RSL_ENOENT);
    assert_null(f->cfg);
    assert_non_null(strstr(f->err.text, f->conf));
}

static void test_config_unknown_key(void **state)
{
    struct fixture *f = *state;
    expect_config_error(f, "[ingest]\nkeys = k\nbogus = 1\n", 3, "unknown key 'bogus' in [ingest]");
    expect_config_error(f, "[store]\npath = x\n[https]\ncert = c\nciphers = x\n", 5,
                        "unknown key 'ciphers' in [https]");
    expect_config_error(f, "[token a]\nrole = staff\nsha = x\n", 3,
                        "unknown key 'sha' in [token a]");
    expect_config_error(f, "[partner EU]\nmin_nation = 3\n", 2,
                        "unknown key 'min_nation' in [partner EU]");
    expect_config_error(f, "[log]\nlevle = info\n", 2, "unknown key 'levle' in [log]");
}

static void test_config_unknown_section(void **state)
{
    struct fixture *f = *state;
    expect_config_error(f, "[ingest]\nkeys = k\n\n[stoer]\npath = x\n", 5,
                        "unknown section [stoer]");
    expect_config_error(f, "[ingest extra]\nkeys = k\n", 2, "[ingest] takes no name");
    expect_config_error(f, "[token]\nrole = staff\n", 2, "needs a name");
}

static void test_config_missing_required(void **state)
{
    struct fixture *f = *state;
    expect_config_error(f,
                        "[ingest]\nkeys = k\nregistry = r\n[https]\ncert = c\nkey = k\n"
                        TAXONOMY_LINE,
                        0, "missing required key 'path' in [store]");
    expect_config_error(f,
                        "[ingest]\nregistry = r\n[store]\npath = s\n[https]\ncert = c\nkey = k\n",
                        0, "missing required key 'keys' in [ingest]");
    expect_config_error(f,
                        "[ingest]\nkeys = k\nregistry = r\n[store]\npath = s\n[https]\n"
                        "cert = c\n",
                        0, "missing required key 'key' in [https]");
    char text[1024];
    snprintf(text, sizeof(text), "%s[token a]\nrole = staff\n", minimal_required);
    expect_config_error(f, text, 0, "missing required key 'sha256' in [token a]");
}

/* Table of one bad line appended to a valid config: the error must name
 * exactly that line. */
static void test_config_bad_values(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *section_and_key;
        const char *substring;
    } cases[] = {
        {"[token t]\nrole = admin\n", "role: 'admin' is not staff"},
        {"[token t]\nrole = nation:deu\n", "not a nation code"},
        {"[token t]\nrole = partner:E U\n", "not a valid partner id"},
        {"[token t]\nsha256 = abc\n", "sha256: not 64 hexadecimal"},
        {"[token t]\nsha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g\n",
         "sha256: not 64 hexadecimal"},
        {"[token t]\nsha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0800\n",
         "sha256: not 64 hexadecimal"},
        {"[partner EU]\nmin_nations = 0\n", "min_nations"},
        {"[partner EU]\nurl = http://partner.example/\n", "not an https:// URL"},
        {"[partner E.U]\nmin_nations = 3\n", "not a valid partner id"},
        {"[partner EU]\ninterval = soon\n", "interval: 'soon' is not a duration"},
        {"[partner EU]\ninterval = 0s\n", "interval: '0s'"},
        {"[partner EU]\nmin_interval = -1s\n", "min_interval"},
        {"[partner EU]\ntimeout = 10ms\n", "timeout: '10ms'"},
        {"[partner EU]\nbackoff_max = 1y\n", "backoff_max"},
        {"[partner EU]\noutbox_max = 0\n", "outbox_max: '0'"},
        {"[partner EU]\nmarking = \n", "marking: empty"},
        {"[partner EU]\nca_file = \n", "ca_file: empty path"},
        {"[partner EU]\ncolour = blue\n", "unknown key 'colour' in [partner EU]"},
        {"[log]\nlevel = loud\n", "level: 'loud'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[2048];
        snprintf(text, sizeof(text), "%s%s", minimal_required, cases[i].section_and_key);
        /* The bad line is the last one. */
        int line = 0;
        for (const char *c = text; *c; c++)
            line += *c == '\n';
        expect_config_error(f, text, line, cases[i].substring);
    }

    static const struct {
        const char *key;
        const char *substring;
    } https_cases[] = {
        {"listen = nohost\n", "not HOST:PORT"},
        {"listen = 0.0.0.0:70000\n", "port '70000'"},
        {"listen = ::1:80\n", "in brackets"},
        {"threads = 0\n", "threads: '0'"},
        {"threads = 2x\n", "threads: '2x'"},
    };
    for (size_t i = 0; i < sizeof(https_cases) / sizeof(https_cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), "[https]\n%s", https_cases[i].key);
        expect_config_error(f, text, 2, https_cases[i].substring);
    }
    static const struct {
        const char *key;
        const char *substring;
    } ingest_cases[] = {
        {"bind = udp://x:1\n", "not a tcp://HOST:PORT"},
        {"bind = tcp://a:1, tcp://a:1\n", "listed twice"},
        {"bind = ,\n", "no endpoint"},
        {"max_message_bytes = 12\n", "max_message_bytes: '12'"},
        {"max_message_bytes = -5\n", "max_message_bytes"},
        {"max_future_skew = soon\n", "max_future_skew: 'soon'"},
        /* Would overflow created_at + skew; a day is the ceiling. */
        {"max_future_skew = 9223372036854775807ms\n", "max_future_skew: '9223372036854775807ms'"},
        {"max_future_skew = 25h\n", "at most 1d"},
        {"keys =\n", "keys: empty path"},
    };
    for (size_t i = 0; i < sizeof(ingest_cases) / sizeof(ingest_cases[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), "[ingest]\n%s", ingest_cases[i].key);
        expect_config_error(f, text, 2, ingest_cases[i].substring);
    }
}

static void test_config_duplicates(void **state)
{
    struct fixture *f = *state;
    expect_config_error(f, "[ingest]\nkeys = a\nkeys = b\n", 3, "duplicate key 'keys' in [ingest]");
    expect_config_error(f, "[store]\npath = a\n[ingest]\nkeys = k\n[store]\npath = b\n", 6,
                        "duplicate section [store]");
    expect_config_error(f, "[token a]\nrole = staff\nrole = staff\n", 3,
                        "duplicate key 'role' in [token a]");

    char text[2048];
    snprintf(text, sizeof(text),
             "%s[token a]\nrole = staff\nsha256 = %s\n[token b]\nrole = staff\nsha256 = %s\n",
             minimal_required, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
             "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    expect_config_error(f, text, 0, "[token b] has the same sha256 as [token a]");
}

/* Checks that need the taxonomy still name the line of the value. */
static void test_config_cross_references(void **state)
{
    struct fixture *f = *state;
    char text[2048];
    /* Token section before [taxonomy]: checked after the file is read. */
    snprintf(text, sizeof(text),
             "[token t]\nrole = nation:XXX\n"
             "sha256 = 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n%s",
             minimal_required);
    expect_config_error(f, text, 2, "nation 'XXX' is not in");
    snprintf(text, sizeof(text), "[partner EU]\ninclude = BR2, BR9\n%s", minimal_required);
    expect_config_error(f, text, 2, "include: 'BR9'");
    snprintf(text, sizeof(text), "[partner EU]\ninclude = energy.no_such_thing\n%s",
             minimal_required);
    expect_config_error(f, text, 2, "include: 'energy.no_such_thing'");
    /* Section-wide partner rules (line 0: checked once the file is read). */
    snprintf(text, sizeof(text), "[partner EU]\ntoken_file = t\n%s", minimal_required);
    expect_config_error(f, text, 0, "need url");
    snprintf(text, sizeof(text), "[partner EU]\nurl = https://p.example/\nclient_cert = c\n%s",
             minimal_required);
    expect_config_error(f, text, 0, "client_cert and client_key go together");
    snprintf(text, sizeof(text), "[partner EU]\ninterval = 5s\nmin_interval = 10s\n%s",
             minimal_required);
    expect_config_error(f, text, 0, "min_interval is longer than interval");
    /* A taxonomy that does not exist is named. */
    expect_config_error(f,
                        "[ingest]\nkeys = k\nregistry = r\n[store]\npath = s\n[https]\ncert = c\n"
                        "key = k\n[taxonomy]\npath = nowhere.csv\n",
                        0, "nowhere.csv");
}

/* ---- registry ------------------------------------------------------------ */

struct test_keys {
    char sign_b64[3][64];
    char sign_id[3][RSL_KEY_ID_HEX_LEN + 1];
    char curve_pub[3][RSL_Z85_KEY_LEN + 1];
};

static void make_keys(struct test_keys *k)
{
    for (int i = 0; i < 3; i++) {
        uint8_t raw[32];
        for (int j = 0; j < 32; j++)
            raw[j] = (uint8_t)(i * 40 + j + 1);
        rsl_base64_encode(raw, sizeof(raw), k->sign_b64[i]);
        rsl_key_id(raw, k->sign_id[i]);
        char secret[RSL_Z85_KEY_LEN + 1];
        assert_int_equal(zmq_curve_keypair(k->curve_pub[i], secret), 0);
    }
}

static int load_registry(struct fixture *f, const char *text)
{
    write_file(f->registry, text);
    agg_registry_release(&f->reg);
    if (f->tax == NULL)
        assert_int_equal(rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv",
                                           RSL_SHARE_DIR "/nations.csv", &f->tax, &f->err),
                         RSL_OK);
    rsl_error_clear(&f->err);
    return agg_registry_load(f->registry, f->tax, &f->reg, &f->err);
}

static void expect_registry_error(struct fixture *f, const char *text, int line,
                                  const char *substring)
{
    int rc = load_registry(f, text);
    if (rc == RSL_OK)
        fail_msg("registry loaded but should fail with line %d '%s':\n%s", line, substring,
                 text);
    assert_null(f->reg);
    char prefix[192];
    if (line > 0)
        snprintf(prefix, sizeof(prefix), "%s:%d: ", f->registry, line);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", f->registry);
    if (strncmp(f->err.text, prefix, strlen(prefix)) != 0 ||
        strstr(f->err.text, substring) == NULL)
        fail_msg("expected '%s...%s', got '%s'", prefix, substring, f->err.text);
}

static void test_registry_valid(void **state)
{
    struct fixture *f = *state;
    struct test_keys k;
    make_keys(&k);
    char text[2048];
    snprintf(text, sizeof(text),
             "; enrolled agents\n"
             "[agent DEU-BMI-01]\n"
             "nation = DEU\n"
             "organisation = Federal Ministry of the Interior\n"
             "sign_key = %s, %s\n"
             "curve_key = %s\n"
             "revoked_keys = %s\n"
             "[agent FRA-MI-01]\n"
             "nation = FRA\n"
             "organisation = Ministère de l'Intérieur\n"
             "sign_key = %s\n"
             "curve_key = %s\n",
             k.sign_b64[0], k.sign_b64[1], k.curve_pub[0], k.sign_b64[1], k.sign_b64[2],
             k.curve_pub[1]);
    int rc = load_registry(f, text);
    if (rc != RSL_OK)
        fail_msg("%s", f->err.text);
    assert_int_equal(agg_registry_count(f->reg), 2);

    const struct agg_agent *a = agg_registry_find_agent(f->reg, "DEU-BMI-01");
    assert_non_null(a);
    assert_string_equal(a->nation, "DEU");
    assert_string_equal(a->organisation, "Federal Ministry of the Interior");
    assert_int_equal(a->n_sign_keys, 2);
    assert_ptr_equal(agg_registry_find_curve(f->reg, k.curve_pub[0]), a);
    assert_null(agg_registry_find_agent(f->reg, "DEU-BMI-02"));
    assert_null(agg_registry_find_curve(f->reg, k.curve_pub[2]));

    const uint8_t *pub = NULL;
    assert_int_equal(agg_agent_key_state(a, k.sign_id[0], &pub), AGG_KEY_VALID);
    assert_non_null(pub);
    assert_int_equal(pub[0], 1);
    /* Listed in sign_key and in revoked_keys: revoked wins. */
    assert_int_equal(agg_agent_key_state(a, k.sign_id[1], &pub), AGG_KEY_REVOKED);
    assert_null(pub);
    /* Another agent's key is unknown for this one. */
    assert_int_equal(agg_agent_key_state(a, k.sign_id[2], &pub), AGG_KEY_UNKNOWN);

    const struct agg_agent *b = agg_registry_find_curve(f->reg, k.curve_pub[1]);
    assert_non_null(b);
    assert_string_equal(b->id, "FRA-MI-01");
    assert_int_equal(agg_agent_key_state(b, k.sign_id[2], NULL), AGG_KEY_VALID);
}

/* Every Z85 character must survive the INI reader (no interpolation, no
 * '#' comments inside values). */
static void test_registry_z85_every_character(void **state)
{
    struct fixture *f = *state;
    static const char leading[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";
    static const char rest[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    size_t seen[256] = {0};
    char keys[4][RSL_Z85_KEY_LEN + 1];
    size_t pos = strlen(rest) - 1; /* start with the special characters */
    for (int k = 0; k < 4; k++) {
        for (int g = 0; g < 8; g++) {
            /* A small first character keeps each 5-character group below 2^32. */
            keys[k][g * 5] = leading[(size_t)(k * 8 + g) % (sizeof(leading) - 1)];
            seen[(unsigned char)keys[k][g * 5]]++;
            for (int j = 1; j < 5; j++) {
                keys[k][g * 5 + j] = rest[pos];
                seen[(unsigned char)rest[pos]]++;
                pos = pos == 0 ? strlen(rest) - 1 : pos - 1;
            }
        }
        keys[k][RSL_Z85_KEY_LEN] = '\0';
        uint8_t raw[32];
        assert_non_null(zmq_z85_decode(raw, keys[k]));
    }
    for (const char *c = rest; *c; c++)
        assert_true(seen[(unsigned char)*c] > 0);

    struct test_keys tk;
    make_keys(&tk);
    char text[4096];
    size_t off = 0;
    for (int k = 0; k < 4; k++)
        off += (size_t)snprintf(text + off, sizeof(text) - off,
                                "[agent A%d]\nnation = DEU\norganisation = X\nsign_key = %s\n"
                                "curve_key = %s\n",
                                k, tk.sign_b64[0], keys[k]);
    int rc = load_registry(f, text);
    if (rc != RSL_OK)
        fail_msg("%s", f->err.text);
    for (int k = 0; k < 4; k++) {
        const struct agg_agent *a = agg_registry_find_curve(f->reg, keys[k]);
        assert_non_null(a);
        assert_string_equal(a->curve_key, keys[k]);
    }
}

static void test_registry_errors(void **state)
{
    struct fixture *f = *state;
    struct test_keys k;
    make_keys(&k);
    char text[2048];

    /* A nation code of the right form that is not in nations.csv. */
    snprintf(text, sizeof(text),
             "[agent A-1]\nnation = XXX\norganisation = O\nsign_key = %s\ncurve_key = %s\n",
             k.sign_b64[0], k.curve_pub[0]);
    expect_registry_error(f, text, 2, "nation: 'XXX' is not in the nation list");
    snprintf(text, sizeof(text), "[agent A-1]\norganisation = O\nnation = deu\n");
    expect_registry_error(f, text, 3, "not a nation code");

    /* Keys that do not decode to 32 bytes. */
    expect_registry_error(f, "[agent A-1]\nsign_key = AAAA\n", 2,
                          "sign_key: entry 1 is not base64 of a 32-byte");
    snprintf(text, sizeof(text), "[agent A-1]\nsign_key = %s, %s!\n", k.sign_b64[0],
             k.sign_b64[1]);
    expect_registry_error(f, text, 2, "sign_key: entry 2");
    expect_registry_error(f, "[agent A-1]\nrevoked_keys = xyz\n", 2, "revoked_keys: entry 1");
    snprintf(text, sizeof(text), "[agent A-1]\nsign_key = %s,%s\n", k.sign_b64[0],
             k.sign_b64[0]);
    expect_registry_error(f, text, 2, "listed twice");

    /* CURVE keys: wrong length, outside the alphabet, group above 2^32. */
    expect_registry_error(f, "[agent A-1]\ncurve_key = abc\n", 2, "curve_key: not a 40-character");
    expect_registry_error(f, "[agent A-1]\ncurve_key = ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n",
                          2, "curve_key");
    expect_registry_error(f, "[agent A-1]\ncurve_key = ########################################\n",
                          2, "curve_key");

    /* Structure. */
    expect_registry_error(f, "[agnet A-1]\nnation = DEU\n", 2, "unknown section [agnet A-1]");
    expect_registry_error(f, "[agent A-1]\nnation = DEU\ncolour = blue\n", 3,
                          "unknown key 'colour' in [agent A-1]");
    expect_registry_error(f, "[agent A-1]\nnation = DEU\nnation = FRA\n", 3,
                          "duplicate key 'nation'");
    expect_registry_error(f, "[agent -bad]\nnation = DEU\n", 2, "not a valid agent id");
    expect_registry_error(f, "nation = DEU\n", 1, "outside of any [agent ID] section");
    snprintf(text, sizeof(text),
             "[agent A-1]\nnation = DEU\norganisation = O\nsign_key = %s\ncurve_key = %s\n"
             "[agent B-1]\nnation = DEU\n"
             "[agent A-1]\norganisation = P\n",
             k.sign_b64[0], k.curve_pub[0]);
    expect_registry_error(f, text, 9, "duplicate section [agent A-1]");

    /* Missing required key: names the agent and the line of its first key. */
    snprintf(text, sizeof(text),
             "\n[agent A-1]\nnation = DEU\norganisation = O\nsign_key = %s\n", k.sign_b64[0]);
    expect_registry_error(f, text, 3, "[agent A-1]: missing required key 'curve_key'");
}

static void test_registry_duplicate_curve_key(void **state)
{
    struct fixture *f = *state;
    struct test_keys k;
    make_keys(&k);
    char text[2048];
    snprintf(text, sizeof(text),
             "[agent DEU-BMI-01]\nnation = DEU\norganisation = O\nsign_key = %s\ncurve_key = %s\n"
             "[agent FRA-MI-01]\nnation = FRA\norganisation = O\nsign_key = %s\ncurve_key = %s\n"
             "[agent DEU-BMI-02]\nnation = DEU\norganisation = O\nsign_key = %s\ncurve_key = %s\n",
             k.sign_b64[0], k.curve_pub[0], k.sign_b64[1], k.curve_pub[1], k.sign_b64[2],
             k.curve_pub[0]);
    expect_registry_error(f, text, 15, "curve_key of [agent DEU-BMI-02] is already enrolled "
                                       "for [agent DEU-BMI-01] (line 5)");
}

static void test_registry_missing_file(void **state)
{
    struct fixture *f = *state;
    rsl_error_clear(&f->err);
    assert_int_equal(agg_registry_load(f->registry, NULL, &f->reg, &f->err), RSL_ENOENT);
    assert_null(f->reg);
    assert_non_null(strstr(f->err.text, f->registry));
}

static void test_registry_holder_swap(void **state)
{
    struct fixture *f = *state;
    struct test_keys k;
    make_keys(&k);
    char text[1024];
    snprintf(text, sizeof(text),
             "[agent A-1]\nnation = DEU\norganisation = O\nsign_key = %s\ncurve_key = %s\n",
             k.sign_b64[0], k.curve_pub[0]);
    assert_int_equal(load_registry(f, text), RSL_OK);
    struct agg_registry_holder *h = NULL;
    assert_int_equal(agg_registry_holder_new(&f->reg, &h), RSL_OK);
    assert_null(f->reg); /* moved into the holder */

    /* A reader holds the old registry across a swap. */
    struct agg_registry *old = agg_registry_holder_get(h);
    assert_non_null(agg_registry_find_agent(old, "A-1"));

    snprintf(text, sizeof(text),
             "[agent B-1]\nnation = FRA\norganisation = O\nsign_key = %s\ncurve_key = %s\n",
             k.sign_b64[1], k.curve_pub[1]);
    assert_int_equal(load_registry(f, text), RSL_OK);
    agg_registry_holder_swap(h, &f->reg);
    assert_null(f->reg);

    struct agg_registry *now = agg_registry_holder_get(h);
    assert_non_null(agg_registry_find_agent(now, "B-1"));
    assert_null(agg_registry_find_agent(now, "A-1"));
    /* The old one is still intact for its reader (ASan would catch a
     * premature free). */
    assert_non_null(agg_registry_find_agent(old, "A-1"));
    agg_registry_release(&old);
    assert_null(old);
    agg_registry_release(&now);
    agg_registry_holder_free(&h);
    assert_null(h);
    agg_registry_holder_free(&h); /* NULL-safe */
}

/* --check-config (agg_daemon_check_config, which run() shares for the key
 * files): every private key the daemon will read - curve.key, sign.key if
 * present, the TLS key - is refused when group or others may read it. */
static void test_check_config_private_keys(void **state)
{
    struct fixture *f = *state;
    char keys[160], path[192], text[1024];
    snprintf(keys, sizeof(keys), "%s/keys", f->dir);
    assert_int_equal(rsl_keys_generate(keys, &f->err), RSL_OK);
    snprintf(path, sizeof(path), "%s/tls", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/tls/server.crt", f->dir);
    write_file(path, "not checked here beyond being readable\n");
    snprintf(path, sizeof(path), "%s/tls/server.key", f->dir);
    write_file(path, "secret\n");
    assert_int_equal(chmod(path, 0600), 0);
    write_file(f->registry, "; no agents yet\n");
    snprintf(text, sizeof(text),
             "[ingest]\nkeys = keys\nregistry = agents.conf\nmax_future_skew = 1d\n"
             "[store]\npath = store.db\n"
             "[https]\ncert = tls/server.crt\nkey = tls/server.key\n" TAXONOMY_LINE);
    write_file(f->conf, text);
    assert_int_equal(agg_daemon_check_config(f->conf), 0);

    static const char *const private_files[] = {"keys/curve.key", "keys/sign.key",
                                                "tls/server.key"};
    for (size_t i = 0; i < sizeof(private_files) / sizeof(private_files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, private_files[i]);
        assert_int_equal(chmod(path, 0640), 0);
        if (agg_daemon_check_config(f->conf) != 1)
            fail_msg("%s with mode 0640 was accepted", private_files[i]);
        assert_int_equal(chmod(path, 0600), 0);
    }
    /* sign.key signs partner releases only: without [partner] its absence is fine. */
    snprintf(path, sizeof(path), "%s/keys/sign.key", f->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(agg_daemon_check_config(f->conf), 0);
    /* ... but with a [partner] it is required: releases are signed with it. */
    FILE *conf = fopen(f->conf, "a");
    assert_non_null(conf);
    fputs("[partner EU]\ninclude = BR2\n", conf);
    assert_int_equal(fclose(conf), 0);
    assert_int_equal(agg_daemon_check_config(f->conf), 1);
    /* Nothing was created by checking. */
    snprintf(path, sizeof(path), "%s/store.db", f->dir);
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_listen_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_unknown_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_missing_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_cross_references, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_z85_every_character, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_duplicate_curve_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_holder_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_config_private_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
