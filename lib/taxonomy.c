/*
 * taxonomy.c - the indicator taxonomy and the nation list from CSV.
 *
 * The files are operator-editable, so they are parsed as untrusted text:
 * a bounded RFC 4180 reader (quoted fields, doubled quotes, CRLF or LF line
 * ends, newlines inside quotes) that rejects NUL bytes, control characters,
 * stray quotes and rows with the wrong number of fields, then a validator
 * per row. Columns are found by header name, so operators may reorder them
 * or add their own (share/indicators.csv has a "basis" column we ignore).
 * Unquoted fields are trimmed of surrounding blanks ("12, 24" is common in
 * hand-edited files); quoted fields are taken exactly.
 *
 * Every error names "FILE:LINE:" of the row (for a field spanning lines,
 * the line where its row starts) and the column. A file either loads whole
 * or not at all: parsing builds new arrays and swaps them into the
 * taxonomy only on success.
 *
 * Memory: each indicator owns its id, unit and description strings, each
 * nation its name; the taxonomy owns both arrays (rsl_taxonomy_free).
 */
#include "rsl/taxonomy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/codec.h"
#include "rsl/util.h"

#define CSV_MAX_FIELDS 256          /* per row; real files have about ten */
#define MAX_AGE_HOURS_DEFAULT 72
#define MAX_AGE_HOURS_MAX 876000    /* 100 years: keeps hours * 3600000 far from overflow */
#define SHOW_MAX 48                 /* characters of a bad value quoted in a message */

/* ---- messages ----------------------------------------------------------- */


/* ---- RFC 4180 reader ---------------------------------------------------- */

struct csv_reader {
    const char *name; /* file name for messages */
    const char *buf;
    size_t len;
    size_t pos;
    int line; /* physical line of buf[pos], 1-based */
};

/* One row: its fields stored back to back, each NUL-terminated. */
struct csv_row {
    char *text;
    size_t text_len;
    size_t text_cap;
    size_t *starts; /* offset of each field in text */
    size_t n_fields;
    size_t starts_cap;
    int line; /* where the row starts */
};

static void csv_row_free(struct csv_row *row)
{
    free(row->text);
    free(row->starts);
    memset(row, 0, sizeof(*row));
}

static const char *csv_field(const struct csv_row *row, size_t i)
{
    return row->text + row->starts[i];
}

/* Append one byte to the row's text; the buffer doubles, so a row costs
 * O(length) however it is split into fields. */
static int csv_putc(struct csv_row *row, char c)
{
    if (row->text_len + 1 >= row->text_cap) {
        size_t cap = row->text_cap == 0 ? 256 : row->text_cap * 2;
        char *grown = realloc(row->text, cap);
        if (grown == NULL)
            return RSL_ENOMEM;
        row->text = grown;
        row->text_cap = cap;
    }
    row->text[row->text_len++] = c;
    return RSL_OK;
}

static int csv_begin_field(struct csv_reader *rd, struct csv_row *row, struct rsl_error *err)
{
    if (row->n_fields >= CSV_MAX_FIELDS)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: more than %d fields", rd->name, row->line,
                             CSV_MAX_FIELDS);
    if (row->n_fields == row->starts_cap) {
        size_t cap = row->starts_cap == 0 ? 16 : row->starts_cap * 2;
        size_t *grown = realloc(row->starts, cap * sizeof(*grown));
        if (grown == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
        row->starts = grown;
        row->starts_cap = cap;
    }
    row->starts[row->n_fields++] = row->text_len;
    return RSL_OK;
}

/* End the current field: NUL-terminate it, trimming blanks if unquoted. */
static int csv_end_field(struct csv_reader *rd, struct csv_row *row, int quoted,
                         struct rsl_error *err)
{
    if (!quoted) {
        size_t start = row->starts[row->n_fields - 1];
        size_t first = start;
        while (first < row->text_len && (row->text[first] == ' ' || row->text[first] == '\t'))
            first++;
        size_t end = row->text_len;
        while (end > first && (row->text[end - 1] == ' ' || row->text[end - 1] == '\t'))
            end--;
        if (first != start) /* text may still be NULL for an empty field */
            memmove(row->text + start, row->text + first, end - first);
        row->text_len = start + (end - first);
    }
    if (csv_putc(row, '\0') != RSL_OK)
        return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
    return RSL_OK;
}

/* A byte that may not appear in a field (outside quotes CR/LF end rows). */
static int csv_bad_byte(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

/* Read the next row into `row`. Returns 1 for a row, 0 at end of input, or
 * a negative RSL_E* code with the message in err. Blank lines are skipped. */
static int csv_next(struct csv_reader *rd, struct csv_row *row, struct rsl_error *err)
{
    int rc;
    row->text_len = 0;
    row->n_fields = 0;

    /* Blank lines between rows (and a final line end) carry no row. */
    for (;;) {
        if (rd->pos < rd->len && rd->buf[rd->pos] == '\n') {
            rd->pos++;
            rd->line++;
        } else if (rd->pos + 1 < rd->len && rd->buf[rd->pos] == '\r' &&
                   rd->buf[rd->pos + 1] == '\n') {
            rd->pos += 2;
            rd->line++;
        } else {
            break;
        }
    }
    if (rd->pos >= rd->len)
        return 0;
    row->line = rd->line;

    for (;;) {
        if ((rc = csv_begin_field(rd, row, err)) != RSL_OK)
            return rc;
        int quoted = rd->pos < rd->len && rd->buf[rd->pos] == '"';
        if (quoted) {
            int quote_line = rd->line;
            rd->pos++;
            for (;;) {
                if (rd->pos >= rd->len)
                    return rsl_error_set(err, RSL_EPARSE, "%s:%d: unterminated quoted field",
                                         rd->name, quote_line);
                unsigned char c = (unsigned char)rd->buf[rd->pos];
                if (c == '"') {
                    if (rd->pos + 1 < rd->len && rd->buf[rd->pos + 1] == '"') {
                        rd->pos += 2; /* "" is one quote */
                        if (csv_putc(row, '"') != RSL_OK)
                            return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
                        continue;
                    }
                    rd->pos++;
                    break;
                }
                if (c == '\0' || csv_bad_byte(c))
                    return rsl_error_set(err, RSL_EPARSE, "%s:%d: %s in a field", rd->name,
                                         rd->line, c == '\0' ? "NUL byte" : "control character");
                if (c == '\n')
                    rd->line++;
                if (csv_putc(row, (char)c) != RSL_OK)
                    return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
                rd->pos++;
            }
            /* After the closing quote only a separator or the row end. */
            if (rd->pos < rd->len && rd->buf[rd->pos] != ',' && rd->buf[rd->pos] != '\n' &&
                !(rd->buf[rd->pos] == '\r' && rd->pos + 1 < rd->len &&
                  rd->buf[rd->pos + 1] == '\n'))
                return rsl_error_set(err, RSL_EPARSE,
                                     "%s:%d: unexpected character after closing quote", rd->name,
                                     rd->line);
        } else {
            while (rd->pos < rd->len) {
                unsigned char c = (unsigned char)rd->buf[rd->pos];
                if (c == ',' || c == '\n')
                    break;
                if (c == '\r') {
                    if (rd->pos + 1 < rd->len && rd->buf[rd->pos + 1] == '\n')
                        break;
                    return rsl_error_set(err, RSL_EPARSE, "%s:%d: carriage return inside a field",
                                         rd->name, rd->line);
                }
                if (c == '"')
                    return rsl_error_set(err, RSL_EPARSE,
                                         "%s:%d: '\"' inside an unquoted field (quote the whole "
                                         "field and double the quote)",
                                         rd->name, rd->line);
                if (c == '\0' || csv_bad_byte(c))
                    return rsl_error_set(err, RSL_EPARSE, "%s:%d: %s in a field", rd->name,
                                         rd->line, c == '\0' ? "NUL byte" : "control character");
                if (csv_putc(row, (char)c) != RSL_OK)
                    return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
                rd->pos++;
            }
        }
        if ((rc = csv_end_field(rd, row, quoted, err)) != RSL_OK)
            return rc;

        if (rd->pos < rd->len && rd->buf[rd->pos] == ',') {
            rd->pos++;
            continue;
        }
        /* End of row: "\n", "\r\n" or end of input. */
        if (rd->pos < rd->len && rd->buf[rd->pos] == '\r')
            rd->pos++;
        if (rd->pos < rd->len && rd->buf[rd->pos] == '\n') {
            rd->pos++;
            rd->line++;
        }
        return 1;
    }
}

/* Header columns we use: name -> index in the row (-1 if absent). */
struct csv_column {
    const char *name;
    int index;
};

/* Read the header row and find `cols`, all of which are required. */
static int csv_header(struct csv_reader *rd, struct csv_row *row, struct csv_column *cols,
                      size_t n_cols, size_t *n_fields, struct rsl_error *err)
{
    int rc = csv_next(rd, row, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return rsl_error_set(err, RSL_EPARSE, "%s: empty file (expected a header row)", rd->name);
    for (size_t c = 0; c < n_cols; c++)
        cols[c].index = -1;
    for (size_t i = 0; i < row->n_fields; i++) {
        const char *h = csv_field(row, i);
        for (size_t j = 0; j < i; j++) {
            char shown[SHOW_MAX + 4];
            if (strcmp(csv_field(row, j), h) == 0)
                return rsl_error_set(err, RSL_EPARSE, "%s:%d: duplicate column '%s'", rd->name,
                                     row->line, rsl_text_show(h, shown, sizeof(shown)));
        }
        for (size_t c = 0; c < n_cols; c++)
            if (strcmp(cols[c].name, h) == 0)
                cols[c].index = (int)i;
    }
    for (size_t c = 0; c < n_cols; c++)
        if (cols[c].index < 0)
            return rsl_error_set(err, RSL_EPARSE, "%s:%d: missing column '%s'", rd->name,
                                 row->line, cols[c].name);
    *n_fields = row->n_fields;
    return RSL_OK;
}

/* The next data row, checked for the header's field count. */
static int csv_data_row(struct csv_reader *rd, struct csv_row *row, size_t n_fields,
                        struct rsl_error *err)
{
    int rc = csv_next(rd, row, err);
    if (rc == 1 && row->n_fields != n_fields)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: expected %zu fields, found %zu", rd->name,
                             row->line, n_fields, row->n_fields);
    return rc;
}

static void csv_reader_init(struct csv_reader *rd, const char *buf, size_t len, const char *name)
{
    rd->name = name != NULL ? name : "taxonomy";
    rd->buf = buf;
    rd->len = len;
    rd->pos = 0;
    rd->line = 1;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        rd->pos = 3; /* spreadsheet programs write a UTF-8 BOM */
}

/* ---- indicators --------------------------------------------------------- */

enum { COL_ID, COL_REQUIREMENT, COL_UNIT, COL_DIRECTION, COL_AMBER, COL_RED, COL_METHOD,
       COL_MAX_AGE, COL_DESCRIPTION, N_INDICATOR_COLS };

static const char *const method_names[] = {"sum", "mean", "median", "min", "max"};

static void indicator_clear(struct rsl_indicator *ind)
{
    free(ind->id);
    free(ind->unit);
    free(ind->description);
    memset(ind, 0, sizeof(*ind));
}

static void indicators_free(struct rsl_indicator *inds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        indicator_clear(&inds[i]);
    free(inds);
}

/* One indicator with the line it came from (for duplicate messages). */
struct indicator_entry {
    struct rsl_indicator ind;
    int line;
};

static int indicator_entry_cmp(const void *a, const void *b)
{
    const struct indicator_entry *x = a, *y = b;
    int c = strcmp(x->ind.id, y->ind.id);
    return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

static int valid_requirement(const char *s)
{
    if (strcmp(s, "X") == 0)
        return 1;
    return s[0] == 'B' && s[1] == 'R' && s[2] >= '1' && s[2] <= '7' && s[3] == '\0';
}

/* Fill `ind` from a row; strings are copied. Messages name file:line and
 * column. */
static int indicator_from_row(const struct csv_reader *rd, const struct csv_row *row,
                              const struct csv_column *cols, struct rsl_indicator *ind,
                              struct rsl_error *err)
{
    char shown[SHOW_MAX + 4], shown2[SHOW_MAX + 4];
    const char *id = csv_field(row, (size_t)cols[COL_ID].index);
    const char *req = csv_field(row, (size_t)cols[COL_REQUIREMENT].index);
    const char *unit = csv_field(row, (size_t)cols[COL_UNIT].index);
    const char *dir = csv_field(row, (size_t)cols[COL_DIRECTION].index);
    const char *amber = csv_field(row, (size_t)cols[COL_AMBER].index);
    const char *red = csv_field(row, (size_t)cols[COL_RED].index);
    const char *method = csv_field(row, (size_t)cols[COL_METHOD].index);
    const char *age = csv_field(row, (size_t)cols[COL_MAX_AGE].index);
    const char *desc = csv_field(row, (size_t)cols[COL_DESCRIPTION].index);

    if (!rsl_valid_indicator_id(id))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'id': not a valid indicator id (lowercase letters, "
                             "digits, '_' and '.', starting with a letter, at most %d): '%s'",
                             rd->name, row->line, RSL_INDICATOR_ID_MAX, rsl_text_show(id, shown, sizeof(shown)));
    if (!valid_requirement(req))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'requirement': expected BR1..BR7 or X: '%s'",
                             rd->name, row->line, rsl_text_show(req, shown, sizeof(shown)));
    if (!rsl_valid_unit(unit))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'unit': not a valid unit (letters, digits and _%%/.-, "
                             "at most %d): '%s'",
                             rd->name, row->line, RSL_UNIT_MAX, rsl_text_show(unit, shown, sizeof(shown)));
    if (strcmp(dir, "higher_is_better") == 0)
        ind->direction = RSL_HIGHER_IS_BETTER;
    else if (strcmp(dir, "lower_is_better") == 0)
        ind->direction = RSL_LOWER_IS_BETTER;
    else
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'direction': expected higher_is_better or "
                             "lower_is_better: '%s'",
                             rd->name, row->line, rsl_text_show(dir, shown, sizeof(shown)));
    if (rsl_parse_double(amber, &ind->amber) != RSL_OK)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: column 'amber': not a number: '%s'",
                             rd->name, row->line, rsl_text_show(amber, shown, sizeof(shown)));
    if (rsl_parse_double(red, &ind->red) != RSL_OK)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: column 'red': not a number: '%s'",
                             rd->name, row->line, rsl_text_show(red, shown, sizeof(shown)));
    /* Equal thresholds are allowed: the indicator then has no amber band. */
    if (ind->direction == RSL_HIGHER_IS_BETTER && !(ind->red <= ind->amber))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: thresholds out of order for higher_is_better: red (%s) must "
                             "be <= amber (%s)",
                             rd->name, row->line, rsl_text_show(red, shown, sizeof(shown)), rsl_text_show(amber, shown2, sizeof(shown2)));
    if (ind->direction == RSL_LOWER_IS_BETTER && !(ind->amber <= ind->red))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: thresholds out of order for lower_is_better: amber (%s) must "
                             "be <= red (%s)",
                             rd->name, row->line, rsl_text_show(amber, shown, sizeof(shown)), rsl_text_show(red, shown2, sizeof(shown2)));
    size_t m = 0;
    while (m < sizeof(method_names) / sizeof(method_names[0]) && strcmp(method, method_names[m]) != 0)
        m++;
    if (m == sizeof(method_names) / sizeof(method_names[0]))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'method': expected sum, mean, median, min or max: '%s'",
                             rd->name, row->line, rsl_text_show(method, shown, sizeof(shown)));
    ind->method = (enum rsl_method)m;
    int64_t hours = MAX_AGE_HOURS_DEFAULT;
    if (age[0] != '\0') {
        /* Whole hours, digits only (rsl_parse_int64 would take a sign). */
        size_t k = 0;
        while (age[k] >= '0' && age[k] <= '9')
            k++;
        if (age[k] != '\0' || rsl_parse_int64(age, 1, MAX_AGE_HOURS_MAX, &hours) != RSL_OK)
            return rsl_error_set(err, RSL_EPARSE,
                                 "%s:%d: column 'max_age_hours': expected whole hours 1..%d or "
                                 "empty: '%s'",
                                 rd->name, row->line, MAX_AGE_HOURS_MAX, rsl_text_show(age, shown, sizeof(shown)));
    }
    ind->max_age_ms = hours * 3600 * 1000;
    snprintf(ind->requirement, sizeof(ind->requirement), "%s", req);

    ind->id = strdup(id);
    ind->unit = strdup(unit);
    ind->description = strdup(desc);
    if (ind->id == NULL || ind->unit == NULL || ind->description == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
    return RSL_OK;
}

int rsl_taxonomy_parse_indicators(const char *buf, size_t len, const char *name,
                                  struct rsl_taxonomy *tax, struct rsl_error *err)
{
    struct csv_reader rd;
    struct csv_row row;
    struct csv_column cols[N_INDICATOR_COLS] = {
        [COL_ID] = {"id", -1},         [COL_REQUIREMENT] = {"requirement", -1},
        [COL_UNIT] = {"unit", -1},     [COL_DIRECTION] = {"direction", -1},
        [COL_AMBER] = {"amber", -1},   [COL_RED] = {"red", -1},
        [COL_METHOD] = {"method", -1}, [COL_MAX_AGE] = {"max_age_hours", -1},
        [COL_DESCRIPTION] = {"description", -1},
    };
    struct indicator_entry *entries = NULL;
    struct rsl_indicator *inds = NULL;
    size_t n = 0, cap = 0, n_fields = 0;
    int rc;

    memset(&row, 0, sizeof(row));
    if (tax == NULL || (buf == NULL && len > 0)) {
        rc = rsl_error_set(err, RSL_EINVAL, "rsl_taxonomy_parse_indicators: bad arguments");
        goto out;
    }
    /* The bound holds for in-memory callers (fuzzers) as for files. */
    if (len > RSL_TAXONOMY_MAX_BYTES) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %d bytes",
                           name != NULL ? name : "taxonomy", RSL_TAXONOMY_MAX_BYTES);
        goto out;
    }
    csv_reader_init(&rd, buf != NULL ? buf : "", len, name);
    if ((rc = csv_header(&rd, &row, cols, N_INDICATOR_COLS, &n_fields, err)) != RSL_OK)
        goto out;

    /* Rows are validated as they come, so the first bad row is the one
     * reported; duplicates need every id and are checked after sorting. */
    while ((rc = csv_data_row(&rd, &row, n_fields, err)) == 1) {
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            struct indicator_entry *grown = realloc(entries, ncap * sizeof(*grown));
            if (grown == NULL) {
                rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd.name);
                goto out;
            }
            entries = grown;
            cap = ncap;
        }
        memset(&entries[n], 0, sizeof(entries[n]));
        entries[n].line = row.line;
        n++; /* counted before filling, so a half-filled entry is freed too */
        if ((rc = indicator_from_row(&rd, &row, cols, &entries[n - 1].ind, err)) != RSL_OK)
            goto out;
    }
    if (rc < 0)
        goto out;
    /* An empty taxonomy would make every report's measurements "unknown":
     * surely a wrong file, so refuse it. */
    if (n == 0) {
        rc = rsl_error_set(err, RSL_EPARSE, "%s: no indicators", rd.name);
        goto out;
    }

    /* Sorted by id for binary search; equal ids end up side by side, the
     * earlier line first. */
    qsort(entries, n, sizeof(*entries), indicator_entry_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(entries[i - 1].ind.id, entries[i].ind.id) == 0) {
            rc = rsl_error_set(err, RSL_EPARSE,
                               "%s:%d: duplicate indicator id '%s' (first on line %d)", rd.name,
                               entries[i].line, entries[i].ind.id, entries[i - 1].line);
            goto out;
        }
    }

    inds = calloc(n, sizeof(*inds));
    if (inds == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd.name);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        inds[i] = entries[i].ind; /* strings move to inds */
    free(entries);
    entries = NULL;

    /* Only now, with everything valid, does the old table go. */
    indicators_free(tax->indicators, tax->n_indicators);
    tax->indicators = inds;
    tax->n_indicators = n;
    inds = NULL; /* transferred */
    rc = RSL_OK;
out:
    if (entries != NULL) {
        for (size_t i = 0; i < n; i++)
            indicator_clear(&entries[i].ind);
        free(entries);
    }
    free(inds);
    csv_row_free(&row);
    return rc;
}

/* ---- nations ------------------------------------------------------------ */

enum { NCOL_CODE, NCOL_NAME, NCOL_EU, N_NATION_COLS };

struct nation_entry {
    struct rsl_nation nation;
    int line;
};

static int nation_entry_cmp(const void *a, const void *b)
{
    const struct nation_entry *x = a, *y = b;
    int c = strcmp(x->nation.code, y->nation.code);
    return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

static void nations_free(struct rsl_nation *nations, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(nations[i].name);
    free(nations);
}

static int nation_from_row(const struct csv_reader *rd, const struct csv_row *row,
                           const struct csv_column *cols, struct rsl_nation *nation,
                           struct rsl_error *err)
{
    char shown[SHOW_MAX + 4];
    const char *code = csv_field(row, (size_t)cols[NCOL_CODE].index);
    const char *name = csv_field(row, (size_t)cols[NCOL_NAME].index);
    const char *eu = csv_field(row, (size_t)cols[NCOL_EU].index);

    if (!rsl_valid_nation_code(code))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: column 'code': expected 3 uppercase letters (ISO 3166-1 "
                             "alpha-3): '%s'",
                             rd->name, row->line, rsl_text_show(code, shown, sizeof(shown)));
    if (name[0] == '\0')
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: column 'name': empty", rd->name, row->line);
    /* Exactly yes|no as shipped: "true"/"1" would hint at a different
     * file format than the one the operator thinks they are editing. */
    if (strcmp(eu, "yes") == 0)
        nation->eu_member = true;
    else if (strcmp(eu, "no") == 0)
        nation->eu_member = false;
    else
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: column 'eu_member': expected yes or no: '%s'",
                             rd->name, row->line, rsl_text_show(eu, shown, sizeof(shown)));
    memcpy(nation->code, code, 4);
    nation->name = strdup(name);
    if (nation->name == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd->name);
    return RSL_OK;
}

int rsl_taxonomy_parse_nations(const char *buf, size_t len, const char *name,
                               struct rsl_taxonomy *tax, struct rsl_error *err)
{
    struct csv_reader rd;
    struct csv_row row;
    struct csv_column cols[N_NATION_COLS] = {
        [NCOL_CODE] = {"code", -1}, [NCOL_NAME] = {"name", -1}, [NCOL_EU] = {"eu_member", -1}};
    struct nation_entry *entries = NULL;
    struct rsl_nation *nations = NULL;
    size_t n = 0, cap = 0, n_fields = 0;
    int rc;

    memset(&row, 0, sizeof(row));
    if (tax == NULL || (buf == NULL && len > 0)) {
        rc = rsl_error_set(err, RSL_EINVAL, "rsl_taxonomy_parse_nations: bad arguments");
        goto out;
    }
    if (len > RSL_TAXONOMY_MAX_BYTES) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %d bytes",
                           name != NULL ? name : "taxonomy", RSL_TAXONOMY_MAX_BYTES);
        goto out;
    }
    csv_reader_init(&rd, buf != NULL ? buf : "", len, name);
    if ((rc = csv_header(&rd, &row, cols, N_NATION_COLS, &n_fields, err)) != RSL_OK)
        goto out;

    while ((rc = csv_data_row(&rd, &row, n_fields, err)) == 1) {
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            struct nation_entry *grown = realloc(entries, ncap * sizeof(*grown));
            if (grown == NULL) {
                rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd.name);
                goto out;
            }
            entries = grown;
            cap = ncap;
        }
        memset(&entries[n], 0, sizeof(entries[n]));
        entries[n].line = row.line;
        n++;
        if ((rc = nation_from_row(&rd, &row, cols, &entries[n - 1].nation, err)) != RSL_OK)
            goto out;
    }
    if (rc < 0)
        goto out;
    if (n == 0) {
        rc = rsl_error_set(err, RSL_EPARSE, "%s: no nations", rd.name);
        goto out;
    }

    qsort(entries, n, sizeof(*entries), nation_entry_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(entries[i - 1].nation.code, entries[i].nation.code) == 0) {
            rc = rsl_error_set(err, RSL_EPARSE, "%s:%d: duplicate nation code '%s' (first on line %d)",
                               rd.name, entries[i].line, entries[i].nation.code,
                               entries[i - 1].line);
            goto out;
        }
    }

    nations = calloc(n, sizeof(*nations));
    if (nations == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", rd.name);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        nations[i] = entries[i].nation; /* names move to nations */
    free(entries);
    entries = NULL;

    nations_free(tax->nations, tax->n_nations);
    tax->nations = nations;
    tax->n_nations = n;
    nations = NULL; /* transferred */
    rc = RSL_OK;
out:
    if (entries != NULL) {
        for (size_t i = 0; i < n; i++)
            free(entries[i].nation.name);
        free(entries);
    }
    free(nations);
    csv_row_free(&row);
    return rc;
}

/* ---- loading from files ------------------------------------------------- */

int rsl_taxonomy_load(const char *indicators_csv, const char *nations_csv,
                      struct rsl_taxonomy **out, struct rsl_error *err)
{
    struct rsl_taxonomy *tax = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    char beside[4096];
    int rc;

    if (out == NULL || indicators_csv == NULL)
        return rsl_error_set(err, RSL_EINVAL, "rsl_taxonomy_load: bad arguments");
    *out = NULL;
    /* No nations file named: the one shipped beside the indicators. */
    if (nations_csv == NULL) {
        if (rsl_path_resolve(indicators_csv, "nations.csv", beside, sizeof(beside)) != RSL_OK)
            return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", indicators_csv);
        nations_csv = beside;
    }

    tax = calloc(1, sizeof(*tax));
    if (tax == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = rsl_file_read_all(indicators_csv, RSL_TAXONOMY_MAX_BYTES, &data, &len, err)) != RSL_OK)
        goto out;
    if ((rc = rsl_taxonomy_parse_indicators((const char *)data, len, indicators_csv, tax, err)) !=
        RSL_OK)
        goto out;
    free(data);
    data = NULL;
    if ((rc = rsl_file_read_all(nations_csv, RSL_TAXONOMY_MAX_BYTES, &data, &len, err)) != RSL_OK)
        goto out;
    if ((rc = rsl_taxonomy_parse_nations((const char *)data, len, nations_csv, tax, err)) != RSL_OK)
        goto out;
    *out = tax;
    tax = NULL; /* transferred */
out:
    free(data);
    rsl_taxonomy_free(&tax);
    return rc;
}

void rsl_taxonomy_free(struct rsl_taxonomy **tax)
{
    if (tax == NULL || *tax == NULL)
        return;
    indicators_free((*tax)->indicators, (*tax)->n_indicators);
    nations_free((*tax)->nations, (*tax)->n_nations);
    free(*tax);
    *tax = NULL;
}

/* ---- look-ups ----------------------------------------------------------- */

/* Both tables are sorted by strcmp order at load time (qsort above), the
 * same order these binary searches assume. */
int rsl_taxonomy_indicator_index(const struct rsl_taxonomy *tax, const char *id)
{
    if (tax == NULL || id == NULL)
        return -1;
    size_t lo = 0, hi = tax->n_indicators;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, tax->indicators[mid].id);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

const struct rsl_indicator *rsl_taxonomy_indicator(const struct rsl_taxonomy *tax, const char *id)
{
    int i = rsl_taxonomy_indicator_index(tax, id);
    return i < 0 ? NULL : &tax->indicators[i];
}

int rsl_taxonomy_nation_index(const struct rsl_taxonomy *tax, const char *code)
{
    if (tax == NULL || code == NULL)
        return -1;
    size_t lo = 0, hi = tax->n_nations;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(code, tax->nations[mid].code);
        if (c == 0)
            return (int)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* ---- status and names --------------------------------------------------- */

enum rsl_status rsl_indicator_status(const struct rsl_indicator *ind, double value)
{
    /* Values are finite by the time they get here (codec, lineformat); a
     * NaN would compare false everywhere and look green, so it is red. */
    if (isnan(value))
        return RSL_STATUS_RED;
    if (ind->direction == RSL_LOWER_IS_BETTER) {
        if (value > ind->red)
            return RSL_STATUS_RED;
        if (value > ind->amber)
            return RSL_STATUS_AMBER;
        return RSL_STATUS_GREEN;
    }
    if (value < ind->red)
        return RSL_STATUS_RED;
    if (value < ind->amber)
        return RSL_STATUS_AMBER;
    return RSL_STATUS_GREEN;
}

const char *rsl_status_name(enum rsl_status s)
{
    switch (s) {
    case RSL_STATUS_GREEN: return "green";
    case RSL_STATUS_AMBER: return "amber";
    case RSL_STATUS_RED: return "red";
    }
    return "unknown";
}

const char *rsl_method_name(enum rsl_method m)
{
    if ((unsigned)m < sizeof(method_names) / sizeof(method_names[0]))
        return method_names[m];
    return "unknown";
}

const char *rsl_direction_name(enum rsl_direction d)
{
    switch (d) {
    case RSL_HIGHER_IS_BETTER: return "higher_is_better";
    case RSL_LOWER_IS_BETTER: return "lower_is_better";
    }
    return "unknown";
}
