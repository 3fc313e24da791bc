/*
 * test_keys.c - key folders: generation (modes, no overwrite, openssl
 * compatibility, matching CURVE pairs), private-file permission checks and
 * CURVE key loading, including keys made of every Z85 character.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"

static const char Z85_ALPHABET[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

struct keys_state {
    char dir[64];
};

static int setup(void **state)
{
    struct keys_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-keys-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct keys_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void path_in(const char *dir, const char *name, char *out, size_t outlen)
{
    assert_int_equal(rsl_keys_path(dir, name, out, outlen), RSL_OK);
}

static void write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static char *read_text(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(rsl_file_read_all(path, 1 << 16, &buf, &len, NULL), RSL_OK);
    return (char *)buf;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static int run(const char *cmd)
{
    int status = system(cmd);
    return status == -1 ? -1 : WEXITSTATUS(status);
}

/* ------------------------------------------------------------------------ */

static void test_generate(void **state)
{
    struct keys_state *s = *state;
    char dir[128], path[256];
    struct rsl_error err = {0};
    /* A missing folder (two levels) is created 0700; the restrictive umask
     * must not make the public files private, nor a permissive one the
     * private files readable. */
    snprintf(dir, sizeof(dir), "%s/new/keys", s->dir);
    mode_t old = umask(077);
    int rc = rsl_keys_generate(dir, &err);
    umask(old);
    if (rc != RSL_OK) {
        print_error("%s\n", err.text);
        fail();
    }
    assert_int_equal(mode_of(dir), 0700);
    static const struct {
        const char *name;
        mode_t mode;
    } files[] = {{"sign.key", 0600}, {"sign.pub", 0644}, {"curve.key", 0600}, {"curve.pub", 0644}};
    for (size_t i = 0; i < 4; i++) {
        path_in(dir, files[i].name, path, sizeof(path));
        assert_int_equal(mode_of(path), files[i].mode);
    }

    /* The Ed25519 files are what openssl writes and reads. */
    char key[256], pub[256], cmd[1024];
    path_in(dir, "sign.key", key, sizeof(key));
    path_in(dir, "sign.pub", pub, sizeof(pub));
    char *key_text = read_text(key);
    assert_non_null(strstr(key_text, "-----BEGIN PRIVATE KEY-----\n"));
    free(key_text);
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -noout", key);
    assert_int_equal(run(cmd), 0);
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -pubout | cmp -s - '%s'", key, pub);
    assert_int_equal(run(cmd), 0);
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -text -noout | grep -q ED25519", key);
    assert_int_equal(run(cmd), 0);

    /* The signer loads it; its public key is the one in sign.pub. */
    struct rsl_signer *signer = NULL;
    assert_int_equal(rsl_signer_load(key, &signer, &err), RSL_OK);
    uint8_t pk[32];
    assert_int_equal(rsl_public_key_load_pem(pub, pk, &err), RSL_OK);
    assert_memory_equal(pk, rsl_signer_public_key(signer), 32);
    rsl_signer_free(&signer);

    /* The CURVE files hold a matching pair. */
    char secret[RSL_Z85_KEY_LEN + 1], public[RSL_Z85_KEY_LEN + 1], derived[RSL_Z85_KEY_LEN + 1];
    path_in(dir, "curve.key", path, sizeof(path));
    assert_int_equal(rsl_curve_load_secret(path, secret, &err), RSL_OK);
    path_in(dir, "curve.pub", path, sizeof(path));
    assert_int_equal(rsl_curve_load_public(path, public, &err), RSL_OK);
    assert_int_equal(zmq_curve_public(derived, secret), 0);
    assert_string_equal(derived, public);
    char *text = read_text(path);
    assert_int_equal(strlen(text), RSL_Z85_KEY_LEN + 1);
    assert_int_equal(text[RSL_Z85_KEY_LEN], '\n');
    free(text);
}

static void test_generate_refuses_overwrite(void **state)
{
    struct keys_state *s = *state;
    char dir[128], path[256];
    struct rsl_error err = {0};
    snprintf(dir, sizeof(dir), "%s/twice", s->dir);
    assert_int_equal(rsl_keys_generate(dir, &err), RSL_OK);
    char *before[4];
    static const char *const names[] = {"sign.key", "sign.pub", "curve.key", "curve.pub"};
    for (size_t i = 0; i < 4; i++) {
        path_in(dir, names[i], path, sizeof(path));
        before[i] = read_text(path);
    }
    assert_int_equal(rsl_keys_generate(dir, &err), RSL_EEXIST);
    assert_non_null(strstr(err.text, "already exists"));
    for (size_t i = 0; i < 4; i++) {
        path_in(dir, names[i], path, sizeof(path));
        char *after = read_text(path);
        assert_string_equal(before[i], after);
        free(after);
        free(before[i]);
    }

    /* One file alone (here the last one written) is enough to refuse, and
     * nothing else is created. */
    snprintf(dir, sizeof(dir), "%s/partial", s->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    path_in(dir, "curve.pub", path, sizeof(path));
    write_file(path, "x", 1, 0644);
    assert_int_equal(rsl_keys_generate(dir, &err), RSL_EEXIST);
    assert_non_null(strstr(err.text, path));
    path_in(dir, "sign.key", path, sizeof(path));
    assert_int_equal(access(path, F_OK), -1);

    /* A dangling symlink in place of a key file also refuses. */
    snprintf(dir, sizeof(dir), "%s/link", s->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    path_in(dir, "sign.key", path, sizeof(path));
    assert_int_equal(symlink("/nonexistent/target", path), 0);
    assert_int_equal(rsl_keys_generate(dir, &err), RSL_EEXIST);

    /* A folder we cannot create. */
    snprintf(dir, sizeof(dir), "%s/file-not-dir", s->dir);
    write_file(dir, "x", 1, 0644);
    snprintf(path, sizeof(path), "%s/sub", dir);
    assert_int_not_equal(rsl_keys_generate(path, &err), RSL_OK);
    assert_int_equal(rsl_keys_generate("", &err), RSL_EINVAL);
}

static void test_check_private(void **state)
{
    struct keys_state *s = *state;
    char path[256];
    struct rsl_error err = {0};
    path_in(s->dir, "private.key", path, sizeof(path));
    write_file(path, "secret", 6, 0600);
    assert_int_equal(rsl_key_file_check_private(path, &err), RSL_OK);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(rsl_key_file_check_private(path, &err), RSL_OK);

    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(rsl_key_file_check_private(path, &err), RSL_EPERM);
    char expected[600];
    snprintf(expected, sizeof(expected),
             "%s: mode 0644 is readable by group/others; chmod 600 %s", path, path);
    assert_string_equal(err.text, expected);

    const mode_t bad[] = {0640, 0604, 0610, 0620, 0602, 0601, 0700 | 070};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        assert_int_equal(rsl_key_file_check_private(path, &err), RSL_EPERM);
        assert_non_null(strstr(err.text, "chmod 600"));
    }
    assert_int_equal(chmod(path, 0600), 0);

    /* Symbolic links are followed; the target's mode counts. */
    char link[256], other[256];
    path_in(s->dir, "private.link", link, sizeof(link));
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(rsl_key_file_check_private(link, &err), RSL_OK);
    path_in(s->dir, "public.txt", other, sizeof(other));
    write_file(other, "x", 1, 0644);
    unlink(link);
    assert_int_equal(symlink(other, link), 0);
    assert_int_equal(rsl_key_file_check_private(link, &err), RSL_EPERM);

    /* Not a regular file: a folder, a FIFO (must not block). Missing. */
    assert_int_equal(rsl_key_file_check_private(s->dir, &err), RSL_EPERM);
    assert_non_null(strstr(err.text, "not a regular file"));
    char fifo[256];
    path_in(s->dir, "fifo.key", fifo, sizeof(fifo));
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(rsl_key_file_check_private(fifo, &err), RSL_EPERM);
    char secret[RSL_Z85_KEY_LEN + 1];
    assert_int_equal(rsl_curve_load_secret(fifo, secret, &err), RSL_EPERM);
    path_in(s->dir, "missing.key", path, sizeof(path));
    assert_int_equal(rsl_key_file_check_private(path, &err), RSL_ENOENT);
    assert_non_null(strstr(err.text, path));
}

static void test_curve_files(void **state)
{
    struct keys_state *s = *state;
    char path[256];
    char out[RSL_Z85_KEY_LEN + 1];
    struct rsl_error err = {0};
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    char text[64];
    path_in(s->dir, "c.key", path, sizeof(path));

    /* Accepted forms: bare, "\n", "\r\n". */
    const char *ok_endings[] = {"", "\n", "\r\n"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(text, sizeof(text), "%s%s", sec, ok_endings[i]);
        write_file(path, text, strlen(text), 0600);
        assert_int_equal(rsl_curve_load_secret(path, out, &err), RSL_OK);
        assert_string_equal(out, sec);
    }
    /* Secret files are permission-checked, public ones are not. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(rsl_curve_load_secret(path, out, &err), RSL_EPERM);
    assert_non_null(strstr(err.text, "chmod 600"));
    assert_int_equal(rsl_curve_load_public(path, out, &err), RSL_OK);

    /* Refused forms. */
    const char *bad[] = {
        "",                                           /* empty */
        "\n",                                         /* empty line */
        "abc\n",                                      /* short */
        "0123456789012345678901234567890123456789\n\n", /* extra line */
        "0123456789012345678901234567890123456789x",  /* 41 characters */
        "012345678901234567890123456789012345678\n",  /* 39 characters */
        " 123456789012345678901234567890123456789",   /* space: not Z85 */
        "0123456789012345678901234567890123456789 ",  /* trailing blank */
        "0123456789012345678901234567890123456;89",   /* ';' is not Z85 */
        "01234567890123456789012345678901234567\"9",  /* '"' */
        "#####56789012345678901234567890123456789",   /* group > 2^32 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i], strlen(bad[i]), 0600);
        assert_int_equal(rsl_curve_load_public(path, out, &err), RSL_EPARSE);
        assert_non_null(strstr(err.text, path));
    }
    /* An oversized file. */
    char big[600];
    memset(big, 'a', sizeof(big));
    write_file(path, big, sizeof(big), 0600);
    assert_int_equal(rsl_curve_load_secret(path, out, &err), RSL_EPARSE);

    path_in(s->dir, "missing.pub", path, sizeof(path));
    assert_int_equal(rsl_curve_load_public(path, out, &err), RSL_ENOENT);
}

/* Three 40-character keys that together use all 85 Z85 characters. Each
 * 5-character group must denote at most 2^32 - 1, so its first character
 * is a low one (index < 60 keeps 60*85^4 + ... below 2^32). */
static void make_all_character_keys(char keys[3][RSL_Z85_KEY_LEN + 1])
{
    size_t cursor = 0;
    for (size_t k = 0; k < 3; k++) {
        for (size_t g = 0; g < 8; g++) {
            keys[k][g * 5] = Z85_ALPHABET[(k * 8 + g) % 40];
            for (size_t c = 1; c < 5; c++)
                keys[k][g * 5 + c] = Z85_ALPHABET[(cursor++) % 85];
        }
        keys[k][RSL_Z85_KEY_LEN] = '\0';
    }
}

static void test_z85_every_character(void **state)
{
    struct keys_state *s = *state;
    char keys[3][RSL_Z85_KEY_LEN + 1];
    make_all_character_keys(keys);
    /* All 85 characters appear, including those that INI parsers with
     * interpolation or inline comments corrupt: '#', '%', '&', '(', '[', '='. */
    for (size_t i = 0; i < 85; i++) {
        bool seen = false;
        for (size_t k = 0; k < 3; k++)
            seen = seen || strchr(keys[k], Z85_ALPHABET[i]) != NULL;
        assert_true(seen);
    }
    char path[256];
    struct rsl_error err = {0};
    char out[RSL_Z85_KEY_LEN + 1];
    for (size_t k = 0; k < 3; k++) {
        assert_true(rsl_z85_key_valid(keys[k]));
        uint8_t raw[32];
        assert_non_null(zmq_z85_decode(raw, keys[k]));
        char text[RSL_Z85_KEY_LEN + 8];
        snprintf(text, sizeof(text), "%.40s\n", keys[k]);
        path_in(s->dir, "all.key", path, sizeof(path));
        write_file(path, text, strlen(text), 0600);
        assert_int_equal(rsl_curve_load_secret(path, out, &err), RSL_OK);
        assert_string_equal(out, keys[k]);
        path_in(s->dir, "all.pub", path, sizeof(path));
        write_file(path, text, strlen(text), 0644);
        assert_int_equal(rsl_curve_load_public(path, out, &err), RSL_OK);
        assert_string_equal(out, keys[k]);
    }
}

static void test_z85_key_valid(void **state)
{
    (void)state;
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_true(rsl_z85_key_valid(pub));
    assert_true(rsl_z85_key_valid(sec));
    assert_false(rsl_z85_key_valid(NULL));
    assert_false(rsl_z85_key_valid(""));
    char shorter[41];
    memcpy(shorter, pub, 39);
    shorter[39] = '\0';
    assert_false(rsl_z85_key_valid(shorter));
    char longer[42];
    memcpy(longer, pub, 40);
    longer[40] = 'a';
    longer[41] = '\0';
    assert_false(rsl_z85_key_valid(longer));
    char bad[41];
    memcpy(bad, pub, 41);
    const char not_z85[] = {' ', '"', '\'', ',', ';', '\\', '_', '`', '|', '~', '\x7f', '\x80'};
    for (size_t i = 0; i < sizeof(not_z85); i++) {
        bad[17] = not_z85[i];
        assert_false(rsl_z85_key_valid(bad));
    }
    /* Largest valid group is "%nSc0" (0xffffffff); "%nSc1" overflows. */
    assert_true(rsl_z85_key_valid("%nSc0%nSc0%nSc0%nSc0%nSc0%nSc0%nSc0%nSc0"));
    assert_false(rsl_z85_key_valid("%nSc1%nSc0%nSc0%nSc0%nSc0%nSc0%nSc0%nSc0"));
}

static void test_keys_path(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(rsl_keys_path("keys", "sign.key", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "keys/sign.key");
    assert_int_equal(rsl_keys_path("keys//", "sign.key", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "keys/sign.key");
    assert_int_equal(rsl_keys_path("/", "sign.key", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "/sign.key");
    assert_int_equal(rsl_keys_path("a-rather-long-folder-name", "sign.key", out, sizeof(out)),
                     RSL_ETOOBIG);
    assert_int_equal(rsl_keys_path(NULL, "sign.key", out, sizeof(out)), RSL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_generate_refuses_overwrite),
        cmocka_unit_test(test_check_private),
        cmocka_unit_test(test_curve_files),
        cmocka_unit_test(test_z85_every_character),
        cmocka_unit_test(test_z85_key_valid),
        cmocka_unit_test(test_keys_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
