/*
 * test_ctl.c - resilience-ctl driven in-process through ctl_main, exactly as
 * main.c calls it, with stdout/stderr captured in memory streams.
 *
 * What matters to operators and scripts, and so what is checked here:
 *  - the exit-code contract (0 ok, 1 failure, 2 usage error) and that every
 *    failure says on stderr what was wrong;
 *  - nothing on stdout when a command fails: `enroll ... >> agents.conf` must
 *    never append half an entry;
 *  - keygen's files and modes, and that it never overwrites a key;
 *  - what enroll prints is accepted, value for value, by the aggregator's own
 *    registry loader (the real agg_registry_load against the shipped nation
 *    list), including awkward organisation names;
 *  - what token prints is a [token] section the aggregator's real config
 *    loader accepts, whose hash finds the token; hash-token agrees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregator/config.h"
#include "aggregator/registry.h"
#include "ctl/ctl.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

#define MAX_ARGS 24

struct fixture {
    char dir[64];
    struct rsl_taxonomy *tax;
};

/* The outcome of one resilience-ctl run. */
struct run {
    int rc;
    char *out; /* everything written to stdout, NUL-terminated */
    char *err; /* everything written to stderr */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct rsl_error err = {0};
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/rsl-test-ctl-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    if (rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_SHARE_DIR "/nations.csv", &f->tax,
                          &err) != RSL_OK) {
        fprintf(stderr, "taxonomy: %s\n", err.text);
        rsl_test_rmtree(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rsl_taxonomy_free(&f->tax);
    rsl_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    r->out = NULL;
    r->err = NULL;
}

/* Run `resilience-ctl ARGS...` (NULL-terminated) and capture everything.
 * argv is built from copies because ctl_main takes char ** like main. */
static struct run ctl_run(const char *first, ...)
{
    struct run r = {0};
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    size_t out_len = 0, err_len = 0;
    va_list ap;

    argv[argc++] = strdup(CTL_PROGRAM);
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = strdup(a);
    }
    va_end(ap);
    argv[argc] = NULL;
    for (int i = 0; i < argc; i++)
        assert_non_null(argv[i]);

    FILE *out = open_memstream(&r.out, &out_len);
    FILE *err = open_memstream(&r.err, &err_len);
    assert_non_null(out);
    assert_non_null(err);
    r.rc = ctl_main(argc, argv, out, err);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(fclose(err), 0);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    return r;
}

/* The failure shape every script relies on: the exit code, stdout empty,
 * one stderr line starting with the program name and containing `needle`. */
static void expect_failure(const struct run *r, int rc, const char *needle)
{
    if (r->rc != rc || r->out[0] != '\0' || strncmp(r->err, CTL_PROGRAM, strlen(CTL_PROGRAM)) != 0 ||
        strstr(r->err, needle) == NULL)
        fail_msg("expected exit %d with '%s' on stderr and nothing on stdout;\n"
                 "got exit %d, stdout '%s', stderr '%s'",
                 rc, needle, r->rc, r->out, r->err);
    /* One line: the message ends the output. */
    char *nl = strchr(r->err, '\n');
    assert_non_null(nl);
    assert_string_equal(nl, "\n");
}

static void expect_success(const struct run *r)
{
    if (r->rc != CTL_EXIT_OK || r->err[0] != '\0')
        fail_msg("expected success, got exit %d, stderr '%s'", r->rc, r->err);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("%s: missing", path);
    return st.st_mode & 07777;
}

static char *read_text(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    struct rsl_error err = {0};
    if (rsl_file_read_all(path, 1 << 20, &buf, &len, &err) != RSL_OK)
        fail_msg("%s", err.text);
    return (char *)buf;
}

static void write_text(const char *path, const char *text, const char *mode)
{
    FILE *fp = fopen(path, mode);
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* keygen into <fixture>/<name>; asserts success. */
static void keygen_into(const struct fixture *f, const char *name, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "%s/%s", f->dir, name);
    struct run r = ctl_run("keygen", "--out", dir, NULL);
    expect_success(&r);
    run_free(&r);
}

/* The raw Ed25519 public key and Z85 CURVE public key in a key folder. */
static void load_public_keys(const char *dir, uint8_t pub[RSL_ED25519_PUBLIC_BYTES],
                             char curve[RSL_Z85_KEY_LEN + 1])
{
    char path[256];
    struct rsl_error err = {0};
    assert_int_equal(rsl_keys_path(dir, "sign.pub", path, sizeof(path)), RSL_OK);
    if (rsl_public_key_load_pem(path, pub, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_int_equal(rsl_keys_path(dir, "curve.pub", path, sizeof(path)), RSL_OK);
    if (rsl_curve_load_public(path, curve, &err) != RSL_OK)
        fail_msg("%s", err.text);
}

static void sha256_hex(const char *text, char hex[65])
{
    uint8_t digest[32];
    rsl_sha256(text, strlen(text), digest);
    rsl_hex_encode(digest, sizeof(digest), hex);
}

/* ------------------------------------------------------------------------ */
/* general: help, version, unknown things                                   */
/* ------------------------------------------------------------------------ */

static void test_help_and_version(void **state)
{
    (void)state;
    struct run r = ctl_run("--help", NULL);
    expect_success(&r);
    assert_non_null(strstr(r.out, "Usage: resilience-ctl COMMAND"));
    static const char *const names[] = {"keygen", "enroll", "token", "hash-token"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strstr(r.out, names[i]) == NULL)
            fail_msg("--help does not list %s:\n%s", names[i], r.out);
    run_free(&r);

    r = ctl_run("-h", NULL);
    expect_success(&r);
    assert_non_null(strstr(r.out, "Usage:"));
    run_free(&r);

    r = ctl_run("--version", NULL);
    expect_success(&r);
    assert_string_equal(r.out, "resilience-ctl " RSL_VERSION "\n");
    run_free(&r);

    /* Per-command help wins over missing or bad options on the same line. */
    r = ctl_run("keygen", "--help", NULL);
    expect_success(&r);
    assert_non_null(strstr(r.out, "Usage: resilience-ctl keygen --out DIR"));
    run_free(&r);
    r = ctl_run("enroll", "--nation", "nope", "-h", NULL);
    expect_success(&r);
    assert_non_null(strstr(r.out, "--agent-id ID"));
    assert_non_null(strstr(r.out, "[--taxonomy-nations FILE]"));
    run_free(&r);
    r = ctl_run("help", "hash-token", NULL);
    expect_success(&r);
    assert_non_null(strstr(r.out, "Usage: resilience-ctl hash-token TOKEN"));
    run_free(&r);
}

static void test_usage_errors(void **state)
{
    (void)state;
    /* No command: the overview goes to stderr, not stdout. */
    struct run r = ctl_run(NULL);
    assert_int_equal(r.rc, CTL_EXIT_USAGE);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "Usage:"));
    run_free(&r);

    r = ctl_run("frobnicate", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unknown command 'frobnicate'");
    run_free(&r);
    r = ctl_run("help", "frobnicate", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unknown command 'frobnicate'");
    run_free(&r);
    r = ctl_run("--verbose", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unknown command '--verbose'");
    run_free(&r);

    r = ctl_run("keygen", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "missing --out DIR");
    run_free(&r);
    r = ctl_run("keygen", "--out", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--out needs a value");
    run_free(&r);
    r = ctl_run("keygen", "--out=", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--out: empty value");
    run_free(&r);
    r = ctl_run("keygen", "--out", "/tmp/a", "--out", "/tmp/b", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--out given twice");
    run_free(&r);
    r = ctl_run("keygen", "--out", "/tmp/a", "--force", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unknown option '--force'");
    run_free(&r);
    r = ctl_run("keygen", "-o", "/tmp/a", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unknown option '-o'");
    run_free(&r);
    r = ctl_run("keygen", "--out", "/tmp/a", "extra", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unexpected argument 'extra'");
    run_free(&r);

    r = ctl_run("hash-token", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "missing TOKEN");
    run_free(&r);
    r = ctl_run("hash-token", "a", "b", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unexpected argument 'b'");
    run_free(&r);
    r = ctl_run("hash-token", "", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "empty token");
    run_free(&r);
}

/* ------------------------------------------------------------------------ */
/* keygen                                                                   */
/* ------------------------------------------------------------------------ */

static void test_keygen_fresh_dir(void **state)
{
    struct fixture *f = *state;
    char dir[128], path[256], expect[320];
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    char curve[RSL_Z85_KEY_LEN + 1], key_id[RSL_KEY_ID_HEX_LEN + 1];

    /* Two missing levels, and a umask that would make public files 0666 and
     * private ones world-readable if the modes were left to it. */
    snprintf(dir, sizeof(dir), "%s/site/keys", f->dir);
    mode_t old = umask(0);
    struct run r = ctl_run("keygen", "--out", dir, NULL);
    umask(old);
    expect_success(&r);

    assert_int_equal(mode_of(dir), 0700);
    static const struct {
        const char *name;
        mode_t mode;
    } files[] = {{"sign.key", 0600}, {"sign.pub", 0644}, {"curve.key", 0600}, {"curve.pub", 0644}};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        if (mode_of(path) != files[i].mode)
            fail_msg("%s: mode %04o, want %04o", path, (unsigned)mode_of(path),
                     (unsigned)files[i].mode);
    }

    /* The files load with the library's own checks (secret permissions
     * included), and the printed key_id is that of sign.pub. */
    load_public_keys(dir, pub, curve);
    struct rsl_signer *signer = NULL;
    struct rsl_error err = {0};
    snprintf(path, sizeof(path), "%s/sign.key", dir);
    if (rsl_signer_load(path, &signer, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_memory_equal(rsl_signer_public_key(signer), pub, sizeof(pub));
    rsl_signer_free(&signer);
    char secret[RSL_Z85_KEY_LEN + 1];
    snprintf(path, sizeof(path), "%s/curve.key", dir);
    if (rsl_curve_load_secret(path, secret, &err) != RSL_OK)
        fail_msg("%s", err.text);
    rsl_secure_zero(secret, sizeof(secret));

    rsl_key_id(pub, key_id);
    snprintf(expect, sizeof(expect),
             "wrote sign.key sign.pub curve.key curve.pub in %s\nkey_id = %s\n", dir, key_id);
    assert_string_equal(r.out, expect);
    run_free(&r);

    /* A second keygen makes a different key pair. */
    char dir2[128];
    uint8_t pub2[RSL_ED25519_PUBLIC_BYTES];
    char curve2[RSL_Z85_KEY_LEN + 1];
    keygen_into(f, "other", dir2, sizeof(dir2));
    load_public_keys(dir2, pub2, curve2);
    assert_memory_not_equal(pub, pub2, sizeof(pub));
    assert_string_not_equal(curve, curve2);
}

static void test_keygen_never_overwrites(void **state)
{
    struct fixture *f = *state;
    char dir[128], path[256];

    keygen_into(f, "keys", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/sign.key", dir);
    char *before_sign = read_text(path);
    snprintf(path, sizeof(path), "%s/curve.pub", dir);
    char *before_curve = read_text(path);

    struct run r = ctl_run("keygen", "--out", dir, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "refusing to overwrite");
    assert_non_null(strstr(r.err, dir));
    run_free(&r);

    snprintf(path, sizeof(path), "%s/sign.key", dir);
    char *after_sign = read_text(path);
    snprintf(path, sizeof(path), "%s/curve.pub", dir);
    char *after_curve = read_text(path);
    assert_string_equal(before_sign, after_sign);
    assert_string_equal(before_curve, after_curve);
    free(before_sign);
    free(after_sign);
    free(before_curve);
    free(after_curve);

    /* One leftover file is enough to refuse, and the refusal creates none
     * of the others. */
    char dir2[128];
    snprintf(dir2, sizeof(dir2), "%s/partial", f->dir);
    assert_int_equal(mkdir(dir2, 0700), 0);
    snprintf(path, sizeof(path), "%s/curve.pub", dir2);
    write_text(path, "placeholder\n", "w");
    r = ctl_run("keygen", "--out", dir2, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "curve.pub");
    run_free(&r);
    static const char *const others[] = {"sign.key", "sign.pub", "curve.key"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir2, others[i]);
        if (file_exists(path))
            fail_msg("%s created by a refused keygen", path);
    }

    /* A path that cannot be a folder: a failure naming it. */
    snprintf(path, sizeof(path), "%s/a-file", f->dir);
    write_text(path, "x\n", "w");
    char under[300];
    snprintf(under, sizeof(under), "%s/keys", path);
    r = ctl_run("keygen", "--out", under, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, path);
    run_free(&r);
}

/* ------------------------------------------------------------------------ */
/* enroll                                                                   */
/* ------------------------------------------------------------------------ */

/* Load `path` with the real registry loader; fails the test with its error. */
static struct agg_registry *load_registry(const struct fixture *f, const char *path)
{
    struct agg_registry *reg = NULL;
    struct rsl_error err = {0};
    if (agg_registry_load(path, f->tax, &reg, &err) != RSL_OK)
        fail_msg("registry rejected what enroll printed: %s\n%s", err.text, read_text(path));
    return reg;
}

static void test_enroll_roundtrip(void **state)
{
    struct fixture *f = *state;
    char keys1[128], keys2[128], registry[128];
    uint8_t pub1[RSL_ED25519_PUBLIC_BYTES], pub2[RSL_ED25519_PUBLIC_BYTES];
    char curve1[RSL_Z85_KEY_LEN + 1], curve2[RSL_Z85_KEY_LEN + 1];
    char key_id[RSL_KEY_ID_HEX_LEN + 1], comment[128];

    keygen_into(f, "deu", keys1, sizeof(keys1));
    keygen_into(f, "fra", keys2, sizeof(keys2));
    load_public_keys(keys1, pub1, curve1);
    load_public_keys(keys2, pub2, curve2);
    snprintf(registry, sizeof(registry), "%s/agents.conf", f->dir);

    /* Characters an INI loader might misread: '#', ';' without a blank
     * before it, '=', quotes, brackets, non-ASCII. */
    const char *org1 = "Bundesministerium des Innern & f\xc3\xbcr Heimat #1;BMI [Abt. KM] = \"x\"";
    struct run r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU",
                           "--organisation", org1, "--keys", keys1, NULL);
    expect_success(&r);
    rsl_key_id(pub1, key_id);
    snprintf(comment, sizeof(comment), "; DEU-BMI-01 enrolled ");
    assert_memory_equal(r.out, comment, strlen(comment));
    assert_non_null(strstr(r.out, key_id));
    write_text(registry, r.out, "w");
    run_free(&r);

    /* `>>` a second entry, option=value form, nation checked against a list. */
    r = ctl_run("enroll", "--agent-id=FRA_SGDSN.2", "--nation=FRA", "--organisation=SGDSN",
                "--keys=" /* empty is a usage error */, NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--keys: empty value");
    run_free(&r);
    char keys_opt[160];
    snprintf(keys_opt, sizeof(keys_opt), "--keys=%s", keys2);
    r = ctl_run("enroll", "--agent-id=FRA_SGDSN.2", "--nation=FRA", "--organisation=SGDSN",
                keys_opt, "--taxonomy-nations", RSL_SHARE_DIR "/nations.csv", NULL);
    expect_success(&r);
    write_text(registry, r.out, "a");
    run_free(&r);

    struct agg_registry *reg = load_registry(f, registry);
    assert_int_equal(agg_registry_count(reg), 2);

    const struct agg_agent *a = agg_registry_find_agent(reg, "DEU-BMI-01");
    assert_non_null(a);
    assert_string_equal(a->nation, "DEU");
    assert_string_equal(a->organisation, org1);
    assert_int_equal(a->n_sign_keys, 1);
    assert_memory_equal(a->sign_keys[0], pub1, sizeof(pub1));
    assert_string_equal(a->sign_key_ids[0], key_id);
    assert_string_equal(a->curve_key, curve1);
    assert_int_equal(a->n_revoked, 0);
    assert_ptr_equal(agg_registry_find_curve(reg, curve1), a);
    const uint8_t *found = NULL;
    assert_int_equal(agg_agent_key_state(a, key_id, &found), AGG_KEY_VALID);
    assert_memory_equal(found, pub1, sizeof(pub1));

    a = agg_registry_find_agent(reg, "FRA_SGDSN.2");
    assert_non_null(a);
    assert_string_equal(a->nation, "FRA");
    assert_string_equal(a->organisation, "SGDSN");
    assert_memory_equal(a->sign_keys[0], pub2, sizeof(pub2));
    assert_string_equal(a->curve_key, curve2);
    agg_registry_release(&reg);
}

static void test_enroll_rejects(void **state)
{
    struct fixture *f = *state;
    char keys[128], path[256], no_curve[128];
    keygen_into(f, "keys", keys, sizeof(keys));

    /* Bad values are usage errors (exit 2) naming the option. */
    static const char *const bad_ids[] = {"-DEU", "DEU BMI", ".hidden", "DEU/BMI", "DEU:BMI"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        struct run r = ctl_run("enroll", "--agent-id", bad_ids[i], "--nation", "DEU",
                               "--organisation", "BMI", "--keys", keys, NULL);
        expect_failure(&r, CTL_EXIT_USAGE, "--agent-id");
        run_free(&r);
    }
    /* A newline in the value: still refused with nothing on stdout (the
     * message echoes the value as given, so it is not checked for one line). */
    struct run r = ctl_run("enroll", "--agent-id", "DEU\nBMI", "--nation", "DEU",
                           "--organisation", "BMI", "--keys", keys, NULL);
    assert_int_equal(r.rc, CTL_EXIT_USAGE);
    assert_string_equal(r.out, "");
    assert_non_null(strstr(r.err, "--agent-id"));
    run_free(&r);
    char long_id[RSL_AGENT_ID_MAX + 2];
    memset(long_id, 'A', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    r = ctl_run("enroll", "--agent-id", long_id, "--nation", "DEU", "--organisation",
                           "BMI", "--keys", keys, NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--agent-id");
    run_free(&r);

    static const char *const bad_nations[] = {"deu", "DE", "DEUT", "D3U", "DE "};
    for (size_t i = 0; i < sizeof(bad_nations) / sizeof(bad_nations[0]); i++) {
        r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", bad_nations[i],
                    "--organisation", "BMI", "--keys", keys, NULL);
        expect_failure(&r, CTL_EXIT_USAGE, "--nation");
        run_free(&r);
    }

    /* Organisation names that would not read back as written. */
    static const char *const bad_orgs[] = {" BMI", "BMI\t", "BMI ; note", "BMI\nnation = FRA",
                                           "BMI\x7f"};
    for (size_t i = 0; i < sizeof(bad_orgs) / sizeof(bad_orgs[0]); i++) {
        r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--organisation",
                    bad_orgs[i], "--keys", keys, NULL);
        expect_failure(&r, CTL_EXIT_USAGE, "--organisation");
        run_free(&r);
    }
    char long_org[RSL_ORGANISATION_MAX + 2];
    memset(long_org, 'o', sizeof(long_org) - 1);
    long_org[sizeof(long_org) - 1] = '\0';
    r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--organisation",
                long_org, "--keys", keys, NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "--organisation");
    run_free(&r);

    /* Well-formed but not in the nation list: a failure naming the list. */
    r = ctl_run("enroll", "--agent-id", "XXX-1", "--nation", "XXX", "--organisation", "BMI",
                "--keys", keys, "--taxonomy-nations", RSL_SHARE_DIR "/nations.csv", NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, RSL_SHARE_DIR "/nations.csv: nation XXX");
    run_free(&r);
    snprintf(path, sizeof(path), "%s/no-nations.csv", f->dir);
    r = ctl_run("enroll", "--agent-id", "DEU-1", "--nation", "DEU", "--organisation", "BMI",
                "--keys", keys, "--taxonomy-nations", path, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, path);
    run_free(&r);

    /* Missing key folder, and a folder without curve.pub: failures (exit 1)
     * naming the file. */
    snprintf(path, sizeof(path), "%s/no-such-keys", f->dir);
    r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--organisation", "BMI",
                "--keys", path, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, path);
    run_free(&r);

    snprintf(no_curve, sizeof(no_curve), "%s/no-curve", f->dir);
    assert_int_equal(mkdir(no_curve, 0700), 0);
    char *pem = NULL;
    snprintf(path, sizeof(path), "%s/sign.pub", keys);
    pem = read_text(path);
    snprintf(path, sizeof(path), "%s/sign.pub", no_curve);
    write_text(path, pem, "w");
    free(pem);
    r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--organisation", "BMI",
                "--keys", no_curve, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "curve.pub");
    run_free(&r);

    /* A sign.pub that is not a PEM public key (here: the private key). */
    snprintf(path, sizeof(path), "%s/sign.key", keys);
    pem = read_text(path);
    snprintf(path, sizeof(path), "%s/sign.pub", no_curve);
    write_text(path, pem, "w");
    rsl_secure_zero(pem, strlen(pem));
    free(pem);
    r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--organisation", "BMI",
                "--keys", no_curve, NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "sign.pub");
    run_free(&r);

    /* Missing required options. */
    r = ctl_run("enroll", "--agent-id", "DEU-BMI-01", "--nation", "DEU", "--keys", keys, NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "missing --organisation NAME");
    run_free(&r);
}

/* ------------------------------------------------------------------------ */
/* token, hash-token                                                        */
/* ------------------------------------------------------------------------ */

/* Split "TOKEN\n...sha256 = HEX\n": checks the token's form and that HEX is
 * its SHA-256; returns a copy of the token. */
static char *check_token_output(const char *out)
{
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    size_t len = (size_t)(nl - out);
    /* 32 random bytes as base64url without padding: 43 characters. */
    assert_int_equal(len, 43);
    for (size_t i = 0; i < len; i++) {
        char c = out[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok)
            fail_msg("token character '%c' is not base64url: %s", c, out);
    }
    char *token = strndup(out, len);
    assert_non_null(token);
    char hex[65], line[80];
    sha256_hex(token, hex);
    snprintf(line, sizeof(line), "sha256 = %s\n", hex);
    size_t out_len = strlen(out);
    assert_true(out_len >= strlen(line));
    assert_string_equal(out + out_len - strlen(line), line);
    return token;
}

static void test_token(void **state)
{
    struct fixture *f = *state;
    struct run r = ctl_run("token", NULL);
    expect_success(&r);
    char *t1 = check_token_output(r.out);
    /* Exactly two lines without --name/--role. */
    char hex[65], expect[160];
    sha256_hex(t1, hex);
    snprintf(expect, sizeof(expect), "%s\nsha256 = %s\n", t1, hex);
    assert_string_equal(r.out, expect);
    run_free(&r);

    r = ctl_run("token", NULL);
    expect_success(&r);
    char *t2 = check_token_output(r.out);
    assert_string_not_equal(t1, t2);
    run_free(&r);

    /* No token starts with '-' (it would read as an option wherever it is
     * pasted): 300 draws miss a 1-in-64 first character with p < 0.01%. */
    for (int i = 0; i < 300; i++) {
        r = ctl_run("token", NULL);
        expect_success(&r);
        assert_true(r.out[0] != '-');
        run_free(&r);
    }

    /* hash-token agrees with the printed line, argument and stdin forms. */
    r = ctl_run("hash-token", t1, NULL);
    expect_success(&r);
    snprintf(expect, sizeof(expect), "%s\n", hex);
    assert_string_equal(r.out, expect);
    run_free(&r);

    /* With --name and --role the output, minus the token line, is a section
     * the aggregator's own config loader accepts; its hash finds the token. */
    r = ctl_run("token", "--name", "central-staff", "--role", "nation:DEU", NULL);
    expect_success(&r);
    char *t3 = check_token_output(r.out);
    const char *section = strchr(r.out, '\n') + 1;
    const char *head = "[token central-staff]\nrole = nation:DEU\nsha256 = ";
    assert_memory_equal(section, head, strlen(head));

    char conf[128], text[2048];
    snprintf(conf, sizeof(conf), "%s/aggregator.conf", f->dir);
    snprintf(text, sizeof(text),
             "[ingest]\nkeys = keys/\nregistry = agents.conf\n"
             "[store]\npath = aggregator.db\n"
             "[https]\ncert = server.crt\nkey = server.key\n"
             "[taxonomy]\npath = " RSL_SHARE_DIR "/indicators.csv\n%s",
             section);
    write_text(conf, text, "w");
    run_free(&r);
    struct agg_config *cfg = NULL;
    struct rsl_error err = {0};
    if (agg_config_load(conf, &cfg, &err) != RSL_OK)
        fail_msg("aggregator.conf with the printed token section: %s", err.text);
    uint8_t digest[32];
    rsl_sha256(t3, strlen(t3), digest);
    const struct agg_token *tok = agg_config_token_find(cfg, digest);
    assert_non_null(tok);
    assert_string_equal(tok->name, "central-staff");
    assert_int_equal(tok->role, AGG_ROLE_NATION);
    assert_string_equal(tok->nation, "DEU");
    rsl_sha256(t1, strlen(t1), digest);
    assert_null(agg_config_token_find(cfg, digest));
    agg_config_free(&cfg);

    r = ctl_run("token", "--role", "partner:EU", NULL);
    expect_success(&r);
    char *t4 = check_token_output(r.out);
    assert_non_null(strstr(r.out, "\nrole = partner:EU\nsha256 = "));
    assert_null(strstr(r.out, "[token"));
    run_free(&r);

    free(t1);
    free(t2);
    free(t3);
    free(t4);

    static const char *const bad_roles[] = {"admin", "nation:deu", "nation:", "partner:",
                                            "staff ", "nation:DEUX"};
    for (size_t i = 0; i < sizeof(bad_roles) / sizeof(bad_roles[0]); i++) {
        r = ctl_run("token", "--role", bad_roles[i], NULL);
        expect_failure(&r, CTL_EXIT_USAGE, "--role");
        run_free(&r);
    }
    static const char *const bad_names[] = {"two words", "x]y", "a;b", "n=m"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        r = ctl_run("token", "--name", bad_names[i], NULL);
        expect_failure(&r, CTL_EXIT_USAGE, "--name");
        run_free(&r);
    }
    r = ctl_run("token", "extra", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "unexpected argument 'extra'");
    run_free(&r);
}

/* Point the process's stdin at a file holding `text`. */
static void stdin_from(const struct fixture *f, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/stdin", f->dir);
    write_text(path, text, "w");
    assert_non_null(freopen(path, "r", stdin));
}

static void test_hash_token(void **state)
{
    struct fixture *f = *state;
    /* FIPS 180-2 test vector: SHA-256("abc"). */
    const char *abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    struct run r = ctl_run("hash-token", "abc", NULL);
    expect_success(&r);
    assert_string_equal(r.out, abc);
    run_free(&r);

    /* The hash is over the characters as given: no trimming of arguments. */
    r = ctl_run("hash-token", "abc ", NULL);
    expect_success(&r);
    assert_string_not_equal(r.out, abc);
    run_free(&r);

    /* "-": the first line of stdin, without its line ending. */
    static const char *const inputs[] = {"abc\n", "abc", "abc\r\n", "abc\nsecond line\n"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        stdin_from(f, inputs[i]);
        r = ctl_run("hash-token", "-", NULL);
        expect_success(&r);
        assert_string_equal(r.out, abc);
        run_free(&r);
    }
    /* "--" ends options, so a token starting with '-' can be hashed. */
    r = ctl_run("hash-token", "--", "-abc", NULL);
    expect_success(&r);
    char hex[65];
    sha256_hex("-abc", hex);
    assert_memory_equal(r.out, hex, 64);
    run_free(&r);

    stdin_from(f, "");
    r = ctl_run("hash-token", "-", NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "standard input: no token");
    run_free(&r);
    stdin_from(f, "\n");
    r = ctl_run("hash-token", "-", NULL);
    expect_failure(&r, CTL_EXIT_USAGE, "empty token");
    run_free(&r);

    /* Over the 1022-byte line limit: refused, not silently truncated. */
    char big[1200];
    memset(big, 't', sizeof(big) - 2);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    stdin_from(f, big);
    r = ctl_run("hash-token", "-", NULL);
    expect_failure(&r, CTL_EXIT_FAILURE, "standard input: token longer than");
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_help_and_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keygen_fresh_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keygen_never_overwrites, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enroll_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enroll_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_token, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
