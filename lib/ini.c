/*
 * ini.c - strict INI loading on top of inih (Debian's libinih, r55).
 *
 * inih does the INI grammar (sections, key = value and key: value, ';'
 * comments also inline after whitespace, '#' comments only at the start of
 * a line, indented continuation lines). It is built without line numbers
 * in the handler, silently splits lines longer than its 200-byte buffer
 * into several "lines", truncates section names at 49 bytes, keeps going
 * after an error and calls the handler once per continuation line. This
 * file wraps it so that none of that reaches a program:
 *
 *   1. The whole file is read first (at most INI_FILE_MAX_BYTES) and
 *      pre-scanned: NUL bytes, control characters and lines longer than
 *      RSL_INI_MAX_LINE are errors with their line number. A UTF-8 BOM is
 *      skipped. After this every line fits inih's buffer.
 *   2. Pass one feeds the lines to ini_parse_stream through our own reader
 *      with a handler that does nothing: inih returns the line of its first
 *      syntax error, if any.
 *   3. Pass two feeds only the lines before the first known error. The
 *      reader counts lines, so the handler knows the exact line number,
 *      which is inih's own count (one reader call is one whole line).
 *      Section names are taken from our own copy of the header line, so
 *      they are never truncated. A continuation line (indented, after a
 *      key) is appended to its key's value with one space, so the program
 *      handler sees each key exactly once, with the line of the key.
 *      Keys are delivered one step late (when the next line shows they are
 *      complete), in file order.
 *   4. The first error in file order wins, whatever kind it is; after a
 *      handler error the reader returns EOF so inih stops.
 *
 * No inih global is changed: loading is re-entrant and thread-safe (the
 * aggregator reloads its registry on SIGHUP while other threads run).
 */
#include "rsl/ini.h"

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "rsl/util.h"

/* Config files are small; a bound keeps a mistaken path (a log, a disk
 * image) from being slurped. */
#define INI_FILE_MAX_BYTES (1024 * 1024)

#define INI_SYNTAX_MESSAGE "syntax error: expected 'key = value' or '[section]'"

/* State shared by the reader and the handler adapter for one load. */
struct ini_load {
    const char *path;
    const char *buf; /* file contents after the BOM, NUL-terminated */
    size_t len;

    /* Reader position. `line` is the number of lines handed to inih so far,
     * i.e. inih's lineno while it processes the current line. */
    size_t pos;
    int line;
    int stop_line;       /* deliver only lines before this one (first known error) */
    const char *current; /* raw text of the current line, without "\r\n" */
    size_t current_len;
    bool handler_called; /* inih called the adapter for the current line */
    bool line_done;      /* the current line has been classified (pass two) */

    /* Pass two only (deliver == true). */
    bool deliver;
    rsl_ini_handler handler;
    void *ctx;
    char section[RSL_INI_MAX_LINE + 1];
    bool have_key; /* a key was seen in this section: inih's prev_name is set */

    /* The key waiting for possible continuation lines. */
    bool pending;
    char key[RSL_INI_MAX_LINE + 1];
    char *value;
    size_t value_len;
    size_t value_cap;
    int key_line;

    /* First error found in pass two. */
    bool failed;
    int error_code;
    int error_line;
    char error_text[RSL_ERROR_TEXT_MAX];
};

/* Record the first error of pass two and make the reader stop. */
static void ini_fail(struct ini_load *st, int code, int line, const char *text)
{
    if (st->failed)
        return;
    st->failed = true;
    st->error_code = code;
    st->error_line = line;
    snprintf(st->error_text, sizeof(st->error_text), "%s", text);
}

/* Append `n` bytes to the pending value, keeping it NUL-terminated. */
static int ini_value_append(struct ini_load *st, const char *s, size_t n)
{
    if (st->value_len + n + 1 > st->value_cap) {
        size_t cap = st->value_cap == 0 ? 256 : st->value_cap;
        while (cap < st->value_len + n + 1)
            cap *= 2;
        char *grown = realloc(st->value, cap);
        if (grown == NULL)
            return RSL_ENOMEM;
        st->value = grown;
        st->value_cap = cap;
    }
    memcpy(st->value + st->value_len, s, n);
    st->value_len += n;
    st->value[st->value_len] = '\0';
    return RSL_OK;
}

/* Give the pending key to the program's handler. */
static void ini_flush(struct ini_load *st)
{
    if (!st->pending || st->failed)
        return;
    st->pending = false;
    struct rsl_error herr;
    rsl_error_clear(&herr);
    int rc = st->handler(st->ctx, st->section, st->key, st->value != NULL ? st->value : "",
                         st->key_line, &herr);
    if (rc != RSL_OK) {
        /* A handler that forgot its message still gets a readable one. */
        ini_fail(st, rc == RSL_ENOMEM ? RSL_ENOMEM : RSL_ECONFIG, st->key_line,
                 herr.text[0] != '\0' ? herr.text : rsl_strerror(rc));
    }
}

/* Pass two: the line inih just finished did not call the handler, so it was
 * blank, a comment or a section header (syntax errors never get this far).
 * Take the section name from our own copy: inih's is cut at 49 bytes. */
static void ini_finish_line(struct ini_load *st)
{
    const char *s = st->current;
    const char *e = st->current + st->current_len;
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    if (s == e || *s == ';' || *s == '#')
        return;
    /* The previous key is complete; deliver it before judging this line so
     * that errors come out in file order. */
    ini_flush(st);
    if (st->failed)
        return;

    const char *close = s + 1;
    while (close < e && *close != ']')
        close++;
    if (*s != '[' || close == e) {
        ini_fail(st, RSL_ECONFIG, st->line, INI_SYNTAX_MESSAGE);
        return;
    }
    /* inih ignores anything after ']'; "[agent] x" is more likely a typo
     * than intent, so only an inline comment may follow. */
    const char *after = close + 1;
    if (after < e) {
        const char *p = after;
        while (p < e && isspace((unsigned char)*p))
            p++;
        if (p == after || *p != ';') {
            ini_fail(st, RSL_ECONFIG, st->line, "syntax error: unexpected text after ']'");
            return;
        }
    }
    const char *name = s + 1;
    const char *name_end = close;
    while (name < name_end && isspace((unsigned char)*name))
        name++;
    while (name_end > name && isspace((unsigned char)name_end[-1]))
        name_end--;
    if (name == name_end) {
        ini_fail(st, RSL_ECONFIG, st->line, "syntax error: empty section name");
        return;
    }

    size_t n = (size_t)(name_end - name);
    memcpy(st->section, name, n);
    st->section[n] = '\0';
    st->have_key = false;
}

/* Pass two: inih is done with the current line (it asked for the next one
 * or returned); classify it once. */
static void ini_complete_line(struct ini_load *st)
{
    if (!st->deliver || st->line == 0 || st->line_done)
        return;
    st->line_done = true;
    if (!st->handler_called && !st->failed)
        ini_finish_line(st);
}

/* inih's fgets-like reader over the in-memory file: exactly one line per
 * call, so inih's line count is ours. Lines are passed without '\r'. */
static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_load *st = stream;

    ini_complete_line(st);
    if (st->failed || st->pos >= st->len || st->line + 1 >= st->stop_line)
        return NULL;

    const char *p = st->buf + st->pos;
    size_t rest = st->len - st->pos;
    const char *nl = memchr(p, '\n', rest);
    size_t n = nl != NULL ? (size_t)(nl - p) : rest;
    st->pos += n + (nl != NULL ? 1 : 0);
    if (n > 0 && p[n - 1] == '\r')
        n--;
    st->line++;
    /* The pre-scan bounded every line; this guards against an inih built
     * with a smaller buffer than the one we know. */
    if (num < 2 || n > (size_t)num - 2) {
        char text[64];
        snprintf(text, sizeof(text), "line longer than %d characters", num - 2);
        ini_fail(st, RSL_ECONFIG, st->line, text);
        return NULL;
    }
    memcpy(str, p, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    st->current = p;
    st->current_len = n;
    st->handler_called = false;
    st->line_done = false;
    return str;
}

/* Pass one: inih only looks for syntax errors. */
static int ini_ignore_value(void *user, const char *section, const char *name, const char *value)
{
    (void)user;
    (void)section;
    (void)name;
    (void)value;
    return 1;
}

/* Pass two: inih found `name = value` (or a continuation line). Always
 * returns 1: errors are ours to track, and the reader stops inih. */
static int ini_on_value(void *user, const char *section, const char *name, const char *value)
{
    struct ini_load *st = user;
    (void)section; /* ours is untruncated */
    st->handler_called = true;
    if (st->failed)
        return 1;

    bool indented = st->current_len > 0 && isspace((unsigned char)st->current[0]);
    if (indented && st->have_key) {
        /* A continuation line. inih r55 does not strip inline comments
         * here (it does on key lines); strip them the same way. */
        size_t n = 0;
        bool was_space = false;
        while (value[n] != '\0' && !(was_space && value[n] == ';')) {
            was_space = isspace((unsigned char)value[n]);
            n++;
        }
        while (n > 0 && isspace((unsigned char)value[n - 1]))
            n--;
        if (n > 0 && ((st->value_len > 0 && ini_value_append(st, " ", 1) != RSL_OK) ||
                      ini_value_append(st, value, n) != RSL_OK))
            ini_fail(st, RSL_ENOMEM, st->line, "out of memory");
        return 1;
    }

    ini_flush(st);
    if (st->failed)
        return 1;
    if (name[0] == '\0') {
        ini_fail(st, RSL_ECONFIG, st->line, "syntax error: empty key before '='");
        return 1;
    }
    /* Both fit: a line is at most RSL_INI_MAX_LINE bytes. */
    snprintf(st->key, sizeof(st->key), "%s", name);
    st->value_len = 0;
    if (ini_value_append(st, value, strlen(value)) != RSL_OK) {
        ini_fail(st, RSL_ENOMEM, st->line, "out of memory");
        return 1;
    }
    st->pending = true;
    st->key_line = st->line;
    st->have_key = true;
    return 1;
}

/* Find the first line with a NUL byte, a control character or too many
 * bytes. Returns its number (0 if none) and the problem in text. */
static int ini_prescan(const char *buf, size_t len, char *text, size_t textlen)
{
    int line = 1;
    size_t line_bytes = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') {
            line++;
            line_bytes = 0;
            continue;
        }
        if (c == '\r' && i + 1 < len && buf[i + 1] == '\n')
            continue; /* CRLF line end */
        if (c == '\0') {
            snprintf(text, textlen, "NUL byte");
            return line;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            snprintf(text, textlen, "control character 0x%02x", c);
            return line;
        }
        if (++line_bytes > RSL_INI_MAX_LINE) {
            snprintf(text, textlen, "line longer than %d characters", RSL_INI_MAX_LINE);
            return line;
        }
    }
    return 0;
}

int rsl_ini_load(const char *path, rsl_ini_handler handler, void *ctx, struct rsl_error *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    struct rsl_error ferr;
    int rc;

    rsl_error_clear(&ferr);
    if (path == NULL || handler == NULL)
        return rsl_error_set(err, RSL_EINVAL, "rsl_ini_load: no path or handler");
    rc = rsl_file_read_all(path, INI_FILE_MAX_BYTES, &data, &len, &ferr);
    if (rc != RSL_OK) {
        /* ferr already reads "PATH: No such file or directory" etc. */
        return rsl_error_set(err, rc == RSL_ENOENT || rc == RSL_ENOMEM ? rc : RSL_ECONFIG, "%s",
                             ferr.text);
    }
    rc = rsl_ini_parse_buffer((const char *)data, len, path, handler, ctx, err);
    free(data);
    return rc;
}

int rsl_ini_parse_buffer(const char *buf, size_t len, const char *path, rsl_ini_handler handler,
                         void *ctx, struct rsl_error *err)
{
    struct ini_load st;
    char scan_text[64];
    int rc = RSL_OK;

    memset(&st, 0, sizeof(st));
    if (buf == NULL || path == NULL || handler == NULL)
        return rsl_error_set(err, RSL_EINVAL, "rsl_ini_parse_buffer: missing argument");
    if (len > INI_FILE_MAX_BYTES)
        return rsl_error_set(err, RSL_ECONFIG, "%s: larger than %d bytes", path,
                             (int)INI_FILE_MAX_BYTES);

    st.path = path;
    st.buf = buf;
    st.len = len;
    if (len >= 3 && memcmp(st.buf, "\xEF\xBB\xBF", 3) == 0) {
        st.buf += 3;
        st.len -= 3;
    }

    /* The first error of any kind, in file order, is the one reported:
     * each pass only sees the lines before the errors found so far. */
    int scan_line = ini_prescan(st.buf, st.len, scan_text, sizeof(scan_text));
    int first_bad = scan_line > 0 ? scan_line : INT_MAX;

    st.stop_line = first_bad;
    int syntax_line = ini_parse_stream(ini_read_line, &st, ini_ignore_value, &st);
    if (syntax_line < 0) {
        rc = rsl_error_set(err, RSL_ENOMEM, "%s: inih failed (%d)", path, syntax_line);
        goto out;
    }
    if (st.failed) { /* only the reader's own guard can fail pass one */
        rc = rsl_error_set(err, st.error_code, "%s:%d: %s", path, st.error_line, st.error_text);
        goto out;
    }
    if (syntax_line > 0 && syntax_line < first_bad)
        first_bad = syntax_line;

    st.pos = 0;
    st.line = 0;
    st.line_done = false;
    st.stop_line = first_bad;
    st.deliver = true;
    st.handler = handler;
    st.ctx = ctx;
    int late_line = ini_parse_stream(ini_read_line, &st, ini_on_value, &st);
    /* The last line and the last key are complete at end of input. */
    ini_complete_line(&st);
    ini_flush(&st);
    if (!st.failed && late_line > 0) /* cannot happen: pass one saw these lines */
        ini_fail(&st, RSL_ECONFIG, late_line, INI_SYNTAX_MESSAGE);

    if (st.failed) {
        rc = rsl_error_set(err, st.error_code, "%s:%d: %s", path, st.error_line, st.error_text);
    } else if (first_bad == scan_line && scan_line > 0) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s:%d: %s", path, scan_line, scan_text);
    } else if (first_bad != INT_MAX) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s:%d: %s", path, first_bad, INI_SYNTAX_MESSAGE);
    } else {
        rc = RSL_OK;
    }
out:
    free(st.value);
    return rc;
}

/* ASCII whitespace only: section names and list items are ASCII syntax. */
static bool ini_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Copy [s, e) into out[outlen]; RSL_EINVAL if it does not fit. */
static int ini_copy_part(const char *s, const char *e, char *out, size_t outlen)
{
    size_t n = (size_t)(e - s);
    if (out == NULL || outlen == 0 || n >= outlen)
        return RSL_EINVAL;
    memcpy(out, s, n);
    out[n] = '\0';
    return RSL_OK;
}

int rsl_ini_section_split(const char *section, char *kind, size_t kindlen, char *name,
                          size_t namelen)
{
    if (section == NULL)
        section = "";
    const char *s = section;
    while (*s != '\0' && ini_is_space(*s))
        s++;
    const char *kind_end = s;
    while (*kind_end != '\0' && !ini_is_space(*kind_end))
        kind_end++;
    const char *n = kind_end;
    while (*n != '\0' && ini_is_space(*n))
        n++;
    const char *n_end = n + strlen(n);
    while (n_end > n && ini_is_space(n_end[-1]))
        n_end--;

    int rc = ini_copy_part(s, kind_end, kind, kindlen);
    if (rc == RSL_OK)
        rc = ini_copy_part(n, n_end, name, namelen);
    if (rc != RSL_OK) {
        /* Never leave half a result behind. */
        if (kind != NULL && kindlen > 0)
            kind[0] = '\0';
        if (name != NULL && namelen > 0)
            name[0] = '\0';
    }
    return rc;
}

int rsl_list_next(const char **cursor, char *item, size_t itemlen)
{
    if (item != NULL && itemlen > 0)
        item[0] = '\0';
    if (cursor == NULL || *cursor == NULL)
        return 0;
    const char *p = *cursor;
    while (*p != '\0' && (ini_is_space(*p) || *p == ','))
        p++; /* empty items ("a,,b", trailing ',') are skipped */
    if (*p == '\0') {
        *cursor = p;
        return 0;
    }
    const char *end = p;
    while (*end != '\0' && *end != ',')
        end++;
    const char *last = end;
    while (last > p && ini_is_space(last[-1]))
        last--;
    if (item == NULL || itemlen == 0 || (size_t)(last - p) >= itemlen)
        return RSL_ETOOBIG; /* cursor stays on the item that failed */
    memcpy(item, p, (size_t)(last - p));
    item[last - p] = '\0';
    *cursor = end;
    return 1;
}
