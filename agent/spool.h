/*
 * spool.h - the agent's crash-safe outbox (ARCHITECTURE section 8: nothing
 * acked is resent forever, nothing unacked is lost).
 *
 * Layout under the spool folder (all created 0700):
 *   pending/<%020llu sequence>.rpt   signed reports waiting for an ack
 *   rejected/<seq>.rpt + <seq>.reason  reports the aggregator refused for good
 *   corrupt/<name>                   entries that failed their checksum
 *   tmp/                             entries being written (cleared at open)
 *   sequence                         the counter (seq.h), not touched here
 *
 * An entry is a 64-byte header - magic "RSLSPOOL", format version, header
 * length, sequence, payload length, SHA-256 over the first 32 header bytes
 * and the payload - followed by the SignedReport bytes. It is written to
 * tmp/, fsynced, renamed into pending/ and pending/ is fsynced, all before
 * agent_spool_append returns; so an entry visible in pending/ is always
 * whole, and one the caller was told about survives power loss.
 *
 * Memory does not grow with the spool's depth: the spool keeps only a count
 * and the highest sequence; agent_spool_list walks pending/ and returns the
 * next few sequences in order (bounded chunks). Checksums are verified when
 * an entry is read, so start-up stays fast with a deep spool; a corrupt
 * entry is moved to corrupt/ with a warning and never blocks anything.
 *
 * One owner (the daemon's loop thread); not thread-safe.
 */
#ifndef AGENT_SPOOL_H
#define AGENT_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"

/* Largest payload an entry may hold (the config's max_message_bytes cap). */
#define AGENT_SPOOL_ENTRY_MAX (64 * 1024 * 1024)
#define AGENT_SPOOL_HEADER_BYTES 64
#define AGENT_SPOOL_FORMAT_VERSION 1

struct agent_spool;

/* Open the spool at `dir`, creating the folders if missing. Removes
 * leftovers in tmp/ (writes that never completed: their sequence numbers
 * were never sent), moves files in pending/ whose names are not entries to
 * corrupt/ (with a warning), and counts the entries. */
int agent_spool_open(const char *dir, struct agent_spool **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. */
void agent_spool_close(struct agent_spool **spool);

/* Durably add `len` bytes (a SignedReport) as entry `sequence`. RSL_EEXIST
 * if that sequence is already pending (a sequence is never reused);
 * RSL_ENOSPC when the disk is full. Nothing is left behind on failure. */
int agent_spool_append(struct agent_spool *spool, uint64_t sequence, const uint8_t *data,
                       size_t len, struct rsl_error *err);

/* Read and verify entry `sequence` into a new buffer (caller frees).
 * RSL_ENOENT: not pending. RSL_ECORRUPT: failed verification; it has been
 * moved to corrupt/ and a warning logged. RSL_ETOOBIG: verified but longer
 * than max_len; left in place for the caller to decide (e.g. reject). */
int agent_spool_read(struct agent_spool *spool, uint64_t sequence, size_t max_len,
                     uint8_t **data, size_t *len, struct rsl_error *err);

/* The aggregator has the report (ACCEPTED/DUPLICATE): unlink the entry and
 * fsync pending/. RSL_ENOENT if it was not pending. */
int agent_spool_remove(struct agent_spool *spool, uint64_t sequence, struct rsl_error *err);

/* The aggregator refused the report for good (REJECTED): write `reason` to
 * rejected/<seq>.reason, move the entry to rejected/<seq>.rpt, fsync both
 * folders. It is never sent again. */
int agent_spool_reject(struct agent_spool *spool, uint64_t sequence, const char *reason,
                       struct rsl_error *err);

/* Up to `max` pending sequences greater than `after`, smallest first, into
 * out[]; *n is how many. Fewer than `max` means there are no more right now.
 * Walks pending/ once with O(max) memory. */
int agent_spool_list(struct agent_spool *spool, uint64_t after, uint64_t *out, size_t max,
                     size_t *n, struct rsl_error *err);

/* Number of pending entries. */
uint64_t agent_spool_count(const struct agent_spool *spool);

/* Highest sequence seen anywhere in the spool (pending, rejected, corrupt),
 * 0 if none: the sequence counter must stay above it. */
uint64_t agent_spool_max_sequence(const struct agent_spool *spool);

#endif
