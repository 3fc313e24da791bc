/*
 * submit.h - `resilience-agent submit INDICATOR=VALUE[:UNIT] ...`: a manual
 * report that takes the same road as collected ones.
 *
 * The measurements become one signed report with the next sequence number
 * (taken under the spool's sequence lock, so a running daemon and any
 * number of submits never share a number) and are appended to pending/
 * under that lock. A running daemon notices the new entry (inotify) and
 * sends it; otherwise the next start does. The report's source is
 * "submit"; releasable_to is the agent's default.
 *
 * Under spool_full_policy = refuse_new a full spool refuses the report
 * (the operator sees it at once); under drop_oldest the daemon makes room
 * when it adopts the entry.
 */
#ifndef AGENT_SUBMIT_H
#define AGENT_SUBMIT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"
#include "rsl/lineformat.h"

/* The source name submitted measurements carry. */
#define AGENT_SUBMIT_SOURCE "submit"

/* Parse one command-line argument INDICATOR=VALUE[:UNIT] (untrusted:
 * strict, bounded). Errors name the argument. */
int agent_submit_parse_arg(const char *arg, struct rsl_sample *out, struct rsl_error *err);

/* Build, sign and spool one report of samples[0..n) for cfg/keys;
 * *sequence is the number it got. */
int agent_submit(const struct agent_config *cfg, const struct agent_keys *keys,
                 const struct rsl_sample *samples, size_t n, uint64_t *sequence,
                 struct rsl_error *err);

#endif
