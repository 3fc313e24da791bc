/*
 * seq.c - persisted, never reused sequence numbers (see seq.h).
 *
 * Invariant: the file's number is always >= s->next, and every number ever
 * returned is < the file's number. Persisting happens before returning, so
 * the invariant survives a crash at any instruction.
 */
#include "seq.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/util.h"

/* Generous for "9223372036854775807\n" but small enough to refuse junk. */
#define SEQ_FILE_MAX 64

struct agent_seq {
    char *path;
    uint64_t next; /* next number to hand out; the file holds at least this */
};

static int persist(struct agent_seq *s, uint64_t value, struct rsl_error *err)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", value);
    return rsl_file_write_atomic(s->path, text, (size_t)n, 0600, err);
}

int agent_seq_open(const char *path, struct agent_seq **out, struct rsl_error *err)
{
    struct agent_seq *s = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    s->next = 1;
    rc = rsl_file_read_all(path, SEQ_FILE_MAX, &buf, &len, err);
    if (rc == RSL_ENOENT) {
        rsl_error_clear(err);
        rc = RSL_OK; /* fresh spool */
    } else if (rc == RSL_ETOOBIG) {
        rc = rsl_error_set(err, RSL_ECORRUPT, "%s: not a sequence counter (too large)", path);
        goto out;
    } else if (rc != RSL_OK) {
        goto out;
    } else {
        /* A NUL byte inside would hide the rest of the file from the
         * string parse: refuse it like any other junk. */
        uint64_t v;
        char *text = NULL;
        if (memchr(buf, '\0', len) == NULL)
            text = rsl_trim((char *)buf);
        if (text == NULL || rsl_parse_uint64(text, &v) != RSL_OK || v < 1 ||
            v > (uint64_t)INT64_MAX) {
            rc = rsl_error_set(err, RSL_ECORRUPT,
                               "%s: does not hold a sequence number (1..%" PRId64
                               "); refusing to guess the next free number",
                               path, INT64_MAX);
            goto out;
        }
        s->next = v;
    }
    *out = s;
    s = NULL; /* transferred */
out:
    free(buf);
    agent_seq_close(&s);
    return rc;
}

void agent_seq_close(struct agent_seq **seq)
{
    if (seq == NULL || *seq == NULL)
        return;
    free((*seq)->path);
    free(*seq);
    *seq = NULL;
}

uint64_t agent_seq_peek(const struct agent_seq *seq)
{
    return seq->next;
}

int agent_seq_raise(struct agent_seq *seq, uint64_t min_next, struct rsl_error *err)
{
    if (min_next <= seq->next)
        return RSL_OK;
    int rc = persist(seq, min_next, err);
    if (rc == RSL_OK)
        seq->next = min_next;
    return rc;
}

int agent_seq_take(struct agent_seq *seq, uint64_t *out, struct rsl_error *err)
{
    *out = 0;
    if (seq->next >= (uint64_t)INT64_MAX)
        return rsl_error_set(err, RSL_ETOOBIG, "%s: sequence numbers exhausted", seq->path);
    uint64_t n = seq->next;
    int rc = persist(seq, n + 1, err);
    if (rc != RSL_OK)
        return rc;
    seq->next = n + 1;
    *out = n;
    return RSL_OK;
}
