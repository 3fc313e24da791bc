/*
 * test_faults_io.c - I/O error injection into every function of the shared
 * library that touches files, SQLite style: fail its 1st system call, then
 * its 2nd, ... until a run completes without reaching N. Modes, each a loop:
 *   EIO once, ENOSPC once   a transient fault at call N;
 *   ENOSPC persist          the disk is full from call N on;
 *   short                   read/write N transfers only half (no error);
 *   eintr                   read/write N is interrupted (no error).
 * Every run must return an error naming the file or succeed with the right
 * result (fault_loop.h). What is on disk afterwards is checked too: an
 * atomic write leaves the old or the new file and never a torn one or a
 * stray temporary; a failed key generation leaves no key file behind.
 *
 * Calls counted: open openat close read write pwrite fsync fdatasync fchmod
 * ftruncate rename renameat unlink mkdir fstat stat lstat, as made by the
 * lib/ sources (GNU ld --wrap, see fault.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "fault_loop.h"
#include "rsl/ini.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"
#include "testutil.h"

#define BIG_LEN (96 * 1024) /* several write/read calls' worth in short mode */

struct fixture {
    char dir[128];
    char keydir[256];
    char target[256];       /* the file atomic writes replace */
    uint8_t *old_content;   /* what target holds before each run */
    uint8_t *new_content;   /* what each run writes */
    char indicators[256];
    char nations[256];
    char ini_path[256];
    size_t n_indicators;
    unsigned gen;
    enum fault_mode mode;   /* of the loop running now */
};

static struct fixture fx;

/* Read a file without injection (the loop is disarmed when after() runs). */
static uint8_t *slurp(const char *path, size_t *len)
{
    uint8_t *data = NULL;
    if (rsl_file_read_all(path, 1 << 20, &data, len, NULL) != RSL_OK)
        return NULL;
    return data;
}

static int group_setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    if (fault_mkdtemp(fx.dir, sizeof(fx.dir), "io") != 0)
        return -1;
    snprintf(fx.keydir, sizeof(fx.keydir), "%s/keys", fx.dir);
    snprintf(fx.target, sizeof(fx.target), "%s/state", fx.dir);
    snprintf(fx.ini_path, sizeof(fx.ini_path), "%s/test.conf", fx.dir);
    snprintf(fx.indicators, sizeof(fx.indicators), "%s/indicators.csv", RSL_SHARE_DIR);
    snprintf(fx.nations, sizeof(fx.nations), "%s/nations.csv", RSL_SHARE_DIR);
    fx.old_content = malloc(BIG_LEN);
    fx.new_content = malloc(BIG_LEN);
    if (fx.old_content == NULL || fx.new_content == NULL)
        return -1;
    for (size_t i = 0; i < BIG_LEN; i++) {
        fx.old_content[i] = (uint8_t)('a' + i % 26);
        fx.new_content[i] = (uint8_t)('A' + i % 23);
    }
    struct rsl_error err = {0};
    static const char ini[] = "[agent]\nid = DEU-BMI-01\nnation = DEU\n[log]\nlevel = info\n";
    struct rsl_taxonomy *tax = NULL;
    if (rsl_keys_generate(fx.keydir, &err) != RSL_OK ||
        rsl_file_write_atomic(fx.ini_path, ini, strlen(ini), 0644, &err) != RSL_OK ||
        rsl_taxonomy_load(fx.indicators, fx.nations, &tax, &err) != RSL_OK) {
        print_error("setup: %s\n", err.text);
        return -1;
    }
    fx.n_indicators = tax->n_indicators;
    rsl_taxonomy_free(&tax);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(fx.old_content);
    free(fx.new_content);
    rsl_test_rmtree(fx.dir);
    return 0;
}

/* Every I/O loop: two transient errnos, a full disk, short and interrupted
 * transfers. */
static void run_io_case(const struct fault_case *c)
{
    struct fault_case rw = *c;
    rw.kinds = FAULT_IO_RW;
    fx.mode = FAULT_ONCE;
    fault_run_case(c, FAULT_ONCE, EIO);
    fault_run_case(c, FAULT_ONCE, ENOSPC);
    fx.mode = FAULT_PERSIST;
    fault_run_case(c, FAULT_PERSIST, ENOSPC);
    fx.mode = FAULT_SHORT;
    fault_run_case(&rw, FAULT_SHORT, 0);
    fx.mode = FAULT_EINTR;
    fault_run_case(&rw, FAULT_EINTR, 0);
}

/* ---- rsl_file_write_atomic ---------------------------------------------------------- */

static void reset_target(void)
{
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", fx.target);
    unlink(tmp);
    assert_int_equal(rsl_file_write_atomic(fx.target, fx.old_content, BIG_LEN, 0600, NULL),
                     RSL_OK);
}

static int op_write_atomic(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    return rsl_file_write_atomic(fx.target, fx.new_content, BIG_LEN, 0640, err);
}

/* Old or new, whole, never a mix; after success the new one with its mode;
 * no temporary left behind after a transient fault (a persistent one may
 * also fail the clean-up unlink). */
static void after_write_atomic(void *ctx, int rc, bool fired)
{
    (void)ctx;
    (void)fired;
    size_t len = 0;
    uint8_t *now = slurp(fx.target, &len);
    assert_non_null(now);
    assert_int_equal(len, BIG_LEN);
    bool is_new = memcmp(now, fx.new_content, BIG_LEN) == 0;
    bool is_old = memcmp(now, fx.old_content, BIG_LEN) == 0;
    free(now);
    if (!is_new && !is_old) {
        print_error("rsl_file_write_atomic (rc %d): %s is torn\n", rc, fx.target);
        fail();
    }
    if (rc == RSL_OK) {
        struct stat st;
        assert_true(is_new);
        assert_int_equal(stat(fx.target, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);
    }
    char tmp[300];
    struct stat st;
    snprintf(tmp, sizeof(tmp), "%s.tmp", fx.target);
    if (fx.mode != FAULT_PERSIST && lstat(tmp, &st) == 0) {
        print_error("rsl_file_write_atomic (rc %d) left %s behind\n", rc, tmp);
        fail();
    }
    reset_target();
}

static void test_write_atomic(void **state)
{
    (void)state;
    reset_target();
    struct fault_case c = {"rsl_file_write_atomic", FAULT_IO, op_write_atomic,
                           after_write_atomic, NULL, {RSL_EIO, RSL_ENOSPC}, {0}, true,
                           fx.target};
    run_io_case(&c);
}

/* ---- reading files -------------------------------------------------------------------- */

static int op_read_all(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = rsl_file_read_all(fx.target, 1 << 20, &data, &len, err);
    if (rc != RSL_OK) {
        assert_null(data);
        return rc;
    }
    assert_int_equal(len, BIG_LEN);
    assert_memory_equal(data, fx.old_content, BIG_LEN);
    assert_int_equal(data[len], 0);
    free(data);
    return rc;
}

static void test_read_all(void **state)
{
    (void)state;
    reset_target();
    struct fault_case c = {"rsl_file_read_all", FAULT_IO, op_read_all, NULL, NULL, {RSL_EIO},
                           {0}, true, fx.target};
    run_io_case(&c);
}


static int ini_count(void *ctx, const char *section, const char *key, const char *value,
                     int line, struct rsl_error *err)
{
    (void)section;
    (void)key;
    (void)value;
    (void)line;
    (void)err;
    (*(int *)ctx)++;
    return RSL_OK;
}

static int op_ini_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    int keys = 0;
    int rc = rsl_ini_load(fx.ini_path, ini_count, &keys, err);
    if (rc == RSL_OK)
        assert_int_equal(keys, 3);
    return rc;
}

static void test_ini_load(void **state)
{
    (void)state;
    /* rsl_ini_load's contract: RSL_ECONFIG for an unreadable file. */
    struct fault_case c = {"rsl_ini_load", FAULT_IO, op_ini_load, NULL, NULL, {RSL_ECONFIG},
                           {0}, true, fx.ini_path};
    run_io_case(&c);
}

static int op_taxonomy_load(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    struct rsl_taxonomy *tax = NULL;
    int rc = rsl_taxonomy_load(fx.indicators, fx.nations, &tax, err);
    if (rc != RSL_OK) {
        assert_null(tax);
        return rc;
    }
    assert_int_equal(tax->n_indicators, fx.n_indicators);
    rsl_taxonomy_free(&tax);
    return rc;
}

static void test_taxonomy_load(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_taxonomy_load", FAULT_IO, op_taxonomy_load, NULL, NULL,
                           {RSL_EIO}, {0}, true, ".csv"};
    run_io_case(&c);
}

/* ---- keys ------------------------------------------------------------------------------ */

static int op_key_loads(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    char path[300];
    char z85[RSL_Z85_KEY_LEN + 1];
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    struct rsl_signer *signer = NULL;
    int rc;

    snprintf(path, sizeof(path), "%s/sign.key", fx.keydir);
    if ((rc = rsl_signer_load(path, &signer, err)) != RSL_OK) {
        assert_null(signer);
        return rc;
    }
    snprintf(path, sizeof(path), "%s/sign.pub", fx.keydir);
    rc = rsl_public_key_load_pem(path, pub, err);
    if (rc == RSL_OK)
        assert_memory_equal(pub, rsl_signer_public_key(signer), sizeof(pub));
    rsl_signer_free(&signer);
    if (rc != RSL_OK)
        return rc;
    snprintf(path, sizeof(path), "%s/curve.key", fx.keydir);
    if ((rc = rsl_curve_load_secret(path, z85, err)) != RSL_OK)
        return rc;
    assert_true(rsl_z85_key_valid(z85));
    snprintf(path, sizeof(path), "%s/curve.pub", fx.keydir);
    if ((rc = rsl_curve_load_public(path, z85, err)) != RSL_OK)
        return rc;
    assert_true(rsl_z85_key_valid(z85));
    snprintf(path, sizeof(path), "%s/sign.key", fx.keydir);
    return rsl_key_file_check_private(path, err);
}

static void test_key_loads(void **state)
{
    (void)state;
    /* The key folder's name is in every message (each names its file). */
    struct fault_case c = {"rsl_signer_load + key loads", FAULT_IO, op_key_loads, NULL, NULL,
                           {RSL_EIO}, {0}, true, fx.keydir};
    run_io_case(&c);
}

static char gen_dir[300];

static int op_keys_generate(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    snprintf(gen_dir, sizeof(gen_dir), "%s/gen-%u/keys", fx.dir, fx.gen++);
    return rsl_keys_generate(gen_dir, err);
}

static void after_keys_generate(void *ctx, int rc, bool fired)
{
    (void)ctx;
    (void)fired;
    static const char *const names[] = {"sign.key", "sign.pub", "curve.key", "curve.pub"};
    static const unsigned modes[] = {0600, 0644, 0600, 0644};
    for (size_t i = 0; i < 4; i++) {
        char path[400];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", gen_dir, names[i]);
        if (rc == RSL_OK) {
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal(st.st_mode & 07777, modes[i]);
        } else if (fx.mode != FAULT_PERSIST && lstat(path, &st) == 0) {
            /* A full disk may also refuse the clean-up; a transient fault
             * must not leave a half key folder that a retry would refuse. */
            print_error("rsl_keys_generate failed (%d) but left %s\n", rc, path);
            fail();
        }
    }
    if (rc == RSL_OK) {
        /* Whole files: they load and belong together. */
        char path[400];
        char sec[RSL_Z85_KEY_LEN + 1], pub[RSL_Z85_KEY_LEN + 1];
        uint8_t spub[RSL_ED25519_PUBLIC_BYTES];
        struct rsl_signer *s = NULL;
        snprintf(path, sizeof(path), "%s/sign.key", gen_dir);
        assert_int_equal(rsl_signer_load(path, &s, NULL), RSL_OK);
        snprintf(path, sizeof(path), "%s/sign.pub", gen_dir);
        assert_int_equal(rsl_public_key_load_pem(path, spub, NULL), RSL_OK);
        assert_memory_equal(spub, rsl_signer_public_key(s), sizeof(spub));
        rsl_signer_free(&s);
        snprintf(path, sizeof(path), "%s/curve.key", gen_dir);
        assert_int_equal(rsl_curve_load_secret(path, sec, NULL), RSL_OK);
        snprintf(path, sizeof(path), "%s/curve.pub", gen_dir);
        assert_int_equal(rsl_curve_load_public(path, pub, NULL), RSL_OK);
    }
    char top[300];
    snprintf(top, sizeof(top), "%s/gen-%u", fx.dir, fx.gen - 1);
    rsl_test_rmtree(top);
}

static void test_keys_generate(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_keys_generate", FAULT_IO, op_keys_generate, after_keys_generate,
                           NULL, {RSL_EIO, RSL_ENOSPC}, {0}, true, fx.dir};
    run_io_case(&c);
}

/* ---- folders ----------------------------------------------------------------------------- */

static char mk_dir[300];

static int op_mkdir_fsync(void *ctx, struct rsl_error *err)
{
    (void)ctx;
    snprintf(mk_dir, sizeof(mk_dir), "%s/mk-%u/a/b", fx.dir, fx.gen++);
    int rc = rsl_mkdir_p(mk_dir, 0700, err);
    if (rc != RSL_OK)
        return rc;
    return rsl_fsync_dir(mk_dir, err);
}

static void after_mkdir_fsync(void *ctx, int rc, bool fired)
{
    (void)ctx;
    (void)fired;
    struct stat st;
    if (rc == RSL_OK) {
        assert_int_equal(stat(mk_dir, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
    }
    char top[300];
    snprintf(top, sizeof(top), "%s/mk-%u", fx.dir, fx.gen - 1);
    rsl_test_rmtree(top);
}

static void test_mkdir_fsync(void **state)
{
    (void)state;
    struct fault_case c = {"rsl_mkdir_p + rsl_fsync_dir", FAULT_IO, op_mkdir_fsync,
                           after_mkdir_fsync, NULL, {RSL_EIO, RSL_ENOSPC}, {0}, true, "/mk-"};
    run_io_case(&c);
}

int main(void)
{
    if (!fault_init()) {
        fprintf(stderr, "test_faults_io: CRYPTO_set_mem_functions refused\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_atomic),
        cmocka_unit_test(test_read_all),
        cmocka_unit_test(test_ini_load),
        cmocka_unit_test(test_taxonomy_load),
        cmocka_unit_test(test_key_loads),
        cmocka_unit_test(test_keys_generate),
        cmocka_unit_test(test_mkdir_fsync),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
