/*
 * daemon.c - the agent's single-threaded event loop (see daemon.h).
 *
 * Order of durable steps for each collector run (ARCHITECTURE section 8):
 *   1. agent_seq_take: the counter file is past n before n is used
 *   2. agent_report_build: encode, validate, sign, size check
 *   3. agent_spool_admit: room under the limits (or refused, counted)
 *   4. agent_spool_append: the frame is on disk (fsynced) in pending/
 *   5. agent_sender_notify: only now can it go on the wire
 * A crash between 1 and 4 burns numbers (a gap); between 4 and the ack the
 * report is resent after restart; after the ack it is gone from pending/.
 *
 * Signals arrive through a signalfd polled with everything else, so no
 * handler runs asynchronously and no state is shared with one. They are
 * blocked before the ZeroMQ context exists: libzmq's I/O threads inherit
 * the mask, so the kernel cannot deliver SIGTERM to one of them and kill
 * the process with the default action.
 *
 * Periodic work is scheduled by deadlines folded into zmq_poll's timeout:
 * the status file (when something changed, at most once a second, at least
 * every 10 s), an fsync of pending/ after acked removals (once a second
 * while there are any), the spool's age limit (every minute) and the
 * systemd watchdog. An idle agent wakes up only for these.
 */
#include "daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <zmq.h>

#include "collect.h"
#include "report.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "sender.h"
#include "seq.h"
#include "spool.h"
#include "status.h"

/* Longest single zmq_poll: bounds the effect of a missed wake-up. */
#define LOOP_MAX_WAIT_MS 60000
#define NEVER (-1)

struct agent_daemon {
    const struct agent_config *cfg;   /* in use: borrowed, or own_cfg after a reload */
    struct agent_config *own_cfg;
    const struct agent_keys *keys;    /* likewise */
    struct agent_keys *own_keys;
    struct agent_run_options opts;

    sigset_t old_mask;
    bool mask_set;
    int sigfd;
    int lock_fd;                      /* <spool>/agent.lock, held */

    struct agent_spool *spool;
    struct agent_seq *seq;
    void *zmq_ctx;
    struct agent_sender *sender;
    struct agent_collectors *collectors;

    zmq_pollitem_t *items;
    size_t items_cap;

    bool stop_requested;              /* agent_daemon_request_stop */
    bool reload_requested;            /* SIGHUP or agent_daemon_request_reload */
    bool stopping;
    int64_t stop_deadline;            /* monotonic ms */

    int64_t started_wall;
    int64_t last_status_write;        /* monotonic ms */
    uint64_t status_fingerprint;      /* of what the last status write showed */
    bool status_empty;                /* the spool was empty at the last write */
    bool status_connected;            /* connected at the last write */
    char sd_status[384];              /* last STATUS= sent to systemd */
    int64_t next_maintenance;
    int64_t next_sync;
    int64_t watchdog_ms;              /* ping interval, 0 = no watchdog */
    int64_t next_watchdog;
    struct agent_daemon_stats stats;
};

static int64_t earliest(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* ---- one collector run -> one spooled report --------------------------------- */

/* A report lost before it reached the spool: counted (persisted) and logged
 * by the caller. */
static void count_refused(struct agent_daemon *d)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    d->stats.reports_dropped++;
    if (agent_spool_count_refused(d->spool, 1, &err) != RSL_OK)
        RSL_ERR("agent", "cannot save the drop counters yet: %s (the count is kept and "
                "written once there is room)", err.text);
}

static void on_collected(void *ctx, const struct agent_collector_config *cc,
                         const struct rsl_sample *samples, size_t n, int64_t collected_at_ms)
{
    struct agent_daemon *d = ctx;
    uint8_t *frame = NULL;
    size_t len = 0;
    uint64_t sequence = 0;
    char what[AGENT_COLLECTOR_NAME_MAX + 64];
    struct rsl_error err;
    rsl_error_clear(&err);

    if (d->stopping)
        return;
    /* The number is durably taken before the report exists. */
    if (agent_seq_take(d->seq, &sequence, &err) != RSL_OK) {
        RSL_ERR("agent", "collector %s: cannot take a sequence number: %s; %zu measurement%s "
                "dropped", cc->name, err.text, n, n == 1 ? "" : "s");
        count_refused(d);
        return;
    }
    if (agent_report_build(d->cfg, cc, d->keys->signer, sequence, rsl_now_ms(), collected_at_ms,
                           samples, n, &frame, &len, &err) != RSL_OK) {
        RSL_ERR("agent", "collector %s: %s; report dropped", cc->name, err.text);
        count_refused(d);
        return;
    }
    snprintf(what, sizeof(what), "report %" PRIu64 " from collector %s", sequence, cc->name);
    int rc = agent_spool_admit(d->spool, len, what, &err);
    if (rc == RSL_ENOSPC) {
        d->stats.reports_dropped++; /* counted and logged by the spool */
        free(frame);
        return;
    }
    if (rc == RSL_OK)
        rc = agent_spool_append(d->spool, sequence, frame, len, &err);
    free(frame);
    if (rc != RSL_OK) {
        RSL_ERR("agent", "collector %s: cannot spool report %" PRIu64 ": %s; report dropped",
                cc->name, sequence, err.text);
        count_refused(d);
        return;
    }
    d->stats.reports_spooled++;
    RSL_DEBUG("agent", "report %" PRIu64 " from collector %s spooled (%zu measurement%s, %zu "
              "bytes)", sequence, cc->name, n, n == 1 ? "" : "s", len);
    agent_sender_notify(d->sender, sequence);
}

static void on_dropped(void *ctx, uint64_t sequence)
{
    struct agent_daemon *d = ctx;
    if (d->sender != NULL)
        agent_sender_forget(d->sender, sequence);
}

/* ---- set-up ------------------------------------------------------------------- */

static int setup_signals(struct agent_daemon *d, struct rsl_error *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, &d->old_mask) != 0)
        return rsl_error_set(err, RSL_EIO, "sigprocmask: %s", strerror(errno));
    d->mask_set = true;
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sigfd < 0)
        return rsl_error_set(err, RSL_EIO, "signalfd: %s", strerror(errno));
    /* A peer hanging up must not kill the daemon (ARCHITECTURE section 10). */
    signal(SIGPIPE, SIG_IGN);
    /* An ignored SIGCHLD is inherited across exec and would make the kernel
     * reap collector children itself, taking their exit status with it. */
    signal(SIGCHLD, SIG_DFL);
    return RSL_OK;
}

static void apply_limits(struct agent_daemon *d)
{
    struct agent_spool_limits limits = {
        .max_bytes = d->cfg->spool_max_bytes,
        .max_age_ms = d->cfg->spool_max_age_ms,
        .policy = d->cfg->spool_full_policy,
    };
    agent_spool_set_limits(d->spool, &limits);
}

static int make_sender(struct agent_daemon *d, const struct agent_config *cfg,
                       const struct agent_keys *keys, struct agent_sender **out,
                       struct rsl_error *err)
{
    const char *endpoints[AGENT_MAX_ENDPOINTS];
    for (size_t i = 0; i < cfg->n_endpoints; i++)
        endpoints[i] = cfg->endpoints[i];
    struct agent_sender_options so = {
        .agent_id = cfg->id,
        .endpoints = endpoints,
        .n_endpoints = cfg->n_endpoints,
        .server_key = cfg->server_key,
        .client_public = keys->curve_public,
        .client_secret = keys->curve_secret,
        .resend_timeout_ms = cfg->resend_timeout_ms,
        .backoff_max_ms = cfg->backoff_max_ms,
        .heartbeat_ms = cfg->heartbeat_ms,
        .max_message_bytes = cfg->max_message_bytes,
        .window = cfg->window,
    };
    return agent_sender_new(d->zmq_ctx, &so, d->spool, out, err);
}

/* Room for every poll item the loop may fill. */
static int size_items(struct agent_daemon *d, struct rsl_error *err)
{
    size_t cap = 2 + AGENT_SENDER_POLL_ITEMS + agent_collectors_poll_max(d->collectors);
    if (cap <= d->items_cap)
        return RSL_OK;
    zmq_pollitem_t *items = realloc(d->items, cap * sizeof(*items));
    if (items == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    d->items = items;
    d->items_cap = cap;
    return RSL_OK;
}

int agent_daemon_new(const struct agent_config *cfg, const struct agent_keys *keys,
                     const struct agent_run_options *opts, struct agent_daemon **out,
                     struct rsl_error *err)
{
    struct agent_daemon *d = NULL;
    char path[AGENT_PATH_MAX + 16];
    int rc;

    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    d->cfg = cfg;
    d->keys = keys;
    d->opts = *opts;
    d->sigfd = -1;
    d->lock_fd = -1;
    d->started_wall = rsl_now_ms();
    if (d->opts.once_timeout_ms <= 0)
        d->opts.once_timeout_ms = AGENT_ONCE_TIMEOUT_DEFAULT_MS;

    if ((rc = setup_signals(d, err)) != RSL_OK)
        goto out;
    if ((rc = rsl_mkdir_p(cfg->spool_dir, 0700, err)) != RSL_OK)
        goto out;
    if ((rc = agent_status_lock(cfg->spool_dir, &d->lock_fd, err)) != RSL_OK)
        goto out;
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    if ((rc = agent_seq_open(path, &d->seq, err)) != RSL_OK)
        goto out;
    agent_seq_set_reserve(d->seq, AGENT_SEQ_RESERVE);
    /* Open the spool under the writers' lock: no `submit` is half-way
     * through an append while tmp/ is cleared and pending/ counted. */
    if ((rc = agent_seq_lock(d->seq, err)) != RSL_OK)
        goto out;
    rc = agent_spool_open(cfg->spool_dir, &d->spool, err);
    agent_seq_unlock(d->seq);
    if (rc != RSL_OK)
        goto out;
    /* Never hand out a number the spool has already seen, even if the
     * counter file was lost or restored from an old backup. */
    uint64_t max_seen = agent_spool_max_sequence(d->spool);
    if (max_seen >= agent_seq_peek(d->seq)) {
        RSL_WARN("agent", "%s is behind the spool (highest sequence %" PRIu64 "); moving on",
                 path, max_seen);
        if ((rc = agent_seq_raise(d->seq, max_seen + 1, err)) != RSL_OK)
            goto out;
    }
    apply_limits(d);
    agent_spool_set_drop_callback(d->spool, on_dropped, d);

    d->zmq_ctx = zmq_ctx_new();
    if (d->zmq_ctx == NULL) {
        rc = rsl_error_set(err, RSL_EIO, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto out;
    }
    /* One I/O thread is plenty for one connection (the default is one
     * too; said here so nobody raises it for "speed"). */
    zmq_ctx_set(d->zmq_ctx, ZMQ_IO_THREADS, 1);
    if ((rc = make_sender(d, cfg, keys, &d->sender, err)) != RSL_OK)
        goto out;
    if ((rc = agent_collectors_new(cfg, on_collected, d, &d->collectors, err)) != RSL_OK)
        goto out;
    if (d->opts.once)
        agent_collectors_set_once(d->collectors);
    if ((rc = size_items(d, err)) != RSL_OK)
        goto out;

    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        d->watchdog_ms = (int64_t)(usec / 2000) > 0 ? (int64_t)(usec / 2000) : 1;
    *out = d;
    d = NULL; /* transferred */
out:
    agent_daemon_free(&d);
    return rc;
}

void agent_daemon_free(struct agent_daemon **daemon)
{
    if (daemon == NULL || *daemon == NULL)
        return;
    struct agent_daemon *d = *daemon;
    agent_collectors_free(&d->collectors);
    agent_sender_free(&d->sender);
    if (d->zmq_ctx != NULL)
        zmq_ctx_term(d->zmq_ctx);
    if (d->seq != NULL) {
        struct rsl_error err;
        rsl_error_clear(&err);
        if (agent_seq_release(d->seq, &err) != RSL_OK)
            RSL_WARN("agent", "%s", err.text);
    }
    agent_seq_close(&d->seq);
    agent_spool_close(&d->spool);
    free(d->items);
    if (d->sigfd >= 0)
        close(d->sigfd);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    agent_keys_free(&d->own_keys);
    agent_config_free(&d->own_cfg);
    /* The stop signals stay blocked: restoring the old mask here would let a
     * second SIGTERM that arrives during shutdown kill the process with a
     * non-zero status (seen with Ctrl-C followed by a service manager's
     * SIGTERM). The process is about to exit anyway. */
    free(d);
    *daemon = NULL;
}

/* ---- reload ------------------------------------------------------------------- */

/* SIGHUP: everything new is built first; only when all of it works is it
 * swapped in. Until then the running configuration is untouched. */
static void reload(struct agent_daemon *d)
{
    struct agent_config *ncfg = NULL;
    struct agent_keys *nkeys = NULL;
    struct agent_sender *nsender = NULL;
    struct agent_collectors *ncoll = NULL;
    struct rsl_error err;
    char path[AGENT_PATH_MAX];

    /* A copy: the configuration holding the path is freed by the swap. */
    snprintf(path, sizeof(path), "%s", d->cfg->path);
    rsl_error_clear(&err);
    sd_notify(0, "RELOADING=1");
    RSL_NOTICE("agent", "SIGHUP: reloading %s", path);
    if (agent_config_load(path, &ncfg, &err) != RSL_OK || agent_keys_load(ncfg, &nkeys, &err) !=
                                                              RSL_OK)
        goto fail;
    if (strcmp(ncfg->spool_dir, d->cfg->spool_dir) != 0) {
        rsl_error_set(&err, RSL_ECONFIG, "%s: the spool folder cannot change while running "
                      "(%s -> %s); restart the agent", path, d->cfg->spool_dir, ncfg->spool_dir);
        goto fail;
    }
    if (strcmp(ncfg->id, d->cfg->id) != 0) {
        rsl_error_set(&err, RSL_ECONFIG, "%s: the agent id cannot change while running (%s -> "
                      "%s); restart the agent", path, d->cfg->id, ncfg->id);
        goto fail;
    }
    if (make_sender(d, ncfg, nkeys, &nsender, &err) != RSL_OK ||
        agent_collectors_new(ncfg, on_collected, d, &ncoll, &err) != RSL_OK)
        goto fail;

    /* Swap. Runs in progress are ended; reports in flight are listed again
     * by the new sender (the aggregator answers repeats DUPLICATE). */
    agent_collectors_free(&d->collectors);
    agent_sender_free(&d->sender);
    d->collectors = ncoll;
    d->sender = nsender;
    ncoll = NULL;
    nsender = NULL;
    agent_keys_free(&d->own_keys);
    agent_config_free(&d->own_cfg);
    d->cfg = d->own_cfg = ncfg;
    d->keys = d->own_keys = nkeys;
    ncfg = NULL;
    nkeys = NULL;
    apply_limits(d);
    rsl_log_init(NULL, d->cfg->log_level);
    if (size_items(d, &err) != RSL_OK)
        RSL_ERR("agent", "%s", err.text); /* the old array still serves */
    d->stats.reloads++;
    d->status_fingerprint = 0;
    RSL_NOTICE("agent", "reloaded %s: %zu collector%s, sending to %s", path, d->cfg->n_collectors,
               d->cfg->n_collectors == 1 ? "" : "s", d->cfg->endpoints[0]);
    sd_notify(0, "READY=1");
    return;
fail:
    d->stats.reload_failures++;
    RSL_ERR("agent", "reload failed: %s; keeping the running configuration", err.text);
    agent_collectors_free(&ncoll);
    agent_sender_free(&nsender);
    agent_keys_free(&nkeys);
    agent_config_free(&ncfg);
    sd_notify(0, "READY=1");
}

/* ---- periodic work ------------------------------------------------------------ */

static uint64_t status_fingerprint(const struct agent_daemon *d)
{
    const struct agent_sender_stats *st = agent_sender_stats(d->sender);
    const struct agent_spool_counters *c = agent_spool_counters(d->spool);
    uint64_t parts[] = {agent_spool_count(d->spool), agent_spool_bytes(d->spool),
                        agent_sender_connected(d->sender) ? 1U : 2U, st->failovers,
                        st->accepted + st->duplicate + st->rejected + st->retry_later, st->sent,
                        c->dropped_oldest + c->expired + c->refused,
                        agent_sender_in_flight(d->sender), d->stats.reloads};
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        h = (h ^ parts[i]) * 1099511628211ULL;
    return h;
}

static void write_status(struct agent_daemon *d, int64_t now)
{
    struct agent_status st;
    struct rsl_error err;
    memset(&st, 0, sizeof(st));
    rsl_error_clear(&err);
    snprintf(st.agent_id, sizeof(st.agent_id), "%s", d->cfg->id);
    st.pid = (int64_t)getpid();
    st.started_at_ms = d->started_wall;
    st.updated_at_ms = rsl_now_ms();
    snprintf(st.endpoint, sizeof(st.endpoint), "%s", agent_sender_endpoint(d->sender));
    st.connected = agent_sender_connected(d->sender);
    st.pending = agent_spool_count(d->spool);
    st.bytes = agent_spool_bytes(d->spool);
    st.in_flight = agent_sender_in_flight(d->sender);
    st.awaiting_ack = agent_sender_awaiting_ack(d->sender);
    st.window = agent_sender_window(d->sender);
    st.last_ack_at_ms = agent_sender_last_ack_ms(d->sender);
    st.spooled = d->stats.reports_spooled;
    st.sender = *agent_sender_stats(d->sender);
    if (agent_status_write(d->cfg->spool_dir, &st, &err) != RSL_OK)
        RSL_DEBUG("agent", "%s", err.text); /* a view only: never worth more */
    d->last_status_write = now;
    d->status_fingerprint = status_fingerprint(d);
    d->status_empty = st.pending == 0;
    d->status_connected = st.connected;

    char text[sizeof(d->sd_status)];
    snprintf(text, sizeof(text), "%" PRIu64 " report%s pending; %s %s", st.pending,
             st.pending == 1 ? "" : "s", st.connected ? "connected to" : "connecting to",
             st.endpoint);
    if (strcmp(text, d->sd_status) != 0) {
        memcpy(d->sd_status, text, sizeof(text));
        sd_notifyf(0, "STATUS=%s", text);
    }
}

static int64_t status_due(const struct agent_daemon *d)
{
    /* Turning points are shown at once: the spool drained or started to
     * fill, the connection came or went. */
    if ((agent_spool_count(d->spool) == 0) != d->status_empty ||
        agent_sender_connected(d->sender) != d->status_connected)
        return d->last_status_write + AGENT_STATUS_URGENT_INTERVAL_MS;
    if (status_fingerprint(d) != d->status_fingerprint)
        return d->last_status_write + AGENT_STATUS_MIN_INTERVAL_MS;
    return d->last_status_write + AGENT_STATUS_MAX_INTERVAL_MS;
}

static void enforce_limits(struct agent_daemon *d)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_spool_enforce(d->spool, rsl_now_ms(), &err) != RSL_OK)
        RSL_ERR("agent", "spool limits: %s", err.text);
}

static void periodic(struct agent_daemon *d, int64_t now)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_spool_needs_sync(d->spool) && now >= d->next_sync) {
        if (agent_spool_sync(d->spool, &err) != RSL_OK)
            RSL_WARN("agent", "%s", err.text);
        d->next_sync = now + AGENT_SYNC_INTERVAL_MS;
    }
    if (now >= d->next_maintenance) {
        d->next_maintenance = now + AGENT_MAINTENANCE_INTERVAL_MS;
        if (agent_spool_watch_fd(d->spool) < 0) {
            /* No inotify: notice other writers' entries by recounting. */
            bool changed = false;
            if (agent_spool_rescan(d->spool, &changed, &err) != RSL_OK)
                RSL_WARN("agent", "%s", err.text);
            else if (changed)
                agent_sender_notify(d->sender, 1);
        }
        enforce_limits(d);
    }
    if (now >= status_due(d))
        write_status(d, now);
    if (d->watchdog_ms > 0 && now >= d->next_watchdog) {
        sd_notify(0, "WATCHDOG=1");
        d->next_watchdog = now + d->watchdog_ms;
    }
}

static int64_t periodic_deadline(const struct agent_daemon *d)
{
    int64_t t = earliest(d->next_maintenance, status_due(d));
    if (agent_spool_needs_sync(d->spool))
        t = earliest(t, d->next_sync);
    if (d->watchdog_ms > 0)
        t = earliest(t, d->next_watchdog);
    return t;
}

/* ---- the loop ----------------------------------------------------------------- */

static void begin_stop(struct agent_daemon *d, const char *why, int64_t now)
{
    if (d->stopping) {
        /* A second request: stop waiting for acks. */
        d->stop_deadline = now;
        return;
    }
    d->stopping = true;
    d->stop_deadline = now + AGENT_STOP_GRACE_MS;
    RSL_NOTICE("agent", "stopping (%s)", why);
    sd_notify(0, "STOPPING=1");
    agent_collectors_stop(d->collectors);
    agent_sender_drain(d->sender);
}

static void read_signals(struct agent_daemon *d, int64_t now)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(d->sigfd, &si, sizeof(si));
        if (n != (ssize_t)sizeof(si))
            return; /* EAGAIN: all read */
        switch (si.ssi_signo) {
        case SIGTERM: begin_stop(d, "SIGTERM", now); break;
        case SIGINT: begin_stop(d, "SIGINT", now); break;
        case SIGHUP: d->reload_requested = true; break;
        default: break;
        }
    }
}

/* Entries other processes (submit) put into pending/. */
static void read_watch(struct agent_daemon *d)
{
    size_t n_new = 0;
    uint64_t lowest = 0;
    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_spool_watch_handle(d->spool, &n_new, &lowest, &err) != RSL_OK) {
        RSL_WARN("agent", "%s", err.text);
        return;
    }
    if (n_new == 0)
        return;
    RSL_INFO("agent", "%zu report%s added to the spool by another process", n_new,
             n_new == 1 ? "" : "s");
    agent_sender_notify(d->sender, lowest);
    /* They count against the limit too. */
    if (d->cfg->spool_full_policy == AGENT_SPOOL_DROP_OLDEST)
        enforce_limits(d);
}

void agent_daemon_request_stop(struct agent_daemon *d)
{
    d->stop_requested = true;
}

void agent_daemon_request_reload(struct agent_daemon *d)
{
    d->reload_requested = true;
}

const struct agent_config *agent_daemon_config(const struct agent_daemon *d)
{
    return d->cfg;
}

const struct agent_daemon_stats *agent_daemon_stats(const struct agent_daemon *d)
{
    return &d->stats;
}

int agent_daemon_run(struct agent_daemon *d)
{
    int64_t start = rsl_monotonic_ms();
    int64_t once_deadline = start + d->opts.once_timeout_ms;
    int exit_code = 0;

    /* Apply the age limit at once: an agent off for a month starts by
     * dropping (and counting) what has expired, before sending it. */
    enforce_limits(d);
    d->next_maintenance = start + AGENT_MAINTENANCE_INTERVAL_MS;
    d->next_watchdog = start;
    RSL_NOTICE("agent", "ready: agent %s (%s), %zu collector%s, %" PRIu64 " report%s pending, "
             "sending to %s", d->cfg->id, d->cfg->nation, d->cfg->n_collectors,
             d->cfg->n_collectors == 1 ? "" : "s", agent_spool_count(d->spool),
             agent_spool_count(d->spool) == 1 ? "" : "s", agent_sender_endpoint(d->sender));
    write_status(d, start);
    sd_notify(0, "READY=1");

    for (;;) {
        int64_t now = rsl_monotonic_ms();
        if (d->stop_requested && !d->stopping)
            begin_stop(d, "requested", now);
        if (d->reload_requested) {
            d->reload_requested = false;
            if (d->stopping || d->opts.once)
                RSL_NOTICE("agent", "SIGHUP ignored (%s)", d->stopping ? "stopping" : "--once");
            else
                reload(d);
        }
        if (!d->stopping)
            agent_collectors_tick(d->collectors, now);
        agent_sender_tick(d->sender, now);
        periodic(d, now);

        if (d->stopping) {
            if (agent_sender_awaiting_ack(d->sender) == 0 || now >= d->stop_deadline)
                break;
        } else if (d->opts.once) {
            if (agent_collectors_idle(d->collectors) && agent_spool_count(d->spool) == 0) {
                RSL_INFO("agent", "--once: all reports delivered");
                break;
            }
            if (now >= once_deadline) {
                RSL_ERR("agent", "--once: %" PRIu64 " report%s still pending after %gs",
                        agent_spool_count(d->spool), agent_spool_count(d->spool) == 1 ? "" : "s",
                        (double)d->opts.once_timeout_ms / 1000.0);
                exit_code = 1;
                break;
            }
        }

        /* Poll items: signals, the spool's watch, the sender's sockets, the
         * collectors' descriptors. */
        size_t n = 0;
        d->items[n] = (zmq_pollitem_t){NULL, d->sigfd, ZMQ_POLLIN, 0};
        n++;
        int watch_fd = agent_spool_watch_fd(d->spool);
        size_t watch_item = SIZE_MAX;
        if (watch_fd >= 0) {
            watch_item = n;
            d->items[n] = (zmq_pollitem_t){NULL, watch_fd, ZMQ_POLLIN, 0};
            n++;
        }
        size_t sender_first = n;
        n += agent_sender_poll_fill(d->sender, d->items + n, d->items_cap - n);
        size_t sender_n = n - sender_first;
        size_t coll_first = n;
        n += agent_collectors_poll_fill(d->collectors, d->items + n, d->items_cap - n);
        size_t coll_n = n - coll_first;

        int64_t deadline = earliest(agent_sender_next_deadline(d->sender),
                                    d->stopping ? -1 : agent_collectors_next_deadline(d->collectors));
        deadline = earliest(deadline, periodic_deadline(d));
        if (d->stopping)
            deadline = earliest(deadline, d->stop_deadline);
        else if (d->opts.once)
            deadline = earliest(deadline, once_deadline);
        long timeout = LOOP_MAX_WAIT_MS;
        if (deadline >= 0)
            timeout = deadline <= now ? 0 : (long)(deadline - now < LOOP_MAX_WAIT_MS
                                                       ? deadline - now
                                                       : LOOP_MAX_WAIT_MS);

        int rc = zmq_poll(d->items, (int)n, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("agent", "zmq_poll: %s", zmq_strerror(errno));
            exit_code = 1;
            break;
        }
        now = rsl_monotonic_ms();
        if (d->items[0].revents != 0)
            read_signals(d, now);
        if (watch_item != SIZE_MAX && d->items[watch_item].revents != 0)
            read_watch(d);
        agent_sender_poll_handle(d->sender, d->items + sender_first, sender_n, now);
        agent_collectors_poll_handle(d->collectors, d->items + coll_first, coll_n, now);
    }

    struct rsl_error err;
    rsl_error_clear(&err);
    if (agent_spool_sync(d->spool, &err) != RSL_OK)
        RSL_WARN("agent", "%s", err.text);
    write_status(d, rsl_monotonic_ms());
    const struct agent_sender_stats *st = agent_sender_stats(d->sender);
    RSL_INFO("agent", "stopped: %" PRIu64 " spooled, %" PRIu64 " dropped, %" PRIu64 " sent, %" PRIu64
             " resent, %" PRIu64 " accepted, %" PRIu64 " duplicate, %" PRIu64 " rejected; %" PRIu64
             " pending in the spool", d->stats.reports_spooled, d->stats.reports_dropped, st->sent,
             st->resent, st->accepted, st->duplicate, st->rejected, agent_spool_count(d->spool));
    return exit_code;
}
