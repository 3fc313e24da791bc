/*
 * seq.c - persisted, never reused sequence numbers shared by processes
 * (see seq.h).
 *
 * Invariant: every number this process has reserved, [next, limit), and
 * every number it ever returned lies below the file's number, and the file
 * only grows while the lock is held. Reading the file again under the lock
 * before each reservation is what lets several processes share it: each
 * starts from wherever the others left it. Persisting happens before a
 * number is returned, so the invariant survives a crash at any instruction.
 */
#include "seq.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "rsl/util.h"

/* Generous for "9223372036854775807\n" but small enough to refuse junk. */
#define SEQ_FILE_MAX 64
#define SEQ_RESERVE_MAX 4096

struct agent_seq {
    char *path;
    int lock_fd;
    unsigned lock_depth;
    unsigned reserve;  /* numbers per reservation */
    uint64_t next;     /* next number to hand out */
    uint64_t limit;    /* end of the reserved block (exclusive); next == limit: none */
};

static int persist(struct agent_seq *s, uint64_t value, struct rsl_error *err)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", value);
    return rsl_file_write_atomic(s->path, text, (size_t)n, 0600, err);
}

/* The file's number; 1 when there is no file yet. */
static int read_file(const struct agent_seq *s, uint64_t *out, struct rsl_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = rsl_file_read_all(s->path, SEQ_FILE_MAX, &buf, &len, err);
    *out = 1;
    if (rc == RSL_ENOENT) {
        rsl_error_clear(err);
        return RSL_OK; /* fresh spool */
    }
    if (rc == RSL_ETOOBIG)
        return rsl_error_set(err, RSL_ECORRUPT, "%s: not a sequence counter (too large)",
                             s->path);
    if (rc != RSL_OK)
        return rc;
    /* A NUL byte inside would hide the rest of the file from the string
     * parse: refuse it like any other junk. */
    uint64_t v;
    char *text = NULL;
    if (memchr(buf, '\0', len) == NULL)
        text = rsl_trim((char *)buf);
    if (text == NULL || rsl_parse_uint64(text, &v) != RSL_OK || v < 1 || v > (uint64_t)INT64_MAX)
        rc = rsl_error_set(err, RSL_ECORRUPT,
                           "%s: does not hold a sequence number (1..%" PRId64
                           "); refusing to guess the next free number",
                           s->path, INT64_MAX);
    else
        *out = v;
    free(buf);
    return rc;
}

int agent_seq_lock(struct agent_seq *s, struct rsl_error *err)
{
    if (s->lock_depth > 0) {
        s->lock_depth++;
        return RSL_OK;
    }
    if (s->lock_fd < 0) {
        /* Opened at first use: the folder may not exist when the counter
         * is opened (a fresh spool is created after it). */
        char lock_path[PATH_MAX];
        if (snprintf(lock_path, sizeof(lock_path), "%s.lock", s->path) >= (int)sizeof(lock_path))
            return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", s->path);
        s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (s->lock_fd < 0)
            return rsl_error_set(err, RSL_EIO, "%s: %s", lock_path, strerror(errno));
    }
    while (flock(s->lock_fd, LOCK_EX) != 0) {
        if (errno != EINTR)
            return rsl_error_set(err, RSL_EIO, "%s.lock: flock: %s", s->path, strerror(errno));
    }
    s->lock_depth = 1;
    return RSL_OK;
}

void agent_seq_unlock(struct agent_seq *s)
{
    if (s->lock_depth == 0)
        return;
    if (--s->lock_depth == 0)
        flock(s->lock_fd, LOCK_UN);
}

int agent_seq_open(const char *path, struct agent_seq **out, struct rsl_error *err)
{
    struct agent_seq *s = NULL;
    uint64_t v = 1;
    int rc;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    }
    s->lock_fd = -1;
    s->reserve = 1;
    /* No lock needed to read: the file is only ever replaced by rename,
     * so a reader sees the old or the new number, never a mix. */
    if ((rc = read_file(s, &v, err)) != RSL_OK)
        goto out;
    s->next = s->limit = v;
    *out = s;
    s = NULL; /* transferred */
out:
    agent_seq_close(&s);
    return rc;
}

void agent_seq_close(struct agent_seq **seq)
{
    if (seq == NULL || *seq == NULL)
        return;
    if ((*seq)->lock_fd >= 0)
        close((*seq)->lock_fd); /* drops the lock too */
    free((*seq)->path);
    free(*seq);
    *seq = NULL;
}

void agent_seq_set_reserve(struct agent_seq *s, unsigned block)
{
    s->reserve = block < 1 ? 1 : block > SEQ_RESERVE_MAX ? SEQ_RESERVE_MAX : block;
}

uint64_t agent_seq_peek(const struct agent_seq *seq)
{
    return seq->next;
}

int agent_seq_raise(struct agent_seq *s, uint64_t min_next, struct rsl_error *err)
{
    uint64_t file;
    int rc;
    if (min_next <= s->next)
        return RSL_OK;
    if ((rc = agent_seq_lock(s, err)) != RSL_OK)
        return rc;
    if ((rc = read_file(s, &file, err)) == RSL_OK && min_next > file)
        rc = persist(s, min_next, err);
    agent_seq_unlock(s);
    if (rc == RSL_OK)
        s->next = s->limit = min_next > file ? min_next : file; /* the block, if any, is void */
    return rc;
}

int agent_seq_take(struct agent_seq *s, uint64_t *out, struct rsl_error *err)
{
    uint64_t file;
    int rc;
    *out = 0;
    if (s->next < s->limit) {
        *out = s->next++;
        return RSL_OK;
    }
    if ((rc = agent_seq_lock(s, err)) != RSL_OK)
        return rc;
    if ((rc = read_file(s, &file, err)) != RSL_OK)
        goto out;
    /* Start where the file says, but never below what this process has
     * already used (a counter file rolled back behind our back). */
    uint64_t base = file > s->next ? file : s->next;
    if (base >= (uint64_t)INT64_MAX) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s: sequence numbers exhausted", s->path);
        goto out;
    }
    uint64_t limit = base + s->reserve;
    if (limit > (uint64_t)INT64_MAX)
        limit = (uint64_t)INT64_MAX;
    if ((rc = persist(s, limit, err)) != RSL_OK)
        goto out;
    s->next = base;
    s->limit = limit;
    *out = s->next++;
out:
    agent_seq_unlock(s);
    return rc;
}

int agent_seq_release(struct agent_seq *s, struct rsl_error *err)
{
    uint64_t file;
    int rc;
    if (s->next >= s->limit)
        return RSL_OK;
    if ((rc = agent_seq_lock(s, err)) != RSL_OK)
        return rc;
    if ((rc = read_file(s, &file, err)) == RSL_OK && file == s->limit) {
        rc = persist(s, s->next, err);
        if (rc == RSL_OK)
            s->limit = s->next;
    }
    agent_seq_unlock(s);
    return rc;
}
