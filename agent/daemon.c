/*
 * daemon.c - the agent's single-threaded event loop (see daemon.h).
 *
 * Order of durable steps for each collector run (ARCHITECTURE section 8):
 *   1. agent_seq_take: the counter file says n+1 before n is used
 *   2. agent_report_build: encode, validate, sign, size check
 *   3. agent_spool_append: the frame is on disk (fsynced) in pending/
 *   4. agent_sender_notify: only now can it go on the wire
 * A crash between 1 and 3 burns a number (a gap); between 3 and the ack the
 * report is resent after restart; after the ack it is gone from pending/.
 *
 * Signals arrive through a signalfd polled with everything else, so no
 * handler runs asynchronously and no state is shared with one. They are
 * blocked before the ZeroMQ context exists: libzmq's I/O threads inherit
 * the mask, so the kernel cannot deliver SIGTERM to one of them and kill
 * the process with the default action.
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

/* Longest single zmq_poll: bounds the effect of a missed wake-up. */
#define LOOP_MAX_WAIT_MS 60000

struct agent_daemon {
    const struct agent_config *cfg;   /* borrowed */
    const struct agent_keys *keys;    /* borrowed */
    struct agent_run_options opts;

    sigset_t old_mask;                /* restored by agent_daemon_free */
    bool mask_set;
    int sigfd;

    struct agent_spool *spool;
    struct agent_seq *seq;
    void *zmq_ctx;
    struct agent_sender *sender;
    struct agent_collectors *collectors;

    zmq_pollitem_t *items;
    size_t items_cap;

    bool stop_requested;              /* agent_daemon_request_stop */
    bool stopping;
    int64_t stop_deadline;            /* monotonic ms */
    struct agent_daemon_stats stats;
};

/* ---- one collector run -> one spooled report --------------------------------- */

static void on_collected(void *ctx, const struct agent_collector_config *cc,
                         const struct rsl_sample *samples, size_t n, int64_t collected_at_ms)
{
    struct agent_daemon *d = ctx;
    uint8_t *frame = NULL;
    size_t len = 0;
    uint64_t sequence = 0;
    struct rsl_error err;
    rsl_error_clear(&err);

    if (d->stopping)
        return;
    /* The number is durably taken before the report exists. */
    if (agent_seq_take(d->seq, &sequence, &err) != RSL_OK) {
        RSL_ERR("agent", "collector %s: cannot take a sequence number: %s; %zu measurement%s "
                "dropped", cc->name, err.text, n, n == 1 ? "" : "s");
        d->stats.reports_dropped++;
        return;
    }
    if (agent_report_build(d->cfg, cc, d->keys->signer, sequence, rsl_now_ms(), collected_at_ms,
                           samples, n, &frame, &len, &err) != RSL_OK) {
        RSL_ERR("agent", "collector %s: %s; report dropped", cc->name, err.text);
        d->stats.reports_dropped++;
        return;
    }
    if (agent_spool_append(d->spool, sequence, frame, len, &err) != RSL_OK) {
        RSL_ERR("agent", "collector %s: cannot spool report %" PRIu64 ": %s; report dropped",
                cc->name, sequence, err.text);
        d->stats.reports_dropped++;
        free(frame);
        return;
    }
    free(frame);
    d->stats.reports_spooled++;
    RSL_DEBUG("agent", "report %" PRIu64 " from collector %s spooled (%zu measurement%s, %zu "
              "bytes)", sequence, cc->name, n, n == 1 ? "" : "s", len);
    agent_sender_notify(d->sender);
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

int agent_daemon_new(const struct agent_config *cfg, const struct agent_keys *keys,
                     const struct agent_run_options *opts, struct agent_daemon **out,
                     struct rsl_error *err)
{
    struct agent_daemon *d = NULL;
    char path[AGENT_PATH_MAX + 16];
    const char *endpoints[AGENT_MAX_ENDPOINTS];
    int rc;

    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    d->cfg = cfg;
    d->keys = keys;
    d->opts = *opts;
    d->sigfd = -1;
    if (d->opts.once_timeout_ms <= 0)
        d->opts.once_timeout_ms = AGENT_ONCE_TIMEOUT_DEFAULT_MS;

    if ((rc = setup_signals(d, err)) != RSL_OK)
        goto out;
    if ((rc = agent_spool_open(cfg->spool_dir, &d->spool, err)) != RSL_OK)
        goto out;
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    if ((rc = agent_seq_open(path, &d->seq, err)) != RSL_OK)
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

    d->zmq_ctx = zmq_ctx_new();
    if (d->zmq_ctx == NULL) {
        rc = rsl_error_set(err, RSL_EIO, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto out;
    }
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
        .max_message_bytes = cfg->max_message_bytes,
        .window = AGENT_SEND_WINDOW,
    };
    if ((rc = agent_sender_new(d->zmq_ctx, &so, d->spool, &d->sender, err)) != RSL_OK)
        goto out;
    if ((rc = agent_collectors_new(cfg, on_collected, d, &d->collectors, err)) != RSL_OK)
        goto out;
    if (d->opts.once)
        agent_collectors_set_once(d->collectors);

    d->items_cap = 1 + AGENT_SENDER_POLL_ITEMS + agent_collectors_poll_max(d->collectors);
    d->items = calloc(d->items_cap, sizeof(*d->items));
    if (d->items == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
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
    agent_seq_close(&d->seq);
    agent_spool_close(&d->spool);
    free(d->items);
    if (d->sigfd >= 0)
        close(d->sigfd);
    /* The stop signals stay blocked: restoring the old mask here would let a
     * second SIGTERM that arrives during shutdown kill the process with a
     * non-zero status (seen with Ctrl-C followed by a service manager's
     * SIGTERM). The process is about to exit anyway. */
    free(d);
    *daemon = NULL;
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
        case SIGHUP: RSL_NOTICE("agent", "SIGHUP: reload not supported yet"); break;
        default: break;
        }
    }
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

void agent_daemon_request_stop(struct agent_daemon *d)
{
    d->stop_requested = true;
}

const struct agent_daemon_stats *agent_daemon_stats(const struct agent_daemon *d)
{
    return &d->stats;
}

int agent_daemon_run(struct agent_daemon *d)
{
    const struct agent_config *cfg = d->cfg;
    int64_t start = rsl_monotonic_ms();
    int64_t once_deadline = start + d->opts.once_timeout_ms;
    int exit_code = 0;

    RSL_NOTICE("agent", "ready: agent %s (%s), %zu collector%s, %" PRIu64 " report%s pending, "
             "sending to %s", cfg->id, cfg->nation, cfg->n_collectors,
             cfg->n_collectors == 1 ? "" : "s", agent_spool_count(d->spool),
             agent_spool_count(d->spool) == 1 ? "" : "s", cfg->endpoints[0]);
    sd_notify(0, "READY=1");

    for (;;) {
        int64_t now = rsl_monotonic_ms();
        if (d->stop_requested && !d->stopping)
            begin_stop(d, "requested", now);
        if (!d->stopping)
            agent_collectors_tick(d->collectors, now);
        agent_sender_tick(d->sender, now);

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

        /* Poll items: signals, the sender's sockets, the collectors' fds. */
        size_t n = 0;
        d->items[n].socket = NULL;
        d->items[n].fd = d->sigfd;
        d->items[n].events = ZMQ_POLLIN;
        d->items[n].revents = 0;
        n++;
        size_t sender_first = n;
        n += agent_sender_poll_fill(d->sender, d->items + n, d->items_cap - n);
        size_t sender_n = n - sender_first;
        size_t coll_first = n;
        n += agent_collectors_poll_fill(d->collectors, d->items + n, d->items_cap - n);
        size_t coll_n = n - coll_first;

        int64_t deadline = earliest(agent_sender_next_deadline(d->sender),
                                    d->stopping ? -1 : agent_collectors_next_deadline(d->collectors));
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
        agent_sender_poll_handle(d->sender, d->items + sender_first, sender_n, now);
        agent_collectors_poll_handle(d->collectors, d->items + coll_first, coll_n, now);
    }

    const struct agent_sender_stats *st = agent_sender_stats(d->sender);
    RSL_INFO("agent", "stopped: %" PRIu64 " spooled, %" PRIu64 " dropped, %" PRIu64 " sent, %" PRIu64
             " resent, %" PRIu64 " accepted, %" PRIu64 " duplicate, %" PRIu64 " rejected; %" PRIu64
             " pending in the spool", d->stats.reports_spooled, d->stats.reports_dropped, st->sent,
             st->resent, st->accepted, st->duplicate, st->rejected, agent_spool_count(d->spool));
    return exit_code;
}
