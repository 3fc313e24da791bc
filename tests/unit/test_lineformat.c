/*
 * test_lineformat.c - the collector output parser (lib/lineformat.c):
 * every accepted shape, then hostile input line by line, each rejected
 * with "ORIGIN:LINE: ..." and no samples handed back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/lineformat.h"

/* Parse a string with origin "collector fuel" and at most `max` samples. */
static int parse(const char *text, size_t len, size_t max, struct rsl_sample **out, size_t *n,
                 struct rsl_error *err)
{
    rsl_error_clear(err);
    return rsl_lineformat_parse(text, len, "collector fuel", max, out, n, err);
}

/* Expect rejection with exactly `message` and no samples. */
static void expect_error_len(const char *text, size_t len, int code, const char *message)
{
    struct rsl_sample *out = (struct rsl_sample *)(uintptr_t)1; /* must be cleared */
    size_t n = 99;
    struct rsl_error err;
    assert_int_equal(parse(text, len, 100, &out, &n, &err), code);
    assert_string_equal(err.text, message);
    assert_null(out);
    assert_int_equal(n, 0);
}

static void expect_error(const char *text, int code, const char *message)
{
    expect_error_len(text, strlen(text), code, message);
}

static void test_accepted_shapes(void **state)
{
    (void)state;
    struct rsl_sample *out = NULL;
    size_t n = 0;
    struct rsl_error err;
    const char *text = "# fuel collector output\n"                           /* 1 */
                       "energy.oil_stock_days 92.5\n"                         /* 2 */
                       "\n"                                                   /* 3 */
                       "energy.gas_storage_fill_pct\t87 pct\r\n"              /* 4 */
                       "  health.blood_stock_days 6 days 1764234000000  \n"   /* 5 */
                       "gov.cog_exercise_age_months -1e1 1764234000001\n"     /* 6: digits: time */
                       "   # indented comment\n"                              /* 7 */
                       "comms.x_count 3 # trailing comment\n"                 /* 8 */
                       "water.l 7.5 l_per_person_day#comment\n"               /* 9 */
                       "supply.share +0.25 %\n"                               /* 10 */
                       "\t \r\n"                                               /* 11 */
                       "x.y 0 m/s";                                           /* 12: no final \n */
    assert_int_equal(parse(text, strlen(text), 100, &out, &n, &err), RSL_OK);
    assert_int_equal(n, 8);
    assert_string_equal(out[0].indicator, "energy.oil_stock_days");
    assert_true(out[0].value == 92.5);
    assert_string_equal(out[0].unit, "");
    assert_int_equal(out[0].observed_at_ms, 0);
    assert_string_equal(out[1].indicator, "energy.gas_storage_fill_pct");
    assert_string_equal(out[1].unit, "pct");
    assert_string_equal(out[2].unit, "days");
    assert_int_equal(out[2].observed_at_ms, 1764234000000LL);
    assert_true(out[3].value == -10.0);
    assert_string_equal(out[3].unit, "");
    assert_int_equal(out[3].observed_at_ms, 1764234000001LL);
    assert_string_equal(out[4].indicator, "comms.x_count");
    assert_string_equal(out[5].unit, "l_per_person_day");
    assert_true(out[6].value == 0.25);
    assert_string_equal(out[6].unit, "%");
    assert_string_equal(out[7].indicator, "x.y");
    assert_string_equal(out[7].unit, "m/s");
    free(out);

    /* Nothing but comments and blanks: fine, no samples. */
    out = NULL;
    assert_int_equal(parse("# nothing today\n\n", 17, 100, &out, &n, &err), RSL_OK);
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(parse(NULL, 0, 100, &out, &n, &err), RSL_OK);
    assert_int_equal(n, 0);
    free(out);
}

static void test_exactly_max_samples(void **state)
{
    (void)state;
    struct rsl_sample *out = NULL;
    size_t n = 0;
    struct rsl_error err;
    const char *text = "a 1\nb 2\nc 3\n";
    assert_int_equal(parse(text, strlen(text), 3, &out, &n, &err), RSL_OK);
    assert_int_equal(n, 3);
    assert_string_equal(out[2].indicator, "c");
    free(out);
    assert_int_equal(parse(text, strlen(text), 2, &out, &n, &err), RSL_ETOOBIG);
    assert_string_equal(err.text, "collector fuel:3: more than 2 measurements");
    assert_null(out);
    assert_int_equal(n, 0);
    assert_int_equal(parse(text, strlen(text), 0, &out, &n, &err), RSL_ETOOBIG);
    assert_string_equal(err.text, "collector fuel:1: more than 0 measurements");

    /* Many samples: the array grows past its first allocation. */
    size_t count = 5000;
    char *big = malloc(count * 8 + 1);
    assert_non_null(big);
    size_t len = 0;
    for (size_t i = 0; i < count; i++)
        len += (size_t)snprintf(big + len, 9, "a %zu\n", i % 1000);
    assert_int_equal(parse(big, len, count, &out, &n, &err), RSL_OK);
    assert_int_equal(n, count);
    assert_true(out[count - 1].value == (double)((count - 1) % 1000));
    free(out);
    free(big);
}

static void test_bad_fields(void **state)
{
    (void)state;
    expect_error("a 1\nb\n", RSL_EPARSE,
                 "collector fuel:2: missing value (expected '<indicator> <value> [<unit>] "
                 "[<observed_at_ms>]')");
    expect_error("a 1 pct 1764234000000 extra\n", RSL_EPARSE,
                 "collector fuel:1: too many fields (expected '<indicator> <value> [<unit>] "
                 "[<observed_at_ms>]')");
    expect_error("a 1 2 3 4 5 6\n", RSL_EPARSE,
                 "collector fuel:1: too many fields (expected '<indicator> <value> [<unit>] "
                 "[<observed_at_ms>]')");
    /* A time in third place leaves no room for a fourth field. */
    expect_error("a 1 1764234000000 pct\n", RSL_EPARSE,
                 "collector fuel:1: too many fields (expected '<indicator> <value> [<unit>] "
                 "[<observed_at_ms>]')");
    expect_error("\n\nEnergy.oil 1\n", RSL_EPARSE,
                 "collector fuel:3: bad indicator id 'Energy.oil' (lowercase letters, digits, '_' "
                 "and '.', starting with a letter, at most 128)");
    expect_error("1abc 1\n", RSL_EPARSE,
                 "collector fuel:1: bad indicator id '1abc' (lowercase letters, digits, '_' and "
                 "'.', starting with a letter, at most 128)");
    expect_error("a-b 1\n", RSL_EPARSE,
                 "collector fuel:1: bad indicator id 'a-b' (lowercase letters, digits, '_' and "
                 "'.', starting with a letter, at most 128)");
    expect_error("a\x01 1\n", RSL_EPARSE,
                 "collector fuel:1: bad indicator id 'a?' (lowercase letters, digits, '_' and '.', "
                 "starting with a letter, at most 128)");

    const char *values[] = {"nan", "NaN", "inf", "-inf", "infinity", "1e999", "-1e999", "0x10",
                            "1,5", "1.2.3", "--1", "", "12abc", "\xc2\xbd"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char text[64], want[256];
        if (values[i][0] == '\0')
            continue; /* an empty value is a missing field, tested above */
        snprintf(text, sizeof(text), "a %s\n", values[i]);
        snprintf(want, sizeof(want), "collector fuel:1: a: value is not a finite number: '%s'",
                 values[i]);
        expect_error(text, RSL_EPARSE, want);
    }

    expect_error("a 1 p@ct\n", RSL_EPARSE,
                 "collector fuel:1: a: bad unit 'p@ct' (letters, digits and _%/.-, at most 32)");
    expect_error("a 1 abcdefghijabcdefghijabcdefghijabc\n", RSL_EPARSE,
                 "collector fuel:1: a: bad unit 'abcdefghijabcdefghijabcdefghijabc' (letters, "
                 "digits and _%/.-, at most 32)");
    expect_error("a 1 0\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '0'");
    expect_error("a 1 pct 0\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '0'");
    expect_error("a 1 pct -5\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '-5'");
    expect_error("a 1 pct +5\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '+5'");
    expect_error("a 1 pct 12x\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '12x'");
    expect_error("a 1 pct 1.5\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: '1.5'");
    expect_error("a 1 99999999999999999999\n", RSL_EPARSE,
                 "collector fuel:1: a: observed_at_ms must be unix milliseconds > 0: "
                 "'99999999999999999999'");
}

static void test_hostile_input(void **state)
{
    (void)state;
    const char nul[] = "a 1\nb 2\0 junk\nc 3\n";
    expect_error_len(nul, sizeof(nul) - 1, RSL_EPARSE, "collector fuel:2: NUL byte");
    /* A NUL inside a comment is still a NUL. */
    const char nulc[] = "# \0\n";
    expect_error_len(nulc, sizeof(nulc) - 1, RSL_EPARSE, "collector fuel:1: NUL byte");

    /* RSL_LINEFORMAT_MAX_LINE characters are fine (also as a comment and
     * with CRLF); one more is not, whatever the line holds. */
    char line[RSL_LINEFORMAT_MAX_LINE + 16];
    memset(line, ' ', sizeof(line));
    memcpy(line, "a 1 #", 5);
    memcpy(line + RSL_LINEFORMAT_MAX_LINE, "\r\n", 2);
    struct rsl_sample *out = NULL;
    size_t n = 0;
    struct rsl_error err;
    assert_int_equal(parse(line, RSL_LINEFORMAT_MAX_LINE + 2, 10, &out, &n, &err), RSL_OK);
    assert_int_equal(n, 1);
    free(out);
    memcpy(line + RSL_LINEFORMAT_MAX_LINE, "x\n", 2);
    expect_error_len(line, RSL_LINEFORMAT_MAX_LINE + 2, RSL_ETOOBIG,
                     "collector fuel:1: line longer than 1024 characters");
    /* Without a final newline too. */
    expect_error_len(line, RSL_LINEFORMAT_MAX_LINE + 1, RSL_ETOOBIG,
                     "collector fuel:1: line longer than 1024 characters");

    /* A bad line after good ones rejects the whole input. */
    expect_error("a 1\nb 2\nc three\n", RSL_EPARSE,
                 "collector fuel:3: c: value is not a finite number: 'three'");
    /* Bare CR is not a line break: it stays in the field and fails it. */
    expect_error("a 1\rb 2\n", RSL_EPARSE,
                 "collector fuel:1: a: value is not a finite number: '1?b'");

    /* A long field is shown cut, with no control characters. */
    char text[400], want[512];
    memset(text, 'x', 300);
    memcpy(text, "a 1e\x1b", 5);
    memcpy(text + 300, "\n", 2);
    snprintf(want, sizeof(want), "collector fuel:1: a: value is not a finite number: '1e?%.*s...'",
             45, text + 5);
    expect_error(text, RSL_EPARSE, want);

    /* Binary junk: an error, not a crash. */
    unsigned char junk[2048];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(((i * 2654435761u) >> 13) | 1);
    out = NULL;
    assert_true(parse((const char *)junk, sizeof(junk), 10, &out, &n, &err) < 0);
    assert_null(out);
    assert_non_null(strstr(err.text, "collector fuel:"));

    /* Default origin and bad arguments. */
    assert_int_equal(rsl_lineformat_parse("x", 1, NULL, 10, &out, &n, &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "input:1: missing value"));
    assert_int_equal(rsl_lineformat_parse(NULL, 5, "o", 10, &out, &n, &err), RSL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_shapes),
        cmocka_unit_test(test_exactly_max_samples),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_hostile_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
