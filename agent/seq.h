/*
 * seq.h - the agent's report sequence numbers (ARCHITECTURE section 8: no
 * sequence number is ever reused, across kill -9 and power loss).
 *
 * The file <spool>/sequence holds the next free number as decimal text. A
 * number is handed out only after the file already says the number after it,
 * written with rsl_file_write_atomic (write, fsync, rename, fsync folder).
 * A crash right after that loses at most one number - a gap the aggregator
 * accepts - and can never give the same number to two different reports
 * (the aggregator would call that equivocation and reject the second).
 *
 * One owner (the daemon's loop thread); not thread-safe.
 */
#ifndef AGENT_SEQ_H
#define AGENT_SEQ_H

#include <stdint.h>

#include "rsl/error.h"

struct agent_seq;

/* Open the counter at `path` (normally <spool>/sequence). A missing file
 * starts at 1; it is created at the first agent_seq_take. A file that does
 * not hold one number in 1..INT64_MAX is RSL_ECORRUPT naming the path: the
 * agent refuses to guess. Free with agent_seq_close. */
int agent_seq_open(const char *path, struct agent_seq **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. */
void agent_seq_close(struct agent_seq **seq);

/* The number the next agent_seq_take would return. */
uint64_t agent_seq_peek(const struct agent_seq *seq);

/* Make sure every future number is at least `min_next` (persisted first).
 * Used at start-up with the highest sequence found in the spool + 1, so a
 * lost or rolled-back counter file cannot hand out a number again. */
int agent_seq_raise(struct agent_seq *seq, uint64_t min_next, struct rsl_error *err);

/* Take the next number: persist next+1, then return next in *out. On error
 * nothing is handed out and a later call may retry. RSL_ETOOBIG once the
 * numbers reach INT64_MAX (the wire allows 1..INT64_MAX). */
int agent_seq_take(struct agent_seq *seq, uint64_t *out, struct rsl_error *err);

#endif
