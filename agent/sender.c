/*
 * sender.c - the DEALER side of the wire protocol (see sender.h).
 *
 * The window is an array of `window` slots, each holding one spooled
 * sequence:
 *   WAITING  to be sent (new, or its resend is due)
 *   SENT     handed to ZeroMQ; resend at `due` unless an ack comes first
 *   HOLD     not to be sent before `due` (RETRY_LATER, or a read error)
 * Slots are filled from a small queue of sequences listed from the spool
 * with agent_spool_list(after = cursor), PREFETCH at a time: every pending
 * entry at or below the cursor is queued, in a slot or already gone, and
 * entries appended later are normally above it. An entry that turns up
 * below the cursor (another process's, see agent_sender_notify) moves the
 * cursor back and the queue is listed again from there; candidates already
 * in a slot are skipped. Memory stays bounded whatever the spool's depth.
 *
 * A frame is read from disk (and its checksum verified) at the moment it is
 * sent, and only when ZMQ_EVENTS says the socket can take it: with
 * ZMQ_IMMEDIATE set, a DEALER without a live connection refuses frames
 * instead of queueing them, so nothing is read while the aggregator is away.
 *
 * Acks decide spool operations, so they are matched strictly: our agent id
 * and a sequence currently in the window. Anything else is logged at debug
 * and dropped (a late ack for a sequence already settled, a confused peer).
 *
 * Endpoint changes close the DEALER and make a new one: frames queued in
 * the old one are dropped (LINGER 0), acks for them can no longer arrive,
 * so every SENT slot becomes WAITING and goes out again on the new
 * connection (the aggregator answers DUPLICATE if it already had them).
 * Each socket gets its own monitor (inproc, a unique name per socket).
 */
#include "sender.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "rsl/codec.h"
#include "rsl/log.h"
#include "rsl/util.h"

#define ACKS_PER_HANDLE 1024 /* fairness: other poll items get their turn */
/* Sequences listed from the spool per pass: 8 KiB, whatever the spool's
 * depth; larger chunks mean fewer passes when a listing has to fall back
 * to reading the folder. */
#define PREFETCH 1024
#define NEVER (-1)
/* Frames read from the spool before they are handed to ZeroMQ back to back
 * (send_waiting); the bytes bound what one burst holds in memory. */
#define SEND_BURST 64
#define SEND_BURST_BYTES (1024 * 1024)
/* Random words kept for the backoff jitter: one getrandom() per this many
 * sends instead of one per send. */
#define RANDOM_POOL 64

enum slot_state { SLOT_FREE = 0, SLOT_WAITING, SLOT_SENT, SLOT_HOLD };

struct slot {
    uint64_t sequence;
    enum slot_state state;
    int64_t due;        /* SENT/HOLD: monotonic ms when it becomes WAITING */
    uint64_t sent_no;   /* agent_cwnd_sent number of the last send */
    unsigned tries;     /* times sent */
};

struct agent_sender {
    void *zmq_ctx;                         /* borrowed */
    void *socket;                          /* DEALER, owned */
    void *monitor;                         /* PAIR reading the DEALER's events, owned */
    void *probe;                           /* DEALER towards endpoint 0 while elsewhere */
    void *probe_monitor;
    int64_t probe_deadline;                /* give the probe up at */
    int64_t next_probe;                    /* start the next probe at */
    unsigned sockets_made;                 /* unique monitor names */
    struct agent_spool *spool;             /* borrowed */
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char endpoints[AGENT_MAX_ENDPOINTS][AGENT_ENDPOINT_MAX];
    size_t n_endpoints;
    size_t ep;                             /* index of the endpoint in use */
    char server_key[RSL_Z85_KEY_LEN + 1];
    char client_public[RSL_Z85_KEY_LEN + 1];
    char client_secret[RSL_Z85_KEY_LEN + 1]; /* zeroed on free */
    int64_t resend_timeout_ms;
    int64_t backoff_max_ms;
    int64_t heartbeat_ms;
    int64_t failover_ms;
    int64_t failback_probe_ms;
    size_t max_message_bytes;
    struct slot *slots;
    size_t window;
    uint64_t cursor;                       /* highest sequence listed from the spool */
    uint64_t max_slotted;                  /* highest sequence ever put in a slot */
    uint64_t queue[PREFETCH];              /* listed, not yet in a slot; ascending */
    size_t q_head, q_len;
    bool refill;                           /* the spool may hold entries above cursor */
    bool draining;                         /* shutting down: send nothing more */
    bool connected;                        /* last monitor event said so */
    bool auth_failure_logged;              /* one error line per failure streak */
    bool stall_logged;                     /* single endpoint: "no connection" said once */
    unsigned switches_unanswered;          /* endpoint changes since the last connection */
    int64_t ep_since;                      /* monotonic: endpoint chosen or connection lost */
    int64_t last_progress;                 /* monotonic: last ack, or first send after idle */
    int64_t last_ack_wall;                 /* wall-clock ms of the last ack */
    int64_t pause_until;                   /* RETRY_LATER: send nothing before this */
    unsigned retry_streak;                 /* rounds of RETRY_LATER since the last success */
    struct agent_cwnd cwnd;                /* reports in flight at most (congestion) */
    uint32_t random_pool[RANDOM_POOL];     /* jitter, drawn RANDOM_POOL at a time */
    size_t random_left;                    /* unused words at the end of random_pool */
    struct agent_sender_stats stats;
};

/* ---- backoff ---------------------------------------------------------------- */

int64_t agent_backoff_ms(int64_t base_ms, int64_t max_ms, unsigned attempt, uint32_t random)
{
    if (base_ms < 1)
        base_ms = 1;
    if (max_ms < base_ms)
        max_ms = base_ms;
    int64_t d = base_ms;
    for (unsigned i = 1; i < attempt && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    if (d > max_ms)
        d = max_ms;
    /* Spread in [0.75 d, 1.25 d): agents cut off together must not all
     * come back in the same millisecond. */
    int64_t spread = d / 2;
    int64_t v = d - d / 4 + (spread > 0 ? (int64_t)(random % (uint64_t)spread) : 0);
    return v > max_ms ? max_ms : v < 1 ? 1 : v;
}

/* ---- congestion window -------------------------------------------------------- */

void agent_cwnd_restart(struct agent_cwnd *c)
{
    c->cwnd = c->limit < AGENT_CWND_INITIAL ? c->limit : AGENT_CWND_INITIAL;
    c->ssthresh = c->limit;
    c->acks = 0;
    c->round = c->sends;
}

void agent_cwnd_init(struct agent_cwnd *c, size_t limit)
{
    c->limit = limit > 0 ? limit : 1;
    c->sends = 0;
    agent_cwnd_restart(c);
}

uint64_t agent_cwnd_sent(struct agent_cwnd *c)
{
    return ++c->sends;
}

void agent_cwnd_progress(struct agent_cwnd *c)
{
    if (c->cwnd >= c->limit)
        return;
    if (c->cwnd < c->ssthresh) {
        c->cwnd++; /* slow start: doubles every round trip */
        return;
    }
    if (++c->acks >= c->cwnd) { /* congestion avoidance: +1 per round trip */
        c->cwnd++;
        c->acks = 0;
    }
}

bool agent_cwnd_retry_later(struct agent_cwnd *c, uint64_t sent_no)
{
    if (sent_no <= c->round)
        return false; /* sent before this round's halving */
    c->round = c->sends;
    size_t floor = c->limit < AGENT_CWND_MIN ? c->limit : AGENT_CWND_MIN;
    c->cwnd = c->cwnd / 2 > floor ? c->cwnd / 2 : floor;
    c->ssthresh = c->cwnd;
    c->acks = 0;
    return true;
}

static uint32_t jitter(struct agent_sender *s)
{
    /* Not a secret: a pool refilled from the kernel now and then does as
     * well as a system call per report. */
    if (s->random_left == 0) {
        randombytes_buf(s->random_pool, sizeof(s->random_pool));
        s->random_left = RANDOM_POOL;
    }
    return s->random_pool[--s->random_left];
}

static int64_t backoff(struct agent_sender *s, unsigned attempt)
{
    return agent_backoff_ms(s->resend_timeout_ms, s->backoff_max_ms, attempt, jitter(s));
}

/* ---- sockets ---------------------------------------------------------------- */

static int set_int(void *socket, int option, int value, const char *name, struct rsl_error *err)
{
    if (zmq_setsockopt(socket, option, &value, sizeof(value)) != 0)
        return rsl_error_set(err, RSL_EIO, "zmq_setsockopt %s: %s", name, zmq_strerror(errno));
    return RSL_OK;
}

static int set_key(void *socket, int option, const char *z85, const char *name,
                   struct rsl_error *err)
{
    /* The Z85 form is passed with its terminating NUL (41 bytes). */
    if (strlen(z85) != RSL_Z85_KEY_LEN ||
        zmq_setsockopt(socket, option, z85, RSL_Z85_KEY_LEN + 1) != 0)
        return rsl_error_set(err, RSL_ECRYPTO, "zmq_setsockopt %s: %s", name,
                             zmq_strerror(errno));
    return RSL_OK;
}

static void close_pair(void **socket, void **monitor)
{
    if (*socket != NULL) {
        if (*monitor != NULL)
            zmq_socket_monitor(*socket, NULL, 0);
        zmq_close(*socket);
        *socket = NULL;
    }
    if (*monitor != NULL) {
        zmq_close(*monitor);
        *monitor = NULL;
    }
}

/* A CURVE DEALER connected to `endpoint`, with a monitor for `events`.
 * The monitor is best effort: delivery works without it. */
static int open_pair(struct agent_sender *s, const char *endpoint, int events, void **out_socket,
                     void **out_monitor, struct rsl_error *err)
{
    char monitor_ep[96];
    void *socket = NULL;
    void *monitor = NULL;
    int rc = RSL_OK;

    socket = zmq_socket(s->zmq_ctx, ZMQ_DEALER);
    if (socket == NULL)
        return rsl_error_set(err, RSL_EIO, "zmq_socket: %s", zmq_strerror(errno));
    /* LINGER 0: frames not yet on the wire at close are simply dropped -
     * they are still in the spool. IMMEDIATE: no queueing towards a peer
     * that is not connected (see the top comment). */
    int64_t maxmsg = AGENT_ACK_MAX_BYTES;
    if ((rc = set_int(socket, ZMQ_LINGER, 0, "ZMQ_LINGER", err)) != RSL_OK ||
        (rc = set_int(socket, ZMQ_IMMEDIATE, 1, "ZMQ_IMMEDIATE", err)) != RSL_OK ||
        (rc = set_int(socket, ZMQ_RECONNECT_IVL_MAX, 10000, "ZMQ_RECONNECT_IVL_MAX", err)) !=
            RSL_OK)
        goto fail;
    if (s->heartbeat_ms > 0) {
        /* TTL travels in deciseconds (16 bits): at most 6553.5 s. */
        int64_t ttl = 3 * s->heartbeat_ms > 6553500 ? 6553500 : 3 * s->heartbeat_ms;
        if ((rc = set_int(socket, ZMQ_HEARTBEAT_IVL, (int)s->heartbeat_ms, "ZMQ_HEARTBEAT_IVL",
                          err)) != RSL_OK ||
            (rc = set_int(socket, ZMQ_HEARTBEAT_TTL, (int)ttl, "ZMQ_HEARTBEAT_TTL", err)) !=
                RSL_OK ||
            (rc = set_int(socket, ZMQ_HEARTBEAT_TIMEOUT, (int)(3 * s->heartbeat_ms),
                          "ZMQ_HEARTBEAT_TIMEOUT", err)) != RSL_OK)
            goto fail;
    }
    if (zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "zmq_setsockopt ZMQ_MAXMSGSIZE: %s", zmq_strerror(errno));
        goto fail;
    }
    if ((rc = set_key(socket, ZMQ_CURVE_SERVERKEY, s->server_key, "ZMQ_CURVE_SERVERKEY", err)) !=
            RSL_OK ||
        (rc = set_key(socket, ZMQ_CURVE_PUBLICKEY, s->client_public, "ZMQ_CURVE_PUBLICKEY",
                      err)) != RSL_OK ||
        (rc = set_key(socket, ZMQ_CURVE_SECRETKEY, s->client_secret, "ZMQ_CURVE_SECRETKEY",
                      err)) != RSL_OK)
        goto fail;

    snprintf(monitor_ep, sizeof(monitor_ep), "inproc://agent-sender-%p-%u", (void *)s,
             s->sockets_made++);
    if (zmq_socket_monitor(socket, monitor_ep, events) == 0) {
        monitor = zmq_socket(s->zmq_ctx, ZMQ_PAIR);
        int zero = 0;
        if (monitor != NULL)
            zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof(zero));
        if (monitor != NULL && zmq_connect(monitor, monitor_ep) != 0) {
            zmq_close(monitor);
            monitor = NULL;
        }
    }
    if (monitor == NULL)
        RSL_WARN("sender", "no connection monitor: %s", zmq_strerror(errno));
    /* libzmq resolves a host name when it connects, and again at every
     * reconnect (tcp_connecter_t::open), so a moved aggregator is found. */
    if (zmq_connect(socket, endpoint) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "connect %s: %s", endpoint, zmq_strerror(errno));
        goto fail;
    }
    *out_socket = socket;
    *out_monitor = monitor;
    return RSL_OK;
fail:
    close_pair(&socket, &monitor);
    return rc;
}

#define MAIN_EVENTS                                                                             \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

static size_t awaiting(const struct agent_sender *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->window; i++)
        n += s->slots[i].state == SLOT_SENT ? 1 : 0;
    return n;
}

/* Close the current socket and connect to endpoint `idx` with a new one. */
static void switch_endpoint(struct agent_sender *s, size_t idx, int64_t now)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    close_pair(&s->probe, &s->probe_monitor);
    close_pair(&s->socket, &s->monitor);
    s->ep = idx;
    s->connected = false;
    s->auth_failure_logged = false;
    s->stall_logged = false;
    s->ep_since = now;
    s->last_progress = now;
    s->next_probe = now + s->failback_probe_ms;
    s->stats.failovers++;
    for (size_t i = 0; i < s->window; i++)
        if (s->slots[i].state == SLOT_SENT)
            s->slots[i].state = SLOT_WAITING; /* their acks went with the old socket */
    /* Another aggregator: its queue owes nothing to the last one's. */
    agent_cwnd_restart(&s->cwnd);
    s->pause_until = 0;
    s->retry_streak = 0;
    if (open_pair(s, s->endpoints[idx], MAIN_EVENTS, &s->socket, &s->monitor, &err) != RSL_OK)
        RSL_ERR("sender", "%s; trying again later", err.text);
}

/* ---- set-up -------------------------------------------------------------------- */

int agent_sender_new(void *zmq_ctx, const struct agent_sender_options *opts,
                     struct agent_spool *spool, struct agent_sender **out, struct rsl_error *err)
{
    struct agent_sender *s = NULL;
    int rc = RSL_OK;

    *out = NULL;
    if (opts->n_endpoints == 0 || opts->n_endpoints > AGENT_MAX_ENDPOINTS || opts->window == 0 ||
        opts->window > AGENT_MAX_WINDOW)
        return rsl_error_set(err, RSL_EINVAL, "sender: no endpoint or bad window");
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    s->slots = calloc(opts->window, sizeof(*s->slots));
    if (s->slots == NULL) {
        free(s);
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    }
    s->zmq_ctx = zmq_ctx;
    s->spool = spool;
    s->window = opts->window;
    agent_cwnd_init(&s->cwnd, s->window);
    s->resend_timeout_ms = opts->resend_timeout_ms > 0 ? opts->resend_timeout_ms : 1;
    s->backoff_max_ms = opts->backoff_max_ms > s->resend_timeout_ms ? opts->backoff_max_ms
                                                                    : s->resend_timeout_ms;
    s->heartbeat_ms = opts->heartbeat_ms;
    s->failover_ms = 2 * s->resend_timeout_ms;
    if (s->failover_ms < AGENT_FAILOVER_MIN_MS)
        s->failover_ms = AGENT_FAILOVER_MIN_MS;
    if (s->failover_ms > AGENT_FAILOVER_MAX_MS)
        s->failover_ms = AGENT_FAILOVER_MAX_MS;
    if (opts->failover_ms > 0)
        s->failover_ms = opts->failover_ms;
    s->failback_probe_ms = opts->failback_probe_ms > 0 ? opts->failback_probe_ms
                                                       : AGENT_FAILBACK_PROBE_MS;
    s->max_message_bytes = opts->max_message_bytes;
    s->refill = true;
    s->n_endpoints = opts->n_endpoints;
    if (rsl_strlcpy(s->agent_id, opts->agent_id, sizeof(s->agent_id)) != RSL_OK ||
        rsl_strlcpy(s->server_key, opts->server_key, sizeof(s->server_key)) != RSL_OK ||
        rsl_strlcpy(s->client_public, opts->client_public, sizeof(s->client_public)) != RSL_OK ||
        rsl_strlcpy(s->client_secret, opts->client_secret, sizeof(s->client_secret)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_EINVAL, "sender: agent id or key too long");
        goto out;
    }
    for (size_t i = 0; i < s->n_endpoints; i++)
        if (rsl_strlcpy(s->endpoints[i], opts->endpoints[i], sizeof(s->endpoints[i])) != RSL_OK) {
            rc = rsl_error_set(err, RSL_EINVAL, "sender: endpoint too long");
            goto out;
        }
    int64_t now = rsl_monotonic_ms();
    s->ep_since = s->last_progress = now;
    s->next_probe = now + s->failback_probe_ms;
    if ((rc = open_pair(s, s->endpoints[0], MAIN_EVENTS, &s->socket, &s->monitor, err)) != RSL_OK)
        goto out;
    *out = s;
    s = NULL; /* transferred */
out:
    agent_sender_free(&s);
    return rc;
}

void agent_sender_free(struct agent_sender **sender)
{
    if (sender == NULL || *sender == NULL)
        return;
    struct agent_sender *s = *sender;
    close_pair(&s->probe, &s->probe_monitor);
    close_pair(&s->socket, &s->monitor);
    rsl_secure_zero(s->client_secret, sizeof(s->client_secret));
    free(s->slots);
    free(s);
    *sender = NULL;
}

/* ---- the window ------------------------------------------------------------ */

static struct slot *slot_find(struct agent_sender *s, uint64_t sequence)
{
    for (size_t i = 0; i < s->window; i++)
        if (s->slots[i].state != SLOT_FREE && s->slots[i].sequence == sequence)
            return &s->slots[i];
    return NULL;
}

static void slot_free(struct slot *slot)
{
    memset(slot, 0, sizeof(*slot));
}

static size_t slots_free(const struct agent_sender *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->window; i++)
        n += s->slots[i].state == SLOT_FREE ? 1 : 0;
    return n;
}

/* The next queued sequence not already in a slot, listing more from the
 * spool when the queue is empty; 0 when there is none right now. */
static uint64_t next_candidate(struct agent_sender *s)
{
    struct rsl_error err;
    for (;;) {
        if (s->q_len == 0) {
            size_t got = 0;
            if (!s->refill)
                return 0;
            rsl_error_clear(&err);
            if (agent_spool_list(s->spool, s->cursor, s->queue, PREFETCH, &got, &err) != RSL_OK) {
                RSL_ERR("sender", "%s", err.text);
                return 0; /* refill stays set: tried again at the next tick */
            }
            if (got < PREFETCH)
                s->refill = false; /* all listed; agent_sender_notify sets it again */
            if (got == 0)
                return 0;
            s->q_head = 0;
            s->q_len = got;
            s->cursor = s->queue[got - 1];
        }
        uint64_t seq = s->queue[s->q_head++];
        s->q_len--;
        /* Only after the cursor moved back can a candidate already be in a
         * slot; the common case skips the search. */
        if (seq <= s->max_slotted && slot_find(s, seq) != NULL)
            continue;
        return seq;
    }
}

static void refill(struct agent_sender *s)
{
    if (s->draining)
        return;
    for (size_t i = 0; i < s->window; i++) {
        if (s->slots[i].state != SLOT_FREE)
            continue;
        uint64_t seq = next_candidate(s);
        if (seq == 0)
            return;
        s->slots[i].sequence = seq;
        s->slots[i].state = SLOT_WAITING;
        s->slots[i].tries = 0;
        if (seq > s->max_slotted)
            s->max_slotted = seq;
    }
}

void agent_sender_drain(struct agent_sender *s)
{
    s->draining = true;
    close_pair(&s->probe, &s->probe_monitor);
}

void agent_sender_notify(struct agent_sender *s, uint64_t sequence)
{
    s->refill = true;
    if (sequence != 0 && sequence <= s->cursor) {
        /* Below what was listed: list again from just before it. */
        s->cursor = sequence - 1;
        s->q_len = 0;
        s->q_head = 0;
    }
}

void agent_sender_forget(struct agent_sender *s, uint64_t sequence)
{
    struct slot *slot = slot_find(s, sequence);
    if (slot != NULL)
        slot_free(slot);
}

static bool socket_writable(struct agent_sender *s)
{
    int events = 0;
    size_t len = sizeof(events);
    if (s->socket == NULL || zmq_getsockopt(s->socket, ZMQ_EVENTS, &events, &len) != 0)
        return false;
    return (events & ZMQ_POLLOUT) != 0;
}

/* zmq_msg_init_data's deallocator: frames are malloc'd by agent_spool_read. */
static void free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Read one WAITING slot's frame from the spool. Returns true with the
 * frame in *data (the caller frees it) when there is something to send;
 * false when the slot was dealt with here instead (gone, quarantined,
 * too big: freed; unreadable: held for a resend timeout). */
static bool read_slot(struct agent_sender *s, struct slot *slot, int64_t now, uint8_t **data,
                      size_t *len)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    int rc = agent_spool_read(s->spool, slot->sequence, s->max_message_bytes, data, len, &err);
    if (rc == RSL_OK)
        return true;
    if (rc == RSL_ENOENT || rc == RSL_ECORRUPT) {
        /* Gone (dropped, or acked on an earlier connection), or quarantined
         * (agent_spool_read logged it): nothing to send. */
        if (rc == RSL_ENOENT)
            RSL_DEBUG("sender", "report %" PRIu64 " is no longer in the spool", slot->sequence);
        slot_free(slot);
        return false;
    }
    if (rc == RSL_ETOOBIG) {
        /* The cap was lowered since this was spooled. Sending it would make
         * the aggregator drop us and we would reconnect and resend forever. */
        char reason[128];
        snprintf(reason, sizeof(reason), "larger than max_message_bytes (%zu); not sent",
                 s->max_message_bytes);
        RSL_WARN("sender", "report %" PRIu64 " is %s; moved to rejected/", slot->sequence, reason);
        if (agent_spool_reject(s->spool, slot->sequence, reason, &err) != RSL_OK)
            RSL_ERR("sender", "%s", err.text);
        s->stats.rejected++;
        slot_free(slot);
        return false;
    }
    RSL_ERR("sender", "%s; retrying in %gs", err.text, (double)s->resend_timeout_ms / 1000.0);
    slot->state = SLOT_HOLD;
    slot->due = now + s->resend_timeout_ms;
    return false;
}

/* Hand one frame to ZeroMQ (which takes ownership of `data`, without a
 * copy) and mark its slot SENT. Returns false when the socket took nothing
 * (the slot stays WAITING, or is held after an error): stop sending for
 * now. */
static bool transmit(struct agent_sender *s, struct slot *slot, uint8_t *data, size_t len,
                     int64_t now)
{
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, data, len, free_frame, NULL) != 0) {
        free(data);
        return false;
    }
    int n = zmq_msg_send(&msg, s->socket, ZMQ_DONTWAIT);
    int send_errno = errno;
    if (n < 0) {
        zmq_msg_close(&msg); /* frees data */
        if (send_errno == EAGAIN)
            return false; /* no connection right now: stays WAITING */
        RSL_ERR("sender", "sending report %" PRIu64 ": %s", slot->sequence,
                zmq_strerror(send_errno));
        slot->state = SLOT_HOLD;
        slot->due = now + s->resend_timeout_ms;
        return false;
    }
    if (slot->tries == 0) {
        s->stats.sent++;
        RSL_DEBUG("sender", "sent report %" PRIu64 " (%zu bytes)", slot->sequence, len);
    } else {
        s->stats.resent++;
        RSL_DEBUG("sender", "resent report %" PRIu64 " (try %u)", slot->sequence, slot->tries + 1);
    }
    slot->tries++;
    slot->state = SLOT_SENT;
    slot->sent_no = agent_cwnd_sent(&s->cwnd);
    slot->due = now + backoff(s, slot->tries);
    return true;
}

static bool paused(const struct agent_sender *s, int64_t now)
{
    return s->draining || now < s->pause_until;
}

/* Send every WAITING slot, in bursts: up to SEND_BURST frames (and
 * SEND_BURST_BYTES) are read from the spool first and then handed to
 * ZeroMQ back to back. Interleaving one file read with one send made
 * libzmq's I/O thread wake and write one TCP segment per report, and the
 * aggregator's threads wake once per report too: a backfilling agent
 * moved half the reports a sender with its frames in memory does. */
static void send_waiting(struct agent_sender *s, int64_t now)
{
    struct {
        struct slot *slot;
        uint8_t *data;
        size_t len;
    } burst[SEND_BURST];
    size_t next = 0; /* slots below this were looked at */
    if (paused(s, now) || s->socket == NULL)
        return;
    size_t sent = awaiting(s);
    while (next < s->window && sent < s->cwnd.cwnd) {
        if (!socket_writable(s))
            return;
        size_t n = 0;
        size_t bytes = 0;
        size_t room = s->cwnd.cwnd - sent;
        for (; next < s->window && n < SEND_BURST && n < room && bytes < SEND_BURST_BYTES;
             next++) {
            struct slot *slot = &s->slots[next];
            if (slot->state != SLOT_WAITING)
                continue;
            if (read_slot(s, slot, now, &burst[n].data, &burst[n].len)) {
                burst[n].slot = slot;
                bytes += burst[n].len;
                n++;
            }
        }
        if (n > 0 && awaiting(s) == 0)
            s->last_progress = now; /* the silence before was not the peer's fault */
        size_t i = 0;
        while (i < n && transmit(s, burst[i].slot, burst[i].data, burst[i].len, now))
            i++;
        sent += i;
        if (i < n) {
            /* The socket took nothing more: the rest stay WAITING (their
             * frames are read again next time). transmit freed burst[i]. */
            for (size_t k = i + 1; k < n; k++)
                free(burst[k].data);
            return;
        }
    }
}

/* ---- endpoints ------------------------------------------------------------- */

/* Failover: the current endpoint has been unusable for failover_ms. */
static void check_failover(struct agent_sender *s, int64_t now)
{
    if (s->draining)
        return;
    bool dead = !s->connected && now - s->ep_since >= s->failover_ms;
    bool stuck = s->connected && awaiting(s) > 0 && now - s->last_progress >= s->failover_ms;
    if (!dead && !stuck)
        return;
    double secs = (double)s->failover_ms / 1000.0;
    if (s->n_endpoints == 1) {
        /* Nowhere to go; libzmq keeps reconnecting (resolving the name
         * again each time). Say so once. */
        if (!s->stall_logged)
            RSL_WARN("sender", "%s: %s for %gs; still trying", s->endpoints[0],
                     dead ? "no connection" : "no answer to reports in flight", secs);
        s->stall_logged = true;
        return;
    }
    size_t next = (s->ep + 1) % s->n_endpoints;
    /* After a whole round without a connection, keep quiet until one works. */
    rsl_log(s->switches_unanswered < s->n_endpoints ? RSL_LOG_WARNING : RSL_LOG_DEBUG, "sender",
            "%s: %s for %gs; switching to %s", s->endpoints[s->ep],
            dead ? "no connection" : "no answer to reports in flight", secs, s->endpoints[next]);
    s->switches_unanswered++;
    switch_endpoint(s, next, now);
}

/* While not on the first endpoint, try it now and then with a probe socket
 * that sends nothing: a CURVE handshake that succeeds means it is back. */
static void check_failback(struct agent_sender *s, int64_t now)
{
    if (s->ep == 0 || s->draining)
        return;
    if (s->probe != NULL) {
        if (now >= s->probe_deadline) {
            close_pair(&s->probe, &s->probe_monitor);
            s->next_probe = now + s->failback_probe_ms;
        }
        return;
    }
    if (now < s->next_probe)
        return;
    struct rsl_error err;
    rsl_error_clear(&err);
    if (open_pair(s, s->endpoints[0], ZMQ_EVENT_HANDSHAKE_SUCCEEDED, &s->probe,
                  &s->probe_monitor, &err) != RSL_OK || s->probe_monitor == NULL) {
        RSL_DEBUG("sender", "cannot probe %s: %s", s->endpoints[0], err.text);
        close_pair(&s->probe, &s->probe_monitor);
        s->next_probe = now + s->failback_probe_ms;
        return;
    }
    RSL_DEBUG("sender", "probing %s", s->endpoints[0]);
    s->probe_deadline = now + s->failover_ms;
}

/* ---- tick ------------------------------------------------------------------ */

void agent_sender_tick(struct agent_sender *s, int64_t now)
{
    for (size_t i = 0; i < s->window && !s->draining; i++) {
        struct slot *slot = &s->slots[i];
        if ((slot->state == SLOT_SENT || slot->state == SLOT_HOLD) && now >= slot->due) {
            if (slot->state == SLOT_SENT)
                RSL_DEBUG("sender", "no ack for report %" PRIu64 " after try %u; resending",
                          slot->sequence, slot->tries);
            slot->state = SLOT_WAITING;
        }
    }
    check_failover(s, now);
    check_failback(s, now);
    refill(s);
    send_waiting(s, now);
    /* Sending may have freed slots (corrupt or vanished entries). */
    if ((s->refill || s->q_len > 0) && slots_free(s) > 0) {
        refill(s);
        send_waiting(s, now);
    }
}

/* ---- acks ------------------------------------------------------------------ */

static void handle_ack(struct agent_sender *s, const rsl_ack *ack, int64_t now)
{
    struct rsl_error err;
    rsl_error_clear(&err);
    const char *status = rsl_ack_status_name((int)ack->status);
    const char *detail = ack->detail != NULL ? ack->detail : "";

    if (ack->agent_id == NULL || strcmp(ack->agent_id, s->agent_id) != 0) {
        RSL_DEBUG("sender", "ignoring %s ack for agent '%s' (we are %s)", status,
                  ack->agent_id != NULL ? ack->agent_id : "", s->agent_id);
        return;
    }
    struct slot *slot = slot_find(s, ack->sequence);
    if (slot == NULL) {
        RSL_DEBUG("sender", "ignoring %s ack for report %" PRIu64 ": not in flight", status,
                  ack->sequence);
        return;
    }
    s->last_progress = now;
    s->last_ack_wall = rsl_now_ms();
    switch (ack->status) {
    case RESILIENCE__V1__ACK__STATUS__ACCEPTED:
    case RESILIENCE__V1__ACK__STATUS__DUPLICATE:
        s->retry_streak = 0;
        agent_cwnd_progress(&s->cwnd);
        if (ack->status == RESILIENCE__V1__ACK__STATUS__ACCEPTED) {
            s->stats.accepted++;
            /* A detail on ACCEPTED names measurements the aggregator left
             * out of aggregation: worth an operator's attention. */
            if (detail[0] != '\0')
                RSL_INFO("sender", "report %" PRIu64 " ACCEPTED: %s", ack->sequence, detail);
            else
                RSL_DEBUG("sender", "report %" PRIu64 " ACCEPTED", ack->sequence);
        } else {
            s->stats.duplicate++;
            RSL_INFO("sender", "report %" PRIu64 " DUPLICATE (already stored)%s%s", ack->sequence,
                     detail[0] != '\0' ? ": " : "", detail);
        }
        if (agent_spool_remove(s->spool, ack->sequence, &err) != RSL_OK &&
            err.code != RSL_ENOENT)
            RSL_ERR("sender", "%s", err.text);
        slot_free(slot);
        break;
    case RESILIENCE__V1__ACK__STATUS__REJECTED:
        s->stats.rejected++;
        RSL_WARN("sender", "report %" PRIu64 " REJECTED: %s; moved to rejected/", ack->sequence,
                 detail[0] != '\0' ? detail : "(no detail)");
        if (agent_spool_reject(s->spool, ack->sequence,
                               detail[0] != '\0' ? detail : "rejected (no detail)", &err) != RSL_OK)
            RSL_ERR("sender", "%s", err.text);
        slot_free(slot);
        break;
    case RESILIENCE__V1__ACK__STATUS__RETRY_LATER:
    default: {
        /* The aggregator is overloaded. Per round, not per ack: one failed
         * batch (or one full queue) answers a whole window at once, and
         * reacting to each of those acks would halve the window down to
         * its floor and double the pause once per report - backoff_max
         * (minutes) after a single event at the aggregator. A round begins
         * with a RETRY_LATER for a report sent after the previous round
         * began (agent_cwnd_retry_later): the window halves, and nothing
         * is sent for a pause that doubles with each round in a row. The
         * report waits for the end of the pause, then goes out again as
         * the window allows. */
        s->stats.retry_later++;
        size_t before = s->cwnd.cwnd;
        if (agent_cwnd_retry_later(&s->cwnd, slot->sent_no)) {
            s->retry_streak++;
            s->pause_until = now + agent_backoff_ms(AGENT_RETRY_PAUSE_MS, s->backoff_max_ms,
                                                    s->retry_streak, jitter(s));
            RSL_INFO("sender", "aggregator busy (RETRY_LATER%s%s): pausing %gs, then at most "
                     "%zu reports in flight (was %zu)", detail[0] != '\0' ? ": " : "", detail,
                     (double)(s->pause_until - now) / 1000.0, s->cwnd.cwnd, before);
        }
        RSL_DEBUG("sender", "report %" PRIu64 " RETRY_LATER; resent after the pause",
                  ack->sequence);
        slot->state = SLOT_HOLD;
        slot->due = s->pause_until > now ? s->pause_until : now;
        break;
    }
    }
}

static void read_acks(struct agent_sender *s, int64_t now)
{
    for (int i = 0; i < ACKS_PER_HANDLE; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return; /* EAGAIN: all read */
        }
        bool more = zmq_msg_more(&msg) != 0;
        if (more) {
            /* Acks are one frame; drain the rest of a multi-part message. */
            RSL_DEBUG("sender", "ignoring a multi-part message");
            while (more) {
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, s->socket, ZMQ_DONTWAIT) < 0)
                    break;
                more = zmq_msg_more(&msg) != 0;
            }
            zmq_msg_close(&msg);
            continue;
        }
        rsl_ack *ack = NULL;
        struct rsl_error err;
        rsl_error_clear(&err);
        if (rsl_ack_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), AGENT_ACK_MAX_BYTES, &ack,
                           &err) != RSL_OK)
            RSL_WARN("sender", "ignoring a malformed ack: %s", err.text);
        else
            handle_ack(s, ack, now);
        rsl_ack_free(&ack);
        zmq_msg_close(&msg);
    }
}

/* ---- connection monitors ----------------------------------------------------- */

/* Next event from a monitor socket: 1 with the event and its value, 0 when none. */
static int next_event(void *monitor, uint16_t *event, uint32_t *value)
{
    zmq_msg_t msg;
    *event = 0;
    *value = 0;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return 0;
    }
    /* Frame 1: 16-bit event, 32-bit value; frame 2: the endpoint. */
    if (zmq_msg_size(&msg) >= 6) {
        const uint8_t *d = zmq_msg_data(&msg);
        memcpy(event, d, sizeof(*event));
        memcpy(value, d + 2, sizeof(*value));
    }
    while (zmq_msg_more(&msg)) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, monitor, ZMQ_DONTWAIT) < 0)
            break;
    }
    zmq_msg_close(&msg);
    return 1;
}

static void read_monitor(struct agent_sender *s, int64_t now)
{
    uint16_t event;
    uint32_t value;
    for (int i = 0; i < 64 && s->monitor != NULL && next_event(s->monitor, &event, &value); i++) {
        const char *ep = s->endpoints[s->ep];
        switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            if (!s->connected)
                RSL_INFO("sender", "connected to %s", ep);
            s->connected = true;
            s->auth_failure_logged = false;
            s->stall_logged = false;
            s->switches_unanswered = 0;
            s->last_progress = now;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            if (s->connected) {
                RSL_WARN("sender", "disconnected from %s; reconnecting", ep);
                s->ep_since = now;
            }
            s->connected = false;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            if (s->connected)
                s->ep_since = now;
            s->connected = false;
            if (!s->auth_failure_logged)
                RSL_ERR("sender",
                        "CURVE handshake with %s failed (%s, code %u): check server_key and "
                        "that this agent's curve.pub is enrolled",
                        ep, event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "refused" : "protocol error",
                        (unsigned)value);
            s->auth_failure_logged = true;
            break;
        default:
            break;
        }
    }
}

static void read_probe(struct agent_sender *s, int64_t now)
{
    uint16_t event;
    uint32_t value;
    while (s->probe_monitor != NULL && next_event(s->probe_monitor, &event, &value)) {
        if (event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            continue;
        RSL_NOTICE("sender", "%s is reachable again; moving back to it from %s", s->endpoints[0],
                   s->endpoints[s->ep]);
        switch_endpoint(s, 0, now); /* closes the probe */
        return;
    }
}

/* ---- poll integration -------------------------------------------------------- */

static bool has_waiting(const struct agent_sender *s, int64_t now)
{
    if (paused(s, now) || awaiting(s) >= s->cwnd.cwnd)
        return false;
    for (size_t i = 0; i < s->window; i++)
        if (s->slots[i].state == SLOT_WAITING)
            return true;
    return false;
}

static void add_item(zmq_pollitem_t *items, size_t *n, size_t max, void *socket, short events)
{
    if (*n >= max || socket == NULL)
        return;
    items[*n].socket = socket;
    items[*n].fd = -1;
    items[*n].events = events;
    items[*n].revents = 0;
    (*n)++;
}

size_t agent_sender_poll_fill(struct agent_sender *s, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    int64_t now = rsl_monotonic_ms();
    add_item(items, &n, max, s->socket,
             (short)(ZMQ_POLLIN | (has_waiting(s, now) ? ZMQ_POLLOUT : 0)));
    add_item(items, &n, max, s->monitor, ZMQ_POLLIN);
    add_item(items, &n, max, s->probe_monitor, ZMQ_POLLIN);
    return n;
}

void agent_sender_poll_handle(struct agent_sender *s, const zmq_pollitem_t *items, size_t n,
                              int64_t now)
{
    /* Handlers may replace the sockets (failover): compare each item with
     * what is current, and do the main socket last. */
    bool main_ready = false;
    for (size_t i = 0; i < n; i++) {
        if (items[i].revents == 0 || items[i].socket == NULL)
            continue;
        if (items[i].socket == s->probe_monitor)
            read_probe(s, now);
        else if (items[i].socket == s->monitor)
            read_monitor(s, now);
        else if (items[i].socket == s->socket)
            main_ready = true;
    }
    if (main_ready) {
        if (s->socket != NULL)
            read_acks(s, now);
        /* Acks free slots: refill and send in the same turn. */
        refill(s);
        send_waiting(s, now);
    }
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (a == NEVER)
        return b;
    if (b == NEVER)
        return a;
    return a < b ? a : b;
}

int64_t agent_sender_next_deadline(const struct agent_sender *s)
{
    int64_t best = NEVER;
    if (s->draining)
        return NEVER; /* nothing is resent while shutting down */
    bool any_waiting = false;
    for (size_t i = 0; i < s->window; i++) {
        const struct slot *slot = &s->slots[i];
        any_waiting = any_waiting || slot->state == SLOT_WAITING;
        if (slot->state == SLOT_SENT || slot->state == SLOT_HOLD)
            best = earliest(best, slot->due);
    }
    /* The end of a pause matters only if something could go out then: with
     * the congestion window full, the next ack is what frees room. */
    if (any_waiting && s->pause_until > 0 && awaiting(s) < s->cwnd.cwnd)
        best = earliest(best, s->pause_until);
    if (s->n_endpoints > 1) {
        if (!s->connected)
            best = earliest(best, s->ep_since + s->failover_ms);
        else if (awaiting(s) > 0)
            best = earliest(best, s->last_progress + s->failover_ms);
        if (s->ep != 0)
            best = earliest(best, s->probe != NULL ? s->probe_deadline : s->next_probe);
    } else if (!s->stall_logged) {
        if (!s->connected)
            best = earliest(best, s->ep_since + s->failover_ms);
        else if (awaiting(s) > 0)
            best = earliest(best, s->last_progress + s->failover_ms);
    }
    return best;
}

size_t agent_sender_in_flight(const struct agent_sender *s)
{
    return s->window - slots_free(s);
}

size_t agent_sender_window(const struct agent_sender *s)
{
    return s->cwnd.cwnd;
}

size_t agent_sender_awaiting_ack(const struct agent_sender *s)
{
    return awaiting(s);
}

const char *agent_sender_endpoint(const struct agent_sender *s)
{
    return s->endpoints[s->ep];
}

bool agent_sender_connected(const struct agent_sender *s)
{
    return s->connected;
}

int64_t agent_sender_last_ack_ms(const struct agent_sender *s)
{
    return s->last_ack_wall;
}

const struct agent_sender_stats *agent_sender_stats(const struct agent_sender *s)
{
    return &s->stats;
}
