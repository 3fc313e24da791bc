/*
 * collect.h - running the configured collectors on their intervals without
 * ever blocking the daemon's loop.
 *
 * The set is driven by the daemon's single poll loop:
 *   agent_collectors_tick()        start runs that are due, enforce timeouts
 *   agent_collectors_poll_fill()   the file descriptors running collectors
 *                                  need watched (exec: stdout, stderr, pidfd;
 *                                  http: libcurl's sockets)
 *   agent_collectors_poll_handle() after zmq_poll: read what is ready
 *   agent_collectors_next_deadline() when tick must run again
 * Each finished run that produced measurements is handed to the result
 * callback once, with all its samples: one report per run.
 *
 * Types:
 *   static  delivers its one configured measurement synchronously;
 *   exec    spawns /bin/sh -c COMMAND as the leader of a new process group,
 *           reads its stdout (at most AGENT_EXEC_OUTPUT_MAX bytes) and
 *           stderr (logged line by line at warning) non-blockingly, and on
 *           timeout kills the whole group;
 *   file    reads a drop folder (node_exporter textfile style): every
 *           *.prom, *.txt and *.rsl regular file in the line format, each
 *           written by atomic rename; a file whose mtime is older than
 *           max_age is stale and skipped, a file that does not parse is
 *           skipped with FILE:LINE in the log, the rest make the report;
 *           samples without a time are stamped with their file's mtime;
 *   http    GETs a URL through libcurl's multi interface, whose sockets
 *           and timer join the same poll (no thread, no blocking): the body
 *           (at most AGENT_HTTP_BODY_MAX) is the line format or a flat JSON
 *           object (jsonbody.h). libcurl is initialised only when an http
 *           collector exists.
 * Each type is a small table of functions in collect.c.
 *
 * Every failed run, stale file or bad file is logged. A problem that
 * repeats run after run is logged at its level (warning, error) the first
 * time and at info afterwards, so `journalctl -p warning` shows each
 * problem once even for a collector running every second; a change
 * (another file, a new mtime, another error) is logged at its level again.
 *
 * The set borrows the config (it must outlive the set). Single-threaded.
 * Child processes inherit no descriptors but stdio, an empty signal mask and
 * default signal dispositions (SIGPIPE included), whatever the daemon has
 * blocked or ignored - except glibc's two internal signals (32 and 33),
 * which its posix_spawn leaves ignored; programs that use them (glibc's own
 * thread cancellation and setxid) install their handlers themselves.
 */
#ifndef AGENT_COLLECT_H
#define AGENT_COLLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "config.h"
#include "rsl/error.h"
#include "rsl/lineformat.h"

/* More stdout than this from one exec run is an error (no measurements). */
#define AGENT_EXEC_OUTPUT_MAX (64 * 1024)
/* Larger drop files are skipped; larger HTTP bodies fail the run. */
#define AGENT_FILE_MAX_BYTES (1024 * 1024)
#define AGENT_HTTP_BODY_MAX (1024 * 1024)
/* Longer stderr lines are logged in pieces of this size. */
#define AGENT_EXEC_STDERR_LINE_MAX 512

struct agent_collectors;

/* A run finished with n >= 1 samples (borrowed for the call).
 * collected_at_ms is the wall-clock time the run finished: the default
 * observed_at_ms of samples that carry none. */
typedef void (*agent_collect_fn)(void *ctx, const struct agent_collector_config *cc,
                                 const struct rsl_sample *samples, size_t n,
                                 int64_t collected_at_ms);

/* A set for every collector in cfg, all due at the first tick. Reads the
 * http collectors' bearer token files (refused when group/world readable):
 * errors name the collector and the file. */
int agent_collectors_new(const struct agent_config *cfg, agent_collect_fn fn, void *ctx,
                         struct agent_collectors **out, struct rsl_error *err);

/* What agent_collectors_new checks beyond the config (token files), for
 * --check-config: builds a set and frees it. */
int agent_collectors_check(const struct agent_config *cfg, struct rsl_error *err);

/* Kills and reaps any running children; NULL-safe; NULLs the pointer. */
void agent_collectors_free(struct agent_collectors **set);

/* --once: each collector runs one time only. Call before the first tick. */
void agent_collectors_set_once(struct agent_collectors *set);

/* Start due runs and handle timeouts; `now` is rsl_monotonic_ms(). */
void agent_collectors_tick(struct agent_collectors *set, int64_t now);

/* Monotonic ms at which tick next has work, or -1 if never. */
int64_t agent_collectors_next_deadline(const struct agent_collectors *set);

/* Upper bound on how many poll items poll_fill may write. */
size_t agent_collectors_poll_max(const struct agent_collectors *set);

/* Write the descriptors to watch into items[0..max); returns how many. The
 * same items, after zmq_poll set revents, go to poll_handle. */
size_t agent_collectors_poll_fill(struct agent_collectors *set, zmq_pollitem_t *items,
                                  size_t max);
void agent_collectors_poll_handle(struct agent_collectors *set, const zmq_pollitem_t *items,
                                  size_t n, int64_t now);

/* Stop: kill running runs (no results) and schedule nothing more. */
void agent_collectors_stop(struct agent_collectors *set);

/* True when nothing is running and nothing will be started again (after
 * --once runs completed, or after stop). */
bool agent_collectors_idle(const struct agent_collectors *set);

/* Number of runs in progress. */
size_t agent_collectors_running(const struct agent_collectors *set);

#endif
