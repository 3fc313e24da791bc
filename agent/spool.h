/*
 * spool.h - the agent's crash-safe, bounded outbox (ARCHITECTURE section 8:
 * nothing acked is resent forever, nothing unacked is lost).
 *
 * Layout under the spool folder (all created 0700):
 *   pending/<%020llu sequence>.rpt   signed reports waiting for an ack
 *   rejected/<seq>.rpt + <seq>.reason  reports the aggregator refused for good
 *   corrupt/<name>                   entries that failed their checksum
 *   tmp/                             entries being written, and acked entry
 *                                    files kept for reuse (cleared at open)
 *   sequence, sequence.lock          the counter (seq.h), not touched here
 *   counters                         persisted drop counters (this module)
 *   status, agent.lock               the daemon's status file and lock (status.h)
 *
 * An entry is a 64-byte header - magic "RSLSPOOL", format version, header
 * length, sequence, payload length, SHA-256 over the first 32 header bytes
 * and the payload - followed by the SignedReport bytes. It is written to
 * tmp/, fsynced, renamed into pending/ and pending/ is fsynced, all before
 * agent_spool_append returns; so an entry visible in pending/ is always
 * whole, and one the caller was told about survives power loss.
 *
 * Bounds: the daemon sets limits (bytes on disk, age, full policy). Before
 * each append agent_spool_admit makes room (drop_oldest: the lowest
 * sequences go) or refuses (refuse_new); agent_spool_enforce drops entries
 * older than the age limit and whatever is over the byte limit. Every loss
 * is counted in <spool>/counters, persisted *before* the entries are
 * unlinked together with the list being dropped, so a crash mid-drop is
 * finished at the next open and the counters equal what was lost. Sizes
 * are file sizes (64-byte header + report); the file system adds its own
 * per-file overhead (a block, usually 4 KiB, per small report).
 *
 * Memory does not grow with the spool's depth: the spool keeps totals
 * (entries, bytes, highest sequence, a lower bound on the lowest), updated
 * by each operation rather than by rescanning. Ordered listing probes
 * consecutive sequence numbers (the spool is dense) and falls back to one
 * directory pass for the next chunk when it meets a long gap. Checksums are
 * verified when an entry is read, so start-up stays fast with a deep spool;
 * a corrupt entry is moved to corrupt/ with a warning and never blocks
 * anything.
 *
 * Acked entries: the first few are renamed into tmp/ for reuse; the rest
 * are marked dead (mode 0000: acked, not an entry any more) and unlinked
 * by a thread at idle CPU priority once the drain is over (or has stalled
 * for a few seconds), or at close. Every view skips dead entries; an open
 * removes any a crash left behind.
 *
 * Other writers (`resilience-agent submit`) add entries to pending/ while
 * the daemon runs; the daemon's spool watches pending/ with inotify and
 * adopts them into its totals (agent_spool_watch_*). Writers serialise on
 * the sequence lock (seq.h); the owner's open must run under it.
 *
 * One owner (the daemon's loop thread); not thread-safe (the removal
 * thread is internal and shares only its queue, under a lock).
 */
#ifndef AGENT_SPOOL_H
#define AGENT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"

/* Largest payload an entry may hold (the config's max_message_bytes cap). */
#define AGENT_SPOOL_ENTRY_MAX (64 * 1024 * 1024)
#define AGENT_SPOOL_HEADER_BYTES 64
#define AGENT_SPOOL_FORMAT_VERSION 1
/* Entries dropped per counters write (the in-progress list is bounded). */
#define AGENT_SPOOL_DROP_BATCH 64
/* The counters file is tiny; anything larger is not ours. */
#define AGENT_SPOOL_COUNTERS_MAX 4096

/* What happens to a new report when the spool is at its byte limit. */
enum agent_spool_policy {
    AGENT_SPOOL_DROP_OLDEST = 0, /* drop the lowest sequences until it fits */
    AGENT_SPOOL_REFUSE_NEW = 1,  /* keep the old ones, refuse (and count) the new one */
};

struct agent_spool_limits {
    uint64_t max_bytes;          /* 0: no byte limit */
    int64_t max_age_ms;          /* 0: no age limit */
    enum agent_spool_policy policy;
};

/* Losses, persisted in <spool>/counters; they survive restarts. */
struct agent_spool_counters {
    uint64_t dropped_oldest; /* evicted to make room (drop_oldest) */
    uint64_t expired;        /* older than max_age */
    uint64_t refused;        /* never spooled: full (refuse_new), too big, disk full */
};

struct agent_spool;

/* Called for each entry the spool drops (eviction or expiry), after it is
 * gone: the sender forgets it. */
typedef void (*agent_spool_drop_fn)(void *ctx, uint64_t sequence);

/* Open the spool at `dir` as its owner (the daemon), creating the folders
 * if missing. Removes leftovers in tmp/ (writes that never completed: their
 * sequence numbers were never sent), finishes a drop a crash interrupted,
 * moves files in pending/ whose names are not entries to corrupt/ (with a
 * warning), counts the entries and their size, and starts watching pending/
 * for entries other processes add. Call with the sequence lock held (seq.h)
 * so no other writer is half-way through an append. */
int agent_spool_open(const char *dir, struct agent_spool **out, struct rsl_error *err);

/* Open for appending only (resilience-agent submit): creates the folders if
 * missing, no clean-up, no scan, no watch; totals stay 0. */
int agent_spool_open_writer(const char *dir, struct agent_spool **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. */
void agent_spool_close(struct agent_spool **spool);

/* Set the limits (copied) and the drop callback (may be NULL). */
void agent_spool_set_limits(struct agent_spool *spool, const struct agent_spool_limits *limits);
void agent_spool_set_drop_callback(struct agent_spool *spool, agent_spool_drop_fn fn, void *ctx);

/* Bytes an entry with a payload of `len` bytes counts against the limit. */
uint64_t agent_spool_entry_bytes(const struct agent_spool *spool, size_t len);

/* Make room for an entry with a `len`-byte payload under the byte limit.
 * drop_oldest: drops the lowest sequences as needed (counted, logged);
 * RSL_OK. refuse_new: RSL_ENOSPC if it does not fit, counted as refused
 * and logged with `what` (e.g. "report 42 from collector fuel"). */
int agent_spool_admit(struct agent_spool *spool, size_t len, const char *what,
                      struct rsl_error *err);

/* Apply the limits to what is there: drop entries older than max_age and,
 * under drop_oldest, the oldest ones while over max_bytes (entries added by
 * other processes can push it over). `now_ms` is wall-clock time. */
int agent_spool_enforce(struct agent_spool *spool, int64_t now_ms, struct rsl_error *err);

/* Count `n` reports that were lost before reaching the spool (too big,
 * disk full, no sequence number): persisted like drops. If the counters
 * file cannot be written (disk full), the error is returned but the count
 * is kept and written by a later agent_spool_sync. */
int agent_spool_count_refused(struct agent_spool *spool, uint64_t n, struct rsl_error *err);

/* Durably add `len` bytes (a SignedReport) as entry `sequence`. RSL_EEXIST
 * if that sequence is already pending (a sequence is never reused);
 * RSL_ENOSPC when the disk is full. Nothing is left behind on failure. Does
 * not apply the limits (agent_spool_admit does). */
int agent_spool_append(struct agent_spool *spool, uint64_t sequence, const uint8_t *data,
                       size_t len, struct rsl_error *err);

/* Read and verify entry `sequence` into a new buffer (caller frees).
 * RSL_ENOENT: not pending. RSL_ECORRUPT: failed verification; it has been
 * moved to corrupt/ and a warning logged. RSL_ETOOBIG: verified but longer
 * than max_len; left in place for the caller to decide (e.g. reject). */
int agent_spool_read(struct agent_spool *spool, uint64_t sequence, size_t max_len,
                     uint8_t **data, size_t *len, struct rsl_error *err);

/* The aggregator has the report (ACCEPTED/DUPLICATE): unlink the entry.
 * RSL_ENOENT if it was not pending. The unlink is made durable by the next
 * agent_spool_sync: losing it to a power cut only means one resend, which
 * the aggregator answers DUPLICATE. */
int agent_spool_remove(struct agent_spool *spool, uint64_t sequence, struct rsl_error *err);

/* fsync pending/ if entries were removed since the last sync, and write
 * refusal counts a full disk kept from the counters file;
 * agent_spool_needs_sync says whether there is anything to do. */
int agent_spool_sync(struct agent_spool *spool, struct rsl_error *err);
bool agent_spool_needs_sync(const struct agent_spool *spool);

/* The aggregator refused the report for good (REJECTED): write `reason` to
 * rejected/<seq>.reason, move the entry to rejected/<seq>.rpt, fsync both
 * folders. It is never sent again. */
int agent_spool_reject(struct agent_spool *spool, uint64_t sequence, const char *reason,
                       struct rsl_error *err);

/* Up to `max` pending sequences greater than `after`, smallest first, into
 * out[]; *n is how many. Fewer than `max` means there are no more right now
 * (as far as the totals know: see the watch functions). O(max) memory. */
int agent_spool_list(struct agent_spool *spool, uint64_t after, uint64_t *out, size_t max,
                     size_t *n, struct rsl_error *err);

/* The lowest pending sequence and its entry's modification time (when it
 * was spooled), or RSL_ENOENT when the spool is empty. */
int agent_spool_oldest(struct agent_spool *spool, uint64_t *sequence, int64_t *mtime_ms,
                       struct rsl_error *err);

/* Totals: pending entries, their bytes (file sizes), the highest sequence seen
 * anywhere in the spool (0 if none: the sequence counter must stay above
 * it), entries in rejected/ and corrupt/. */
uint64_t agent_spool_count(const struct agent_spool *spool);
uint64_t agent_spool_bytes(const struct agent_spool *spool);
uint64_t agent_spool_max_sequence(const struct agent_spool *spool);
uint64_t agent_spool_rejected(const struct agent_spool *spool);
uint64_t agent_spool_corrupt(const struct agent_spool *spool);
const struct agent_spool_counters *agent_spool_counters(const struct agent_spool *spool);

/* The inotify descriptor watching pending/ (poll it for input), or -1 when
 * the kernel gave none: then call agent_spool_rescan now and then. */
int agent_spool_watch_fd(const struct agent_spool *spool);

/* Read the watch's events and adopt entries other processes added: *n_new
 * of them, the lowest being *lowest_new (0 if none). */
int agent_spool_watch_handle(struct agent_spool *spool, size_t *n_new, uint64_t *lowest_new,
                             struct rsl_error *err);

/* Recount pending/ from scratch (watch overflow, no watch). *changed is
 * set when the totals moved. */
int agent_spool_rescan(struct agent_spool *spool, bool *changed, struct rsl_error *err);

/* A read-only look at a spool folder for `resilience-agent status`: works
 * whether or not the daemon runs, creates nothing. */
struct agent_spool_summary {
    uint64_t pending;
    uint64_t bytes;             /* file sizes, as the limit counts them */
    uint64_t oldest_sequence;   /* 0 if none pending */
    int64_t oldest_mtime_ms;    /* when the oldest was spooled */
    uint64_t rejected;
    uint64_t corrupt;
    struct agent_spool_counters counters;
    char counters_problem[RSL_ERROR_TEXT_MAX]; /* "" or why the file was not read */
};
int agent_spool_inspect(const char *dir, struct agent_spool_summary *out, struct rsl_error *err);

/* Parse the counters file (untrusted bytes: strict, bounded): lines
 * "dropped_oldest N", "expired N", "refused N", "dropping SEQ SEQ ...",
 * '#' comments. Errors "ORIGIN:LINE: what". dropping[] receives at most
 * max_dropping sequences. */
int agent_spool_counters_parse(const char *buf, size_t len, const char *origin,
                               struct agent_spool_counters *out, uint64_t *dropping,
                               size_t max_dropping, size_t *n_dropping, struct rsl_error *err);

#endif
