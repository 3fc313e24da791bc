/*
 * test_taxonomy.c - the CSV taxonomy and nation list (lib/taxonomy.c):
 * the shipped files, RFC 4180 details, every validation rule, hostile
 * input, look-ups and the status function on and around its thresholds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rsl/taxonomy.h"

#define HEADER "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
#define GOOD_ROW "energy.oil_stock_days,BR2,days,higher_is_better,90,60,min,840,Oil stocks\n"

static struct rsl_taxonomy *new_tax(void)
{
    struct rsl_taxonomy *tax = calloc(1, sizeof(*tax));
    assert_non_null(tax);
    return tax;
}

/* Parse indicators from a string; returns the code, message in err. */
static int parse_ind(struct rsl_taxonomy *tax, const char *text, struct rsl_error *err)
{
    rsl_error_clear(err);
    return rsl_taxonomy_parse_indicators(text, strlen(text), "ind.csv", tax, err);
}

static int parse_nat(struct rsl_taxonomy *tax, const char *text, struct rsl_error *err)
{
    rsl_error_clear(err);
    return rsl_taxonomy_parse_nations(text, strlen(text), "nat.csv", tax, err);
}

/* Expect `text` to be rejected with exactly `message`; the taxonomy keeps
 * what it had. */
static void expect_ind_error(const char *text, const char *message)
{
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    assert_int_equal(parse_ind(tax, HEADER GOOD_ROW, &err), RSL_OK);
    assert_int_not_equal(parse_ind(tax, text, &err), RSL_OK);
    assert_string_equal(err.text, message);
    assert_int_equal(tax->n_indicators, 1);
    assert_string_equal(tax->indicators[0].id, "energy.oil_stock_days");
    rsl_taxonomy_free(&tax);
    assert_null(tax);
}

static void expect_nat_error(const char *text, const char *message)
{
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    assert_int_not_equal(parse_nat(tax, text, &err), RSL_OK);
    assert_string_equal(err.text, message);
    assert_int_equal(tax->n_nations, 0);
    assert_null(tax->nations);
    rsl_taxonomy_free(&tax);
}

static void test_shipped_files_load(void **state)
{
    (void)state;
    struct rsl_taxonomy *tax = NULL;
    struct rsl_error err;
    rsl_error_clear(&err);
    int rc = rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_SHARE_DIR "/nations.csv", &tax,
                               &err);
    if (rc != RSL_OK)
        fail_msg("%s", err.text);
    assert_int_equal(tax->n_indicators, 39);
    assert_int_equal(tax->n_nations, 32);

    /* Sorted, so binary search finds every one. */
    for (size_t i = 1; i < tax->n_indicators; i++)
        assert_true(strcmp(tax->indicators[i - 1].id, tax->indicators[i].id) < 0);
    for (size_t i = 0; i < tax->n_indicators; i++)
        assert_int_equal(rsl_taxonomy_indicator_index(tax, tax->indicators[i].id), (int)i);
    for (size_t i = 0; i < tax->n_nations; i++)
        assert_int_equal(rsl_taxonomy_nation_index(tax, tax->nations[i].code), (int)i);

    const struct rsl_indicator *oil = rsl_taxonomy_indicator(tax, "energy.oil_stock_days");
    assert_non_null(oil);
    assert_string_equal(oil->requirement, "BR2");
    assert_string_equal(oil->unit, "days");
    assert_int_equal(oil->direction, RSL_HIGHER_IS_BETTER);
    assert_true(oil->amber == 90.0 && oil->red == 60.0);
    assert_int_equal(oil->method, RSL_METHOD_MIN);
    assert_int_equal(oil->max_age_ms, 840LL * 3600 * 1000);
    assert_string_equal(oil->description, "Emergency oil stocks in days of net imports");

    const struct rsl_indicator *beds = rsl_taxonomy_indicator(tax, "health.acute_bed_occupancy_pct");
    assert_non_null(beds);
    assert_int_equal(beds->direction, RSL_LOWER_IS_BETTER);
    assert_string_equal(beds->requirement, "BR5");
    const struct rsl_indicator *spend = rsl_taxonomy_indicator(tax, "society.resilience_spend_pct_gdp");
    assert_non_null(spend);
    assert_string_equal(spend->requirement, "X");
    assert_true(spend->red == 0.25);

    assert_null(rsl_taxonomy_indicator(tax, "energy.nope"));
    assert_int_equal(rsl_taxonomy_indicator_index(tax, ""), -1);
    assert_int_equal(rsl_taxonomy_indicator_index(tax, "zzz"), -1);
    assert_int_equal(rsl_taxonomy_indicator_index(NULL, "zzz"), -1);

    int deu = rsl_taxonomy_nation_index(tax, "DEU");
    assert_true(deu >= 0);
    assert_string_equal(tax->nations[deu].name, "Germany");
    assert_true(tax->nations[deu].eu_member);
    int nor = rsl_taxonomy_nation_index(tax, "NOR");
    assert_true(nor >= 0);
    assert_false(tax->nations[nor].eu_member);
    int tur = rsl_taxonomy_nation_index(tax, "TUR");
    assert_string_equal(tax->nations[tur].name, "T\xc3\xbcrkiye");
    assert_int_equal(rsl_taxonomy_nation_index(tax, "AUT"), -1); /* not an Ally */
    assert_int_equal(rsl_taxonomy_nation_index(tax, "deu"), -1);

    rsl_taxonomy_free(&tax);
    assert_null(tax);
    rsl_taxonomy_free(&tax); /* NULL-safe */

    /* Nations default to nations.csv beside the indicators. */
    assert_int_equal(rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", NULL, &tax, &err), RSL_OK);
    assert_int_equal(tax->n_nations, 32);
    rsl_taxonomy_free(&tax);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct rsl_taxonomy *tax = NULL;
    struct rsl_error err;
    assert_int_equal(rsl_taxonomy_load(RSL_TEST_DATA_DIR "/no-such.csv", RSL_SHARE_DIR "/nations.csv",
                                       &tax, &err),
                     RSL_ENOENT);
    assert_string_equal(err.text, RSL_TEST_DATA_DIR "/no-such.csv: No such file or directory");
    assert_null(tax);
    assert_int_equal(rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_TEST_DATA_DIR "/none.csv",
                                       &tax, &err),
                     RSL_ENOENT);
    assert_null(tax);
}

static void test_quoting_and_layout(void **state)
{
    (void)state;
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    /* Reordered and extra columns, CRLF, quoted fields with commas,
     * doubled quotes and a newline, blank lines, blanks around unquoted
     * fields, empty max_age_hours, a UTF-8 BOM, no final line end. */
    const char *text = "\xEF\xBB\xBF"
                       "description,extra,id,unit,requirement,direction,red,amber,method,max_age_hours\r\n"
                       "\"Stocks, in days \"\"net\"\"\",x,b.stock,days,BR2,higher_is_better,60,90,min,\r\n"
                       "\r\n"
                       "\"two\nlines\",\"\",a.delay , hours ,X,lower_is_better, 24 ,12,median,2160\r\n"
                       "plain,,c.count,,BR7,lower_is_better,5,5,sum,1";
    if (parse_ind(tax, text, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_int_equal(tax->n_indicators, 3);
    const struct rsl_indicator *a = &tax->indicators[0], *b = &tax->indicators[1],
                               *c = &tax->indicators[2];
    assert_string_equal(a->id, "a.delay");
    assert_string_equal(a->unit, "hours");
    assert_string_equal(a->description, "two\nlines");
    assert_int_equal(a->direction, RSL_LOWER_IS_BETTER);
    assert_true(a->amber == 12.0 && a->red == 24.0);
    assert_int_equal(a->method, RSL_METHOD_MEDIAN);
    assert_int_equal(a->max_age_ms, 2160LL * 3600 * 1000);
    assert_string_equal(b->id, "b.stock");
    assert_string_equal(b->description, "Stocks, in days \"net\"");
    assert_int_equal(b->max_age_ms, 72LL * 3600 * 1000); /* empty: 72 hours */
    assert_string_equal(c->unit, "");
    assert_int_equal(c->method, RSL_METHOD_SUM);
    assert_int_equal(c->max_age_ms, 3600LL * 1000);

    /* A second parse replaces the first wholesale. */
    assert_int_equal(parse_ind(tax, HEADER GOOD_ROW, &err), RSL_OK);
    assert_int_equal(tax->n_indicators, 1);
    rsl_taxonomy_free(&tax);
}

static void test_csv_syntax_errors(void **state)
{
    (void)state;
    expect_ind_error(HEADER GOOD_ROW "a.b,BR1,days,higher_is_better,90,60\n",
                     "ind.csv:3: expected 9 fields, found 6");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,x,extra\n",
                     "ind.csv:2: expected 9 fields, found 10");
    expect_ind_error(HEADER GOOD_ROW "a.b,BR1,days,higher_is_better,90,60,min,1,\"unterminated\n\n",
                     "ind.csv:3: unterminated quoted field");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,\"x\"y\n",
                     "ind.csv:2: unexpected character after closing quote");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,say \"hi\"\n",
                     "ind.csv:2: '\"' inside an unquoted field (quote the whole field and double "
                     "the quote)");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,x\ry\n",
                     "ind.csv:2: carriage return inside a field");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,x\x1by\n",
                     "ind.csv:2: control character in a field");
    expect_ind_error("id,requirement,unit,direction,amber,red,method,description\n",
                     "ind.csv:1: missing column 'max_age_hours'");
    expect_ind_error("id,id,requirement,unit,direction,amber,red,method,max_age_hours,description\n",
                     "ind.csv:1: duplicate column 'id'");
    expect_ind_error("", "ind.csv: empty file (expected a header row)");
    expect_ind_error("\n\r\n\n", "ind.csv: empty file (expected a header row)");
    expect_ind_error(HEADER, "ind.csv: no indicators");

    /* NUL bytes are errors, not string ends. */
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    const char nul[] = HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,x\0y\n";
    assert_int_equal(rsl_taxonomy_parse_indicators(nul, sizeof(nul) - 1, "ind.csv", tax, &err),
                     RSL_EPARSE);
    assert_string_equal(err.text, "ind.csv:2: NUL byte in a field");
    const char nulq[] = HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,\"x\0y\"\n";
    assert_int_equal(rsl_taxonomy_parse_indicators(nulq, sizeof(nulq) - 1, "ind.csv", tax, &err),
                     RSL_EPARSE);
    assert_string_equal(err.text, "ind.csv:2: NUL byte in a field");
    /* Over the size bound: refused before parsing. */
    assert_int_equal(rsl_taxonomy_parse_indicators(HEADER, RSL_TAXONOMY_MAX_BYTES + 1, "ind.csv",
                                                   tax, &err),
                     RSL_ETOOBIG);
    /* A row of thousands of empty fields is bounded. */
    size_t n = 100000;
    char *wide = malloc(n + 1);
    assert_non_null(wide);
    memset(wide, ',', n);
    wide[n] = '\0';
    assert_int_equal(parse_ind(tax, wide, &err), RSL_EPARSE);
    assert_string_equal(err.text, "ind.csv:1: more than 256 fields");
    free(wide);
    assert_int_equal(tax->n_indicators, 0);
    rsl_taxonomy_free(&tax);
}

static void test_quoted_field_line_numbers(void **state)
{
    (void)state;
    /* The error names the row's line, counting newlines inside quotes. */
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1,\"multi\nline\nnote\"\n"
                            "c.d,BR1,days,higher_is_better,x,60,min,1,\n",
                     "ind.csv:5: column 'amber': not a number: 'x'");
}

static void test_validation_errors(void **state)
{
    (void)state;
    expect_ind_error(HEADER GOOD_ROW "a.b,BR1,days,higher_is_better,x,60,min,1,d\n",
                     "ind.csv:3: column 'amber': not a number: 'x'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,,min,1,d\n",
                     "ind.csv:2: column 'red': not a number: ''");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,nan,60,min,1,d\n",
                     "ind.csv:2: column 'amber': not a number: 'nan'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,1e999,60,min,1,d\n",
                     "ind.csv:2: column 'amber': not a number: '1e999'");
    expect_ind_error(HEADER "a.b,BR1,days,up,90,60,min,1,d\n",
                     "ind.csv:2: column 'direction': expected higher_is_better or lower_is_better: "
                     "'up'");
    expect_ind_error(HEADER "a.b,BR1,days,Higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'direction': expected higher_is_better or lower_is_better: "
                     "'Higher_is_better'");
    expect_ind_error(HEADER "a.b,BR8,days,higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'requirement': expected BR1..BR7 or X: 'BR8'");
    expect_ind_error(HEADER "a.b,BR10,days,higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'requirement': expected BR1..BR7 or X: 'BR10'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,avg,1,d\n",
                     "ind.csv:2: column 'method': expected sum, mean, median, min or max: 'avg'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,-1,d\n",
                     "ind.csv:2: column 'max_age_hours': expected whole hours 1..876000 or empty: "
                     "'-1'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,0,d\n",
                     "ind.csv:2: column 'max_age_hours': expected whole hours 1..876000 or empty: "
                     "'0'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,1.5,d\n",
                     "ind.csv:2: column 'max_age_hours': expected whole hours 1..876000 or empty: "
                     "'1.5'");
    expect_ind_error(HEADER "a.b,BR1,days,higher_is_better,90,60,min,99999999999999999999,d\n",
                     "ind.csv:2: column 'max_age_hours': expected whole hours 1..876000 or empty: "
                     "'99999999999999999999'");
    expect_ind_error(HEADER "A.b,BR1,days,higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'id': not a valid indicator id (lowercase letters, digits, "
                     "'_' and '.', starting with a letter, at most 128): 'A.b'");
    expect_ind_error(HEADER ",BR1,days,higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'id': not a valid indicator id (lowercase letters, digits, "
                     "'_' and '.', starting with a letter, at most 128): ''");
    expect_ind_error(HEADER "a.b,BR1,da ys,higher_is_better,90,60,min,1,d\n",
                     "ind.csv:2: column 'unit': not a valid unit (letters, digits and _%/.-, at "
                     "most 32): 'da ys'");

    /* A 129-character id: too long; the message shows a bounded excerpt. */
    char text[1024], want[1024];
    char id[130];
    memset(id, 'a', 129);
    id[129] = '\0';
    snprintf(text, sizeof(text), HEADER "%s,BR1,days,higher_is_better,90,60,min,1,d\n", id);
    snprintf(want, sizeof(want),
             "ind.csv:2: column 'id': not a valid indicator id (lowercase letters, digits, '_' "
             "and '.', starting with a letter, at most 128): '%.48s...'",
             id);
    expect_ind_error(text, want);
}

static void test_duplicates_and_threshold_order(void **state)
{
    (void)state;
    expect_ind_error(HEADER "z.z,BR1,days,higher_is_better,90,60,min,1,d\n" GOOD_ROW
                            "a.a,BR1,days,higher_is_better,90,60,min,1,d\n" GOOD_ROW,
                     "ind.csv:5: duplicate indicator id 'energy.oil_stock_days' (first on line 3)");
    expect_ind_error(HEADER "a.b,BR1,pct,higher_is_better,90,95,min,1,d\n",
                     "ind.csv:2: thresholds out of order for higher_is_better: red (95) must be <= "
                     "amber (90)");
    expect_ind_error(HEADER "a.b,BR1,pct,lower_is_better,85,80,min,1,d\n",
                     "ind.csv:2: thresholds out of order for lower_is_better: amber (85) must be <= "
                     "red (80)");

    /* Equal thresholds are in order both ways. */
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    assert_int_equal(parse_ind(tax,
                               HEADER "a.b,BR1,pct,higher_is_better,90,90,min,1,d\n"
                                      "c.d,BR1,pct,lower_is_better,5,5,max,1,d\n",
                               &err),
                     RSL_OK);
    assert_int_equal(tax->indicators[1].method, RSL_METHOD_MAX);
    rsl_taxonomy_free(&tax);
}

static void test_nations(void **state)
{
    (void)state;
    struct rsl_taxonomy *tax = new_tax();
    struct rsl_error err;
    /* Only code, name and eu_member are needed; order is free. */
    assert_int_equal(parse_nat(tax,
                               "name,eu_member,code\n"
                               "\"Korea, Republic of\",no,KOR\n"
                               "Austria,yes,AUT\n",
                               &err),
                     RSL_OK);
    assert_int_equal(tax->n_nations, 2);
    assert_string_equal(tax->nations[0].code, "AUT");
    assert_true(tax->nations[0].eu_member);
    assert_string_equal(tax->nations[1].name, "Korea, Republic of");
    assert_int_equal(rsl_taxonomy_nation_index(tax, "KOR"), 1);
    assert_int_equal(rsl_taxonomy_nation_index(tax, "KO"), -1);
    rsl_taxonomy_free(&tax);

    expect_nat_error("code,name,eu_member\nDEU,Germany,yes\nFRA,France,yes\nDEU,Deutschland,yes\n",
                     "nat.csv:4: duplicate nation code 'DEU' (first on line 2)");
    expect_nat_error("code,name,eu_member\nDE,Germany,yes\n",
                     "nat.csv:2: column 'code': expected 3 uppercase letters (ISO 3166-1 alpha-3): "
                     "'DE'");
    expect_nat_error("code,name,eu_member\ndeu,Germany,yes\n",
                     "nat.csv:2: column 'code': expected 3 uppercase letters (ISO 3166-1 alpha-3): "
                     "'deu'");
    expect_nat_error("code,name,eu_member\nDEU,,yes\n", "nat.csv:2: column 'name': empty");
    expect_nat_error("code,name,eu_member\nDEU,Germany,true\n",
                     "nat.csv:2: column 'eu_member': expected yes or no: 'true'");
    expect_nat_error("code,name\nDEU,Germany\n", "nat.csv:1: missing column 'eu_member'");
    expect_nat_error("code,name,eu_member\nDEU,Germany\n", "nat.csv:2: expected 3 fields, found 2");
    expect_nat_error("code,name,eu_member\n", "nat.csv: no nations");
}

static void test_status_thresholds(void **state)
{
    (void)state;
    struct rsl_indicator hi = {.direction = RSL_HIGHER_IS_BETTER, .amber = 90, .red = 75};
    assert_int_equal(rsl_indicator_status(&hi, 100), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(&hi, 90), RSL_STATUS_GREEN); /* at amber: green */
    assert_int_equal(rsl_indicator_status(&hi, 89.99), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(&hi, 75.01), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(&hi, 75), RSL_STATUS_AMBER); /* at red: amber */
    assert_int_equal(rsl_indicator_status(&hi, 74.99), RSL_STATUS_RED);
    assert_int_equal(rsl_indicator_status(&hi, -1e300), RSL_STATUS_RED);

    struct rsl_indicator lo = {.direction = RSL_LOWER_IS_BETTER, .amber = 85, .red = 90};
    assert_int_equal(rsl_indicator_status(&lo, 0), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(&lo, 85), RSL_STATUS_GREEN); /* at amber: green */
    assert_int_equal(rsl_indicator_status(&lo, 85.01), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(&lo, 90), RSL_STATUS_AMBER); /* at red: amber */
    assert_int_equal(rsl_indicator_status(&lo, 90.01), RSL_STATUS_RED);
    assert_int_equal(rsl_indicator_status(&lo, 1e300), RSL_STATUS_RED);

    /* No amber band when the thresholds are equal. */
    struct rsl_indicator eq = {.direction = RSL_HIGHER_IS_BETTER, .amber = 3, .red = 3};
    assert_int_equal(rsl_indicator_status(&eq, 3), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(&eq, 2.999), RSL_STATUS_RED);

    /* A NaN never looks green. */
    assert_int_equal(rsl_indicator_status(&hi, (double)NAN), RSL_STATUS_RED);
    assert_int_equal(rsl_indicator_status(&lo, (double)NAN), RSL_STATUS_RED);

    assert_string_equal(rsl_status_name(RSL_STATUS_GREEN), "green");
    assert_string_equal(rsl_status_name(RSL_STATUS_AMBER), "amber");
    assert_string_equal(rsl_status_name(RSL_STATUS_RED), "red");
    assert_string_equal(rsl_method_name(RSL_METHOD_MEDIAN), "median");
    assert_string_equal(rsl_method_name(RSL_METHOD_SUM), "sum");
    assert_string_equal(rsl_method_name(RSL_METHOD_MAX), "max");
    assert_string_equal(rsl_direction_name(RSL_LOWER_IS_BETTER), "lower_is_better");
    assert_string_equal(rsl_direction_name(RSL_HIGHER_IS_BETTER), "higher_is_better");
}

static void test_status_of_shipped_indicator(void **state)
{
    (void)state;
    struct rsl_taxonomy *tax = NULL;
    struct rsl_error err;
    assert_int_equal(rsl_taxonomy_load(RSL_SHARE_DIR "/indicators.csv", RSL_SHARE_DIR "/nations.csv",
                                       &tax, &err),
                     RSL_OK);
    /* gov.critical_service_bcp_pct: higher_is_better, amber 90, red 75. */
    const struct rsl_indicator *bcp = rsl_taxonomy_indicator(tax, "gov.critical_service_bcp_pct");
    assert_non_null(bcp);
    assert_int_equal(rsl_indicator_status(bcp, 90), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(bcp, 89.99), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(bcp, 74.9), RSL_STATUS_RED);
    /* gov.secure_comms_availability_pct: 99.9 / 99.0 parsed exactly. */
    const struct rsl_indicator *net = rsl_taxonomy_indicator(tax, "gov.secure_comms_availability_pct");
    assert_non_null(net);
    assert_int_equal(rsl_indicator_status(net, 99.9), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(net, 99.89), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(net, 98.99), RSL_STATUS_RED);
    /* health.acute_bed_occupancy_pct: lower_is_better, amber 85, red 90. */
    const struct rsl_indicator *beds = rsl_taxonomy_indicator(tax, "health.acute_bed_occupancy_pct");
    assert_int_equal(rsl_indicator_status(beds, 85), RSL_STATUS_GREEN);
    assert_int_equal(rsl_indicator_status(beds, 85.5), RSL_STATUS_AMBER);
    assert_int_equal(rsl_indicator_status(beds, 90.5), RSL_STATUS_RED);
    rsl_taxonomy_free(&tax);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_files_load),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_quoting_and_layout),
        cmocka_unit_test(test_csv_syntax_errors),
        cmocka_unit_test(test_quoted_field_line_numbers),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_duplicates_and_threshold_order),
        cmocka_unit_test(test_nations),
        cmocka_unit_test(test_status_thresholds),
        cmocka_unit_test(test_status_of_shipped_indicator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
