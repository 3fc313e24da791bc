/*
 * test_summary.c - alliance summary semantics (aggregator/summary.c) against
 * hand-computed results.
 *
 * A small taxonomy (four nations, five indicators, one per method) is
 * written to temporary CSV files and loaded with the real loader. Each test
 * offers observations to a snapshot exactly as agg_store_latest would and
 * checks states, aggregates, status counts, requirement statuses and the
 * JSON documents.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "rsl/taxonomy.h"
#include "rsl/util.h"
#include "aggregator/csv.h"
#include "aggregator/summary.h"
#include "testutil.h"

#define HOUR_MS INT64_C(3600000)
#define T0 INT64_C(1800000000000) /* 2027-01-15T08:00:00Z, the query time */

/* Sorted by id as the taxonomy sorts them: a.sum b.mean c.median d.min e.max */
static const char indicators_csv[] =
    "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
    "a.sum,BR1,n,higher_is_better,10,5,sum,1,sum of counts\n"
    "b.mean,BR1,pct,lower_is_better,50,80,mean,1,mean share\n"
    "c.median,BR2,days,higher_is_better,10,5,median,1,median days\n"
    "d.min,BR2,days,higher_is_better,10,5,min,1,weakest nation\n"
    "e.max,X,hours,lower_is_better,12,24,max,2,worst delay\n";

static const char nations_csv[] =
    "code,name,eu_member\n"
    "AAA,Alpha,yes\n"
    "BBB,Bravo,no\n"
    "CCC,Charlie,yes\n"
    "DDD,Delta,no\n";

enum { IND_SUM = 0, IND_MEAN, IND_MEDIAN, IND_MIN, IND_MAX };
enum { NAT_AAA = 0, NAT_BBB, NAT_CCC, NAT_DDD };

struct fixture {
    char dir[64];
    struct rsl_taxonomy *tax;
    struct agg_snapshot *snap;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    char ind[128];
    char nat[128];
    struct rsl_error err = {0};
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_summary.XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(ind, sizeof(ind), "%s/indicators.csv", fx->dir);
    snprintf(nat, sizeof(nat), "%s/nations.csv", fx->dir);
    if (rsl_test_write_file(ind, indicators_csv) != 0 || rsl_test_write_file(nat, nations_csv) != 0)
        return -1;
    if (rsl_taxonomy_load(ind, nat, &fx->tax, &err) != RSL_OK) {
        fprintf(stderr, "taxonomy: %s\n", err.text);
        return -1;
    }
    unlink(ind);
    unlink(nat);
    rmdir(fx->dir);
    if (agg_snapshot_new(fx->tax, &fx->snap) != RSL_OK)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    agg_snapshot_free(&fx->snap);
    rsl_taxonomy_free(&fx->tax);
    free(fx);
    return 0;
}

static void offer(struct fixture *fx, const char *nation, const char *indicator, double value,
                  int64_t observed_at_ms, int64_t received_at_ms, const char *agent)
{
    const struct rsl_indicator *ind = rsl_taxonomy_indicator(fx->tax, indicator);
    struct agg_value v = {
        .nation = nation,
        .indicator = indicator,
        .unit = ind != NULL ? ind->unit : "x",
        .agent_id = agent,
        .value = value,
        .observed_at_ms = observed_at_ms,
        .received_at_ms = received_at_ms,
    };
    assert_int_equal(agg_snapshot_value_cb(fx->snap, &v), RSL_OK);
}

/* Offer a current value (observed one minute before T0). */
static void current(struct fixture *fx, const char *nation, const char *indicator, double value)
{
    offer(fx, nation, indicator, value, T0 - 60000, T0 - 50000, "AGENT-1");
}

static struct agg_summary *compute(struct fixture *fx, int64_t at_ms)
{
    struct agg_summary *s = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_summary_compute(fx->snap, at_ms, &s, &err), RSL_OK);
    assert_non_null(s);
    return s;
}

static void assert_nations(const struct rsl_taxonomy *tax, const size_t *idx, size_t n,
                           const char *expected)
{
    char got[64] = "";
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(got, ",");
        strcat(got, tax->nations[idx[i]].code);
    }
    assert_string_equal(got, expected);
}

/* Exactly max_age old is current; one millisecond more is stale; nothing
 * is missing; an observation stamped after T is not known yet: missing. */
static void test_state_boundaries(void **state)
{
    struct fixture *fx = *state;
    offer(fx, "AAA", "a.sum", 20, T0 - HOUR_MS, T0 - HOUR_MS, "A");
    offer(fx, "BBB", "a.sum", 20, T0 - HOUR_MS - 1, T0 - HOUR_MS, "B");
    offer(fx, "DDD", "a.sum", 20, T0 + 1, T0, "D");
    offer(fx, "AAA", "e.max", 1, T0 - 2 * HOUR_MS, T0, "A"); /* max_age 2 h */
    offer(fx, "BBB", "e.max", 1, T0, T0, "B");                /* exactly now */
    struct agg_summary *s = compute(fx, T0);

    const struct agg_indicator_summary *a = &s->indicators[IND_SUM];
    assert_string_equal(a->indicator->id, "a.sum");
    assert_int_equal(a->nations_reporting, 1);
    assert_int_equal(a->nations_stale, 1);
    assert_int_equal(a->nations_missing, 2);
    assert_nations(fx->tax, a->stale_nations, a->nations_stale, "BBB");
    assert_nations(fx->tax, a->missing_nations, a->nations_missing, "CCC,DDD");
    assert_true(a->has_value);
    assert_true(a->value == 20.0);

    const struct agg_indicator_summary *e = &s->indicators[IND_MAX];
    assert_int_equal(e->nations_reporting, 2);
    assert_int_equal(e->nations_stale, 0);
    assert_int_equal(e->nations_missing, 2);

    /* No observation at all: every nation missing, no value. */
    const struct agg_indicator_summary *b = &s->indicators[IND_MEAN];
    assert_int_equal(b->nations_reporting, 0);
    assert_int_equal(b->nations_missing, 4);
    assert_false(b->has_value);
    agg_summary_free(&s);
    assert_null(s);
}

/* Values 1, 2, 4, 10 (even count) and 1, 2, 4 (odd count). */
static void test_methods(void **state)
{
    struct fixture *fx = *state;
    const char *ids[] = {"a.sum", "b.mean", "c.median", "d.min", "e.max"};
    const char *nations[] = {"AAA", "BBB", "CCC", "DDD"};
    const double values[] = {4, 1, 10, 2}; /* offered unsorted on purpose */
    for (size_t i = 0; i < 5; i++)
        for (size_t n = 0; n < 4; n++)
            current(fx, nations[n], ids[i], values[n]);
    struct agg_summary *s = compute(fx, T0);
    const double expected_value[] = {17.0, 4.25, 3.0, 1.0, 10.0};
    for (size_t i = 0; i < 5; i++) {
        const struct agg_indicator_summary *is = &s->indicators[i];
        assert_int_equal(is->nations_reporting, 4);
        assert_true(is->has_value);
        assert_true(is->value == expected_value[i]);
        assert_true(is->min == 1.0);
        assert_true(is->median == 3.0); /* (2 + 4) / 2 */
        assert_true(is->max == 10.0);
    }
    agg_summary_free(&s);

    /* Odd count: DDD's value goes stale by moving T forward for one set. */
    agg_snapshot_free(&fx->snap);
    assert_int_equal(agg_snapshot_new(fx->tax, &fx->snap), RSL_OK);
    for (size_t i = 0; i < 5; i++) {
        current(fx, "AAA", ids[i], 4);
        current(fx, "BBB", ids[i], 1);
        current(fx, "CCC", ids[i], 10);
        offer(fx, "DDD", ids[i], 2, T0 - 3 * HOUR_MS, T0, "D"); /* stale for all */
    }
    s = compute(fx, T0);
    const double odd_value[] = {15.0, 5.0, 4.0, 1.0, 10.0};
    for (size_t i = 0; i < 5; i++) {
        const struct agg_indicator_summary *is = &s->indicators[i];
        assert_int_equal(is->nations_reporting, 3);
        assert_int_equal(is->nations_stale, 1);
        assert_true(is->value == odd_value[i]);
        assert_true(is->median == 4.0);
        assert_true(is->min == 1.0);
        assert_true(is->max == 10.0);
    }
    agg_summary_free(&s);
}

/* Thresholds at and just past each boundary, in both directions. */
static void test_thresholds(void **state)
{
    struct fixture *fx = *state;
    /* higher_is_better, amber 10, red 5: red if < 5, amber if < 10. */
    current(fx, "AAA", "a.sum", 4.999);  /* red */
    current(fx, "BBB", "a.sum", 5.0);    /* amber: not below red */
    current(fx, "CCC", "a.sum", 9.999);  /* amber */
    current(fx, "DDD", "a.sum", 10.0);   /* green: not below amber */
    /* lower_is_better, amber 50, red 80: red if > 80, amber if > 50. */
    current(fx, "AAA", "b.mean", 50.0);  /* green */
    current(fx, "BBB", "b.mean", 50.5);  /* amber */
    current(fx, "CCC", "b.mean", 80.0);  /* amber: not above red */
    current(fx, "DDD", "b.mean", 80.5);  /* red */
    struct agg_summary *s = compute(fx, T0);
    const struct agg_indicator_summary *a = &s->indicators[IND_SUM];
    assert_int_equal(a->status_counts[RSL_STATUS_GREEN], 1);
    assert_int_equal(a->status_counts[RSL_STATUS_AMBER], 2);
    assert_int_equal(a->status_counts[RSL_STATUS_RED], 1);
    const struct agg_indicator_summary *b = &s->indicators[IND_MEAN];
    assert_int_equal(b->status_counts[RSL_STATUS_GREEN], 1);
    assert_int_equal(b->status_counts[RSL_STATUS_AMBER], 2);
    assert_int_equal(b->status_counts[RSL_STATUS_RED], 1);
    agg_summary_free(&s);

    struct agg_nation_view *v = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_nation_view_compute(fx->snap, "BBB", T0, &v, &err), RSL_OK);
    assert_int_equal(v->entries[IND_SUM].status, RSL_STATUS_AMBER);
    assert_int_equal(v->entries[IND_MEAN].status, RSL_STATUS_AMBER);
    agg_nation_view_free(&v);
    assert_int_equal(agg_nation_view_compute(fx->snap, "DDD", T0, &v, &err), RSL_OK);
    assert_int_equal(v->entries[IND_SUM].status, RSL_STATUS_GREEN);
    assert_int_equal(v->entries[IND_MEAN].status, RSL_STATUS_RED);
    agg_nation_view_free(&v);
}

/* Stale values never count toward status counts or requirements. */
static void test_status_counts_ignore_stale(void **state)
{
    struct fixture *fx = *state;
    current(fx, "AAA", "c.median", 20);                       /* green */
    offer(fx, "BBB", "c.median", 1, T0 - 2 * HOUR_MS, T0, "B"); /* stale red */
    struct agg_summary *s = compute(fx, T0);
    const struct agg_indicator_summary *c = &s->indicators[IND_MEDIAN];
    assert_int_equal(c->status_counts[RSL_STATUS_GREEN], 1);
    assert_int_equal(c->status_counts[RSL_STATUS_RED], 0);
    assert_true(c->value == 20.0);
    const struct agg_requirement_summary *br2 = &s->requirements[1];
    assert_string_equal(br2->id, "BR2");
    assert_int_equal(br2->nation_status[NAT_BBB], AGG_REQ_NO_DATA);
    agg_summary_free(&s);
}

/* Worst status per nation and requirement; counts per status. */
static void test_requirements(void **state)
{
    struct fixture *fx = *state;
    /* BR1 = a.sum (higher, 10/5) + b.mean (lower, 50/80). */
    current(fx, "AAA", "a.sum", 20);   /* green */
    current(fx, "AAA", "b.mean", 90);  /* red -> AAA red */
    current(fx, "BBB", "a.sum", 7);    /* amber */
    current(fx, "BBB", "b.mean", 10);  /* green -> BBB amber */
    current(fx, "CCC", "a.sum", 20);   /* green, b.mean missing -> green */
    offer(fx, "DDD", "a.sum", 1, T0 - 5 * HOUR_MS, T0, "D"); /* stale only -> no_data */
    /* X = e.max (lower, 12/24) */
    current(fx, "AAA", "e.max", 30);   /* red */
    struct agg_summary *s = compute(fx, T0);

    const struct agg_requirement_summary *br1 = &s->requirements[0];
    assert_string_equal(br1->id, "BR1");
    assert_int_equal(br1->n_indicators, 2);
    assert_int_equal(br1->nation_status[NAT_AAA], RSL_STATUS_RED);
    assert_int_equal(br1->nation_status[NAT_BBB], RSL_STATUS_AMBER);
    assert_int_equal(br1->nation_status[NAT_CCC], RSL_STATUS_GREEN);
    assert_int_equal(br1->nation_status[NAT_DDD], AGG_REQ_NO_DATA);
    assert_int_equal(br1->status_counts[RSL_STATUS_GREEN], 1);
    assert_int_equal(br1->status_counts[RSL_STATUS_AMBER], 1);
    assert_int_equal(br1->status_counts[RSL_STATUS_RED], 1);
    assert_int_equal(br1->no_data, 1);

    const struct agg_requirement_summary *br2 = &s->requirements[1];
    assert_int_equal(br2->n_indicators, 2);
    assert_int_equal(br2->no_data, 4);

    const struct agg_requirement_summary *br3 = &s->requirements[2];
    assert_string_equal(br3->id, "BR3");
    assert_int_equal(br3->n_indicators, 0);
    assert_int_equal(br3->no_data, 4);

    const struct agg_requirement_summary *x = &s->requirements[7];
    assert_string_equal(x->id, "X");
    assert_int_equal(x->n_indicators, 1);
    assert_int_equal(x->nation_status[NAT_AAA], RSL_STATUS_RED);
    assert_int_equal(x->status_counts[RSL_STATUS_RED], 1);
    assert_int_equal(x->no_data, 3);
    agg_summary_free(&s);

    /* The nation view agrees with the alliance view. */
    struct agg_nation_view *v = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_nation_view_compute(fx->snap, "BBB", T0, &v, &err), RSL_OK);
    assert_int_equal(v->requirement_status[0], RSL_STATUS_AMBER);
    assert_int_equal(v->requirement_status[7], AGG_REQ_NO_DATA);
    agg_nation_view_free(&v);
}

/* `at=` before and after a change. The store answers agg_store_latest(at)
 * with the latest observation at or before `at`; the two observation sets
 * below are what it returns for T1 and for T2. */
static void test_at_before_and_after_change(void **state)
{
    struct fixture *fx = *state;
    const int64_t t1 = T0 - 30 * 60000; /* 07:30 */
    const int64_t t2 = T0;              /* 08:00 */
    /* At 07:30 AAA reported 3 (red) at 07:20; BBB had nothing yet. */
    offer(fx, "AAA", "c.median", 3, t1 - 10 * 60000, t1, "A");
    struct agg_summary *s = compute(fx, t1);
    assert_int_equal(s->indicators[IND_MEDIAN].nations_reporting, 1);
    assert_true(s->indicators[IND_MEDIAN].value == 3.0);
    assert_int_equal(s->indicators[IND_MEDIAN].status_counts[RSL_STATUS_RED], 1);
    assert_int_equal(s->requirements[1].nation_status[NAT_AAA], RSL_STATUS_RED);
    assert_int_equal(s->at_ms, t1);
    agg_summary_free(&s);

    /* At 08:00 AAA's 07:50 value 30 (green) supersedes it and BBB (backfill
     * after an outage, observed 07:45, arrived 08:00) reports 8 (amber). */
    agg_snapshot_free(&fx->snap);
    assert_int_equal(agg_snapshot_new(fx->tax, &fx->snap), RSL_OK);
    offer(fx, "AAA", "c.median", 30, t2 - 10 * 60000, t2, "A");
    offer(fx, "BBB", "c.median", 8, t2 - 15 * 60000, t2, "B");
    s = compute(fx, t2);
    assert_int_equal(s->indicators[IND_MEDIAN].nations_reporting, 2);
    assert_true(s->indicators[IND_MEDIAN].value == 19.0);
    assert_int_equal(s->indicators[IND_MEDIAN].status_counts[RSL_STATUS_RED], 0);
    assert_int_equal(s->indicators[IND_MEDIAN].status_counts[RSL_STATUS_AMBER], 1);
    assert_int_equal(s->indicators[IND_MEDIAN].status_counts[RSL_STATUS_GREEN], 1);
    assert_int_equal(s->requirements[1].nation_status[NAT_AAA], RSL_STATUS_GREEN);
    agg_summary_free(&s);

    /* The same 08:00 set asked about 10:00: everything has gone stale. */
    s = compute(fx, t2 + 2 * HOUR_MS);
    assert_int_equal(s->indicators[IND_MEDIAN].nations_reporting, 0);
    assert_int_equal(s->indicators[IND_MEDIAN].nations_stale, 2);
    assert_false(s->indicators[IND_MEDIAN].has_value);
    agg_summary_free(&s);
}

/* The latest observation wins whatever the offer order; ties on
 * observed_at go to the later arrival. Unknown nations/indicators are
 * ignored. */
static void test_snapshot_latest_wins(void **state)
{
    struct fixture *fx = *state;
    offer(fx, "AAA", "a.sum", 2, T0 - 1000, T0, "NEW");
    offer(fx, "AAA", "a.sum", 1, T0 - 2000, T0 + 5, "OLD"); /* older, arrived later */
    offer(fx, "BBB", "a.sum", 5, T0 - 1000, T0 - 10, "FIRST");
    offer(fx, "BBB", "a.sum", 6, T0 - 1000, T0 - 5, "SECOND");
    offer(fx, "BBB", "a.sum", 7, T0 - 1000, T0 - 20, "EARLIER");
    offer(fx, "ZZZ", "a.sum", 100, T0 - 1000, T0, "Z");     /* not an ally */
    offer(fx, "AAA", "zz.unknown", 100, T0 - 1000, T0, "Z"); /* not in taxonomy */
    struct agg_nation_view *v = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_nation_view_compute(fx->snap, "AAA", T0, &v, &err), RSL_OK);
    assert_true(v->entries[IND_SUM].value == 2.0);
    assert_string_equal(v->entries[IND_SUM].agent_id, "NEW");
    agg_nation_view_free(&v);
    assert_int_equal(agg_nation_view_compute(fx->snap, "BBB", T0, &v, &err), RSL_OK);
    assert_true(v->entries[IND_SUM].value == 6.0);
    assert_string_equal(v->entries[IND_SUM].agent_id, "SECOND");
    agg_nation_view_free(&v);
    struct agg_summary *s = compute(fx, T0);
    assert_int_equal(s->indicators[IND_SUM].nations_reporting, 2);
    assert_true(s->indicators[IND_SUM].value == 8.0);
    agg_summary_free(&s);

    assert_int_equal(agg_nation_view_compute(fx->snap, "ZZZ", T0, &v, &err), RSL_ENOENT);
    assert_null(v);
    assert_non_null(strstr(err.text, "ZZZ"));
}

static void test_nation_view(void **state)
{
    struct fixture *fx = *state;
    offer(fx, "CCC", "a.sum", 12.5, T0 - 60000, T0 - 30000, "CCC-MOD-01");
    offer(fx, "CCC", "b.mean", 60, T0 - 2 * HOUR_MS, T0 - HOUR_MS, "CCC-MOD-02");
    struct agg_nation_view *v = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_nation_view_compute(fx->snap, "CCC", T0, &v, &err), RSL_OK);
    assert_string_equal(v->nation->code, "CCC");
    assert_int_equal(v->n_entries, 5);
    assert_int_equal(v->counts[AGG_STATE_CURRENT], 1);
    assert_int_equal(v->counts[AGG_STATE_STALE], 1);
    assert_int_equal(v->counts[AGG_STATE_MISSING], 3);
    const struct agg_nation_entry *a = &v->entries[IND_SUM];
    assert_int_equal(a->state, AGG_STATE_CURRENT);
    assert_true(a->value == 12.5);
    assert_int_equal(a->observed_at_ms, T0 - 60000);
    assert_int_equal(a->status, RSL_STATUS_GREEN);
    assert_string_equal(a->unit, "n");
    assert_string_equal(a->agent_id, "CCC-MOD-01");
    const struct agg_nation_entry *b = &v->entries[IND_MEAN];
    assert_int_equal(b->state, AGG_STATE_STALE);
    assert_true(b->value == 60.0);
    assert_int_equal(b->status, RSL_STATUS_AMBER); /* status of the stale value */
    const struct agg_nation_entry *c = &v->entries[IND_MEDIAN];
    assert_int_equal(c->state, AGG_STATE_MISSING);
    assert_string_equal(c->unit, "days");
    assert_string_equal(c->agent_id, "");
    /* Stale b.mean (amber) does not count: BR1 is a.sum's green. */
    assert_int_equal(v->requirement_status[0], RSL_STATUS_GREEN);

    json_t *doc = agg_nation_view_to_json(v);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "nation")), "CCC");
    assert_string_equal(json_string_value(json_object_get(doc, "name")), "Charlie");
    assert_string_equal(json_string_value(json_object_get(doc, "at")), "2027-01-15T08:00:00.000Z");
    assert_int_equal(json_integer_value(json_object_get(doc, "at_ms")), T0);
    json_t *entries = json_object_get(doc, "indicators");
    assert_int_equal(json_array_size(entries), 5);
    json_t *e0 = json_array_get(entries, 0);
    assert_string_equal(json_string_value(json_object_get(e0, "id")), "a.sum");
    assert_string_equal(json_string_value(json_object_get(e0, "state")), "current");
    assert_true(json_number_value(json_object_get(e0, "value")) == 12.5);
    assert_string_equal(json_string_value(json_object_get(e0, "status")), "green");
    assert_string_equal(json_string_value(json_object_get(e0, "observed_at")),
                        "2027-01-15T07:59:00.000Z");
    assert_string_equal(json_string_value(json_object_get(e0, "agent_id")), "CCC-MOD-01");
    json_t *e2 = json_array_get(entries, 2);
    assert_string_equal(json_string_value(json_object_get(e2, "state")), "missing");
    assert_true(json_is_null(json_object_get(e2, "value")));
    assert_true(json_is_null(json_object_get(e2, "status")));
    json_t *reqs = json_object_get(doc, "requirements");
    assert_string_equal(json_string_value(json_object_get(reqs, "BR1")), "green");
    assert_string_equal(json_string_value(json_object_get(reqs, "BR2")), "no_data");
    json_t *counts = json_object_get(doc, "counts");
    assert_int_equal(json_integer_value(json_object_get(counts, "stale")), 1);
    json_decref(doc);
    agg_nation_view_free(&v);
    assert_null(v);
}

static void test_summary_json(void **state)
{
    struct fixture *fx = *state;
    current(fx, "AAA", "a.sum", 20);
    current(fx, "BBB", "a.sum", 3);
    offer(fx, "CCC", "a.sum", 9, T0 - 2 * HOUR_MS, T0, "C");
    struct agg_summary *s = compute(fx, T0);
    json_t *doc = agg_summary_to_json(s, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "at")), "2027-01-15T08:00:00.000Z");
    assert_int_equal(json_integer_value(json_object_get(doc, "nations")), 4);
    json_t *inds = json_object_get(doc, "indicators");
    assert_int_equal(json_array_size(inds), 5);
    json_t *a = json_array_get(inds, 0);
    assert_string_equal(json_string_value(json_object_get(a, "id")), "a.sum");
    assert_string_equal(json_string_value(json_object_get(a, "method")), "sum");
    assert_string_equal(json_string_value(json_object_get(a, "direction")), "higher_is_better");
    assert_int_equal(json_integer_value(json_object_get(a, "nations_reporting")), 2);
    assert_int_equal(json_integer_value(json_object_get(a, "nations_stale")), 1);
    assert_int_equal(json_integer_value(json_object_get(a, "nations_missing")), 1);
    assert_true(json_number_value(json_object_get(a, "value")) == 23.0);
    assert_true(json_number_value(json_object_get(a, "median")) == 11.5);
    json_t *st = json_object_get(a, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "green")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "red")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(a, "stale"), 0)), "CCC");
    assert_string_equal(json_string_value(json_array_get(json_object_get(a, "missing"), 0)), "DDD");
    json_t *b = json_array_get(inds, 1);
    assert_true(json_is_null(json_object_get(b, "value")));
    assert_true(json_is_null(json_object_get(b, "min")));
    json_t *reqs = json_object_get(doc, "requirements");
    assert_int_equal(json_array_size(reqs), 8);
    json_t *br1 = json_array_get(reqs, 0);
    assert_string_equal(json_string_value(json_object_get(br1, "id")), "BR1");
    json_t *br1_nations = json_object_get(br1, "nations");
    assert_int_equal(json_object_size(br1_nations), 4);
    assert_string_equal(json_string_value(json_object_get(br1_nations, "BBB")), "red");
    assert_string_equal(json_string_value(json_object_get(br1_nations, "CCC")), "no_data");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(br1, "status"), "no_data")), 2);
    json_decref(doc);

    /* A nation's view of the summary shows only its own requirement row. */
    doc = agg_summary_to_json(s, "BBB");
    assert_non_null(doc);
    br1_nations = json_object_get(json_array_get(json_object_get(doc, "requirements"), 0), "nations");
    assert_int_equal(json_object_size(br1_nations), 1);
    assert_string_equal(json_string_value(json_object_get(br1_nations, "BBB")), "red");
    /* ...but the alliance counts are unchanged. */
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_array_get(json_object_get(doc, "requirements"), 0),
                                         "status"),
                         "green")),
                     1);
    json_decref(doc);
    agg_summary_free(&s);
}

/* Sums of huge values overflow to infinity: reported as null, never a
 * broken document. */
static void test_overflow_is_null(void **state)
{
    struct fixture *fx = *state;
    current(fx, "AAA", "a.sum", 1.5e308);
    current(fx, "BBB", "a.sum", 1.5e308);
    struct agg_summary *s = compute(fx, T0);
    assert_true(isinf(s->indicators[IND_SUM].value));
    assert_true(s->indicators[IND_SUM].median == 1.5e308); /* no overflow in the median */
    json_t *doc = agg_summary_to_json(s, NULL);
    assert_non_null(doc);
    json_t *a = json_array_get(json_object_get(doc, "indicators"), 0);
    assert_true(json_is_null(json_object_get(a, "value")));
    assert_true(json_number_value(json_object_get(a, "max")) == 1.5e308);
    json_decref(doc);
    agg_summary_free(&s);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(agg_state_name(AGG_STATE_CURRENT), "current");
    assert_string_equal(agg_state_name(AGG_STATE_STALE), "stale");
    assert_string_equal(agg_state_name(AGG_STATE_MISSING), "missing");
    assert_string_equal(agg_req_status_name(AGG_REQ_NO_DATA), "no_data");
    assert_string_equal(agg_req_status_name(RSL_STATUS_RED), "red");
}

/* ---- issue 5: history, requirements document, overview, CSV ------------ */

/* History points equal the summary at each point's time: a.sum over
 * AAA 4 (observed T0-50m), AAA 6 (T0-20m), BBB 10 (T0-90m, max_age 1 h),
 * CCC 1 observed at T0-40m but offered last (a late arrival). */
static void test_history_points_equal_summaries(void **state)
{
    struct fixture *fx = *state;
    const int64_t min = 60000;
    struct { const char *nation; double value; int64_t observed; } obs[] = {
        {"AAA", 4, T0 - 50 * min}, {"AAA", 6, T0 - 20 * min},
        {"BBB", 10, T0 - 90 * min}, {"CCC", 1, T0 - 40 * min},
    };
    int64_t points[7];
    for (int k = 0; k < 7; k++)
        points[k] = T0 - 60 * min + k * 10 * min; /* -60 .. 0 */
    struct agg_history *h = NULL;
    struct rsl_error err = {0};
    assert_int_equal(agg_history_new(fx->tax, "a.sum", points, 7, &h), RSL_OK);
    /* Offer each point what agg_store_history would: per nation, the
     * latest observation at or before the point. */
    for (int k = 0; k < 7; k++) {
        for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
            if (obs[i].observed > points[k])
                continue;
            struct agg_value v = {.nation = obs[i].nation, .indicator = "a.sum", .unit = "n",
                                  .agent_id = "A", .value = obs[i].value,
                                  .observed_at_ms = obs[i].observed, .received_at_ms = T0};
            assert_int_equal(agg_history_point_cb(h, (size_t)k, &v), RSL_OK);
        }
    }
    assert_int_equal(agg_history_compute(h, &err), RSL_OK);
    assert_int_equal(agg_history_n_points(h), 7);
    assert_string_equal(agg_history_indicator(h)->id, "a.sum");
    /* Hand-computed: -60: BBB 10 (30 min old) -> 10; -50: AAA 4 + BBB 10 ->
     * 14; -40: + CCC 1 -> 15; -30: BBB exactly 60 min old, still current ->
     * 15; -20: AAA 6, BBB stale -> 7; -10, 0: 7. */
    const double want[7] = {10, 14, 15, 15, 7, 7, 7};
    const size_t stale[7] = {0, 0, 0, 0, 1, 1, 1};
    for (size_t k = 0; k < 7; k++) {
        const struct agg_indicator_summary *r = agg_history_result(h, k);
        assert_non_null(r);
        assert_true(r->has_value);
        assert_true(r->value == want[k]);
        assert_int_equal(r->nations_stale, stale[k]);
        /* Equal to a full summary at that time computed from a snapshot
         * holding the same latest observations. */
        struct agg_snapshot *snap = NULL;
        assert_int_equal(agg_snapshot_new(fx->tax, &snap), RSL_OK);
        for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
            if (obs[i].observed > points[k])
                continue;
            struct agg_value v = {.nation = obs[i].nation, .indicator = "a.sum", .unit = "n",
                                  .agent_id = "A", .value = obs[i].value,
                                  .observed_at_ms = obs[i].observed, .received_at_ms = T0};
            agg_snapshot_add(snap, &v);
        }
        struct agg_summary *sum = NULL;
        assert_int_equal(agg_summary_compute(snap, points[k], &sum, &err), RSL_OK);
        const struct agg_indicator_summary *e = &sum->indicators[IND_SUM];
        assert_true(e->value == r->value && e->min == r->min && e->max == r->max &&
                    e->median == r->median);
        assert_int_equal(e->nations_reporting, r->nations_reporting);
        assert_int_equal(e->nations_missing, r->nations_missing);
        assert_memory_equal(e->status_counts, r->status_counts, sizeof(e->status_counts));
        agg_summary_free(&sum);
        agg_snapshot_free(&snap);
    }
    assert_null(agg_history_result(h, 7));
    json_t *doc = agg_history_to_json(h, points[0], points[6], 10 * min);
    assert_non_null(doc);
    assert_int_equal(json_array_size(json_object_get(doc, "points")), 7);
    assert_int_equal(json_integer_value(json_object_get(doc, "step_ms")), 10 * min);
    json_decref(doc);
    struct agg_buf buf = {0};
    agg_csv_history(&buf, h);
    assert_false(buf.failed);
    assert_non_null(strstr(buf.data, "at,indicator,value,"));
    assert_non_null(strstr(buf.data, ",a.sum,14,4,"));
    agg_buf_free(&buf);
    agg_history_free(&h);
    agg_history_free(&h); /* NULL-safe */

    /* Limits: unknown indicator, no points, too many points. */
    assert_int_equal(agg_history_new(fx->tax, "nope", points, 7, &h), RSL_ENOENT);
    assert_int_equal(agg_history_new(fx->tax, "a.sum", points, 0, &h), RSL_EINVAL);
    assert_int_equal(agg_history_new(fx->tax, "a.sum", points, AGG_HISTORY_MAX_POINTS + 1, &h),
                     RSL_EINVAL);
    assert_null(h);
}

/* What a nation principal gets: alliance counts, but only its own name in
 * the stale/missing lists and the per-nation statuses. */
static void test_only_nation_views(void **state)
{
    struct fixture *fx = *state;
    current(fx, "AAA", "a.sum", 12);
    offer(fx, "BBB", "a.sum", 12, T0 - 3 * HOUR_MS, T0 - 3 * HOUR_MS, "B"); /* stale */
    struct agg_summary *s = compute(fx, T0);
    json_t *doc = agg_summary_to_json(s, "AAA");
    json_t *a = json_array_get(json_object_get(doc, "indicators"), IND_SUM);
    assert_int_equal(json_integer_value(json_object_get(a, "nations_stale")), 1);
    assert_int_equal(json_integer_value(json_object_get(a, "nations_missing")), 2);
    assert_int_equal(json_array_size(json_object_get(a, "stale")), 0);
    assert_int_equal(json_array_size(json_object_get(a, "missing")), 0);
    json_decref(doc);
    doc = agg_summary_to_json(s, "CCC"); /* CCC is missing: it sees itself listed */
    a = json_array_get(json_object_get(doc, "indicators"), IND_SUM);
    assert_int_equal(json_array_size(json_object_get(a, "missing")), 1);
    json_decref(doc);

    doc = agg_requirements_to_json(s, "AAA");
    json_t *reqs = json_object_get(doc, "requirements");
    assert_int_equal(json_array_size(reqs), AGG_N_REQUIREMENTS);
    json_t *br1 = json_array_get(reqs, 0);
    assert_int_equal(json_object_size(json_object_get(br1, "nations")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(br1, "nations"), "AAA")),
                        "green");
    assert_int_equal(json_integer_value(json_object_get(doc, "at_ms")), T0);
    json_decref(doc);

    struct agg_buf buf = {0};
    agg_csv_requirements(&buf, s, "AAA");
    assert_non_null(strstr(buf.data, "at,requirement,indicators,green,amber,red,no_data,AAA\r\n"));
    assert_null(strstr(buf.data, "BBB"));
    agg_buf_free(&buf);
    agg_csv_requirements(&buf, s, NULL);
    assert_non_null(strstr(buf.data, ",no_data,AAA,BBB,CCC,DDD\r\n"));
    agg_buf_free(&buf);
    agg_csv_summary(&buf, s);
    assert_non_null(strstr(buf.data, ",a.sum,BR1,n,higher_is_better,sum,12,12,12,12,1,1,2,1,0,0\r\n"));
    /* No current value: empty fields, not zeros. */
    assert_non_null(strstr(buf.data, ",b.mean,BR1,pct,lower_is_better,mean,,,,,0,0,4,0,0,0\r\n"));
    agg_buf_free(&buf);
    agg_summary_free(&s);
}

static int agent_row(struct agg_overview *ov, const char *agent, const char *nation,
                     int64_t last_seen, int64_t reports)
{
    struct agg_agent_row row = {.agent_id = agent, .nation = nation, .last_sequence = 7,
                                .last_seen_ms = last_seen, .reports = reports};
    return agg_overview_agent_cb(ov, &row);
}

static void test_overview(void **state)
{
    struct fixture *fx = *state;
    current(fx, "AAA", "a.sum", 12);
    offer(fx, "AAA", "b.mean", 10, T0 - 3 * HOUR_MS, T0 - 3 * HOUR_MS, "A"); /* stale */
    struct agg_overview *ov = NULL;
    assert_int_equal(agg_overview_new(fx->snap, T0, &ov), RSL_OK);
    assert_int_equal(agent_row(ov, "AAA-1", "AAA", T0 - 1000, 5), RSL_OK);
    assert_int_equal(agent_row(ov, "AAA-2", "AAA", T0 - 9000, 1), RSL_OK);
    assert_int_equal(agent_row(ov, "ZZZ-1", "ZZZ", T0, 1), RSL_OK); /* not in the list: ignored */
    assert_int_equal(agg_overview_n_nations(ov), 4);
    const struct agg_overview_nation *a = agg_overview_nation_at(ov, NAT_AAA);
    assert_int_equal(a->n_agents, 2);
    assert_int_equal(a->last_report_ms, T0 - 1000);
    assert_int_equal(a->last_observed_ms, T0 - 60000);
    assert_int_equal(a->counts[AGG_STATE_CURRENT], 1);
    assert_int_equal(a->counts[AGG_STATE_STALE], 1);
    assert_int_equal(a->counts[AGG_STATE_MISSING], 3);
    assert_null(agg_overview_nation_at(ov, 4));
    json_t *doc = agg_overview_to_json(ov);
    json_t *n0 = json_array_get(json_object_get(doc, "nations"), 0);
    assert_string_equal(json_string_value(json_object_get(n0, "nation")), "AAA");
    assert_int_equal(json_array_size(json_object_get(n0, "agents")), 2);
    json_t *n1 = json_array_get(json_object_get(doc, "nations"), 1);
    assert_true(json_is_null(json_object_get(n1, "last_report")));
    assert_int_equal(json_array_size(json_object_get(n1, "agents")), 0);
    json_decref(doc);
    struct agg_buf buf = {0};
    agg_csv_overview(&buf, ov);
    assert_non_null(strstr(buf.data, ",AAA,Alpha,"));
    assert_non_null(strstr(buf.data, ",BBB,Bravo,,,0,0,0,5\r\n"));
    agg_buf_free(&buf);
    agg_overview_free(&ov);
    agg_overview_free(&ov);
}

/* RFC 4180 quoting of hostile text, and the buffer's failure latch. */
static void test_csv_fields(void **state)
{
    (void)state;
    struct agg_buf buf = {0};
    agg_csv_field(&buf, "plain");
    agg_csv_field(&buf, "|");
    agg_csv_field(&buf, "a,b");
    agg_csv_field(&buf, "say \"hi\"");
    agg_csv_field(&buf, "two\r\nlines");
    agg_csv_field(&buf, NULL);
    assert_string_equal(buf.data, "plain|\"a,b\"\"say \"\"hi\"\"\"\"two\r\nlines\"");
    agg_buf_printf(&buf, "%d", 42);
    assert_int_equal(buf.len, strlen(buf.data));
    agg_buf_free(&buf);
    assert_null(buf.data);
    buf.failed = true; /* once failed, appends do nothing */
    agg_buf_puts(&buf, "x");
    assert_null(buf.data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thresholds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_counts_ignore_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requirements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_at_before_and_after_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_latest_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nation_view, setup, teardown),
        cmocka_unit_test_setup_teardown(test_summary_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_is_null, setup, teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_history_points_equal_summaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_nation_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overview, setup, teardown),
        cmocka_unit_test(test_csv_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
