/*
 * csv.c - CSV writers for the HTTPS API (see csv.h for the format).
 *
 * Only formatting happens here: every number comes from the result structs
 * of summary.c, exactly as the JSON writers get them.
 */
#include "csv.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

/* Buffers grow by doubling from this size; the largest CSV (the summary of
 * a full taxonomy) is a few KiB. */
#define BUF_INITIAL 4096

/* Room for `extra` more bytes plus the NUL. The overflow check comes
 * first: a length near SIZE_MAX must fail, not wrap to a small size. */
static bool buf_reserve(struct agg_buf *buf, size_t extra)
{
    if (buf->failed)
        return false;
    if (extra > SIZE_MAX / 2 - buf->len) {
        buf->failed = true;
        return false;
    }
    size_t need = buf->len + extra + 1;
    if (need <= buf->cap)
        return true;
    size_t cap = buf->cap > 0 ? buf->cap : BUF_INITIAL;
    while (cap < need)
        cap *= 2;
    char *p = realloc(buf->data, cap);
    if (p == NULL) {
        buf->failed = true;
        return false;
    }
    buf->data = p;
    buf->cap = cap;
    return true;
}

void agg_buf_append(struct agg_buf *buf, const char *data, size_t len)
{
    if (!buf_reserve(buf, len))
        return;
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
}

void agg_buf_puts(struct agg_buf *buf, const char *text)
{
    agg_buf_append(buf, text, strlen(text));
}

/* Two passes (measure, then format in place) so a long field is never cut
 * by a fixed scratch buffer. */
void agg_buf_printf(struct agg_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        buf->failed = true;
        return;
    }
    if (!buf_reserve(buf, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
}

void agg_buf_free(struct agg_buf *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof(*buf));
}

/* Quote only when needed, so ids and numbers stay readable in a plain
 * `cut -d,`; text from the taxonomy or nation list (operator-editable)
 * may contain anything and is quoted by RFC 4180's rule. */
void agg_csv_field(struct agg_buf *buf, const char *text)
{
    if (text == NULL)
        return;
    if (strpbrk(text, ",\"\r\n") == NULL) {
        agg_buf_puts(buf, text);
        return;
    }
    agg_buf_append(buf, "\"", 1);
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '"')
            agg_buf_append(buf, "\"\"", 2);
        else
            agg_buf_append(buf, p, 1);
    }
    agg_buf_append(buf, "\"", 1);
}

static void sep(struct agg_buf *buf)
{
    agg_buf_append(buf, ",", 1);
}

static void eol(struct agg_buf *buf)
{
    agg_buf_append(buf, "\r\n", 2);
}

/* A number as the JSON writer prints it (15 significant digits); empty
 * when absent or not finite (JSON: null). */
static void number(struct agg_buf *buf, bool has, double v)
{
    if (has && isfinite(v))
        agg_buf_printf(buf, "%.15g", v);
}

static void count(struct agg_buf *buf, size_t n)
{
    agg_buf_printf(buf, "%zu", n);
}

/* RFC 3339 with milliseconds, as the JSON's "at"; empty for "never" (0),
 * as JSON's null. */
static void timestamp(struct agg_buf *buf, int64_t ms)
{
    char text[40];
    if (ms <= 0)
        return;
    rsl_format_time_ms(ms, text, sizeof(text));
    agg_buf_puts(buf, text);
}

/* The columns every per-indicator aggregate row shares. */
static void aggregate_columns(struct agg_buf *buf, const struct agg_indicator_summary *is)
{
    number(buf, is->has_value, is->value);
    sep(buf);
    number(buf, is->has_value, is->min);
    sep(buf);
    number(buf, is->has_value, is->median);
    sep(buf);
    number(buf, is->has_value, is->max);
    sep(buf);
    count(buf, is->nations_reporting);
    sep(buf);
    count(buf, is->nations_stale);
    sep(buf);
    count(buf, is->nations_missing);
    sep(buf);
    count(buf, is->status_counts[RSL_STATUS_GREEN]);
    sep(buf);
    count(buf, is->status_counts[RSL_STATUS_AMBER]);
    sep(buf);
    count(buf, is->status_counts[RSL_STATUS_RED]);
}

void agg_csv_summary(struct agg_buf *buf, const struct agg_summary *summary)
{
    const struct rsl_taxonomy *tax = summary->taxonomy;
    agg_buf_puts(buf, "at,indicator,requirement,unit,direction,method,value,min,median,max,"
                      "nations_reporting,nations_stale,nations_missing,green,amber,red\r\n");
    for (size_t i = 0; i < tax->n_indicators; i++) {
        const struct agg_indicator_summary *is = &summary->indicators[i];
        const struct rsl_indicator *ind = is->indicator;
        timestamp(buf, summary->at_ms);
        sep(buf);
        agg_csv_field(buf, ind->id);
        sep(buf);
        agg_csv_field(buf, ind->requirement);
        sep(buf);
        agg_csv_field(buf, ind->unit);
        sep(buf);
        agg_csv_field(buf, rsl_direction_name(ind->direction));
        sep(buf);
        agg_csv_field(buf, rsl_method_name(ind->method));
        sep(buf);
        aggregate_columns(buf, is);
        eol(buf);
    }
}

/* Wide rather than long (one column per nation) because this table is the
 * heat map: one row per requirement reads directly in a spreadsheet. The
 * nation filter is the same as the JSON's, so a nation's CSV names no
 * other nation. */
void agg_csv_requirements(struct agg_buf *buf, const struct agg_summary *summary,
                          const char *only_nation)
{
    const struct rsl_taxonomy *tax = summary->taxonomy;
    agg_buf_puts(buf, "at,requirement,indicators,green,amber,red,no_data");
    for (size_t n = 0; n < tax->n_nations; n++) {
        if (only_nation != NULL && strcmp(only_nation, tax->nations[n].code) != 0)
            continue;
        sep(buf);
        agg_csv_field(buf, tax->nations[n].code);
    }
    eol(buf);
    for (int r = 0; r < AGG_N_REQUIREMENTS; r++) {
        const struct agg_requirement_summary *req = &summary->requirements[r];
        timestamp(buf, summary->at_ms);
        sep(buf);
        agg_csv_field(buf, req->id);
        sep(buf);
        count(buf, req->n_indicators);
        sep(buf);
        count(buf, req->status_counts[RSL_STATUS_GREEN]);
        sep(buf);
        count(buf, req->status_counts[RSL_STATUS_AMBER]);
        sep(buf);
        count(buf, req->status_counts[RSL_STATUS_RED]);
        sep(buf);
        count(buf, req->no_data);
        for (size_t n = 0; n < tax->n_nations; n++) {
            if (only_nation != NULL && strcmp(only_nation, tax->nations[n].code) != 0)
                continue;
            sep(buf);
            agg_csv_field(buf, agg_req_status_name(req->nation_status[n]));
        }
        eol(buf);
    }
}

void agg_csv_overview(struct agg_buf *buf, const struct agg_overview *ov)
{
    agg_buf_puts(buf, "at,nation,name,last_report,last_observed,agents,current,stale,missing\r\n");
    for (size_t n = 0; n < agg_overview_n_nations(ov); n++) {
        const struct agg_overview_nation *on = agg_overview_nation_at(ov, n);
        timestamp(buf, agg_overview_at(ov));
        sep(buf);
        agg_csv_field(buf, on->nation->code);
        sep(buf);
        agg_csv_field(buf, on->nation->name);
        sep(buf);
        timestamp(buf, on->last_report_ms);
        sep(buf);
        timestamp(buf, on->last_observed_ms);
        sep(buf);
        count(buf, on->n_agents);
        sep(buf);
        count(buf, on->counts[AGG_STATE_CURRENT]);
        sep(buf);
        count(buf, on->counts[AGG_STATE_STALE]);
        sep(buf);
        count(buf, on->counts[AGG_STATE_MISSING]);
        eol(buf);
    }
}

void agg_csv_nation_view(struct agg_buf *buf, const struct agg_nation_view *view)
{
    agg_buf_puts(buf, "at,nation,indicator,requirement,unit,state,value,status,observed_at,"
                      "agent_id\r\n");
    for (size_t i = 0; i < view->n_entries; i++) {
        const struct agg_nation_entry *e = &view->entries[i];
        bool has = e->state != AGG_STATE_MISSING;
        timestamp(buf, view->at_ms);
        sep(buf);
        agg_csv_field(buf, view->nation->code);
        sep(buf);
        agg_csv_field(buf, e->indicator->id);
        sep(buf);
        agg_csv_field(buf, e->indicator->requirement);
        sep(buf);
        agg_csv_field(buf, e->unit);
        sep(buf);
        agg_csv_field(buf, agg_state_name(e->state));
        sep(buf);
        number(buf, has, e->value);
        sep(buf);
        if (has)
            agg_csv_field(buf, rsl_status_name(e->status));
        sep(buf);
        if (has)
            timestamp(buf, e->observed_at_ms);
        sep(buf);
        if (has)
            agg_csv_field(buf, e->agent_id);
        eol(buf);
    }
}

void agg_csv_history(struct agg_buf *buf, const struct agg_history *history)
{
    const struct rsl_indicator *ind = agg_history_indicator(history);
    const int64_t *points = agg_history_points(history);
    agg_buf_puts(buf, "at,indicator,value,min,median,max,nations_reporting,nations_stale,"
                      "nations_missing,green,amber,red\r\n");
    for (size_t k = 0; k < agg_history_n_points(history); k++) {
        timestamp(buf, points[k]);
        sep(buf);
        agg_csv_field(buf, ind->id);
        sep(buf);
        aggregate_columns(buf, agg_history_result(history, k));
        eol(buf);
    }
}
