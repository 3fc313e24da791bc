/*
 * spool.c - the crash-safe outbox (see spool.h for layout and guarantees).
 *
 * The folders stay open as O_DIRECTORY descriptors for the spool's life:
 * every file operation is an *at() call relative to them and every
 * "make this durable" is an fsync of the right folder descriptor. That keeps
 * the order of durable steps visible in the code:
 *   append:     write tmp/X, fsync X, rename tmp/X -> pending/X, fsync pending/
 *   remove:     unlink pending/X, fsync pending/
 *   reject:     write rejected/X.reason (durably), rename pending/X ->
 *               rejected/X, fsync rejected/, fsync pending/
 *   quarantine: rename pending/X -> corrupt/X, fsync corrupt/, fsync pending/
 * The rename into pending/ is what makes an entry exist, so a crash leaves
 * either no entry or a whole one (plus, maybe, a file in tmp/ that the next
 * open removes).
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "rsl/log.h"
#include "rsl/util.h"

#define SPOOL_MAGIC "RSLSPOOL"
#define SPOOL_NAME_DIGITS 20
#define SPOOL_NAME_LEN (SPOOL_NAME_DIGITS + 4) /* "%020llu.rpt" */
#define SPOOL_HASHED_HEADER 32                 /* header bytes covered by the checksum */

enum { DIR_PENDING, DIR_REJECTED, DIR_CORRUPT, DIR_TMP, DIR_COUNT };
static const char *const dir_names[DIR_COUNT] = {"pending", "rejected", "corrupt", "tmp"};

struct agent_spool {
    char *path;
    int dirfd[DIR_COUNT];
    uint64_t count;        /* entries in pending/ */
    uint64_t max_sequence; /* highest sequence seen anywhere */
};

/* ---- small helpers ------------------------------------------------------- */

static int errno_code(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? RSL_ENOSPC : RSL_EIO;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void entry_name(uint64_t sequence, char out[SPOOL_NAME_LEN + 1])
{
    snprintf(out, SPOOL_NAME_LEN + 1, "%020" PRIu64 ".rpt", sequence);
}

/* Sequence of an entry name "%020llu.rpt" (suffix ".rpt" or, in rejected/,
 * ".reason"); 0 when the name is not one. */
static uint64_t name_sequence(const char *name, const char *suffix)
{
    for (int i = 0; i < SPOOL_NAME_DIGITS; i++)
        if (name[i] < '0' || name[i] > '9')
            return 0;
    if (strcmp(name + SPOOL_NAME_DIGITS, suffix) != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < SPOOL_NAME_DIGITS; i++) {
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return v <= (uint64_t)INT64_MAX ? v : 0;
}

static int fsync_dirfd(const struct agent_spool *s, int which, struct rsl_error *err)
{
    if (fsync(s->dirfd[which]) != 0)
        return rsl_error_set(err, errno_code(errno), "%s/%s: fsync: %s", s->path,
                             dir_names[which], strerror(errno));
    return RSL_OK;
}

/* Read exactly len bytes: 1 on success, 0 on early EOF, -1 on error. */
static int read_exact(int fd, uint8_t *p, size_t len)
{
    size_t got = 0;
    if (rsl_read_full(fd, p, len, &got) != 0)
        return -1;
    return got == len ? 1 : 0;
}

static void checksum(const uint8_t header[AGENT_SPOOL_HEADER_BYTES], const uint8_t *payload,
                     size_t len, uint8_t out[32])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, header, SPOOL_HASHED_HEADER);
    crypto_hash_sha256_update(&st, payload, len);
    crypto_hash_sha256_final(&st, out);
}

/* Move pending/<name> to corrupt/<name> and say so; start-up and reads go on. */
static void quarantine(struct agent_spool *s, const char *name, const char *why)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    if (renameat(s->dirfd[DIR_PENDING], name, s->dirfd[DIR_CORRUPT], name) != 0) {
        RSL_ERR("spool", "%s/pending/%s: %s; cannot move it to corrupt/: %s", s->path, name, why,
                strerror(errno));
        return;
    }
    if (fsync_dirfd(s, DIR_CORRUPT, &err) != RSL_OK || fsync_dirfd(s, DIR_PENDING, &err) != RSL_OK)
        RSL_WARN("spool", "%s", err.text);
    if (name_sequence(name, ".rpt") != 0 && s->count > 0)
        s->count--;
    RSL_WARN("spool", "%s/pending/%s: %s; moved to corrupt/", s->path, name, why);
}

/* ---- open / close -------------------------------------------------------- */

/* Remove everything in tmp/: appends that never reached pending/. */
static int clean_tmp(struct agent_spool *s, struct rsl_error *err)
{
    int fd = openat(s->dirfd[DIR_TMP], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return rsl_error_set(err, RSL_EIO, "%s/tmp: %s", s->path, strerror(errno));
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return rsl_error_set(err, RSL_EIO, "%s/tmp: %s", s->path, strerror(errno));
    }
    unsigned removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || strcmp(de->d_name, "..") == 0))
            continue;
        if (unlinkat(s->dirfd[DIR_TMP], de->d_name, 0) == 0)
            removed++;
        else
            RSL_WARN("spool", "%s/tmp/%s: cannot remove: %s", s->path, de->d_name,
                     strerror(errno));
    }
    closedir(d);
    if (removed > 0)
        RSL_INFO("spool", "removed %u unfinished entr%s from %s/tmp", removed,
                 removed == 1 ? "y" : "ies", s->path);
    return RSL_OK;
}

/* Count pending/ and find the highest sequence in pending/, rejected/ and
 * corrupt/; names in pending/ that are not entries go to corrupt/. */
static int scan(struct agent_spool *s, int which, struct rsl_error *err)
{
    int fd = openat(s->dirfd[which], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return rsl_error_set(err, RSL_EIO, "%s/%s: %s", s->path, dir_names[which],
                             strerror(errno));
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return rsl_error_set(err, RSL_EIO, "%s/%s: %s", s->path, dir_names[which],
                             strerror(errno));
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        uint64_t seq = name_sequence(name, ".rpt");
        if (seq == 0 && which == DIR_REJECTED)
            seq = name_sequence(name, ".reason");
        if (seq == 0 && which == DIR_PENDING) {
            /* Renaming out of the folder being read is safe: readdir may
             * or may not show the entry again, and it is gone either way. */
            quarantine(s, name, "not a spool entry name");
            continue;
        }
        if (which == DIR_PENDING)
            s->count++;
        if (seq > s->max_sequence)
            s->max_sequence = seq;
    }
    closedir(d);
    return RSL_OK;
}

int agent_spool_open(const char *dir, struct agent_spool **out, struct rsl_error *err)
{
    struct agent_spool *s = NULL;
    char sub[4096];
    int rc;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(dir)) == NULL) {
        free(s);
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    }
    for (int i = 0; i < DIR_COUNT; i++)
        s->dirfd[i] = -1;
    for (int i = 0; i < DIR_COUNT; i++) {
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, dir_names[i]) >= (int)sizeof(sub)) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", dir);
            goto out;
        }
        if ((rc = rsl_mkdir_p(sub, 0700, err)) != RSL_OK)
            goto out;
        s->dirfd[i] = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dirfd[i] < 0) {
            rc = rsl_error_set(err, RSL_EIO, "%s: %s", sub, strerror(errno));
            goto out;
        }
    }
    /* The new sub-folders must survive a crash too. */
    if ((rc = rsl_fsync_dir(dir, err)) != RSL_OK)
        goto out;
    if ((rc = clean_tmp(s, err)) != RSL_OK)
        goto out;
    for (int i = DIR_PENDING; i <= DIR_CORRUPT; i++)
        if ((rc = scan(s, i, err)) != RSL_OK)
            goto out;
    *out = s;
    s = NULL; /* transferred */
out:
    agent_spool_close(&s);
    return rc;
}

void agent_spool_close(struct agent_spool **spool)
{
    if (spool == NULL || *spool == NULL)
        return;
    struct agent_spool *s = *spool;
    for (int i = 0; i < DIR_COUNT; i++)
        if (s->dirfd[i] >= 0)
            close(s->dirfd[i]);
    free(s->path);
    free(s);
    *spool = NULL;
}

/* ---- entries ------------------------------------------------------------- */

int agent_spool_append(struct agent_spool *s, uint64_t sequence, const uint8_t *data, size_t len,
                       struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    uint8_t header[AGENT_SPOOL_HEADER_BYTES];
    int fd = -1;
    int rc = RSL_OK;
    bool created = false;

    if (sequence == 0 || sequence > (uint64_t)INT64_MAX)
        return rsl_error_set(err, RSL_EINVAL, "spool: sequence %" PRIu64 " out of range", sequence);
    if (len > AGENT_SPOOL_ENTRY_MAX)
        return rsl_error_set(err, RSL_ETOOBIG, "spool: entry of %zu bytes is over %d", len,
                             AGENT_SPOOL_ENTRY_MAX);
    entry_name(sequence, name);

    memset(header, 0, sizeof(header));
    memcpy(header, SPOOL_MAGIC, 8);
    put_be32(header + 8, AGENT_SPOOL_FORMAT_VERSION);
    put_be32(header + 12, AGENT_SPOOL_HEADER_BYTES);
    put_be64(header + 16, sequence);
    put_be64(header + 24, (uint64_t)len);
    checksum(header, data, len, header + SPOOL_HASHED_HEADER);

    fd = openat(s->dirfd[DIR_TMP], name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: %s", s->path, name,
                           strerror(errno));
        goto out;
    }
    created = true;
    if (rsl_write_full(fd, header, sizeof(header)) != 0 || rsl_write_full(fd, data, len) != 0 ||
        fsync(fd) != 0) {
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: %s", s->path, name,
                           strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: close: %s", s->path, name,
                           strerror(errno));
        goto out;
    }
    fd = -1;
    /* RENAME_NOREPLACE: an existing pending entry with this sequence would
     * mean a reused number; refuse rather than overwrite a report. */
    if (renameat2(s->dirfd[DIR_TMP], name, s->dirfd[DIR_PENDING], name, RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST) {
            rc = rsl_error_set(err, RSL_EEXIST, "%s/pending/%s: already exists", s->path, name);
            goto out;
        }
        if (errno != EINVAL && errno != ENOSYS) {
            rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: rename: %s", s->path, name,
                               strerror(errno));
            goto out;
        }
        /* File system without RENAME_NOREPLACE: check, then plain rename
         * (we are the spool's only writer). */
        struct stat st;
        if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            rc = rsl_error_set(err, RSL_EEXIST, "%s/pending/%s: already exists", s->path, name);
            goto out;
        }
        if (renameat(s->dirfd[DIR_TMP], name, s->dirfd[DIR_PENDING], name) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: rename: %s", s->path, name,
                               strerror(errno));
            goto out;
        }
    }
    created = false; /* it is in pending/ now */
    s->count++;
    if (sequence > s->max_sequence)
        s->max_sequence = sequence;
    rc = fsync_dirfd(s, DIR_PENDING, err);
out:
    if (fd >= 0)
        close(fd);
    if (created)
        unlinkat(s->dirfd[DIR_TMP], name, 0);
    return rc;
}

int agent_spool_read(struct agent_spool *s, uint64_t sequence, size_t max_len, uint8_t **data,
                     size_t *len, struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    uint8_t header[AGENT_SPOOL_HEADER_BYTES];
    uint8_t sum[32];
    uint8_t *buf = NULL;
    const char *why = NULL;
    struct stat st;
    int fd = -1;
    int rc = RSL_OK;

    *data = NULL;
    *len = 0;
    entry_name(sequence, name);
    fd = openat(s->dirfd[DIR_PENDING], name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s",
                           s->path, name, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: %s", s->path, name, strerror(errno));
        goto out;
    }
    /* Every check below is on bytes that may have been damaged on disk:
     * bound everything before allocating. */
    if (!S_ISREG(st.st_mode)) {
        why = "not a regular file";
        goto out;
    }
    if ((uint64_t)st.st_size < AGENT_SPOOL_HEADER_BYTES) {
        why = "shorter than the entry header";
        goto out;
    }
    int r = read_exact(fd, header, sizeof(header));
    if (r < 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: %s", s->path, name, strerror(errno));
        goto out;
    }
    if (r == 0 || memcmp(header, SPOOL_MAGIC, 8) != 0) {
        why = "bad entry header";
        goto out;
    }
    if (get_be32(header + 8) != AGENT_SPOOL_FORMAT_VERSION ||
        get_be32(header + 12) != AGENT_SPOOL_HEADER_BYTES) {
        why = "unknown entry format version";
        goto out;
    }
    uint64_t plen = get_be64(header + 24);
    if (get_be64(header + 16) != sequence || plen != (uint64_t)st.st_size - AGENT_SPOOL_HEADER_BYTES ||
        plen > AGENT_SPOOL_ENTRY_MAX) {
        why = "entry header does not match the file";
        goto out;
    }
    buf = malloc(plen == 0 ? 1 : (size_t)plen);
    if (buf == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    r = read_exact(fd, buf, (size_t)plen);
    if (r < 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: %s", s->path, name, strerror(errno));
        goto out;
    }
    if (r == 0) {
        why = "truncated";
        goto out;
    }
    checksum(header, buf, (size_t)plen, sum);
    if (!rsl_consttime_equal(sum, header + SPOOL_HASHED_HEADER, sizeof(sum))) {
        why = "checksum mismatch";
        goto out;
    }
    if (plen > max_len) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s/pending/%s: %" PRIu64 " bytes, over %zu",
                           s->path, name, plen, max_len);
        goto out;
    }
    *data = buf;
    *len = (size_t)plen;
    buf = NULL; /* transferred */
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    if (why != NULL) {
        quarantine(s, name, why);
        rc = rsl_error_set(err, RSL_ECORRUPT, "%s/pending/%s: %s; moved to corrupt/", s->path,
                           name, why);
    }
    return rc;
}

int agent_spool_remove(struct agent_spool *s, uint64_t sequence, struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    entry_name(sequence, name);
    if (unlinkat(s->dirfd[DIR_PENDING], name, 0) != 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s",
                             s->path, name, strerror(errno));
    if (s->count > 0)
        s->count--;
    return fsync_dirfd(s, DIR_PENDING, err);
}

int agent_spool_reject(struct agent_spool *s, uint64_t sequence, const char *reason,
                       struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    char reason_path[4096];
    char *text = NULL;
    int rc;

    entry_name(sequence, name);
    if (snprintf(reason_path, sizeof(reason_path), "%s/rejected/%020" PRIu64 ".reason", s->path,
                 sequence) >= (int)sizeof(reason_path))
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", s->path);
    struct stat st;
    if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s",
                             s->path, name, strerror(errno));
    /* The reason first: if we crash before the rename the entry is still
     * pending, is sent again and earns the same answer. */
    size_t rlen = strlen(reason);
    text = malloc(rlen + 2);
    if (text == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    memcpy(text, reason, rlen);
    text[rlen] = '\n';
    text[rlen + 1] = '\0';
    rc = rsl_file_write_atomic(reason_path, text, rlen + 1, 0600, err);
    free(text);
    if (rc != RSL_OK)
        return rc;
    if (renameat(s->dirfd[DIR_PENDING], name, s->dirfd[DIR_REJECTED], name) != 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO,
                             "%s/pending/%s: move to rejected/: %s", s->path, name,
                             strerror(errno));
    if (s->count > 0)
        s->count--;
    if ((rc = fsync_dirfd(s, DIR_REJECTED, err)) != RSL_OK)
        return rc;
    return fsync_dirfd(s, DIR_PENDING, err);
}

int agent_spool_list(struct agent_spool *s, uint64_t after, uint64_t *out, size_t max, size_t *n,
                     struct rsl_error *err)
{
    *n = 0;
    if (max == 0)
        return RSL_OK;
    int fd = openat(s->dirfd[DIR_PENDING], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return rsl_error_set(err, RSL_EIO, "%s/pending: %s", s->path, strerror(errno));
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return rsl_error_set(err, RSL_EIO, "%s/pending: %s", s->path, strerror(errno));
    }
    /* Keep the `max` smallest sequences above `after` in out[], sorted:
     * insertion into a short array, O(entries * max) with max ~ 32. */
    size_t have = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq = name_sequence(de->d_name, ".rpt");
        if (seq == 0 || seq <= after)
            continue;
        if (have == max && seq >= out[max - 1])
            continue;
        size_t i = have < max ? have++ : max - 1;
        while (i > 0 && out[i - 1] > seq) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = seq;
    }
    closedir(d);
    *n = have;
    return RSL_OK;
}

uint64_t agent_spool_count(const struct agent_spool *s)
{
    return s->count;
}

uint64_t agent_spool_max_sequence(const struct agent_spool *s)
{
    return s->max_sequence;
}
