/*
 * spool.c - the crash-safe, bounded outbox (see spool.h for layout and
 * guarantees).
 *
 * The folders stay open as O_DIRECTORY descriptors for the spool's life:
 * every file operation is an *at() call relative to them and every
 * "make this durable" is an fsync of the right folder descriptor. That keeps
 * the order of durable steps visible in the code:
 *   append:     write tmp/X, fsync X, rename tmp/X -> pending/X, fsync pending/
 *   remove:     unlink pending/X (fsync pending/ batched: agent_spool_sync)
 *   reject:     write rejected/X.reason (durably), rename pending/X ->
 *               rejected/X, fsync rejected/, fsync pending/
 *   quarantine: rename pending/X -> corrupt/X, fsync corrupt/, fsync pending/
 *   drop:       write counters (+n, "dropping X Y ...") durably, unlink
 *               pending/X, Y ..., fsync pending/
 * The rename into pending/ is what makes an entry exist, so a crash leaves
 * either no entry or a whole one (plus, maybe, a file in tmp/ that the next
 * open removes). A drop is counted before it happens and the counters file
 * names what it is dropping, so the next open finishes an interrupted drop
 * and the counters never disagree with what was lost.
 *
 * File recycling: creating and deleting a file per report costs the file
 * system an inode allocation and a free (and, mounted with discard, a
 * discard) per report - most of the agent's CPU time on ext4 without a
 * journal. So the owner does not unlink an acked entry but renames it into
 * tmp/ as "recycle-N", and the next append overwrites such a file in place
 * (pwrite, ftruncate, fsync) before renaming it into pending/. A recycled
 * file is reused only after agent_spool_sync made its removal from
 * pending/ durable: otherwise a power cut could bring back pending/<old>
 * holding a new report's bytes (it would be quarantined as corrupt, as its
 * header names another sequence - safe, but confusing). At most
 * RECYCLE_MAX files wait in tmp/; tmp/ is emptied at every open.
 *
 * Removal off the loop thread: even with recycling, a deep spool draining
 * after an outage frees one file per acked report, and an unlink of a
 * small file costs ext4 (journal, block and inode bitmaps, a discard) about
 * ten times a stat - and its journal work slows every fsync on the same
 * file system, the aggregator's commits too when it shares the machine. So
 * an acked entry the recycler does not take is marked dead - its mode set
 * to 0000, about the cost of a stat - and queued, and a reaper thread at
 * the lowest CPU priority (SCHED_IDLE) unlinks the queue once the drain is
 * over (REAP_QUIET_MS after an ack that left the spool empty; REAP_IDLE_MS
 * after the last ack if it stalled): the drain runs at the speed of
 * sending, the clean-up after it. Every view of pending/ skips dead
 * entries (they are neither listed, read, counted nor dropped; `status`
 * from another process skips them too), the next open removes any a crash
 * left behind, and a dead entry the chmod did not make durable before a
 * power cut is sent again and answered DUPLICATE, as an acked entry whose
 * unlink was lost always was. The queue is a sorted set of sequence
 * ranges; when it is full the loop thread unlinks at once as before. Queued files still take
 * disk space: when they and a new entry would not fit under the byte limit,
 * the loop thread removes them first (reap_to_fit). Close stops the reaper
 * and removes what is left.
 *
 * Totals are kept incrementally. Entries this process appends are counted
 * at once and remembered in a small ring, so that the inotify event their
 * rename causes is not counted a second time; entries other processes add
 * (submit) are counted when their event arrives. If the kernel's event
 * queue overflows, pending/ is recounted once.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "rsl/log.h"
#include "rsl/util.h"

#define SPOOL_MAGIC "RSLSPOOL"
#define SPOOL_NAME_DIGITS 20
#define SPOOL_NAME_LEN (SPOOL_NAME_DIGITS + 4) /* "%020llu.rpt" */
#define SPOOL_HASHED_HEADER 32                 /* header bytes covered by the checksum */
/* Consecutive absent sequence numbers a listing probes before it gives up
 * on probing and reads the folder instead (a gap: acked or dropped runs). */
#define PROBE_MISSES 64
/* Own appends whose inotify events have not been seen yet. */
#define OWN_RING 256
/* Acked entry files kept in tmp/ for reuse. */
#define RECYCLE_MAX 32
#define RECYCLE_NAME_MAX 24 /* "recycle-65535" */
/* Sizes of entries recently appended or read, by sequence (direct-mapped):
 * the removal of an acked entry then needs no fstatat to account for it -
 * one system call less per report while a deep spool drains. As many as
 * the largest window (AGENT_MAX_WINDOW) in flight, so an entry's size is
 * still there when its ack comes; 64 KiB. A miss only costs the fstatat. */
#define SIZE_CACHE 4096
/* Dead entries waiting for the reaper, as runs of consecutive sequences
 * (acks come mostly in order, so a drain of any depth needs a few); 16 KiB. */
#define REAP_RANGES 1024
/* An entry file with this mode is dead: acked, waiting to be unlinked. */
#define DEAD_MODE 0
/* The reaper waits until no entry died for REAP_QUIET_MS and the last one
 * left the spool empty (a drain is over), or none died for REAP_IDLE_MS
 * (a drain that stalled, e.g. the aggregator went away), or
 * REAP_DEFER_MAX wait. */
#define REAP_QUIET_MS 300
#define REAP_IDLE_MS 5000
#define REAP_DEFER_MAX 200000

enum { DIR_PENDING, DIR_REJECTED, DIR_CORRUPT, DIR_TMP, DIR_COUNT };
static const char *const dir_names[DIR_COUNT] = {"pending", "rejected", "corrupt", "tmp"};

struct agent_spool {
    char *path;
    int dirfd[DIR_COUNT];
    bool owner;            /* the daemon: totals, limits, watch */
    uint64_t count;        /* entries in pending/ */
    uint64_t bytes;        /* their size (file sizes: header + report) */
    uint64_t max_sequence; /* highest sequence seen anywhere */
    uint64_t min_hint;     /* no pending entry is below this */
    uint64_t rejected;     /* entries in rejected/ */
    uint64_t corrupt;      /* files in corrupt/ */
    bool dirty;            /* unlinks in pending/ not yet fsynced */
    bool counters_unsaved; /* counters holds refusals the file lacks (disk full) */
    struct agent_spool_limits limits;
    struct agent_spool_counters counters;
    agent_spool_drop_fn drop_fn;
    void *drop_ctx;
    int watch_fd;          /* inotify on pending/, -1 without */
    uint64_t own[OWN_RING];
    size_t own_len;
    /* Recycled entry files in tmp/ (ids of "recycle-N"): removed from
     * pending/ but not yet durably, and ready for reuse. */
    uint16_t recycled[RECYCLE_MAX];
    size_t n_recycled;
    uint16_t usable[RECYCLE_MAX];
    size_t n_usable;
    uint16_t next_recycle;
    struct {
        uint64_t sequence; /* 0: empty */
        int64_t size;
    } sizes[SIZE_CACHE];
    struct reaper *reaper; /* started at the first dead entry; NULL before */
    bool reaper_failed;    /* could not start one: unlink at once */
};

/* Dead entries (top comment) and the thread that unlinks them, shared with
 * the loop thread under `lock`. The set of queued sequences is kept as
 * sorted, disjoint, non-adjacent ranges: acks come back out of order
 * within the window, and each late one joins its neighbours. */
struct reaper {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    int dirfd;       /* pending/ (the spool's descriptor, not owned) */
    uint64_t bytes;  /* size of the queued files (for the byte limit) */
    uint64_t queued; /* how many */
    int64_t last_queued_ms; /* monotonic */
    bool drained;           /* the last one queued left no entry pending */
    bool busy;              /* in a pass (for the log lines) */
    uint64_t removed;       /* in this pass */
    int64_t pass_started_ms;
    size_t n;
    struct {
        uint64_t lo, hi;
    } ranges[REAP_RANGES];
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

static bool is_dot(const char *name)
{
    return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

uint64_t agent_spool_entry_bytes(const struct agent_spool *s, size_t len)
{
    (void)s;
    return (uint64_t)len + AGENT_SPOOL_HEADER_BYTES;
}

static int fsync_dirfd(const struct agent_spool *s, int which, struct rsl_error *err)
{
    if (fsync(s->dirfd[which]) != 0)
        return rsl_error_set(err, errno_code(errno), "%s/%s: fsync: %s", s->path,
                             dir_names[which], strerror(errno));
    return RSL_OK;
}

/* pending/ was fsynced: removals before now are durable, so the files
 * they left in tmp/ may be overwritten. */
static void removals_durable(struct agent_spool *s)
{
    s->dirty = false;
    while (s->n_recycled > 0 && s->n_usable < RECYCLE_MAX)
        s->usable[s->n_usable++] = s->recycled[--s->n_recycled];
}

static void recycle_name(uint16_t id, char out[RECYCLE_NAME_MAX])
{
    snprintf(out, RECYCLE_NAME_MAX, "recycle-%u", (unsigned)id);
}

static void size_remember(struct agent_spool *s, uint64_t sequence, int64_t size)
{
    s->sizes[sequence % SIZE_CACHE].sequence = sequence;
    s->sizes[sequence % SIZE_CACHE].size = size;
}

/* The size remembered for an entry, or -1. Sequence numbers are never
 * reused and an entry's file is never rewritten in place, so a remembered
 * size stays true for as long as the entry exists. */
static int64_t size_recall(const struct agent_spool *s, uint64_t sequence)
{
    return s->sizes[sequence % SIZE_CACHE].sequence == sequence
               ? s->sizes[sequence % SIZE_CACHE].size
               : -1;
}

/* Size of pending/<name>, or -1 if it is not there. */
static int64_t entry_size(const struct agent_spool *s, const char *name)
{
    struct stat st;
    if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return -1;
    return (int64_t)st.st_size;
}

/* An entry left pending/ (acked, rejected, quarantined, dropped). */
static void forget(struct agent_spool *s, int64_t size)
{
    if (s->count > 0)
        s->count--;
    if (size > 0)
        s->bytes = s->bytes >= (uint64_t)size ? s->bytes - (uint64_t)size : 0;
}

/* An entry arrived in pending/. */
static void account(struct agent_spool *s, uint64_t sequence, int64_t size)
{
    s->count++;
    if (size > 0)
        s->bytes += (uint64_t)size;
    if (sequence > s->max_sequence)
        s->max_sequence = sequence;
    if (sequence < s->min_hint)
        s->min_hint = sequence;
}

/* ---- dead entries and the reaper (top comment) ---------------------------- */

static bool is_dead(const struct stat *st)
{
    return S_ISREG(st->st_mode) && (st->st_mode & 07777) == DEAD_MODE;
}

/* Unlink pending/<sequence> if it is (still) a dead entry; the size it had,
 * or 0. */
static int64_t unlink_dead(int dirfd, uint64_t sequence)
{
    char name[SPOOL_NAME_LEN + 1];
    struct stat st;
    entry_name(sequence, name);
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !is_dead(&st))
        return 0; /* gone already; or not dead: never remove a live entry */
    if (unlinkat(dirfd, name, 0) != 0) {
        if (errno != ENOENT)
            RSL_WARN("spool", "pending/%s: cannot remove an acked entry: %s (the next start "
                     "removes it)", name, strerror(errno));
        return 0;
    }
    return (int64_t)st.st_size;
}

/* Index of the first range whose hi is >= sequence (r->n if none). */
static size_t set_find(const struct reaper *r, uint64_t sequence)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ranges[mid].hi < sequence)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool set_contains(const struct reaper *r, uint64_t sequence)
{
    size_t i = set_find(r, sequence);
    return i < r->n && r->ranges[i].lo <= sequence;
}

/* Add a sequence (not in the set); false when that needs a range and all
 * REAP_RANGES are in use. */
static bool set_add(struct reaper *r, uint64_t sequence)
{
    size_t i = set_find(r, sequence);
    bool joins_left = i > 0 && r->ranges[i - 1].hi + 1 == sequence;
    bool joins_right = i < r->n && r->ranges[i].lo == sequence + 1;
    if (joins_left && joins_right) {
        r->ranges[i - 1].hi = r->ranges[i].hi;
        memmove(&r->ranges[i], &r->ranges[i + 1], (r->n - i - 1) * sizeof(r->ranges[0]));
        r->n--;
    } else if (joins_left) {
        r->ranges[i - 1].hi = sequence;
    } else if (joins_right) {
        r->ranges[i].lo = sequence;
    } else {
        if (r->n == REAP_RANGES)
            return false;
        memmove(&r->ranges[i + 1], &r->ranges[i], (r->n - i) * sizeof(r->ranges[0]));
        r->ranges[i].lo = r->ranges[i].hi = sequence;
        r->n++;
    }
    return true;
}

/* Take a sequence out of the set; false if it was not there, or if taking
 * it would split a range with none left (it stays, and its removal is
 * tried again later: harmless, the file is gone). */
static bool set_remove(struct reaper *r, uint64_t sequence)
{
    size_t i = set_find(r, sequence);
    if (i == r->n || r->ranges[i].lo > sequence)
        return false;
    if (r->ranges[i].lo == r->ranges[i].hi) {
        memmove(&r->ranges[i], &r->ranges[i + 1], (r->n - i - 1) * sizeof(r->ranges[0]));
        r->n--;
    } else if (r->ranges[i].lo == sequence) {
        r->ranges[i].lo++;
    } else if (r->ranges[i].hi == sequence) {
        r->ranges[i].hi--;
    } else {
        if (r->n == REAP_RANGES)
            return false;
        memmove(&r->ranges[i + 1], &r->ranges[i], (r->n - i) * sizeof(r->ranges[0]));
        r->ranges[i].hi = sequence - 1;
        r->ranges[i + 1].lo = sequence + 1;
        r->n++;
    }
    return true;
}

static void *reaper_main(void *arg)
{
    struct reaper *r = arg;
    struct sched_param none = {0};
    /* Only CPU time nothing else wants: while a deep spool drains, sending
     * (and an aggregator on the same machine) go first. */
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &none) != 0)
        setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (r->n == 0 && !r->stop)
            pthread_cond_wait(&r->wake, &r->lock);
        if (r->stop)
            break;
        int64_t now = rsl_monotonic_ms();
        int64_t quiet = r->last_queued_ms + (r->drained ? REAP_QUIET_MS : REAP_IDLE_MS) - now;
        if (quiet > 0 && r->queued < REAP_DEFER_MAX) {
            struct timespec until; /* `wake` waits on CLOCK_MONOTONIC */
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += quiet / 1000;
            until.tv_nsec += (quiet % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&r->wake, &r->lock, &until);
            continue;
        }
        if (!r->busy) {
            r->busy = true;
            r->removed = 0;
            r->pass_started_ms = now;
            RSL_DEBUG("spool", "removing %" PRIu64 " acknowledged entries", r->queued);
        }
        uint64_t sequence = r->ranges[0].lo;
        pthread_mutex_unlock(&r->lock);
        uint64_t size = (uint64_t)unlink_dead(r->dirfd, sequence);
        pthread_mutex_lock(&r->lock);
        r->bytes = r->bytes >= size ? r->bytes - size : 0;
        if (set_remove(r, sequence) && r->queued > 0)
            r->queued--;
        r->removed++;
        if (r->n == 0) {
            r->bytes = r->queued = 0;
            r->busy = false;
            if (r->removed >= 1000)
                RSL_INFO("spool", "removed %" PRIu64 " acknowledged entries in %.1f s",
                         r->removed, (double)(rsl_monotonic_ms() - r->pass_started_ms) / 1000.0);
        }
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static bool reaper_start(struct agent_spool *s)
{
    struct reaper *r = calloc(1, sizeof(*r));
    int e = ENOMEM;
    if (r != NULL) {
        r->dirfd = s->dirfd[DIR_PENDING];
        pthread_condattr_t attr;
        pthread_mutex_init(&r->lock, NULL);
        /* Timed waits immune to the wall clock being set. */
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&r->wake, &attr);
        pthread_condattr_destroy(&attr);
        if ((e = pthread_create(&r->thread, NULL, reaper_main, r)) == 0) {
            s->reaper = r;
            return true;
        }
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->lock);
        free(r);
    }
    RSL_WARN("spool", "%s: cannot start the thread that removes acked entries (%s); removing "
             "them at once instead", s->path, strerror(e));
    s->reaper_failed = true;
    return false;
}

/* Stop the reaper and remove what it had not got to. */
static void reaper_stop(struct agent_spool *s)
{
    struct reaper *r = s->reaper;
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    for (size_t i = 0; i < r->n; i++)
        for (uint64_t seq = r->ranges[i].lo; seq <= r->ranges[i].hi && seq != 0; seq++)
            unlink_dead(r->dirfd, seq);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r);
    s->reaper = NULL;
}

/* Hand the dead entry pending/<sequence> (`size` bytes, still counted in
 * s->bytes) to the reaper; false if it cannot take it (the caller unlinks). */
static bool reap_later(struct agent_spool *s, uint64_t sequence, int64_t size)
{
    /* s->count still counts this entry. */
    if (s->reaper == NULL && (s->reaper_failed || !reaper_start(s)))
        return false;
    struct reaper *r = s->reaper;
    pthread_mutex_lock(&r->lock);
    bool queued = set_add(r, sequence);
    if (queued) {
        r->bytes += size > 0 ? (uint64_t)size : 0;
        r->queued++;
        r->last_queued_ms = rsl_monotonic_ms();
        r->drained = s->count <= 1;
        if (r->queued == 1 || r->queued >= REAP_DEFER_MAX || r->drained)
            pthread_cond_signal(&r->wake);
    }
    pthread_mutex_unlock(&r->lock);
    return queued;
}

/* The reaper's queued files take disk space too: when they and `need` more
 * bytes would not fit under the byte limit, remove them now (the reaper
 * starts again at the next removal). */
static void reap_to_fit(struct agent_spool *s, uint64_t need)
{
    struct reaper *r = s->reaper;
    if (r == NULL || s->limits.max_bytes == 0)
        return;
    pthread_mutex_lock(&r->lock);
    uint64_t dead = r->bytes;
    pthread_mutex_unlock(&r->lock);
    if (dead > 0 && s->bytes + dead + need > s->limits.max_bytes)
        reaper_stop(s);
}

/* Is pending/<sequence> a dead entry the reaper has yet to remove? */
static bool reaping(const struct agent_spool *s, uint64_t sequence)
{
    struct reaper *r = s->reaper;
    bool found = false;
    if (r == NULL)
        return false;
    pthread_mutex_lock(&r->lock);
    found = set_contains(r, sequence);
    pthread_mutex_unlock(&r->lock);
    return found;
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

/* Move pending/<name> to corrupt/<name> and say so; start-up and reads go
 * on. `counted`: the entry is part of the totals. */
static void quarantine(struct agent_spool *s, const char *name, const char *why, bool counted)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    int64_t size = entry_size(s, name);
    if (renameat(s->dirfd[DIR_PENDING], name, s->dirfd[DIR_CORRUPT], name) != 0) {
        RSL_ERR("spool", "%s/pending/%s: %s; cannot move it to corrupt/: %s", s->path, name, why,
                strerror(errno));
        return;
    }
    if (fsync_dirfd(s, DIR_CORRUPT, &err) != RSL_OK || fsync_dirfd(s, DIR_PENDING, &err) != RSL_OK)
        RSL_WARN("spool", "%s", err.text);
    if (counted)
        forget(s, size);
    s->corrupt++;
    RSL_WARN("spool", "%s/pending/%s: %s; moved to corrupt/", s->path, name, why);
}

static DIR *open_dir(const struct agent_spool *s, int which, struct rsl_error *err)
{
    int fd = openat(s->dirfd[which], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rsl_error_set(err, RSL_EIO, "%s/%s: %s", s->path, dir_names[which], strerror(errno));
        return NULL;
    }
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        rsl_error_set(err, RSL_EIO, "%s/%s: %s", s->path, dir_names[which], strerror(errno));
        close(fd);
    }
    return d;
}

/* ---- counters ------------------------------------------------------------ */

static int parse_count(const char *tok, uint64_t *out)
{
    /* Digits only: rsl_parse_uint64 would also take what strtoull takes. */
    if (tok[0] == '\0' || strlen(tok) > 20)
        return RSL_EPARSE;
    for (const char *p = tok; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return RSL_EPARSE;
    return rsl_parse_uint64(tok, out);
}

int agent_spool_counters_parse(const char *buf, size_t len, const char *origin,
                               struct agent_spool_counters *out, uint64_t *dropping,
                               size_t max_dropping, size_t *n_dropping, struct rsl_error *err)
{
    static const char *const keys[] = {"dropped_oldest", "expired", "refused", "dropping"};
    bool seen[4] = {false, false, false, false};
    char line[AGENT_SPOOL_COUNTERS_MAX + 1];
    struct agent_spool_counters c;
    size_t nd = 0;
    int lineno = 0;

    memset(out, 0, sizeof(*out));
    *n_dropping = 0;
    memset(&c, 0, sizeof(c));
    if (len > AGENT_SPOOL_COUNTERS_MAX)
        return rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %d bytes", origin,
                             AGENT_SPOOL_COUNTERS_MAX);
    if (memchr(buf, '\0', len) != NULL)
        return rsl_error_set(err, RSL_EPARSE, "%s: contains a NUL byte", origin);
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t ll = nl != NULL ? (size_t)(nl - (buf + pos)) : len - pos;
        memcpy(line, buf + pos, ll);
        line[ll] = '\0';
        pos += ll + (nl != NULL ? 1 : 0);
        lineno++;
        char *save = NULL;
        char *key = strtok_r(line, " \t", &save);
        if (key == NULL || key[0] == '#')
            continue;
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(key, keys[i]) == 0)
                k = i;
        char shown[64];
        if (k < 0)
            return rsl_error_set(err, RSL_EPARSE, "%s:%d: unknown key '%s'", origin, lineno,
                                 rsl_text_show(key, shown, sizeof(shown)));
        if (seen[k])
            return rsl_error_set(err, RSL_EPARSE, "%s:%d: duplicate key '%s'", origin, lineno,
                                 keys[k]);
        seen[k] = true;
        char *tok;
        int values = 0;
        while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
            uint64_t v;
            if (parse_count(tok, &v) != RSL_OK)
                return rsl_error_set(err, RSL_EPARSE, "%s:%d: '%s' is not a count", origin,
                                     lineno, rsl_text_show(tok, shown, sizeof(shown)));
            values++;
            if (k == 3) {
                if (v == 0 || v > (uint64_t)INT64_MAX)
                    return rsl_error_set(err, RSL_EPARSE, "%s:%d: sequence %s out of range",
                                         origin, lineno, tok);
                if (nd >= max_dropping)
                    return rsl_error_set(err, RSL_ETOOBIG, "%s:%d: more than %zu sequences",
                                         origin, lineno, max_dropping);
                dropping[nd++] = v;
                continue;
            }
            if (values > 1)
                return rsl_error_set(err, RSL_EPARSE, "%s:%d: '%s' takes one count", origin,
                                     lineno, keys[k]);
            if (k == 0)
                c.dropped_oldest = v;
            else if (k == 1)
                c.expired = v;
            else
                c.refused = v;
        }
        if (k != 3 && values == 0)
            return rsl_error_set(err, RSL_EPARSE, "%s:%d: '%s' has no value", origin, lineno,
                                 keys[k]);
    }
    *out = c;
    *n_dropping = nd;
    return RSL_OK;
}

/* Durably write the counters, with the sequences about to be dropped. */
static int counters_write(struct agent_spool *s, const struct agent_spool_counters *c,
                          const uint64_t *dropping, size_t n, struct rsl_error *err)
{
    char text[AGENT_SPOOL_COUNTERS_MAX];
    char path[4096];
    int off = snprintf(text, sizeof(text),
                       "# resilience-agent spool counters: reports lost (never delivered).\n"
                       "# Written by the agent; do not edit.\n"
                       "dropped_oldest %" PRIu64 "\nexpired %" PRIu64 "\nrefused %" PRIu64 "\n",
                       c->dropped_oldest, c->expired, c->refused);
    if (n > 0) {
        off += snprintf(text + off, sizeof(text) - (size_t)off, "dropping");
        for (size_t i = 0; i < n && (size_t)off < sizeof(text) - 24; i++)
            off += snprintf(text + off, sizeof(text) - (size_t)off, " %" PRIu64, dropping[i]);
        off += snprintf(text + off, sizeof(text) - (size_t)off, "\n");
    }
    if (snprintf(path, sizeof(path), "%s/counters", s->path) >= (int)sizeof(path))
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", s->path);
    return rsl_file_write_atomic(path, text, (size_t)off, 0600, err);
}

/* Load the counters; finish a drop that a crash interrupted. A damaged
 * file must not stop the agent: it is set aside and counting restarts. */
static int counters_load(struct agent_spool *s, struct rsl_error *err)
{
    char path[4096];
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t dropping[AGENT_SPOOL_DROP_BATCH];
    size_t nd = 0;
    struct rsl_error perr;
    rsl_error_clear(&perr);

    if (snprintf(path, sizeof(path), "%s/counters", s->path) >= (int)sizeof(path))
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", s->path);
    int rc = rsl_file_read_all(path, AGENT_SPOOL_COUNTERS_MAX, &buf, &len, &perr);
    if (rc == RSL_ENOENT)
        return RSL_OK;
    if (rc == RSL_OK)
        rc = agent_spool_counters_parse((const char *)buf, len, path, &s->counters, dropping,
                                        AGENT_SPOOL_DROP_BATCH, &nd, &perr);
    free(buf);
    if (rc != RSL_OK) {
        char aside[4200];
        snprintf(aside, sizeof(aside), "%s.bad", path);
        RSL_ERR("spool", "%s; moved to %s, drop counters restart from 0", perr.text, aside);
        if (rename(path, aside) != 0)
            RSL_ERR("spool", "%s: cannot move aside: %s", path, strerror(errno));
        memset(&s->counters, 0, sizeof(s->counters));
        return RSL_OK;
    }
    if (nd == 0)
        return RSL_OK;
    /* These were counted as dropped; make sure they are gone. */
    unsigned removed = 0;
    for (size_t i = 0; i < nd; i++) {
        char name[SPOOL_NAME_LEN + 1];
        entry_name(dropping[i], name);
        if (unlinkat(s->dirfd[DIR_PENDING], name, 0) == 0)
            removed++;
    }
    if (removed > 0) {
        RSL_NOTICE("spool", "finished an interrupted drop of %u report%s", removed,
                   removed == 1 ? "" : "s");
        if ((rc = fsync_dirfd(s, DIR_PENDING, err)) != RSL_OK)
            return rc;
    }
    return counters_write(s, &s->counters, NULL, 0, err);
}

/* ---- open / close -------------------------------------------------------- */

/* Remove everything in tmp/: appends that never reached pending/. */
static int clean_tmp(struct agent_spool *s, struct rsl_error *err)
{
    DIR *d = open_dir(s, DIR_TMP, err);
    if (d == NULL)
        return RSL_EIO;
    unsigned removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_dot(de->d_name))
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

/* Count pending/ (entries and bytes) or rejected/ or corrupt/, and find the
 * highest and lowest sequences; at open, names in pending/ that are not
 * entries go to corrupt/. */
static int scan(struct agent_spool *s, int which, bool quarantine_strays, struct rsl_error *err)
{
    DIR *d = open_dir(s, which, err);
    if (d == NULL)
        return RSL_EIO;
    unsigned dead = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (is_dot(name))
            continue;
        uint64_t seq = name_sequence(name, ".rpt");
        if (which == DIR_PENDING) {
            if (seq == 0) {
                /* Renaming out of the folder being read is safe: readdir may
                 * or may not show the entry again, and it is gone either way. */
                if (quarantine_strays)
                    quarantine(s, name, "not a spool entry name", false);
                continue;
            }
            struct stat st;
            if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue; /* gone meanwhile */
            if (is_dead(&st)) {
                /* Acked before a crash or stop (at open), or waiting for
                 * the reaper (a rescan): not an entry any more. */
                if (quarantine_strays && unlink_dead(s->dirfd[DIR_PENDING], seq) > 0)
                    dead++;
                continue;
            }
            account(s, seq, (int64_t)st.st_size);
            continue;
        }
        if (which == DIR_REJECTED) {
            if (seq != 0)
                s->rejected++;
            else
                seq = name_sequence(name, ".reason");
        } else {
            s->corrupt++;
        }
        if (seq > s->max_sequence)
            s->max_sequence = seq;
    }
    closedir(d);
    if (dead > 0)
        RSL_INFO("spool", "removed %u acknowledged entr%s from %s/pending", dead,
                 dead == 1 ? "y" : "ies", s->path);
    return RSL_OK;
}

static int open_dirs(struct agent_spool *s, const char *dir, struct rsl_error *err)
{
    char sub[4096];
    int rc;
    for (int i = 0; i < DIR_COUNT; i++) {
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, dir_names[i]) >= (int)sizeof(sub))
            return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", dir);
        if ((rc = rsl_mkdir_p(sub, 0700, err)) != RSL_OK)
            return rc;
        s->dirfd[i] = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dirfd[i] < 0)
            return rsl_error_set(err, RSL_EIO, "%s: %s", sub, strerror(errno));
    }
    /* The new sub-folders must survive a crash too. */
    if ((rc = rsl_fsync_dir(dir, err)) != RSL_OK)
        return rc;
    return RSL_OK;
}

static struct agent_spool *spool_alloc(const char *dir, struct rsl_error *err)
{
    struct agent_spool *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(dir)) == NULL) {
        free(s);
        rsl_error_set(err, RSL_ENOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < DIR_COUNT; i++)
        s->dirfd[i] = -1;
    s->watch_fd = -1;
    s->min_hint = UINT64_MAX;
    return s;
}

int agent_spool_open(const char *dir, struct agent_spool **out, struct rsl_error *err)
{
    struct agent_spool *s = NULL;
    char sub[4096];
    int rc;

    *out = NULL;
    if ((s = spool_alloc(dir, err)) == NULL)
        return RSL_ENOMEM;
    s->owner = true;
    if ((rc = open_dirs(s, dir, err)) != RSL_OK)
        goto out;
    if ((rc = clean_tmp(s, err)) != RSL_OK)
        goto out;
    if ((rc = counters_load(s, err)) != RSL_OK)
        goto out;
    /* Watch before counting: with the sequence lock held by our caller no
     * other writer renames anything in between, so every entry is counted
     * exactly once, by the scan or by its event. */
    snprintf(sub, sizeof(sub), "%s/pending", dir);
    s->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->watch_fd >= 0 && inotify_add_watch(s->watch_fd, sub, IN_MOVED_TO) < 0) {
        close(s->watch_fd);
        s->watch_fd = -1;
    }
    if (s->watch_fd < 0)
        RSL_WARN("spool", "%s: cannot watch for reports other processes add (%s); checking "
                 "now and then instead", sub, strerror(errno));
    for (int i = DIR_PENDING; i <= DIR_CORRUPT; i++) {
        if (i == DIR_CORRUPT)
            s->corrupt = 0; /* strays quarantined above are counted by this scan */
        if ((rc = scan(s, i, true, err)) != RSL_OK)
            goto out;
    }
    if (s->count == 0)
        s->min_hint = s->max_sequence + 1;
    *out = s;
    s = NULL; /* transferred */
out:
    agent_spool_close(&s);
    return rc;
}

int agent_spool_open_writer(const char *dir, struct agent_spool **out, struct rsl_error *err)
{
    struct agent_spool *s = NULL;
    int rc;
    *out = NULL;
    if ((s = spool_alloc(dir, err)) == NULL)
        return RSL_ENOMEM;
    if ((rc = open_dirs(s, dir, err)) != RSL_OK) {
        agent_spool_close(&s);
        return rc;
    }
    *out = s;
    return RSL_OK;
}

void agent_spool_close(struct agent_spool **spool)
{
    if (spool == NULL || *spool == NULL)
        return;
    struct agent_spool *s = *spool;
    reaper_stop(s);
    if (s->dirty)
        agent_spool_sync(s, NULL);
    for (int i = 0; i < DIR_COUNT; i++)
        if (s->dirfd[i] >= 0)
            close(s->dirfd[i]);
    if (s->watch_fd >= 0)
        close(s->watch_fd);
    free(s->path);
    free(s);
    *spool = NULL;
}

void agent_spool_set_limits(struct agent_spool *s, const struct agent_spool_limits *limits)
{
    s->limits = *limits;
}

void agent_spool_set_drop_callback(struct agent_spool *s, agent_spool_drop_fn fn, void *ctx)
{
    s->drop_fn = fn;
    s->drop_ctx = ctx;
}

/* ---- listing ------------------------------------------------------------- */

static bool entry_exists(const struct agent_spool *s, uint64_t sequence)
{
    char name[SPOOL_NAME_LEN + 1];
    struct stat st;
    entry_name(sequence, name);
    return fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !is_dead(&st);
}

/* One pass over pending/: the `max` smallest sequences above `after`. */
static int list_dir(struct agent_spool *s, uint64_t after, uint64_t *out, size_t max, size_t *n,
                    struct rsl_error *err)
{
    *n = 0;
    DIR *d = open_dir(s, DIR_PENDING, err);
    if (d == NULL)
        return RSL_EIO;
    /* Keep the `max` smallest in out[], sorted: insertion into a short
     * array, fine for the chunk sizes used (~1000). */
    size_t have = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq = name_sequence(de->d_name, ".rpt");
        if (seq == 0 || seq <= after)
            continue;
        if (have == max && seq >= out[max - 1])
            continue;
        if (reaping(s, seq))
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

int agent_spool_list(struct agent_spool *s, uint64_t after, uint64_t *out, size_t max, size_t *n,
                     struct rsl_error *err)
{
    *n = 0;
    if (max == 0)
        return RSL_OK;
    size_t have = 0;
    uint64_t p = after + 1;
    if (s->owner) {
        /* Sequence numbers are handed out consecutively, so the entries
         * after `after` are usually after+1, after+2, ...: one stat each,
         * instead of a pass over a folder that may hold a million. */
        unsigned misses = 0;
        while (have < max && p <= s->max_sequence && misses < PROBE_MISSES) {
            if (entry_exists(s, p)) {
                out[have++] = p;
                misses = 0;
            } else {
                misses++;
            }
            p++;
        }
        if (have == max || p > s->max_sequence) {
            *n = have;
            return RSL_OK;
        }
    }
    size_t got = 0;
    int rc = list_dir(s, p - 1, out + have, max - have, &got, err);
    *n = have + got;
    return rc;
}

/* The lowest pending sequences (up to max), and a better lower bound. */
static int list_oldest(struct agent_spool *s, uint64_t *out, size_t max, size_t *n,
                       struct rsl_error *err)
{
    uint64_t after = s->min_hint > 0 && s->min_hint != UINT64_MAX ? s->min_hint - 1 : 0;
    int rc = agent_spool_list(s, after, out, max, n, err);
    if (rc == RSL_OK && *n > 0)
        s->min_hint = out[0];
    return rc;
}

int agent_spool_oldest(struct agent_spool *s, uint64_t *sequence, int64_t *mtime_ms,
                       struct rsl_error *err)
{
    uint64_t seq;
    size_t n = 0;
    *sequence = 0;
    *mtime_ms = 0;
    if (s->count == 0)
        return RSL_ENOENT;
    int rc = list_oldest(s, &seq, 1, &n, err);
    if (rc != RSL_OK)
        return rc;
    if (n == 0)
        return RSL_ENOENT;
    char name[SPOOL_NAME_LEN + 1];
    struct stat st;
    entry_name(seq, name);
    if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return rsl_error_set(err, RSL_ENOENT, "%s/pending/%s: %s", s->path, name,
                             strerror(errno));
    if (is_dead(&st))
        return rsl_error_set(err, RSL_ENOENT, "%s/pending/%s: acknowledged", s->path, name);
    *sequence = seq;
    *mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    return RSL_OK;
}

/* ---- limits -------------------------------------------------------------- */

enum drop_kind { DROP_OLDEST, DROP_EXPIRED };

/* Drop seqs[0..n): count first (durably, naming them), then unlink. */
static int drop_batch(struct agent_spool *s, const uint64_t *seqs, size_t n, enum drop_kind kind,
                      struct rsl_error *err)
{
    struct agent_spool_counters c = s->counters;
    if (kind == DROP_OLDEST)
        c.dropped_oldest += n;
    else
        c.expired += n;
    int rc = counters_write(s, &c, seqs, n, err);
    if (rc != RSL_OK)
        return rc; /* nothing dropped: never lose a report uncounted */
    s->counters = c;
    s->counters_unsaved = false; /* the file has every refusal too now */
    /* A pending/ fsync below covers earlier removals too. */
    for (size_t i = 0; i < n; i++) {
        char name[SPOOL_NAME_LEN + 1];
        entry_name(seqs[i], name);
        int64_t size = entry_size(s, name);
        if (unlinkat(s->dirfd[DIR_PENDING], name, 0) == 0)
            forget(s, size);
        else if (errno != ENOENT)
            RSL_ERR("spool", "%s/pending/%s: cannot drop: %s", s->path, name, strerror(errno));
        if (s->drop_fn != NULL)
            s->drop_fn(s->drop_ctx, seqs[i]);
    }
    rc = fsync_dirfd(s, DIR_PENDING, err);
    if (rc == RSL_OK)
        removals_durable(s);
    return rc;
}

static void mib(uint64_t bytes, char *out, size_t outlen)
{
    snprintf(out, outlen, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
}

static void log_drop(const struct agent_spool *s, const uint64_t *seqs, size_t n, const char *why)
{
    uint64_t total = s->counters.dropped_oldest + s->counters.expired + s->counters.refused;
    if (n == 1)
        RSL_WARN("spool", "dropped report %" PRIu64 " (%s); %" PRIu64 " lost so far", seqs[0],
                 why, total);
    else
        RSL_WARN("spool", "dropped %zu reports, sequences %" PRIu64 " to %" PRIu64
                 " (%s); %" PRIu64 " lost so far", n, seqs[0], seqs[n - 1], why, total);
}

/* drop_oldest: free space until `need` more bytes fit under the limit. */
static int drop_to_fit(struct agent_spool *s, uint64_t need, struct rsl_error *err)
{
    uint64_t seqs[AGENT_SPOOL_DROP_BATCH];
    char why[160], have[32], limit[32];
    while (s->count > 0 && s->bytes + need > s->limits.max_bytes) {
        size_t n = 0;
        int rc = list_oldest(s, seqs, AGENT_SPOOL_DROP_BATCH, &n, err);
        if (rc != RSL_OK)
            return rc;
        if (n == 0) {
            /* The totals say there is more than the folder holds: recount. */
            bool changed = false;
            if ((rc = agent_spool_rescan(s, &changed, err)) != RSL_OK)
                return rc;
            if (!changed)
                break;
            continue;
        }
        /* Just enough of the oldest to fit. */
        uint64_t freed = 0;
        size_t k = 0;
        while (k < n && s->bytes - freed + need > s->limits.max_bytes) {
            char name[SPOOL_NAME_LEN + 1];
            entry_name(seqs[k], name);
            int64_t size = entry_size(s, name);
            freed += size > 0 ? (uint64_t)size : 0;
            k++;
        }
        if (k == 0)
            break; /* cannot happen: the loop condition held for k = 0 */
        mib(s->bytes, have, sizeof(have));
        mib(s->limits.max_bytes, limit, sizeof(limit));
        snprintf(why, sizeof(why), "spool full: %s of %s, spool_full_policy = drop_oldest", have,
                 limit);
        if ((rc = drop_batch(s, seqs, k, DROP_OLDEST, err)) != RSL_OK)
            return rc;
        log_drop(s, seqs, k, why);
    }
    return RSL_OK;
}

/* Unlike a drop, a refusal has already happened when it is counted: the
 * report is gone whether or not the file can be written. The most common
 * cause of refusals is a full disk, which also fails this write; so the
 * count is kept in memory whatever happens, and the file catches up at the
 * next write that succeeds (agent_spool_sync retries it). Otherwise every
 * report lost to a full disk would be missing from the drop counters. */
int agent_spool_count_refused(struct agent_spool *s, uint64_t n, struct rsl_error *err)
{
    s->counters.refused += n;
    int rc = counters_write(s, &s->counters, NULL, 0, err);
    s->counters_unsaved = rc != RSL_OK;
    return rc;
}

int agent_spool_admit(struct agent_spool *s, size_t len, const char *what, struct rsl_error *err)
{
    if (s->limits.max_bytes == 0)
        return RSL_OK;
    uint64_t need = agent_spool_entry_bytes(s, len);
    reap_to_fit(s, need);
    if (s->bytes + need <= s->limits.max_bytes)
        return RSL_OK;
    char have[32], limit[32];
    mib(s->bytes, have, sizeof(have));
    mib(s->limits.max_bytes, limit, sizeof(limit));
    if (s->limits.policy == AGENT_SPOOL_DROP_OLDEST && need <= s->limits.max_bytes)
        return drop_to_fit(s, need, err);
    /* refuse_new, or one report larger than the whole spool may be. */
    struct rsl_error cerr;
    rsl_error_clear(&cerr);
    if (agent_spool_count_refused(s, 1, &cerr) != RSL_OK)
        RSL_ERR("spool", "cannot count a refused report: %s", cerr.text);
    uint64_t total = s->counters.dropped_oldest + s->counters.expired + s->counters.refused;
    RSL_WARN("spool", "%s refused: spool full (%s of %s, spool_full_policy = %s); %" PRIu64
             " lost so far", what, have, limit,
             s->limits.policy == AGENT_SPOOL_REFUSE_NEW ? "refuse_new" : "drop_oldest", total);
    return rsl_error_set(err, RSL_ENOSPC, "spool full (%s of %s)", have, limit);
}

int agent_spool_enforce(struct agent_spool *s, int64_t now_ms, struct rsl_error *err)
{
    uint64_t seqs[AGENT_SPOOL_DROP_BATCH];
    uint64_t expired[AGENT_SPOOL_DROP_BATCH];
    int rc;
    if (s->limits.max_age_ms > 0) {
        int64_t cutoff = now_ms - s->limits.max_age_ms;
        for (;;) {
            size_t n = 0, k = 0;
            if ((rc = list_oldest(s, seqs, AGENT_SPOOL_DROP_BATCH, &n, err)) != RSL_OK)
                return rc;
            for (size_t i = 0; i < n; i++) {
                char name[SPOOL_NAME_LEN + 1];
                struct stat st;
                entry_name(seqs[i], name);
                if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                    is_dead(&st))
                    continue;
                int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
                if (mtime < cutoff)
                    expired[k++] = seqs[i];
            }
            if (k == 0)
                break;
            char why[96];
            snprintf(why, sizeof(why), "older than spool_max_age, %gd",
                     (double)s->limits.max_age_ms / 86400000.0);
            if ((rc = drop_batch(s, expired, k, DROP_EXPIRED, err)) != RSL_OK)
                return rc;
            log_drop(s, expired, k, why);
        }
    }
    reap_to_fit(s, 0);
    if (s->limits.max_bytes > 0 && s->limits.policy == AGENT_SPOOL_DROP_OLDEST &&
        s->bytes > s->limits.max_bytes)
        return drop_to_fit(s, 0, err);
    return RSL_OK;
}

/* ---- entries ------------------------------------------------------------- */

static void own_push(struct agent_spool *s, uint64_t sequence)
{
    if (s->watch_fd < 0)
        return;
    if (s->own_len == OWN_RING) {
        /* Events not read for a long time: forget the oldest; its event
         * would be counted twice, so recount when the events are read. */
        memmove(s->own, s->own + 1, (OWN_RING - 1) * sizeof(s->own[0]));
        s->own_len--;
    }
    s->own[s->own_len++] = sequence;
}

static bool own_take(struct agent_spool *s, uint64_t sequence)
{
    for (size_t i = 0; i < s->own_len; i++) {
        if (s->own[i] == sequence) {
            memmove(s->own + i, s->own + i + 1, (s->own_len - i - 1) * sizeof(s->own[0]));
            s->own_len--;
            return true;
        }
    }
    return false;
}

int agent_spool_append(struct agent_spool *s, uint64_t sequence, const uint8_t *data, size_t len,
                       struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    char tmpname[RECYCLE_NAME_MAX > SPOOL_NAME_LEN + 1 ? RECYCLE_NAME_MAX : SPOOL_NAME_LEN + 1];
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

    /* A recycled file if one is ready (overwritten in place: no inode to
     * allocate, no blocks to free), else a new one named after the entry. */
    while (fd < 0 && s->n_usable > 0) {
        recycle_name(s->usable[--s->n_usable], tmpname);
        fd = openat(s->dirfd[DIR_TMP], tmpname, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        memcpy(tmpname, name, sizeof(name));
        fd = openat(s->dirfd[DIR_TMP], tmpname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: %s", s->path, tmpname,
                           strerror(errno));
        goto out;
    }
    created = true;
    /* One write for header and payload; the length cut after it removes
     * whatever a longer previous entry left in a recycled file. */
    struct iovec iov[2] = {{header, sizeof(header)}, {(void *)(uintptr_t)data, len}};
    size_t total = sizeof(header) + len;
    ssize_t w;
    do
        w = pwritev(fd, iov, 2, 0);
    while (w < 0 && errno == EINTR);
    if (w >= 0 && (size_t)w < total) {
        /* A short write (unusual for a regular file): write it all again
         * the simple way. */
        if (lseek(fd, 0, SEEK_SET) != 0 || rsl_write_full(fd, header, sizeof(header)) != 0 ||
            rsl_write_full(fd, data, len) != 0)
            w = -1;
    }
    if (w < 0 || ftruncate(fd, (off_t)total) != 0 || fsync(fd) != 0) {
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: %s", s->path, tmpname,
                           strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = rsl_error_set(err, errno_code(errno), "%s/tmp/%s: close: %s", s->path, tmpname,
                           strerror(errno));
        goto out;
    }
    fd = -1;
    /* RENAME_NOREPLACE: an existing pending entry with this sequence would
     * mean a reused number; refuse rather than overwrite a report. */
    if (renameat2(s->dirfd[DIR_TMP], tmpname, s->dirfd[DIR_PENDING], name, RENAME_NOREPLACE) !=
        0) {
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
         * (writers hold the sequence lock, so nobody races us here). */
        struct stat st;
        if (fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            rc = rsl_error_set(err, RSL_EEXIST, "%s/pending/%s: already exists", s->path, name);
            goto out;
        }
        if (renameat(s->dirfd[DIR_TMP], tmpname, s->dirfd[DIR_PENDING], name) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: rename: %s", s->path, name,
                               strerror(errno));
            goto out;
        }
    }
    created = false; /* it is in pending/ now */
    own_push(s, sequence); /* our own inotify event either way */
    rc = fsync_dirfd(s, DIR_PENDING, err);
    if (rc != RSL_OK) {
        /* Not durable, so not spooled: take it back out rather than leave
         * an entry the caller was told failed (it would be counted as lost
         * and yet sent later, and a resubmitted value stored twice). */
        unlinkat(s->dirfd[DIR_PENDING], name, 0);
        goto out;
    }
    account(s, sequence, (int64_t)agent_spool_entry_bytes(s, len));
    size_remember(s, sequence, (int64_t)agent_spool_entry_bytes(s, len));
    removals_durable(s);
out:
    if (fd >= 0)
        close(fd);
    if (created)
        unlinkat(s->dirfd[DIR_TMP], tmpname, 0);
    return rc;
}

int agent_spool_read(struct agent_spool *s, uint64_t sequence, size_t max_len, uint8_t **data,
                     size_t *len, struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
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
        int e = errno;
        if (e == EACCES && fstatat(s->dirfd[DIR_PENDING], name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            is_dead(&st))
            e = ENOENT; /* acked, waiting for the reaper */
        rc = rsl_error_set(err, e == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s", s->path,
                           name, strerror(e));
        if (e == ELOOP)
            why = "a symbolic link";
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: %s", s->path, name, strerror(errno));
        goto out;
    }
    if (is_dead(&st)) {
        rc = rsl_error_set(err, RSL_ENOENT, "%s/pending/%s: acknowledged", s->path, name);
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
    /* Header and payload in one read when the size is plausible (it
     * always is for an intact entry); otherwise the header alone, whose
     * checks below then name what is wrong. */
    size_t want = (uint64_t)st.st_size - AGENT_SPOOL_HEADER_BYTES <= AGENT_SPOOL_ENTRY_MAX
                      ? (size_t)st.st_size
                      : AGENT_SPOOL_HEADER_BYTES;
    buf = malloc(want);
    if (buf == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    int r = read_exact(fd, buf, want);
    if (r < 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s/pending/%s: %s", s->path, name, strerror(errno));
        goto out;
    }
    const uint8_t *header = buf;
    if (r == 0) {
        /* Shorter than fstat said: cut while we read it. */
        why = want > AGENT_SPOOL_HEADER_BYTES ? "truncated" : "bad entry header";
        goto out;
    }
    if (memcmp(header, SPOOL_MAGIC, 8) != 0) {
        why = "bad entry header";
        goto out;
    }
    if (get_be32(header + 8) != AGENT_SPOOL_FORMAT_VERSION ||
        get_be32(header + 12) != AGENT_SPOOL_HEADER_BYTES) {
        why = "unknown entry format version";
        goto out;
    }
    uint64_t plen = get_be64(header + 24);
    if (get_be64(header + 16) != sequence ||
        plen != (uint64_t)st.st_size - AGENT_SPOOL_HEADER_BYTES || plen > AGENT_SPOOL_ENTRY_MAX) {
        why = "entry header does not match the file";
        goto out;
    }
    checksum(header, buf + AGENT_SPOOL_HEADER_BYTES, (size_t)plen, sum);
    if (!rsl_consttime_equal(sum, header + SPOOL_HASHED_HEADER, sizeof(sum))) {
        why = "checksum mismatch";
        goto out;
    }
    if (plen > max_len) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s/pending/%s: %" PRIu64 " bytes, over %zu",
                           s->path, name, plen, max_len);
        goto out;
    }
    /* The caller owns (and frees) the payload alone: move it to the front. */
    memmove(buf, buf + AGENT_SPOOL_HEADER_BYTES, (size_t)plen);
    size_remember(s, sequence, (int64_t)st.st_size);
    *data = buf;
    *len = (size_t)plen;
    buf = NULL; /* transferred */
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    if (why != NULL) {
        quarantine(s, name, why, true);
        rc = rsl_error_set(err, RSL_ECORRUPT, "%s/pending/%s: %s; moved to corrupt/", s->path,
                           name, why);
    }
    return rc;
}

int agent_spool_remove(struct agent_spool *s, uint64_t sequence, struct rsl_error *err)
{
    char name[SPOOL_NAME_LEN + 1];
    entry_name(sequence, name);
    if (reaping(s, sequence))
        return rsl_error_set(err, RSL_ENOENT, "%s/pending/%s: already removed", s->path, name);
    int64_t size = size_recall(s, sequence);
    if (size < 0)
        size = entry_size(s, name);
    if (size < 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s",
                             s->path, name, strerror(errno));
    /* Keep the file for the next append (top comment), or unlink it. */
    if (s->owner && s->n_recycled + s->n_usable < RECYCLE_MAX) {
        char rname[RECYCLE_NAME_MAX];
        uint16_t id = s->next_recycle++;
        recycle_name(id, rname);
        if (renameat2(s->dirfd[DIR_PENDING], name, s->dirfd[DIR_TMP], rname, RENAME_NOREPLACE) ==
            0) {
            s->recycled[s->n_recycled++] = id;
            forget(s, size);
            s->dirty = true;
            return RSL_OK;
        }
        if (errno == ENOENT)
            return rsl_error_set(err, RSL_ENOENT, "%s/pending/%s: %s", s->path, name,
                                 strerror(errno));
        /* EEXIST (a stale name), no RENAME_NOREPLACE, ...: just unlink. */
    }
    /* Dead now, unlinked by the reaper when the CPU is idle (top comment). */
    if (s->owner && fchmodat(s->dirfd[DIR_PENDING], name, DEAD_MODE, 0) == 0 &&
        reap_later(s, sequence, size)) {
        forget(s, size);
        return RSL_OK;
    }
    if (unlinkat(s->dirfd[DIR_PENDING], name, 0) != 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s/pending/%s: %s",
                             s->path, name, strerror(errno));
    forget(s, size);
    s->dirty = true;
    return RSL_OK;
}

int agent_spool_sync(struct agent_spool *s, struct rsl_error *err)
{
    /* Refusals counted while the counters file could not be written: try
     * again, quietly - the failure was reported when the report was lost,
     * and repeating it every second while the disk stays full is noise. */
    if (s->counters_unsaved) {
        struct rsl_error ignored;
        rsl_error_clear(&ignored);
        if (counters_write(s, &s->counters, NULL, 0, &ignored) == RSL_OK)
            s->counters_unsaved = false;
    }
    if (!s->dirty)
        return RSL_OK;
    int rc = fsync_dirfd(s, DIR_PENDING, err);
    if (rc == RSL_OK)
        removals_durable(s);
    return rc;
}

bool agent_spool_needs_sync(const struct agent_spool *s)
{
    return s->dirty || s->counters_unsaved;
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
    int64_t size = entry_size(s, name);
    if (size < 0)
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
    forget(s, size);
    s->rejected++;
    if ((rc = fsync_dirfd(s, DIR_REJECTED, err)) != RSL_OK)
        return rc;
    return fsync_dirfd(s, DIR_PENDING, err);
}

/* ---- other writers ------------------------------------------------------- */

int agent_spool_watch_fd(const struct agent_spool *s)
{
    return s->watch_fd;
}

int agent_spool_rescan(struct agent_spool *s, bool *changed, struct rsl_error *err)
{
    uint64_t old_count = s->count, old_bytes = s->bytes, old_max = s->max_sequence;
    s->count = 0;
    s->bytes = 0;
    s->min_hint = UINT64_MAX;
    int rc = scan(s, DIR_PENDING, false, err);
    if (rc != RSL_OK) {
        s->count = old_count;
        s->bytes = old_bytes;
        s->min_hint = 1;
        return rc;
    }
    if (s->count == 0)
        s->min_hint = s->max_sequence + 1;
    s->own_len = 0; /* whatever they were, they are counted now */
    *changed = s->count != old_count || s->bytes != old_bytes || s->max_sequence != old_max;
    return RSL_OK;
}

int agent_spool_watch_handle(struct agent_spool *s, size_t *n_new, uint64_t *lowest_new,
                             struct rsl_error *err)
{
    /* Aligned for struct inotify_event, as inotify(7) shows. */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool overflow = false;
    *n_new = 0;
    *lowest_new = 0;
    if (s->watch_fd < 0)
        return RSL_OK;
    for (;;) {
        ssize_t got = read(s->watch_fd, buf, sizeof(buf));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return rsl_error_set(err, RSL_EIO, "%s/pending: inotify: %s", s->path,
                                 strerror(errno));
        }
        if (got == 0)
            break;
        for (char *p = buf; p < buf + got;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            if (!(ev->mask & IN_MOVED_TO) || ev->len == 0)
                continue;
            uint64_t seq = name_sequence(ev->name, ".rpt");
            if (seq == 0 || own_take(s, seq))
                continue;
            int64_t size = entry_size(s, ev->name);
            if (size < 0)
                continue; /* already gone again */
            account(s, seq, size);
            (*n_new)++;
            if (*lowest_new == 0 || seq < *lowest_new)
                *lowest_new = seq;
        }
    }
    if (overflow) {
        bool changed = false;
        RSL_NOTICE("spool", "%s/pending: too many changes at once; recounting", s->path);
        int rc = agent_spool_rescan(s, &changed, err);
        if (rc != RSL_OK)
            return rc;
        if (changed && *lowest_new == 0) {
            *n_new = 1;
            *lowest_new = 1; /* anything may be new: relist from the start */
        }
    }
    return RSL_OK;
}

/* ---- totals -------------------------------------------------------------- */

uint64_t agent_spool_count(const struct agent_spool *s)
{
    return s->count;
}

uint64_t agent_spool_bytes(const struct agent_spool *s)
{
    return s->bytes;
}

uint64_t agent_spool_max_sequence(const struct agent_spool *s)
{
    return s->max_sequence;
}

uint64_t agent_spool_rejected(const struct agent_spool *s)
{
    return s->rejected;
}

uint64_t agent_spool_corrupt(const struct agent_spool *s)
{
    return s->corrupt;
}

const struct agent_spool_counters *agent_spool_counters(const struct agent_spool *s)
{
    return &s->counters;
}

/* ---- inspection (status) ------------------------------------------------- */

int agent_spool_inspect(const char *dir, struct agent_spool_summary *out, struct rsl_error *err)
{
    char path[4096];
    uint8_t *buf = NULL;
    size_t len = 0;
    uint64_t dropping[AGENT_SPOOL_DROP_BATCH];
    size_t nd = 0;
    struct rsl_error perr;

    memset(out, 0, sizeof(*out));
    int top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s: %s", dir,
                             strerror(errno));
    for (int which = DIR_PENDING; which <= DIR_CORRUPT; which++) {
        int fd = openat(top, dir_names[which], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue; /* never used */
            int e = errno;
            close(top);
            return rsl_error_set(err, RSL_EIO, "%s/%s: %s", dir, dir_names[which], strerror(e));
        }
        int dfd = dup(fd);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (d == NULL) {
            int e = errno;
            if (dfd >= 0)
                close(dfd);
            close(fd);
            close(top);
            return rsl_error_set(err, RSL_EIO, "%s/%s: %s", dir, dir_names[which], strerror(e));
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (is_dot(de->d_name))
                continue;
            uint64_t seq = name_sequence(de->d_name, ".rpt");
            if (which == DIR_CORRUPT) {
                out->corrupt++;
            } else if (seq != 0 && which == DIR_REJECTED) {
                out->rejected++;
            } else if (seq != 0) {
                struct stat st;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || is_dead(&st))
                    continue; /* acked meanwhile, or acked and not yet removed */
                out->pending++;
                out->bytes += (uint64_t)st.st_size;
                if (out->oldest_sequence == 0 || seq < out->oldest_sequence) {
                    out->oldest_sequence = seq;
                    out->oldest_mtime_ms =
                        (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
                }
            }
        }
        closedir(d);
        close(fd);
    }
    close(top);

    rsl_error_clear(&perr);
    if (snprintf(path, sizeof(path), "%s/counters", dir) >= (int)sizeof(path))
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", dir);
    int rc = rsl_file_read_all(path, AGENT_SPOOL_COUNTERS_MAX, &buf, &len, &perr);
    if (rc == RSL_OK)
        rc = agent_spool_counters_parse((const char *)buf, len, path, &out->counters, dropping,
                                        AGENT_SPOOL_DROP_BATCH, &nd, &perr);
    free(buf);
    if (rc != RSL_OK && rc != RSL_ENOENT)
        snprintf(out->counters_problem, sizeof(out->counters_problem), "%s", perr.text);
    return RSL_OK;
}
