/*
 * test_codec.c - the wire codec against valid and hostile input.
 *
 * Valid messages are built with the protobuf-c structs and encoded with our
 * encoder; hostile ones are made by editing those bytes (truncation, bit
 * flips, appended fields) or written byte by byte where a particular wire
 * form is needed (wrong wire types, huge lengths, NUL bytes in strings).
 * Every rejection must come with a message that names the field.
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

#include "rsl/codec.h"

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

#define N_FIX_MEASUREMENTS 3

/* A valid report with three measurements, all storage inside the struct. */
struct report_fixture {
    rsl_report report;
    rsl_measurement m[N_FIX_MEASUREMENTS];
    rsl_measurement *mp[N_FIX_MEASUREMENTS];
    char *releasable[2];
};

static void fixture_init(struct report_fixture *f)
{
    memset(f, 0, sizeof(*f));
    resilience__v1__report__init(&f->report);
    f->report.agent_id = (char *)"DEU-BMI-01";
    f->report.nation = (char *)"DEU";
    f->report.organisation = (char *)"Bundesministerium des Innern und für Heimat";
    f->report.sequence = 42;
    f->report.created_at_ms = 1764234000000;
    f->report.marking = (char *)"NATO UNCLASSIFIED";
    f->releasable[0] = (char *)"EU";
    f->releasable[1] = (char *)"partner_2";
    static const char *const ids[N_FIX_MEASUREMENTS] = {
        "energy.oil_stock_days", "comms.public_warning_reach_pct", "health.icu_beds_free"};
    static const char *const units[N_FIX_MEASUREMENTS] = {"days", "pct", ""};
    for (size_t i = 0; i < N_FIX_MEASUREMENTS; i++) {
        resilience__v1__measurement__init(&f->m[i]);
        f->m[i].indicator = (char *)ids[i];
        f->m[i].value = 90.5 + (double)i;
        f->m[i].unit = (char *)units[i];
        f->m[i].observed_at_ms = 1764233000000 + (int64_t)i;
        f->m[i].source = (char *)"collector fuel";
        f->mp[i] = &f->m[i];
    }
    f->m[0].n_releasable_to = 2;
    f->m[0].releasable_to = f->releasable;
    f->report.n_measurements = N_FIX_MEASUREMENTS;
    f->report.measurements = f->mp;
}

static uint8_t *encode_report(const rsl_report *r, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(rsl_report_encode(r, &buf, len), RSL_OK);
    assert_non_null(buf);
    return buf;
}

/* Decode `len` bytes and expect failure with `code` and a message that
 * contains `needle` (NULL: any non-empty message). */
static void expect_report_rejected(const uint8_t *buf, size_t len, int code, const char *needle)
{
    struct rsl_error err = {0};
    rsl_report *out = (rsl_report *)&err; /* must be reset to NULL */
    int rc = rsl_report_decode(buf, len, &out, &err);
    if (rc != code || (needle != NULL && strstr(err.text, needle) == NULL)) {
        print_error("got rc %d message '%s', expected rc %d containing '%s'\n", rc, err.text, code,
                    needle != NULL ? needle : "");
        fail();
    }
    assert_null(out);
    assert_true(err.text[0] != '\0');
}

/* Encode the (modified) fixture and expect the decoder to refuse it. */
static void expect_struct_rejected(const rsl_report *r, const char *needle)
{
    size_t len = 0;
    uint8_t *buf = encode_report(r, &len);
    expect_report_rejected(buf, len, RSL_EPARSE, needle);
    free(buf);
    /* rsl_report_validate names the field without the "report: " prefix. */
    struct rsl_error err = {0};
    assert_int_not_equal(rsl_report_validate(r, &err), RSL_OK);
    if (needle != NULL && strstr(err.text, needle) == NULL) {
        print_error("validate said '%s', expected '%s'\n", err.text, needle);
        fail();
    }
}

static void expect_struct_accepted(const rsl_report *r)
{
    size_t len = 0;
    uint8_t *buf = encode_report(r, &len);
    struct rsl_error err = {0};
    rsl_report *out = NULL;
    int rc = rsl_report_decode(buf, len, &out, &err);
    if (rc != RSL_OK) {
        print_error("rejected: %s\n", err.text);
        fail();
    }
    rsl_report_free(&out);
    free(buf);
}

/* Append raw bytes to an encoded valid report. */
static uint8_t *append_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                             size_t *len)
{
    uint8_t *buf = malloc(alen + blen);
    assert_non_null(buf);
    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    *len = alen + blen;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Report: valid                                                             */
/* ------------------------------------------------------------------------ */

static void test_report_round_trip(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *buf = encode_report(&f.report, &len);
    struct rsl_error err = {0};
    rsl_report *r = NULL;
    assert_int_equal(rsl_report_decode(buf, len, &r, &err), RSL_OK);
    assert_string_equal(r->agent_id, "DEU-BMI-01");
    assert_string_equal(r->nation, "DEU");
    assert_string_equal(r->organisation, f.report.organisation);
    assert_int_equal(r->sequence, 42);
    assert_int_equal(r->created_at_ms, 1764234000000);
    assert_string_equal(r->marking, "NATO UNCLASSIFIED");
    assert_int_equal(r->n_measurements, N_FIX_MEASUREMENTS);
    for (size_t i = 0; i < N_FIX_MEASUREMENTS; i++) {
        assert_string_equal(r->measurements[i]->indicator, f.m[i].indicator);
        assert_true(r->measurements[i]->value == f.m[i].value);
        assert_string_equal(r->measurements[i]->unit, f.m[i].unit);
        assert_int_equal(r->measurements[i]->observed_at_ms, f.m[i].observed_at_ms);
    }
    assert_int_equal(r->measurements[0]->n_releasable_to, 2);
    assert_string_equal(r->measurements[0]->releasable_to[1], "partner_2");

    /* Re-encoding what we decoded gives the same bytes. */
    size_t len2 = 0;
    uint8_t *buf2 = encode_report(r, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);
    rsl_report_free(&r);
    assert_null(r);
    rsl_report_free(&r); /* NULL-safe */
    rsl_report_free(NULL);
    free(buf);
}

static void test_report_limits_accepted(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    /* Extreme but valid values. */
    char org[RSL_ORGANISATION_MAX + 1];
    memset(org, 'o', RSL_ORGANISATION_MAX);
    org[RSL_ORGANISATION_MAX] = '\0';
    char ind[RSL_INDICATOR_ID_MAX + 1];
    memset(ind, 'a', RSL_INDICATOR_ID_MAX);
    ind[RSL_INDICATOR_ID_MAX] = '\0';
    f.report.organisation = org;
    f.report.sequence = (uint64_t)INT64_MAX;
    f.report.marking = (char *)"";
    f.m[0].indicator = ind;
    f.m[1].value = -1e308;
    f.m[1].unit = (char *)"t/day";
    f.m[2].unit = (char *)"%";
    f.m[2].value = 0.0;
    f.m[2].source = (char *)"Ärztekammer ✓ 𝄞"; /* 2-, 3- and 4-byte UTF-8 */
    expect_struct_accepted(&f.report);
}

static void test_report_unknown_fields_kept(void **state)
{
    (void)state;
    /* Forward compatibility: a newer agent's extra field 99 (varint) and
     * field 100 (bytes) are accepted and survive a re-encode. */
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *valid = encode_report(&f.report, &len);
    const uint8_t extra[] = {0x98, 0x06, 0x07, 0xa2, 0x06, 0x02, 'h', 'i'};
    size_t blen = 0;
    uint8_t *buf = append_bytes(valid, len, extra, sizeof(extra), &blen);
    rsl_report *r = NULL;
    struct rsl_error err = {0};
    assert_int_equal(rsl_report_decode(buf, blen, &r, &err), RSL_OK);
    size_t len2 = 0;
    uint8_t *again = encode_report(r, &len2);
    assert_int_equal(len2, blen);
    rsl_report_free(&r);
    free(again);
    free(buf);
    free(valid);
}

/* ------------------------------------------------------------------------ */
/* Report: hostile wire forms                                                */
/* ------------------------------------------------------------------------ */

static void test_report_every_truncation(void **state)
{
    (void)state;
    /* With one measurement and no marking, the measurement is the last field,
     * so every proper prefix either cuts a field or lacks the measurement. */
    struct report_fixture f;
    fixture_init(&f);
    f.report.n_measurements = 1;
    f.report.marking = (char *)"";
    size_t len = 0;
    uint8_t *buf = encode_report(&f.report, &len);
    for (size_t cut = 0; cut < len; cut++) {
        /* Copy to an exact-size heap block so ASan sees any over-read. */
        uint8_t *part = malloc(cut > 0 ? cut : 1);
        assert_non_null(part);
        memcpy(part, buf, cut);
        expect_report_rejected(part, cut, RSL_EPARSE, NULL);
        free(part);
    }
    free(buf);
}

static void test_report_wrong_wire_types(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *valid = encode_report(&f.report, &len);
    static const struct {
        uint8_t bytes[16];
        size_t len;
        const char *needle;
    } cases[] = {
        /* sequence (4) as length-delimited */
        {{0x22, 0x01, 'x'}, 3, "sequence: wrong wire type 2"},
        /* agent_id (1) as varint */
        {{0x08, 0x01}, 2, "agent_id: wrong wire type 0"},
        /* measurements (6) as fixed64 */
        {{0x31, 1, 2, 3, 4, 5, 6, 7, 8}, 9, "measurements: wrong wire type 1"},
        /* created_at_ms (5) as fixed32 */
        {{0x2d, 1, 2, 3, 4}, 5, "created_at_ms: wrong wire type 5"},
        /* a measurement whose value (2) is a varint */
        {{0x32, 0x02, 0x10, 0x01}, 4, "measurements[3].value: wrong wire type 0"},
        /* a measurement whose indicator (1) is fixed32 */
        {{0x32, 0x05, 0x0d, 1, 2, 3, 4}, 7, "measurements[3].indicator: wrong wire type 5"},
        /* proto2 group start / end, and the undefined wire types 6, 7 */
        {{0x9b, 0x06}, 2, "unsupported wire type 3"},
        {{0x9c, 0x06}, 2, "unsupported wire type 4"},
        {{0x9e, 0x06}, 2, "unsupported wire type 6"},
        {{0x9f, 0x06}, 2, "unsupported wire type 7"},
        /* field number 0 */
        {{0x00, 0x01}, 2, "invalid field number"},
        /* a tag varint that never ends (11 continuation bytes) */
        {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 11, "field tag"},
        /* a value varint longer than 64 bits */
        {{0x98, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 12, "varint"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t blen = 0;
        uint8_t *buf = append_bytes(valid, len, cases[i].bytes, cases[i].len, &blen);
        expect_report_rejected(buf, blen, RSL_EPARSE, cases[i].needle);
        free(buf);
    }
    free(valid);
}

static void test_report_huge_lengths(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *valid = encode_report(&f.report, &len);
    static const struct {
        uint8_t bytes[16];
        size_t len;
    } cases[] = {
        /* organisation (3) with length UINT64_MAX, then 3 bytes */
        {{0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'a', 'b', 'c'}, 14},
        /* measurements with length 2^31 */
        {{0x32, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00}, 7},
        /* unknown field 100 (bytes) claiming 2^63 bytes */
        {{0xa2, 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 12},
        /* one byte past the end */
        {{0x3a, 0x05, 'N', 'A', 'T', 'O'}, 6},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t blen = 0;
        uint8_t *buf = append_bytes(valid, len, cases[i].bytes, cases[i].len, &blen);
        expect_report_rejected(buf, blen, RSL_EPARSE, "past the end");
        free(buf);
    }
    free(valid);
}

static void test_report_nul_in_strings(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *valid = encode_report(&f.report, &len);
    /* A 4th measurement whose indicator is "abc\0def": protobuf-c alone would
     * read "abc". */
    const uint8_t measurement[] = {0x32, 0x0e, 0x0a, 0x07, 'a', 'b', 'c', 0, 'd', 'e', 'f',
                                   0x20, 0x01, 0x1a, 0x01, 'd'};
    size_t blen = 0;
    uint8_t *buf = append_bytes(valid, len, measurement, sizeof(measurement), &blen);
    expect_report_rejected(buf, blen, RSL_EPARSE, "measurements[3].indicator: contains a NUL byte");
    free(buf);

    /* A later agent_id with a NUL (the last occurrence of a field wins). */
    const uint8_t agent[] = {0x0a, 0x04, 'D', 'E', 0, 'U'};
    buf = append_bytes(valid, len, agent, sizeof(agent), &blen);
    expect_report_rejected(buf, blen, RSL_EPARSE, "agent_id: contains a NUL byte");
    free(buf);

    /* A releasable_to entry with a NUL. */
    const uint8_t rel[] = {0x32, 0x0e, 0x0a, 0x01, 'x', 0x20, 0x01, 0x2a, 0x02, 'E', 'U',
                           0x2a, 0x03, 'E', 0, 'U'};
    buf = append_bytes(valid, len, rel, sizeof(rel), &blen);
    expect_report_rejected(buf, blen, RSL_EPARSE, "measurements[3].releasable_to[1]: contains a NUL");
    free(buf);
    free(valid);
}

static void test_report_oversized(void **state)
{
    (void)state;
    size_t big = 8u * 1024u * 1024u + 1u;
    uint8_t *buf = calloc(1, big);
    assert_non_null(buf);
    expect_report_rejected(buf, big, RSL_ETOOBIG, "at most");
    free(buf);
}

static void test_report_bit_flips(void **state)
{
    (void)state;
    /* Every single-byte corruption either decodes to a valid report or is
     * rejected with a message; none crashes or leaks (ASan builds). */
    struct report_fixture f;
    fixture_init(&f);
    size_t len = 0;
    uint8_t *valid = encode_report(&f.report, &len);
    static const uint8_t patterns[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof(patterns); k++) {
            uint8_t *buf = malloc(len);
            assert_non_null(buf);
            memcpy(buf, valid, len);
            buf[i] = buf[i] == patterns[k] ? (uint8_t)~patterns[k] : patterns[k];
            struct rsl_error err = {0};
            rsl_report *r = NULL;
            int rc = rsl_report_decode(buf, len, &r, &err);
            if (rc == RSL_OK) {
                assert_non_null(r);
                assert_int_equal(rsl_report_validate(r, NULL), RSL_OK);
            } else {
                assert_null(r);
                assert_true(err.text[0] != '\0');
            }
            rsl_report_free(&r);
            free(buf);
        }
    }
    free(valid);
}

/* ------------------------------------------------------------------------ */
/* Report: content                                                           */
/* ------------------------------------------------------------------------ */

static void test_report_missing_fields(void **state)
{
    (void)state;
    struct report_fixture f;

    fixture_init(&f);
    f.report.agent_id = (char *)"";
    expect_struct_rejected(&f.report, "agent_id: missing");

    fixture_init(&f);
    f.report.nation = (char *)"";
    expect_struct_rejected(&f.report, "nation: missing");

    fixture_init(&f);
    f.report.sequence = 0;
    expect_struct_rejected(&f.report, "sequence");

    fixture_init(&f);
    f.report.created_at_ms = 0;
    expect_struct_rejected(&f.report, "created_at_ms");

    fixture_init(&f);
    f.report.created_at_ms = -5;
    expect_struct_rejected(&f.report, "created_at_ms");

    fixture_init(&f);
    f.report.n_measurements = 0;
    expect_struct_rejected(&f.report, "measurements: missing");

    fixture_init(&f);
    f.m[1].indicator = (char *)"";
    expect_struct_rejected(&f.report, "measurements[1].indicator: missing");

    fixture_init(&f);
    f.m[2].observed_at_ms = 0;
    expect_struct_rejected(&f.report, "measurements[2].observed_at_ms");

    /* The empty message: everything missing. */
    expect_report_rejected((const uint8_t *)"", 0, RSL_EPARSE, "agent_id: missing");

    /* Hand-built structs may hold NULL strings: validate must not crash. */
    fixture_init(&f);
    f.report.nation = NULL;
    assert_int_equal(rsl_report_validate(&f.report, NULL), RSL_EPARSE);
    fixture_init(&f);
    f.m[0].unit = NULL;
    f.m[0].source = NULL;
    assert_int_equal(rsl_report_validate(&f.report, NULL), RSL_OK);
    fixture_init(&f);
    f.mp[1] = NULL;
    assert_int_equal(rsl_report_validate(&f.report, NULL), RSL_EPARSE);
    assert_int_equal(rsl_report_validate(NULL, NULL), RSL_EINVAL);
}

static void test_report_sequence(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    f.report.sequence = 0;
    expect_struct_rejected(&f.report, "sequence: must be 1..");
    f.report.sequence = (uint64_t)INT64_MAX + 1u;
    expect_struct_rejected(&f.report, "sequence: must be 1..");
    f.report.sequence = UINT64_MAX;
    expect_struct_rejected(&f.report, "sequence");
    f.report.sequence = 1;
    expect_struct_accepted(&f.report);
}

static void test_report_not_finite(void **state)
{
    (void)state;
    struct report_fixture f;
    const double bad[] = {(double)NAN, -(double)NAN, (double)INFINITY, -(double)INFINITY};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_init(&f);
        f.m[2].value = bad[i];
        expect_struct_rejected(&f.report, "measurements[2].value: not finite");
    }
}

static void test_report_bad_nation(void **state)
{
    (void)state;
    const char *bad[] = {"deu", "DE", "DEUX", "D3U", "DéU", " DEU", "DE ", "Deu"};
    struct report_fixture f;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_init(&f);
        f.report.nation = (char *)bad[i];
        expect_struct_rejected(&f.report, "nation");
    }
    assert_true(rsl_valid_nation_code("FRA"));
    assert_false(rsl_valid_nation_code(NULL));
    assert_false(rsl_valid_nation_code(""));
}

static void test_report_bad_indicator_ids(void **state)
{
    (void)state;
    char too_long[RSL_INDICATOR_ID_MAX + 2];
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    const char *bad[] = {"Energy.oil", "1energy", "_energy", ".energy", "energy-oil",
                         "energy oil", "energy/oil", "énergie", too_long};
    struct report_fixture f;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_init(&f);
        f.m[1].indicator = (char *)bad[i];
        expect_struct_rejected(&f.report, "measurements[1].indicator");
        assert_false(rsl_valid_indicator_id(bad[i]));
    }
    assert_true(rsl_valid_indicator_id("a"));
    assert_true(rsl_valid_indicator_id("energy.oil_stock_days"));
    assert_true(rsl_valid_indicator_id("x9.y_8"));
    too_long[RSL_INDICATOR_ID_MAX] = '\0';
    assert_true(rsl_valid_indicator_id(too_long));
    assert_false(rsl_valid_indicator_id(NULL));
}

static void test_report_bad_units_partners_lengths(void **state)
{
    (void)state;
    struct report_fixture f;
    const char *bad_units[] = {"m²", "a b", "days;", "\"x\"", "123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad_units) / sizeof(bad_units[0]); i++) {
        fixture_init(&f);
        f.m[0].unit = (char *)bad_units[i];
        expect_struct_rejected(&f.report, "measurements[0].unit");
    }
    assert_true(rsl_valid_unit(""));
    assert_true(rsl_valid_unit("kWh/day"));
    assert_true(rsl_valid_unit("m_3-x.%"));

    const char *bad_partners[] = {"", "E U", "EU;", "EÜ", "123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad_partners) / sizeof(bad_partners[0]); i++) {
        fixture_init(&f);
        f.releasable[1] = (char *)bad_partners[i];
        expect_struct_rejected(&f.report, "measurements[0].releasable_to[1]");
        assert_false(rsl_valid_partner_id(bad_partners[i]));
    }
    assert_true(rsl_valid_partner_id("EU"));
    assert_true(rsl_valid_partner_id("nato_ops-2"));

    char *many[RSL_MAX_RELEASABLE + 1];
    for (size_t i = 0; i < RSL_MAX_RELEASABLE + 1; i++)
        many[i] = (char *)"EU";
    fixture_init(&f);
    f.m[1].releasable_to = many;
    f.m[1].n_releasable_to = RSL_MAX_RELEASABLE;
    expect_struct_accepted(&f.report);
    f.m[1].n_releasable_to = RSL_MAX_RELEASABLE + 1;
    expect_struct_rejected(&f.report, "measurements[1].releasable_to");

    char text[RSL_ORGANISATION_MAX + 2];
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    fixture_init(&f);
    f.report.organisation = text;
    expect_struct_rejected(&f.report, "organisation: 257 bytes");
    text[RSL_MARKING_MAX + 1] = '\0';
    fixture_init(&f);
    f.report.marking = text;
    expect_struct_rejected(&f.report, "marking: 129 bytes");
    text[RSL_SOURCE_MAX + 1] = '\0';
    fixture_init(&f);
    f.m[2].source = text;
    expect_struct_rejected(&f.report, "measurements[2].source: 129 bytes");
    text[RSL_AGENT_ID_MAX + 1] = '\0';
    fixture_init(&f);
    f.report.agent_id = text;
    expect_struct_rejected(&f.report, "agent_id");
}

static void test_report_bad_utf8(void **state)
{
    (void)state;
    const char *bad[] = {
        "caf\xc3",              /* truncated 2-byte sequence at the end */
        "\xc3\x28",             /* bad continuation */
        "\xc0\xaf",             /* overlong '/' */
        "\xe0\x80\xaf",         /* overlong, 3 bytes */
        "\xed\xa0\x80",         /* UTF-16 surrogate */
        "\xf4\x90\x80\x80",     /* above U+10FFFF */
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
        "\x80",                 /* lone continuation byte */
        "ok \xff",
    };
    struct report_fixture f;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_init(&f);
        f.report.organisation = (char *)bad[i];
        /* protobuf-c 1.4 may or may not refuse invalid UTF-8 itself; either
         * way decoding fails, and validate names the field. */
        size_t len = 0;
        uint8_t *buf = encode_report(&f.report, &len);
        expect_report_rejected(buf, len, RSL_EPARSE, NULL);
        free(buf);
        struct rsl_error err = {0};
        assert_int_equal(rsl_report_validate(&f.report, &err), RSL_EPARSE);
        assert_string_equal(err.text, "organisation: not valid UTF-8");

        fixture_init(&f);
        f.m[1].source = (char *)bad[i];
        assert_int_equal(rsl_report_validate(&f.report, &err), RSL_EPARSE);
        assert_string_equal(err.text, "measurements[1].source: not valid UTF-8");
        fixture_init(&f);
        f.report.marking = (char *)bad[i];
        assert_int_equal(rsl_report_validate(&f.report, &err), RSL_EPARSE);
        assert_string_equal(err.text, "marking: not valid UTF-8");
    }
}

static void test_report_too_many_measurements(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    rsl_measurement **many = calloc(RSL_MAX_MEASUREMENTS + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < RSL_MAX_MEASUREMENTS + 1; i++)
        many[i] = &f.m[i % N_FIX_MEASUREMENTS];
    f.report.measurements = many;
    f.report.n_measurements = RSL_MAX_MEASUREMENTS;
    expect_struct_accepted(&f.report);
    f.report.n_measurements = RSL_MAX_MEASUREMENTS + 1;
    /* Refused by the wire walk before protobuf-c allocates them all. */
    expect_struct_rejected(&f.report, "measurements");
    size_t len = 0;
    uint8_t *buf = encode_report(&f.report, &len);
    expect_report_rejected(buf, len, RSL_EPARSE, "measurements: more than 4096 entries");
    free(buf);
    free(many);
}

/* Measurements that encode in a dozen bytes each but decode into ~150:
 * far more than the decoder's first guess at the memory a frame needs, so
 * the decoded report spills over into further blocks. Every value must
 * still come back, and re-encode to the same bytes. */
static void test_report_small_measurements_many(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    rsl_measurement *ms = calloc(RSL_MAX_MEASUREMENTS, sizeof(*ms));
    rsl_measurement **mp = calloc(RSL_MAX_MEASUREMENTS, sizeof(*mp));
    assert_non_null(ms);
    assert_non_null(mp);
    for (size_t i = 0; i < RSL_MAX_MEASUREMENTS; i++) {
        rsl_measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        ms[i] = init;
        ms[i].indicator = (char *)(i % 2 ? "a" : "b.c");
        ms[i].observed_at_ms = (int64_t)i + 1;
        ms[i].value = (double)(i % 7);
        mp[i] = &ms[i];
    }
    f.report.measurements = mp;
    f.report.n_measurements = RSL_MAX_MEASUREMENTS;
    size_t len = 0;
    uint8_t *buf = encode_report(&f.report, &len);
    assert_true(len < 24 * RSL_MAX_MEASUREMENTS + 1024);
    struct rsl_error err = {0};
    rsl_report *r = NULL;
    assert_int_equal(rsl_report_decode(buf, len, &r, &err), RSL_OK);
    assert_int_equal(r->n_measurements, RSL_MAX_MEASUREMENTS);
    for (size_t i = 0; i < RSL_MAX_MEASUREMENTS; i++) {
        assert_string_equal(r->measurements[i]->indicator, i % 2 ? "a" : "b.c");
        assert_int_equal(r->measurements[i]->observed_at_ms, (int64_t)i + 1);
        assert_true(r->measurements[i]->value == (double)(i % 7));
    }
    size_t len2 = 0;
    uint8_t *buf2 = encode_report(r, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);
    rsl_report_free(&r);
    /* The same, failing validation after decoding (a measurement without
     * its time): everything decoded so far is released (LSan, valgrind). */
    ms[RSL_MAX_MEASUREMENTS - 1].observed_at_ms = 0;
    free(buf);
    buf = encode_report(&f.report, &len);
    expect_report_rejected(buf, len, RSL_EPARSE, "observed_at_ms: must be > 0");
    free(buf);
    free(mp);
    free(ms);
}

static void test_valid_agent_id(void **state)
{
    (void)state;
    assert_true(rsl_valid_agent_id("DEU-BMI-01"));
    assert_true(rsl_valid_agent_id("a"));
    assert_true(rsl_valid_agent_id("9.x_y-z"));
    assert_false(rsl_valid_agent_id(""));
    assert_false(rsl_valid_agent_id(NULL));
    assert_false(rsl_valid_agent_id("-DEU"));
    assert_false(rsl_valid_agent_id(".DEU"));
    assert_false(rsl_valid_agent_id("DEU BMI"));
    assert_false(rsl_valid_agent_id("DEU]"));
    assert_false(rsl_valid_agent_id("DEÜ"));
    char id[RSL_AGENT_ID_MAX + 2];
    memset(id, 'A', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    assert_false(rsl_valid_agent_id(id));
    id[RSL_AGENT_ID_MAX] = '\0';
    assert_true(rsl_valid_agent_id(id));
}

/* ------------------------------------------------------------------------ */
/* SignedReport                                                              */
/* ------------------------------------------------------------------------ */

static const char KEY_ID[] = "0123456789abcdef0123456789abcdef";

static uint8_t *make_signed(const uint8_t *report, size_t report_len, size_t sig_len,
                            const char *key_id, size_t *len)
{
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t sig[128];
    for (size_t i = 0; i < sizeof(sig); i++)
        sig[i] = (uint8_t)i;
    sr.report.data = (uint8_t *)report;
    sr.report.len = report_len;
    sr.signature.data = sig;
    sr.signature.len = sig_len;
    sr.key_id = (char *)key_id;
    uint8_t *buf = NULL;
    assert_int_equal(rsl_signed_report_encode(&sr, &buf, len), RSL_OK);
    return buf;
}

static void expect_signed_rejected(const uint8_t *buf, size_t len, size_t max, int code,
                                   const char *needle)
{
    struct rsl_error err = {0};
    rsl_signed_report *out = (rsl_signed_report *)&err;
    int rc = rsl_signed_report_decode(buf, len, max, &out, &err);
    if (rc != code || (needle != NULL && strstr(err.text, needle) == NULL)) {
        print_error("got rc %d '%s', expected %d '%s'\n", rc, err.text, code,
                    needle != NULL ? needle : "");
        fail();
    }
    assert_null(out);
}

static void test_signed_round_trip(void **state)
{
    (void)state;
    const uint8_t report[] = {1, 2, 3, 4, 5};
    size_t len = 0;
    uint8_t *buf = make_signed(report, sizeof(report), 64, KEY_ID, &len);
    rsl_signed_report *sr = NULL;
    struct rsl_error err = {0};
    assert_int_equal(rsl_signed_report_decode(buf, len, RSL_MAX_MESSAGE_BYTES_DEFAULT, &sr, &err),
                     RSL_OK);
    assert_int_equal(sr->report.len, sizeof(report));
    assert_memory_equal(sr->report.data, report, sizeof(report));
    assert_int_equal(sr->signature.len, 64);
    assert_int_equal(sr->signature.data[63], 63);
    assert_string_equal(sr->key_id, KEY_ID);
    rsl_signed_report_free(&sr);
    assert_null(sr);
    rsl_signed_report_free(&sr);
    /* Exactly at the cap is fine, one byte over is not. */
    assert_int_equal(rsl_signed_report_decode(buf, len, len, &sr, &err), RSL_OK);
    rsl_signed_report_free(&sr);
    expect_signed_rejected(buf, len, len - 1, RSL_ETOOBIG, "at most");
    free(buf);
    assert_int_equal(RSL_MAX_MESSAGE_BYTES_DEFAULT, 262144);
}

static void test_signed_bad_fields(void **state)
{
    (void)state;
    const uint8_t report[] = {1, 2, 3};
    size_t len = 0;
    uint8_t *buf;
    const size_t max = RSL_MAX_MESSAGE_BYTES_DEFAULT;

    buf = make_signed(report, 0, 64, KEY_ID, &len);
    expect_signed_rejected(buf, len, max, RSL_EPARSE, "report: missing");
    free(buf);
    const size_t bad_sig[] = {0, 1, 63, 65, 128};
    for (size_t i = 0; i < sizeof(bad_sig) / sizeof(bad_sig[0]); i++) {
        buf = make_signed(report, sizeof(report), bad_sig[i], KEY_ID, &len);
        expect_signed_rejected(buf, len, max, RSL_EPARSE, "signature");
        free(buf);
    }
    const char *bad_ids[] = {"", "0123456789ABCDEF0123456789ABCDEF",
                             "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
                             "0123456789abcdef0123456789abcdeg", " 123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        buf = make_signed(report, sizeof(report), 64, bad_ids[i], &len);
        expect_signed_rejected(buf, len, max, RSL_EPARSE, "key_id");
        free(buf);
    }
    /* key_id of 32 hex digits followed by a NUL and more: not 32 characters. */
    buf = make_signed(report, sizeof(report), 64, KEY_ID, &len);
    const uint8_t tail[] = {0x1a, 0x22, '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a',
                            'b',  'c',  'd', 'e', 'f', '0', '1', '2', '3', '4', '5', '6', '7',
                            '8',  '9',  'a', 'b', 'c', 'd', 'e', 'f', 0,   'x'};
    size_t blen = 0;
    uint8_t *b2 = append_bytes(buf, len, tail, sizeof(tail), &blen);
    expect_signed_rejected(b2, blen, max, RSL_EPARSE, "key_id: contains a NUL byte");
    free(b2);
    /* signature as a varint */
    const uint8_t wrong[] = {0x10, 0x05};
    b2 = append_bytes(buf, len, wrong, sizeof(wrong), &blen);
    expect_signed_rejected(b2, blen, max, RSL_EPARSE, "signature: wrong wire type 0");
    free(b2);
    /* report with a huge length */
    const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2};
    b2 = append_bytes(buf, len, huge, sizeof(huge), &blen);
    expect_signed_rejected(b2, blen, max, RSL_EPARSE, "past the end");
    free(b2);
    free(buf);
    expect_signed_rejected((const uint8_t *)"", 0, max, RSL_EPARSE, "report: missing");
}

static void test_signed_every_truncation(void **state)
{
    (void)state;
    struct report_fixture f;
    fixture_init(&f);
    size_t rlen = 0;
    uint8_t *report = encode_report(&f.report, &rlen);
    size_t len = 0;
    uint8_t *buf = make_signed(report, rlen, 64, KEY_ID, &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut > 0 ? cut : 1);
        assert_non_null(part);
        memcpy(part, buf, cut);
        expect_signed_rejected(part, cut, RSL_MAX_MESSAGE_BYTES_DEFAULT, RSL_EPARSE, NULL);
        free(part);
    }
    free(buf);
    free(report);
}

/* ------------------------------------------------------------------------ */
/* Ack                                                                       */
/* ------------------------------------------------------------------------ */

static void test_ack(void **state)
{
    (void)state;
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    ack.agent_id = (char *)"DEU-BMI-01";
    ack.sequence = 7;
    ack.status = RESILIENCE__V1__ACK__STATUS__REJECTED;
    ack.detail = (char *)"bad signature";
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(rsl_ack_encode(&ack, &buf, &len), RSL_OK);
    rsl_ack *out = NULL;
    struct rsl_error err = {0};
    assert_int_equal(rsl_ack_decode(buf, len, 1024, &out, &err), RSL_OK);
    assert_string_equal(out->agent_id, "DEU-BMI-01");
    assert_int_equal(out->sequence, 7);
    assert_int_equal(out->status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    assert_string_equal(out->detail, "bad signature");
    rsl_ack_free(&out);
    assert_null(out);
    assert_int_equal(rsl_ack_decode(buf, len, len - 1, &out, &err), RSL_ETOOBIG);
    assert_null(out);

    /* An unknown status (proto3 keeps it) must not be taken for a known one. */
    const uint8_t unknown_status[] = {0x18, 0x07};
    size_t blen = 0;
    uint8_t *b2 = append_bytes(buf, len, unknown_status, sizeof(unknown_status), &blen);
    assert_int_equal(rsl_ack_decode(b2, blen, 1024, &out, &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "status"));
    assert_null(out);
    free(b2);
    /* Truncations never crash; the bare empty ack is "ACCEPTED seq 0" and
     * decodes (the agent then finds no matching spool entry). */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut > 0 ? cut : 1);
        memcpy(part, buf, cut);
        int rc = rsl_ack_decode(part, cut, 1024, &out, &err);
        assert_true(rc == RSL_OK || rc == RSL_EPARSE);
        rsl_ack_free(&out);
        free(part);
    }
    free(buf);

    char detail[RSL_ACK_DETAIL_MAX + 2];
    memset(detail, 'd', sizeof(detail) - 1);
    detail[sizeof(detail) - 1] = '\0';
    ack.detail = detail;
    assert_int_equal(rsl_ack_encode(&ack, &buf, &len), RSL_OK);
    assert_int_equal(rsl_ack_decode(buf, len, 4096, &out, &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "detail"));
    free(buf);

    assert_string_equal(rsl_ack_status_name(0), "ACCEPTED");
    assert_string_equal(rsl_ack_status_name(1), "DUPLICATE");
    assert_string_equal(rsl_ack_status_name(2), "REJECTED");
    assert_string_equal(rsl_ack_status_name(3), "RETRY_LATER");
    assert_string_equal(rsl_ack_status_name(4), "UNKNOWN");
    assert_string_equal(rsl_ack_status_name(-1), "UNKNOWN");
}

static void test_encode_arguments(void **state)
{
    (void)state;
    uint8_t *buf = (uint8_t *)"x";
    size_t len = 5;
    assert_int_equal(rsl_report_encode(NULL, &buf, &len), RSL_EINVAL);
    /* An all-default message encodes to zero bytes in a freeable buffer. */
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    assert_int_equal(rsl_ack_encode(&ack, &buf, &len), RSL_OK);
    assert_int_equal(len, 0);
    assert_non_null(buf);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_round_trip),
        cmocka_unit_test(test_report_limits_accepted),
        cmocka_unit_test(test_report_unknown_fields_kept),
        cmocka_unit_test(test_report_every_truncation),
        cmocka_unit_test(test_report_wrong_wire_types),
        cmocka_unit_test(test_report_huge_lengths),
        cmocka_unit_test(test_report_nul_in_strings),
        cmocka_unit_test(test_report_oversized),
        cmocka_unit_test(test_report_bit_flips),
        cmocka_unit_test(test_report_missing_fields),
        cmocka_unit_test(test_report_sequence),
        cmocka_unit_test(test_report_not_finite),
        cmocka_unit_test(test_report_bad_nation),
        cmocka_unit_test(test_report_bad_indicator_ids),
        cmocka_unit_test(test_report_bad_units_partners_lengths),
        cmocka_unit_test(test_report_bad_utf8),
        cmocka_unit_test(test_report_too_many_measurements),
        cmocka_unit_test(test_report_small_measurements_many),
        cmocka_unit_test(test_valid_agent_id),
        cmocka_unit_test(test_signed_round_trip),
        cmocka_unit_test(test_signed_bad_fields),
        cmocka_unit_test(test_signed_every_truncation),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_encode_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
