/*
 * status.h - what `resilience-agent status` shows, and the status file the
 * daemon keeps for it.
 *
 * The daemon rewrites <spool>/status (JSON, in place, not fsynced: it is
 * a view, not state) every few seconds while something changes; a reader
 * that catches it half-written reads again. `status` combines it with what the spool itself says
 * (depth, bytes, oldest entry, drop counters, rejected/ and corrupt/ - read directly, so they are
 * right even when the daemon is not running) and with <spool>/agent.lock, which the running daemon
 * holds (flock) and which holds its pid.
 *
 * The status file is parsed like any untrusted input: bounded, strict
 * about types, tolerant of missing members (an older daemon wrote it).
 */
#ifndef AGENT_STATUS_H
#define AGENT_STATUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "rsl/error.h"
#include "sender.h"
#include "spool.h"

#define AGENT_STATUS_FILE_MAX (64 * 1024)

/* What the daemon knows beyond the spool. */
struct agent_status {
    char agent_id[RSL_AGENT_ID_MAX + 1];
    int64_t pid;
    int64_t started_at_ms; /* wall clock */
    int64_t updated_at_ms; /* wall clock, when the file was written */
    char endpoint[AGENT_ENDPOINT_MAX];
    bool connected;
    uint64_t pending; /* spool totals when written */
    uint64_t bytes;
    uint64_t in_flight;
    uint64_t awaiting_ack;
    uint64_t window;        /* congestion window: in flight at most, now */
    int64_t last_ack_at_ms; /* wall clock, 0 = none since start */
    uint64_t spooled;       /* reports spooled since start */
    struct agent_sender_stats sender;
};

/* Write <spool_dir>/status (in place, mode 0600, no fsync). */
int agent_status_write(const char *spool_dir, const struct agent_status *st, struct rsl_error *err);

/* Parse a status file's bytes (untrusted: at most AGENT_STATUS_FILE_MAX,
 * one JSON object; unknown members ignored, members of the wrong type are
 * errors naming them). Missing members stay 0/"". */
int agent_status_parse(const char *buf, size_t len, const char *origin, struct agent_status *out,
                       struct rsl_error *err);

/* Take <spool_dir>/agent.lock for the daemon's whole life: RSL_EEXIST if
 * another daemon holds it (its pid in the message). The lock is released
 * when *fd is closed. */
int agent_status_lock(const char *spool_dir, int *fd, struct rsl_error *err);

/* Is a daemon running on this spool? *pid when it is (else 0). */
bool agent_status_daemon_running(const char *spool_dir, int64_t *pid);

/* The `status` command: print the agent's state for `cfg` to `out`,
 * human-readable or (json) one JSON object. `now_ms` is wall-clock time.
 * RSL_OK when the state could be determined (whether or not the daemon
 * runs). */
int agent_status_report(const struct agent_config *cfg, bool json, int64_t now_ms, FILE *out,
                        struct rsl_error *err);

#endif
