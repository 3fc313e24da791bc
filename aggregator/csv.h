/*
 * csv.h - CSV (RFC 4180) forms of the HTTPS API's tabular documents, for
 * `Accept: text/csv` or `?format=csv` (ARCHITECTURE section 6).
 *
 * Each writer formats one result struct of summary.h, so the CSV and the
 * JSON of a route always carry the same numbers: one header row naming
 * the columns, then one row per item, CRLF line ends, fields quoted when
 * they hold a comma, a quote or a line break. Numbers use the same 15
 * significant digits as the JSON; an absent value (no current data) is an
 * empty field. Times are RFC 3339 UTC.
 *
 * Output goes to a growable buffer (struct agg_buf) that remembers an
 * allocation failure instead of reporting each one: the caller checks
 * `failed` once at the end.
 */
#ifndef AGG_CSV_H
#define AGG_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "summary.h"

/* A growable byte buffer. Zero-initialise; free with agg_buf_free. After
 * any allocation failure `failed` is set and further appends do nothing. */
struct agg_buf {
    char *data;    /* NUL-terminated when not NULL */
    size_t len;
    size_t cap;
    bool failed;
};

void agg_buf_append(struct agg_buf *buf, const char *data, size_t len);
void agg_buf_puts(struct agg_buf *buf, const char *text);
void agg_buf_printf(struct agg_buf *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void agg_buf_free(struct agg_buf *buf);

/* One field: quoted (with inner quotes doubled) only when it needs it. */
void agg_csv_field(struct agg_buf *buf, const char *text);

/* /v1/summary: one row per indicator. */
void agg_csv_summary(struct agg_buf *buf, const struct agg_summary *summary);
/* /v1/requirements: one row per requirement; counts, then one column per
 * nation with its worst status (only `only_nation`'s column if not NULL). */
void agg_csv_requirements(struct agg_buf *buf, const struct agg_summary *summary,
                          const char *only_nation);
/* /v1/nations: one row per nation. */
void agg_csv_overview(struct agg_buf *buf, const struct agg_overview *overview);
/* /v1/nations/{CODE}: one row per indicator. */
void agg_csv_nation_view(struct agg_buf *buf, const struct agg_nation_view *view);
/* /v1/indicators/{id}/history: one row per point. */
void agg_csv_history(struct agg_buf *buf, const struct agg_history *history);

#endif
