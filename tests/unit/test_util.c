/*
 * test_util.c - strict parsing, encodings and durable writes (lib/util.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rsl/util.h"

static void test_parse_int64(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(rsl_parse_int64("42", 0, 100, &v), RSL_OK);
    assert_int_equal(v, 42);
    assert_int_equal(rsl_parse_int64("-5", -10, 10, &v), RSL_OK);
    assert_int_equal(v, -5);
    const char *bad[] = {"", " 1", "1 ", "1x", "0x10", "101", "99999999999999999999", "-", "+"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rsl_parse_int64(bad[i], 0, 100, &v), RSL_EINVAL);
}

static void test_parse_double(void **state)
{
    (void)state;
    double v = 0;
    assert_int_equal(rsl_parse_double("90.5", &v), RSL_OK);
    assert_true(v == 90.5);
    assert_int_equal(rsl_parse_double("-1e3", &v), RSL_OK);
    assert_true(v == -1000.0);
    const char *bad[] = {"", "nan", "NaN", "inf", "-inf", "1e999", "0x1p3", "1,5", " 1", "1 ", "--1", "."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rsl_parse_double(bad[i], &v), RSL_EINVAL);
}

static void test_parse_duration(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(rsl_parse_duration_ms("30", &ms), RSL_OK);
    assert_int_equal(ms, 30000);
    assert_int_equal(rsl_parse_duration_ms("5m", &ms), RSL_OK);
    assert_int_equal(ms, 300000);
    assert_int_equal(rsl_parse_duration_ms("2h", &ms), RSL_OK);
    assert_int_equal(ms, 7200000);
    assert_int_equal(rsl_parse_duration_ms("500ms", &ms), RSL_OK);
    assert_int_equal(ms, 500);
    assert_int_equal(rsl_parse_duration_ms("3d", &ms), RSL_OK);
    assert_int_equal(ms, 3 * 86400000LL);
    const char *bad[] = {"", "-1", "5x", "m", "1.5h", "99999999999999999d", " 5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rsl_parse_duration_ms(bad[i], &ms), RSL_EINVAL);
}

static void test_parse_time(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(rsl_parse_time_ms("1970-01-01T00:00:00Z", &ms), RSL_OK);
    assert_int_equal(ms, 0);
    assert_int_equal(rsl_parse_time_ms("2026-11-27T09:00:00Z", &ms), RSL_OK);
    assert_int_equal(ms, 1795770000000LL);
    assert_int_equal(rsl_parse_time_ms("2026-11-27T10:00:00.250+01:00", &ms), RSL_OK);
    assert_int_equal(ms, 1795770000250LL);
    assert_int_equal(rsl_parse_time_ms("2024-02-29T00:00:00Z", &ms), RSL_OK);
    assert_int_equal(rsl_parse_time_ms("1795770000000", &ms), RSL_OK);
    assert_int_equal(ms, 1795770000000LL);
    const char *bad[] = {"", "2026-11-27", "2026-11-27T09:00:00", "2026-13-01T00:00:00Z",
                         "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "2026-11-27T24:00:00Z",
                         "2026-11-27T09:00:00Zjunk", "2026-11-27T09:00:00.Z", "-1",
                         "2026-11-27T09:00:00+1:00", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rsl_parse_time_ms(bad[i], &ms), RSL_EINVAL);
    char out[40];
    rsl_format_time_ms(1795770000250LL, out, sizeof(out));
    assert_string_equal(out, "2026-11-27T09:00:00.250Z");
}

static void test_hex_base64(void **state)
{
    (void)state;
    uint8_t raw[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(i * 7 + 3);
    char hex[65], b64[45];
    uint8_t back[32];
    rsl_hex_encode(raw, 32, hex);
    assert_int_equal(rsl_hex_decode(hex, back, 32), RSL_OK);
    assert_memory_equal(raw, back, 32);
    assert_int_equal(rsl_hex_decode("zz", back, 1), RSL_EINVAL);
    assert_int_equal(rsl_hex_decode("abc", back, 1), RSL_EINVAL);
    rsl_base64_encode(raw, 32, b64);
    assert_int_equal(strlen(b64), 44);
    assert_int_equal(rsl_base64_decode(b64, back, 32), RSL_OK);
    assert_memory_equal(raw, back, 32);
    /* Wrong length, bad characters, non-canonical padding bits. */
    assert_int_equal(rsl_base64_decode("AAAA", back, 32), RSL_EINVAL);
    char bad[45];
    memcpy(bad, b64, sizeof(bad));
    bad[10] = '*';
    assert_int_equal(rsl_base64_decode(bad, back, 32), RSL_EINVAL);
    memcpy(bad, b64, sizeof(bad));
    bad[42] = bad[42] == 'B' ? 'C' : 'B'; /* last char before '=' carries 2 unused bits */
    assert_int_equal(rsl_base64_decode(bad, back, 32), RSL_EINVAL);
}

static void test_atomic_write(void **state)
{
    (void)state;
    char dir[] = "/tmp/rsl-util-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/sub/dir/file", dir);
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/sub/dir", dir);
    struct rsl_error err = {0};
    assert_int_equal(rsl_mkdir_p(sub, 0700, &err), RSL_OK);
    assert_int_equal(rsl_file_write_atomic(path, "hello", 5, 0600, &err), RSL_OK);
    assert_int_equal(rsl_file_write_atomic(path, "bye", 3, 0600, &err), RSL_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(rsl_file_read_all(path, 100, &buf, &len, &err), RSL_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "bye", 3);
    free(buf);
    assert_int_equal(rsl_file_read_all(path, 2, &buf, &len, &err), RSL_ETOOBIG);
    assert_null(buf);
    char missing[PATH_MAX];
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    assert_int_equal(rsl_file_read_all(missing, 100, &buf, &len, &err), RSL_ENOENT);
    assert_non_null(strstr(err.text, missing));
    /* Writing into a missing folder fails with the path named. */
    snprintf(missing, sizeof(missing), "%s/nope/file", dir);
    assert_int_equal(rsl_file_write_atomic(missing, "x", 1, 0600, &err), RSL_EIO);
    assert_non_null(strstr(err.text, "nope"));
    unlink(path);
    rmdir(sub);
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    rmdir(sub);
    rmdir(dir);
}

static void test_path_resolve_and_misc(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(rsl_path_resolve("/etc/resilience/agent.conf", "keys/", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "/etc/resilience/keys/");
    assert_int_equal(rsl_path_resolve("/etc/resilience/agent.conf", "/var/x", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "/var/x");
    assert_int_equal(rsl_path_resolve("agent.conf", "k", out, sizeof(out)), RSL_OK);
    assert_string_equal(out, "./k");
    char small[4];
    assert_int_equal(rsl_path_resolve("/a/b", "longer", small, sizeof(small)), RSL_ETOOBIG);
    assert_int_equal(rsl_strlcpy(small, "abcd", sizeof(small)), RSL_ETOOBIG);
    char t[] = "  x y \t";
    assert_string_equal(rsl_trim(t), "x y");
    assert_true(rsl_consttime_equal("abc", "abc", 3));
    assert_false(rsl_consttime_equal("abc", "abd", 3));
    bool b = false;
    assert_int_equal(rsl_parse_bool("Yes", &b), RSL_OK);
    assert_true(b);
    assert_int_equal(rsl_parse_bool("maybe", &b), RSL_EINVAL);
    struct rsl_error err = {0};
    assert_int_equal(rsl_error_set(&err, RSL_EINVAL, "key '%s'", "x"), RSL_EINVAL);
    rsl_error_prefix(&err, "file:%d", 3);
    assert_string_equal(err.text, "file:3: key 'x'");
}

/* rsl_text_show: what error messages echo of untrusted text. Its output
 * goes into JSON error bodies (jansson refuses invalid UTF-8: the API
 * answered 500 instead of 400 before this was enforced, found by
 * fuzz_api) and into one-line logs. */
static void test_text_show(void **state)
{
    (void)state;
    char out[16];
    assert_string_equal(rsl_text_show("plain", out, sizeof(out)), "plain");
    assert_string_equal(rsl_text_show("a\nb\tc", out, sizeof(out)), "a?b?c");
    /* Valid UTF-8 kept whole; a lone continuation byte, a truncated
     * sequence, an overlong form and a surrogate become '?'. */
    assert_string_equal(rsl_text_show("\xc3\xa9t\xc3\xa9", out, sizeof(out)),
                        "\xc3\xa9t\xc3\xa9");
    assert_string_equal(rsl_text_show("x\xa4y", out, sizeof(out)), "x?y");
    assert_string_equal(rsl_text_show("x\xe2\x82", out, sizeof(out)), "x??");
    const char *overlong = rsl_text_show("\xc0\xafz", out, sizeof(out));
    assert_null(strchr(overlong, '\xc0'));
    const char *surrogate = rsl_text_show("\xed\xa0\x80", out, sizeof(out));
    assert_null(strchr(surrogate, '\xed'));
    /* Cut with "..." and never inside a character: with 16 bytes the text
     * part is at most 12, so the 2-byte e-acute at 11..12 must go whole. */
    rsl_text_show("abcdefghijk\xc3\xa9mnopqrstuvwxyz", out, sizeof(out));
    size_t n = strlen(out);
    assert_true(n < sizeof(out));
    assert_string_equal(out + n - 3, "...");
    for (size_t i = 0; i + 3 < n; i++)
        assert_true((unsigned char)out[i] < 0x80 || (unsigned char)out[i] == 0xc3 ||
                    (unsigned char)out[i] == 0xa9);
    if (strchr(out, '\xc3') != NULL)
        assert_non_null(strstr(out, "\xc3\xa9"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_int64),   cmocka_unit_test(test_parse_double),
        cmocka_unit_test(test_parse_duration), cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_hex_base64),    cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_path_resolve_and_misc), cmocka_unit_test(test_text_show),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
