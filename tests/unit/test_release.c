/*
 * test_release.c - the partner release policy (aggregator/release.c):
 * consent (releasable_to, exact ids), the include list, the min_nations
 * threshold, and that a value not releasable to the partner appears
 * nowhere in its figures, neither as a nation value nor inside an
 * aggregate. Figures are checked on the JSON a partner would decode.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "aggregator/release.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"
#include "testutil.h"

#define T0 INT64_C(1800000000000)
#define MIN_MS INT64_C(60000)

static const char indicators_csv[] =
    "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
    "a.mean,BR1,pct,higher_is_better,50,20,mean,1,mean share\n"
    "b.sum,BR2,n,higher_is_better,10,5,sum,1,sum of counts\n"
    "c.other,BR3,n,higher_is_better,10,5,sum,1,not included\n";

static const char nations_csv[] =
    "code,name,eu_member\n"
    "AAA,Alpha,yes\n"
    "BBB,Bravo,no\n"
    "CCC,Charlie,yes\n"
    "DDD,Delta,no\n";

struct fixture {
    struct rsl_taxonomy *tax;
    struct agg_partner partner;
    char include_br1[8];
    char include_bsum[8];
    char *include[2];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char dir[128], ind[256], nat[256];
    struct rsl_error err = {0};
    if (fx == NULL || rsl_test_mkdtemp(dir, sizeof(dir), "release") != 0)
        return -1;
    snprintf(ind, sizeof(ind), "%s/indicators.csv", dir);
    snprintf(nat, sizeof(nat), "%s/nations.csv", dir);
    if (rsl_test_write_file(ind, indicators_csv) != 0 || rsl_test_write_file(nat, nations_csv) != 0 ||
        rsl_taxonomy_load(ind, nat, &fx->tax, &err) != RSL_OK)
        return -1;
    rsl_test_rmtree(dir);
    /* include = BR1, b.sum : one by requirement, one by id. */
    snprintf(fx->include_br1, sizeof(fx->include_br1), "BR1");
    snprintf(fx->include_bsum, sizeof(fx->include_bsum), "b.sum");
    fx->include[0] = fx->include_br1;
    fx->include[1] = fx->include_bsum;
    snprintf(fx->partner.id, sizeof(fx->partner.id), "EU");
    fx->partner.include = fx->include;
    fx->partner.n_include = 2;
    fx->partner.min_nations = 3;
    snprintf(fx->partner.marking, sizeof(fx->partner.marking), "NATO UNCLASSIFIED RELEASABLE TO EU");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    rsl_taxonomy_free(&fx->tax);
    free(fx);
    return 0;
}

static void offer(struct agg_release_filter *f, const char *nation, const char *indicator,
                  double value, const char *releasable)
{
    struct agg_value v = {
        .nation = nation,
        .indicator = indicator,
        .unit = indicator[0] == 'a' ? "pct" : "n",
        .agent_id = "X-1",
        .value = value,
        .observed_at_ms = T0 - MIN_MS,
        .received_at_ms = T0 - MIN_MS,
        .releasable_to = releasable,
    };
    assert_int_equal(agg_release_filter_cb(f, &v), 0);
}

static json_t *figures(struct fixture *fx, struct agg_release_filter *f)
{
    json_t *doc = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_release_figures(f, T0, &doc, &err), RSL_OK);
    assert_non_null(doc);
    (void)fx;
    return doc;
}

static json_t *indicator(json_t *doc, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "indicators"), i, v)
        if (strcmp(json_string_value(json_object_get(v, "id")), id) == 0)
            return v;
    return NULL;
}

static void test_releasable_contains(void **state)
{
    (void)state;
    assert_true(agg_releasable_contains("EU", "EU"));
    assert_true(agg_releasable_contains("NATO,EU", "EU"));
    assert_true(agg_releasable_contains("EU,UA", "EU"));
    assert_false(agg_releasable_contains("EU2", "EU"));
    assert_false(agg_releasable_contains("XEU", "EU"));
    assert_false(agg_releasable_contains("EUR,NEU", "EU"));
    assert_false(agg_releasable_contains("", "EU"));
    assert_false(agg_releasable_contains(NULL, "EU"));
    assert_false(agg_releasable_contains("EU", ""));
    assert_false(agg_releasable_contains(",", "EU"));
}

/* Two nations: withheld; three: released, with the mean of the three. */
static void test_min_nations(void **state)
{
    struct fixture *fx = *state;
    struct agg_release_filter *f = NULL;
    assert_int_equal(agg_release_filter_new(&fx->partner, fx->tax, &f), RSL_OK);
    offer(f, "AAA", "a.mean", 10, "EU");
    offer(f, "BBB", "a.mean", 20, "EU");
    json_t *doc = figures(fx, f);
    json_t *a = indicator(doc, "a.mean");
    assert_non_null(a);
    assert_false(json_is_true(json_object_get(a, "released")));
    assert_null(json_object_get(a, "value"));
    assert_null(json_object_get(a, "status"));
    assert_int_equal(json_integer_value(json_object_get(a, "nations_contributing")), 2);
    json_decref(doc);

    offer(f, "CCC", "a.mean", 60, "EU");
    doc = figures(fx, f);
    a = indicator(doc, "a.mean");
    assert_true(json_is_true(json_object_get(a, "released")));
    assert_true(fabs(json_real_value(json_object_get(a, "value")) - 30.0) < 1e-9);
    /* 10 and 20 are red (< 20 is red? 10 < 20 red; 20 < 50 amber), 60 green. */
    json_t *st = json_object_get(a, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "red")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "amber")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "green")), 1);
    /* min/median/max are never released: each is one nation's value. */
    assert_null(json_object_get(a, "min"));
    assert_null(json_object_get(a, "median"));
    assert_null(json_object_get(a, "max"));
    /* Not included: c.other is absent altogether. */
    assert_null(indicator(doc, "c.other"));
    assert_non_null(indicator(doc, "b.sum"));
    assert_string_equal(json_string_value(json_object_get(doc, "marking")),
                        "NATO UNCLASSIFIED RELEASABLE TO EU");
    json_decref(doc);
    agg_release_filter_free(&f);
}

/* Search a JSON document for a number (as real or integer). */
static bool contains_number(json_t *v, double x)
{
    if (json_is_number(v))
        return fabs(json_number_value(v) - x) < 1e-9;
    size_t i;
    const char *k;
    json_t *c;
    if (json_is_array(v)) {
        json_array_foreach(v, i, c) if (contains_number(c, x)) return true;
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, c) if (contains_number(c, x)) return true;
    }
    return false;
}

/* DDD's value is not releasable to EU: it is in no nation list and not in
 * the sum (1+2+4 = 7, not 7+1000), while releasable ones are. Also a
 * not-included indicator's releasable value appears nowhere. */
static void test_consent(void **state)
{
    struct fixture *fx = *state;
    struct agg_release_filter *f = NULL;
    assert_int_equal(agg_release_filter_new(&fx->partner, fx->tax, &f), RSL_OK);
    offer(f, "AAA", "b.sum", 1, "EU");
    offer(f, "BBB", "b.sum", 2, "NATO,EU");
    offer(f, "CCC", "b.sum", 4, "EU,UA");
    offer(f, "DDD", "b.sum", 1000, "UA");
    offer(f, "DDD", "a.mean", 777, "");
    offer(f, "AAA", "c.other", 555, "EU");
    json_t *doc = figures(fx, f);
    json_t *b = indicator(doc, "b.sum");
    assert_true(json_is_true(json_object_get(b, "released")));
    assert_true(fabs(json_real_value(json_object_get(b, "value")) - 7.0) < 1e-9);
    assert_int_equal(json_integer_value(json_object_get(b, "nations_contributing")), 3);
    assert_false(contains_number(doc, 1000));
    assert_false(contains_number(doc, 1007));
    assert_false(contains_number(doc, 777));
    assert_false(contains_number(doc, 555));
    /* Nation values: AAA, BBB, CCC with their b.sum; no DDD at all. */
    json_t *nations = json_object_get(doc, "nations");
    assert_int_equal(json_array_size(nations), 3);
    size_t i;
    json_t *n;
    json_array_foreach(nations, i, n) {
        assert_string_not_equal(json_string_value(json_object_get(n, "nation")), "DDD");
        json_t *values = json_object_get(n, "values");
        assert_int_equal(json_array_size(values), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(values, 0),
                                                              "indicator")),
                            "b.sum");
    }
    json_decref(doc);
    agg_release_filter_free(&f);
}

/* The payload adds identity and times and is deterministic JSON. */
static void test_payload(void **state)
{
    struct fixture *fx = *state;
    struct agg_release_filter *f = NULL;
    assert_int_equal(agg_release_filter_new(&fx->partner, fx->tax, &f), RSL_OK);
    json_t *doc = figures(fx, f);
    char *text = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    struct rsl_error err = {0};
    assert_int_equal(agg_release_payload("EU", "EU-abc-1", 1, T0, T0, doc, &text, &len, &err),
                     RSL_OK);
    assert_int_equal(agg_release_payload("EU", "EU-abc-1", 1, T0, T0, doc, &again, &len2, &err),
                     RSL_OK);
    assert_string_equal(text, again);
    json_t *p = json_loads(text, 0, NULL);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "partner")), "EU");
    assert_string_equal(json_string_value(json_object_get(p, "release_id")), "EU-abc-1");
    assert_int_equal(json_integer_value(json_object_get(p, "sequence")), 1);
    assert_string_equal(json_string_value(json_object_get(p, "generated_at")),
                        "2027-01-15T08:00:00.000Z");
    assert_non_null(json_object_get(p, "as_of"));
    assert_int_equal(json_integer_value(json_object_get(p, "min_nations")), 3);
    /* figures itself was not modified. */
    assert_null(json_object_get(doc, "partner"));
    json_decref(p);
    json_decref(doc);
    free(text);
    free(again);
    agg_release_filter_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_releasable_contains),
        cmocka_unit_test(test_min_nations),
        cmocka_unit_test(test_consent),
        cmocka_unit_test(test_payload),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
