/*
 * test_agent_json.c - the flat JSON object an http collector may return
 * (agent/jsonbody.c), against hostile bodies.
 *
 * Accepted: {"indicator": number, ...} in the object's order, integers and
 * large integers as doubles, an empty object. Rejected, each with a message
 * naming the origin and what is wrong: other top-level types, nested values,
 * strings (also "1" and "NaN"), booleans, null, NaN/Infinity tokens,
 * numbers beyond a double, duplicate keys, bad indicator ids (also a 1 MiB
 * key, quoted only in part), NUL bytes raw and escaped, invalid UTF-8,
 * trailing data, deep nesting (no stack exhaustion), bodies over 1 MiB,
 * more members than allowed. Nothing is returned on error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jsonbody.h"
#include "rsl/codec.h"

static void assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", text, needle);
}

/* Parse and expect an error; returns the message (static). */
static const char *rejects_n(const char *body, size_t len, int code)
{
    static struct rsl_error err;
    struct rsl_sample *samples = (struct rsl_sample *)0x1;
    size_t n = 99;
    memset(&err, 0, sizeof(err));
    int rc = agent_json_parse(body, len, "https://x/metrics", 100, &samples, &n, &err);
    if (rc == RSL_OK)
        fail_msg("accepted: %.80s", body);
    if (code != 0)
        assert_int_equal(rc, code);
    assert_null(samples);
    assert_int_equal(n, 0);
    assert_contains(err.text, "https://x/metrics");
    assert_true(strlen(err.text) < 400);
    return err.text;
}

static const char *rejects(const char *body, int code)
{
    return rejects_n(body, strlen(body), code);
}

static void test_valid(void **state)
{
    (void)state;
    struct rsl_sample *s = NULL;
    size_t n = 0;
    const char *body = "{\"energy.oil_stock_days\": 91.5, \"health.beds\": 1200,\n"
                       " \"a\": -0.25, \"big\": 123456789012345678901234567890, \"tiny\": 1e-300}";
    assert_int_equal(agent_json_parse(body, strlen(body), "o", 100, &s, &n, NULL), RSL_OK);
    assert_int_equal(n, 5);
    /* The object's order. */
    assert_string_equal(s[0].indicator, "energy.oil_stock_days");
    assert_true(s[0].value == 91.5);
    assert_string_equal(s[1].indicator, "health.beds");
    assert_true(s[1].value == 1200.0);
    assert_string_equal(s[2].indicator, "a");
    assert_true(s[2].value == -0.25);
    assert_true(s[3].value > 1.2e29 && s[3].value < 1.3e29);
    assert_true(s[4].value > 0 && s[4].value < 1e-299);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(s[i].unit, "");
        assert_int_equal(s[i].observed_at_ms, 0);
    }
    free(s);

    /* Empty object: no samples, no error. */
    s = NULL;
    assert_int_equal(agent_json_parse(" {} \n", 5, "o", 100, &s, &n, NULL), RSL_OK);
    assert_int_equal(n, 0);
    free(s);

    /* A key of exactly the longest indicator id is fine. */
    char body2[300];
    char key[RSL_INDICATOR_ID_MAX + 1];
    memset(key, 'k', RSL_INDICATOR_ID_MAX);
    key[RSL_INDICATOR_ID_MAX] = '\0';
    snprintf(body2, sizeof(body2), "{\"%s\": 1}", key);
    assert_int_equal(agent_json_parse(body2, strlen(body2), "o", 100, &s, &n, NULL), RSL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(s[0].indicator, key);
    free(s);
}

static void test_wrong_shapes(void **state)
{
    (void)state;
    assert_contains(rejects("[1, 2, 3]", RSL_EPARSE), "not an object");
    assert_contains(rejects("{\"a\": {\"b\": 1}}", RSL_EPARSE), "'a': value is an object");
    assert_contains(rejects("{\"a\": [1]}", RSL_EPARSE), "'a': value is an array");
    assert_contains(rejects("{\"a\": \"1\"}", RSL_EPARSE), "'a': value is a string");
    assert_contains(rejects("{\"a\": \"NaN\"}", RSL_EPARSE), "value is a string");
    assert_contains(rejects("{\"a\": true}", RSL_EPARSE), "value is true");
    assert_contains(rejects("{\"a\": false}", RSL_EPARSE), "value is false");
    assert_contains(rejects("{\"a\": null}", RSL_EPARSE), "value is null");
    rejects("42", RSL_EPARSE); /* not even an object or array */
    rejects("\"text\"", RSL_EPARSE);
    rejects("null", RSL_EPARSE);
    rejects("", RSL_EPARSE);
    rejects("   ", RSL_EPARSE);
    rejects("{", RSL_EPARSE);
    rejects("{\"a\" 1}", RSL_EPARSE);
    rejects("{\"a\": 1,}", RSL_EPARSE);
    rejects("{'a': 1}", RSL_EPARSE);
    /* Prometheus text is not JSON. */
    rejects("energy.oil_stock_days 91.5 days\n", RSL_EPARSE);
}

static void test_hostile_numbers(void **state)
{
    (void)state;
    rejects("{\"a\": NaN}", RSL_EPARSE);
    rejects("{\"a\": nan}", RSL_EPARSE);
    rejects("{\"a\": Infinity}", RSL_EPARSE);
    rejects("{\"a\": -Infinity}", RSL_EPARSE);
    assert_contains(rejects("{\"a\": 1e400}", RSL_EPARSE), "overflow");
    assert_contains(rejects("{\"a\": -1e400}", RSL_EPARSE), "overflow");
    /* 400 digits: beyond a double, as an integer literal too. */
    char big[512] = "{\"a\": ";
    size_t off = strlen(big);
    memset(big + off, '9', 400);
    memcpy(big + off + 400, "}", 2);
    rejects(big, RSL_EPARSE);
    rejects("{\"a\": 0x10}", RSL_EPARSE);
    rejects("{\"a\": 01}", RSL_EPARSE);
    rejects("{\"a\": +1}", RSL_EPARSE);
    rejects("{\"a\": 1.}", RSL_EPARSE);
    rejects("{\"a\": .5}", RSL_EPARSE);
}

static void test_hostile_keys(void **state)
{
    (void)state;
    assert_contains(rejects("{\"a\": 1, \"a\": 2}", RSL_EPARSE), "duplicate");
    assert_contains(rejects("{\"Bad Key\": 1}", RSL_EPARSE), "'Bad Key' is not an indicator id");
    rejects("{\"\": 1}", RSL_EPARSE);
    rejects("{\"1abc\": 1}", RSL_EPARSE);
    rejects("{\"a-b\": 1}", RSL_EPARSE);
    rejects("{\"a\\u0000b\": 1}", RSL_EPARSE); /* escaped NUL */
    rejects("{\"a\\nb\": 1}", RSL_EPARSE);     /* control character, quoted as '?' */
    /* One longer than an indicator id may be. */
    char body[300];
    char key[RSL_INDICATOR_ID_MAX + 2];
    memset(key, 'k', RSL_INDICATOR_ID_MAX + 1);
    key[RSL_INDICATOR_ID_MAX + 1] = '\0';
    snprintf(body, sizeof(body), "{\"%s\": 1}", key);
    rejects(body, RSL_EPARSE);

    /* A key of almost 1 MiB: refused, and the message quotes only a part. */
    size_t klen = AGENT_JSON_MAX_BYTES - 16;
    char *huge = malloc(klen + 16);
    assert_non_null(huge);
    memcpy(huge, "{\"", 2);
    memset(huge + 2, 'x', klen);
    memcpy(huge + 2 + klen, "\": 1}", 6);
    const char *msg = rejects_n(huge, strlen(huge), RSL_EPARSE);
    assert_contains(msg, "...");
    free(huge);

    /* Same for a 1 MiB string value. */
    huge = malloc(klen + 16);
    assert_non_null(huge);
    memcpy(huge, "{\"a\": \"", 7);
    memset(huge + 7, 'v', klen - 8);
    memcpy(huge + 7 + klen - 8, "\"}", 3);
    assert_contains(rejects_n(huge, strlen(huge), RSL_EPARSE), "value is a string");
    free(huge);
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    assert_contains(rejects_n("{\"a\": 1}\0", 9, RSL_EPARSE), "NUL");
    assert_contains(rejects_n("{\"a\0\": 1}", 9, RSL_EPARSE), "NUL");
    rejects("{\"\xff\xfe\": 1}", RSL_EPARSE);     /* not UTF-8 */
    rejects("{\"a\": 1} {\"b\": 2}", RSL_EPARSE); /* two documents */
    const char *msg = rejects("{\"a\": 1}\n  garbage", RSL_EPARSE);
    assert_contains(msg, ":2:"); /* line of the trailing garbage */

    /* 100000 levels of nesting: jansson's depth limit, no stack overflow. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 16);
    assert_non_null(deep);
    memcpy(deep, "{\"a\": ", 6);
    memset(deep + 6, '[', depth);
    memset(deep + 6 + depth, ']', depth);
    memcpy(deep + 6 + 2 * depth, "}", 2);
    rejects(deep, RSL_EPARSE);
    memset(deep, '{', depth);
    deep[depth] = '\0';
    rejects(deep, RSL_EPARSE);
    free(deep);
}

static void test_limits(void **state)
{
    (void)state;
    /* Over the body cap: refused before parsing. */
    size_t len = AGENT_JSON_MAX_BYTES + 1;
    char *body = malloc(len + 1);
    assert_non_null(body);
    memset(body, ' ', len);
    body[0] = '{';
    body[len - 1] = '}';
    body[len] = '\0';
    assert_contains(rejects_n(body, len, RSL_ETOOBIG), "over");
    free(body);

    /* More members than measurements allowed (max 100 here). */
    char many[4096];
    size_t off = 0;
    many[off++] = '{';
    for (int i = 0; i < 101; i++)
        off +=
            (size_t)snprintf(many + off, sizeof(many) - off, "%s\"m%d\": %d", i ? "," : "", i, i);
    many[off++] = '}';
    many[off] = '\0';
    assert_contains(rejects(many, RSL_ETOOBIG), "101 members");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_wrong_shapes),
        cmocka_unit_test(test_hostile_numbers), cmocka_unit_test(test_hostile_keys),
        cmocka_unit_test(test_hostile_bytes),   cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
