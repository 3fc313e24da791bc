/*
 * daemon.h - the resilience-agent main loop: collectors -> sequence ->
 * report -> spool -> sender, one thread, one zmq_poll.
 *
 * Everything happens on the calling thread: zmq_poll watches the DEALER
 * (acks, writability), its connection monitors, the collectors' pipes and
 * sockets, the spool's inotify descriptor and a signalfd, with a timeout
 * that is the next due event (a collector run, an exec timeout, a resend,
 * a failover, a status write, a watchdog ping).
 *
 * Signals: SIGTERM/SIGINT stop collecting, wait a short grace
 * (AGENT_STOP_GRACE_MS) for acks of frames already sent, and return 0:
 * whatever is unacked stays in the spool for the next start. SIGHUP reloads
 * agent.conf and the keys: the new configuration is loaded and checked and
 * its collectors and sender built before anything is swapped, so a bad
 * file (or one that changes what cannot change while running: the spool
 * folder, the agent id) keeps the old configuration running and the log
 * says why.
 *
 * A report is made durable before anything can send it: the sequence number
 * is persisted, then the signed frame is spooled (fsynced), then the sender
 * is told. A report that cannot be spooled (too big, spool full under
 * refuse_new, disk full) is logged and counted as refused in the spool's
 * persisted counters.
 *
 * Under systemd: READY=1 once running, STATUS= with the spool depth and the
 * endpoint whenever they change, WATCHDOG=1 at half of WATCHDOG_USEC from
 * the loop itself (a stuck loop stops the pings), RELOADING=1 / STOPPING=1.
 *
 * One daemon per spool: <spool>/agent.lock is held for the daemon's life.
 */
#ifndef AGENT_DAEMON_H
#define AGENT_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"

#define AGENT_STOP_GRACE_MS 2000
#define AGENT_ONCE_TIMEOUT_DEFAULT_MS (30 * 1000)
/* Sequence numbers the daemon reserves per durable counter write. */
#define AGENT_SEQ_RESERVE 16
/* How often the daemon may rewrite <spool>/status (and at the latest). */
#define AGENT_STATUS_MIN_INTERVAL_MS 1000
/* ... and after a turning point (spool drained or started to fill,
 * connection gained or lost). */
#define AGENT_STATUS_URGENT_INTERVAL_MS 200
#define AGENT_STATUS_MAX_INTERVAL_MS 10000
/* Spool age limit and recount checks; fsync of acked removals. */
#define AGENT_MAINTENANCE_INTERVAL_MS (60 * 1000)
#define AGENT_SYNC_INTERVAL_MS 1000

struct agent_run_options {
    bool once;                /* run each collector once, deliver, exit */
    int64_t once_timeout_ms;  /* --once: give up waiting for acks after this */
};

struct agent_daemon_stats {
    uint64_t reports_spooled;
    uint64_t reports_dropped; /* never spooled: too big, invalid, spool full, disk full */
    uint64_t reloads;         /* successful SIGHUP reloads */
    uint64_t reload_failures;
};

struct agent_daemon;

/* Set up everything (signals, lock, spool, sequence counter, ZeroMQ,
 * collectors) without running anything yet. cfg and keys are borrowed and
 * must outlive the daemon (a reload makes the daemon own their
 * replacements). Blocks SIGTERM/SIGINT/SIGHUP in the calling thread (before
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

/* Ask the loop to reload as if SIGHUP had arrived. */
void agent_daemon_request_reload(struct agent_daemon *daemon);

/* The configuration in use (changes after a successful reload). */
const struct agent_config *agent_daemon_config(const struct agent_daemon *daemon);

const struct agent_daemon_stats *agent_daemon_stats(const struct agent_daemon *daemon);

/* NULL-safe; NULLs the pointer. Kills running collectors, closes sockets,
 * gives back unused reserved sequence numbers. */
void agent_daemon_free(struct agent_daemon **daemon);

#endif
