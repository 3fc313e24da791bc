/*
 * seq.h - the agent's report sequence numbers (ARCHITECTURE section 8: no
 * sequence number is ever reused, across kill -9 and power loss, and across
 * the processes that share a spool: the daemon and `submit`).
 *
 * The file <spool>/sequence holds the next free number as decimal text. A
 * process hands out a number only after the file already says a number
 * past it, written with rsl_file_write_atomic (write, fsync, rename, fsync
 * folder). Processes serialise on flock(2) of <spool>/sequence.lock (the
 * counter file itself is replaced by rename, so it cannot carry the lock):
 * under the lock a process re-reads the file, moves it past the numbers it
 * takes, and only then uses them.
 *
 * A process may reserve a block of numbers at once (agent_seq_set_reserve):
 * the file moves past the whole block in one durable write and the numbers
 * are then handed out from memory. A crash loses the rest of the block - a
 * gap, which the aggregator accepts - but can never give one number to two
 * reports (the aggregator would call that equivocation and reject the
 * second). agent_seq_release gives an unused block back at a clean stop if
 * nobody has moved past it. Numbers from different processes interleave:
 * sequence order is not strictly creation order.
 *
 * The lock also guards the spool's tmp/ folder: writers append under it and
 * the daemon clears tmp/ under it (spool.h).
 *
 * One owner per object; not thread-safe.
 */
#ifndef AGENT_SEQ_H
#define AGENT_SEQ_H

#include <stdint.h>

#include "rsl/error.h"

struct agent_seq;

/* Open the counter at `path` (normally <spool>/sequence); `path`.lock is
 * created at the first lock. A missing counter starts at 1; it is created at
 * the first agent_seq_take. A file that does not hold one number in
 * 1..INT64_MAX is RSL_ECORRUPT naming the path: the agent refuses to guess.
 * Reserves one number at a time. Free with agent_seq_close. */
int agent_seq_open(const char *path, struct agent_seq **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. Releases the lock if held; does
 * not give back a reserved block (agent_seq_release does). */
void agent_seq_close(struct agent_seq **seq);

/* Numbers to reserve per durable write (1..4096; 1 = one at a time). */
void agent_seq_set_reserve(struct agent_seq *seq, unsigned block);

/* Take / drop the inter-process lock (blocking; nests: each lock needs one
 * unlock). take, raise and release lock internally as well. */
int agent_seq_lock(struct agent_seq *seq, struct rsl_error *err);
void agent_seq_unlock(struct agent_seq *seq);

/* The number the next agent_seq_take of this process would return if no
 * other process took one first. */
uint64_t agent_seq_peek(const struct agent_seq *seq);

/* Make sure every future number is at least `min_next` (persisted first).
 * Used at start-up with the highest sequence found in the spool + 1, so a
 * lost or rolled-back counter file cannot hand out a number again. */
int agent_seq_raise(struct agent_seq *seq, uint64_t min_next, struct rsl_error *err);

/* Take the next number into *out. On error nothing is handed out and a
 * later call may retry. RSL_ETOOBIG once the numbers reach INT64_MAX (the
 * wire allows 1..INT64_MAX). */
int agent_seq_take(struct agent_seq *seq, uint64_t *out, struct rsl_error *err);

/* Give back the unused part of a reserved block, if the file still ends
 * at it (no other process took a number since). */
int agent_seq_release(struct agent_seq *seq, struct rsl_error *err);

#endif
