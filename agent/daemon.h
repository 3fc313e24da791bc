/*
 * daemon.h - the resilience-agent main loop: collectors -> sequence ->
 * report -> spool -> sender, one thread, one zmq_poll.
 *
 * Everything happens on the calling thread: zmq_poll watches the DEALER
 * (acks, writability), its connection monitor, the collectors' pipes and a
 * signalfd, with a timeout that is the next due event (a collector run, an
 * exec timeout, a resend). SIGTERM/SIGINT stop collecting, wait a short
 * grace for acks of frames already sent, and return 0: whatever is unacked
 * stays in the spool for the next start. SIGHUP is logged (no reload yet).
 *
 * A report is made durable before anything can send it: the sequence number
 * is persisted, then the signed frame is spooled (fsynced), then the sender
 * is told. An oversized or invalid report is logged, counted and dropped
 * before it reaches the spool.
 */
#ifndef AGENT_DAEMON_H
#define AGENT_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"

#define AGENT_STOP_GRACE_MS 2000
#define AGENT_ONCE_TIMEOUT_DEFAULT_MS (30 * 1000)

struct agent_run_options {
    bool once;                /* run each collector once, deliver, exit */
    int64_t once_timeout_ms;  /* --once: give up waiting for acks after this */
};

struct agent_daemon_stats {
    uint64_t reports_spooled;
    uint64_t reports_dropped; /* oversized or invalid: never spooled */
};

struct agent_daemon;

/* Set up everything (signals, spool, sequence counter, ZeroMQ, collectors)
 * without running anything yet. cfg and keys are borrowed and must outlive
 * the daemon. Blocks SIGTERM/SIGINT/SIGHUP in the calling thread (before
 * libzmq starts its threads, so they inherit the mask) and ignores SIGPIPE. */
int agent_daemon_new(const struct agent_config *cfg, const struct agent_keys *keys,
                     const struct agent_run_options *opts, struct agent_daemon **out,
                     struct rsl_error *err);

/* Run until stopped. Returns the process exit code: 0 after SIGTERM/SIGINT,
 * or with --once when the spool was emptied (everything acked); 1 on a
 * fatal error or when --once timed out with reports still pending. */
int agent_daemon_run(struct agent_daemon *daemon);

/* Ask the loop to stop as if SIGTERM had arrived (for tests and embedding). */
void agent_daemon_request_stop(struct agent_daemon *daemon);

const struct agent_daemon_stats *agent_daemon_stats(const struct agent_daemon *daemon);

/* NULL-safe; NULLs the pointer. Kills running collectors, closes sockets. */
void agent_daemon_free(struct agent_daemon **daemon);

#endif
