/*
 * lineformat.c - strict parser of collector output (ARCHITECTURE section 4).
 *
 *   <indicator> <value> [<unit>] [<observed_at_ms>]     # comment
 *
 * The input comes from programs and files we do not control, so the parser
 * is all-or-nothing: the first bad line rejects the whole input with
 * "ORIGIN:LINE: what", and a half-parsed batch is never returned (a
 * collector printing garbage should be noticed, not partly believed).
 *
 * Rules, in the order they are checked for each line:
 *   - a NUL byte anywhere, or a line over RSL_LINEFORMAT_MAX_LINE bytes
 *     (without its "\n" or "\r\n"), is an error;
 *   - '#' starts a comment, at the start of a line or after fields (no
 *     field may contain '#': ids, numbers and units never do);
 *   - fields are separated by spaces or tabs; a line without fields is
 *     skipped; more than 4 fields is an error;
 *   - the indicator must pass rsl_valid_indicator_id, the value
 *     rsl_parse_double (finite, plain decimal);
 *   - a third field of digits only is observed_at_ms, otherwise a unit
 *     (rsl_valid_unit); the fourth field, after a unit, is observed_at_ms;
 *     observed_at_ms is digits only and > 0;
 *   - at most max_samples samples (RSL_ETOOBIG beyond).
 */
#include "rsl/lineformat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

#define LF_MAX_FIELDS 4
#define LF_SHOW_MAX 48 /* characters of a bad field quoted in a message */

static bool lf_all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* observed_at_ms: digits only (no sign, no blanks), 1..INT64_MAX. */
static int lf_parse_time(const char *s, int64_t *out)
{
    if (!lf_all_digits(s) || rsl_parse_int64(s, 1, INT64_MAX, out) != RSL_OK)
        return RSL_EINVAL;
    return RSL_OK;
}

/* Parse one line (NUL-terminated, modified in place) into *sample.
 * Returns 1 for a sample, 0 for a blank or comment line, or an error. */
static int lf_parse_line(char *line, const char *origin, int lineno, struct rsl_sample *sample,
                         struct rsl_error *err)
{
    char shown[LF_SHOW_MAX + 4];
    char *fields[LF_MAX_FIELDS];
    size_t n = 0;

    char *hash = strchr(line, '#');
    if (hash != NULL)
        *hash = '\0';
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        if (n == LF_MAX_FIELDS)
            return rsl_error_set(err, RSL_EPARSE,
                                 "%s:%d: too many fields (expected '<indicator> <value> [<unit>] "
                                 "[<observed_at_ms>]')",
                                 origin, lineno);
        fields[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t')
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
    if (n == 0)
        return 0;
    if (n == 1)
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: missing value (expected '<indicator> <value> [<unit>] "
                             "[<observed_at_ms>]')",
                             origin, lineno);

    memset(sample, 0, sizeof(*sample));
    if (!rsl_valid_indicator_id(fields[0]))
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: bad indicator id '%s' (lowercase letters, digits, '_' and "
                             "'.', starting with a letter, at most %d)",
                             origin, lineno, rsl_text_show(fields[0], shown, sizeof(shown)), RSL_INDICATOR_ID_MAX);
    /* rsl_valid_indicator_id bounds the length; the copy always fits. */
    snprintf(sample->indicator, sizeof(sample->indicator), "%s", fields[0]);

    if (rsl_parse_double(fields[1], &sample->value) != RSL_OK)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d: %s: value is not a finite number: '%s'",
                             origin, lineno, sample->indicator, rsl_text_show(fields[1], shown, sizeof(shown)));

    size_t next = 2;
    if (n > next && !lf_all_digits(fields[next])) {
        if (!rsl_valid_unit(fields[next]))
            return rsl_error_set(err, RSL_EPARSE,
                                 "%s:%d: %s: bad unit '%s' (letters, digits and _%%/.-, at most "
                                 "%d)",
                                 origin, lineno, sample->indicator, rsl_text_show(fields[next], shown, sizeof(shown)),
                                 RSL_UNIT_MAX);
        snprintf(sample->unit, sizeof(sample->unit), "%s", fields[next]);
        next++;
    }
    if (n > next) {
        if (lf_parse_time(fields[next], &sample->observed_at_ms) != RSL_OK)
            return rsl_error_set(err, RSL_EPARSE,
                                 "%s:%d: %s: observed_at_ms must be unix milliseconds > 0: '%s'",
                                 origin, lineno, sample->indicator, rsl_text_show(fields[next], shown, sizeof(shown)));
        next++;
    }
    if (n > next) /* e.g. "<id> <value> <ms> <extra>" */
        return rsl_error_set(err, RSL_EPARSE,
                             "%s:%d: too many fields (expected '<indicator> <value> [<unit>] "
                             "[<observed_at_ms>]')",
                             origin, lineno);
    return 1;
}

int rsl_lineformat_parse(const char *buf, size_t len, const char *origin, size_t max_samples,
                         struct rsl_sample **out, size_t *n, struct rsl_error *err)
{
    struct rsl_sample *samples = NULL;
    size_t count = 0, cap = 0;
    char line[RSL_LINEFORMAT_MAX_LINE + 1];
    int lineno = 0;
    int rc = RSL_OK;

    if (out != NULL)
        *out = NULL;
    if (n != NULL)
        *n = 0;
    if (out == NULL || n == NULL || (buf == NULL && len > 0))
        return rsl_error_set(err, RSL_EINVAL, "rsl_lineformat_parse: bad arguments");
    if (origin == NULL)
        origin = "input";

    size_t pos = 0;
    while (pos < len) {
        const char *start = buf + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t raw = nl != NULL ? (size_t)(nl - start) : len - pos;
        pos += raw + (nl != NULL ? 1 : 0);
        lineno++;
        if (raw > 0 && start[raw - 1] == '\r')
            raw--; /* CRLF */
        if (memchr(start, '\0', raw) != NULL) {
            rc = rsl_error_set(err, RSL_EPARSE, "%s:%d: NUL byte", origin, lineno);
            goto out;
        }
        if (raw > RSL_LINEFORMAT_MAX_LINE) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s:%d: line longer than %d characters", origin,
                               lineno, RSL_LINEFORMAT_MAX_LINE);
            goto out;
        }
        memcpy(line, start, raw);
        line[raw] = '\0';

        struct rsl_sample sample;
        rc = lf_parse_line(line, origin, lineno, &sample, err);
        if (rc < 0)
            goto out;
        if (rc == 0)
            continue;
        rc = RSL_OK;
        if (count == max_samples) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s:%d: more than %zu measurements", origin,
                               lineno, max_samples);
            goto out;
        }
        if (count == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            if (ncap > max_samples)
                ncap = max_samples;
            struct rsl_sample *grown = realloc(samples, ncap * sizeof(*grown));
            if (grown == NULL) {
                rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", origin);
                goto out;
            }
            samples = grown;
            cap = ncap;
        }
        samples[count++] = sample;
    }
    *out = samples;
    *n = count;
    samples = NULL; /* transferred */
    rc = RSL_OK;
out:
    free(samples);
    return rc;
}
