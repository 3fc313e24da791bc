/*
 * sender.c - the DEALER side of the wire protocol (see sender.h).
 *
 * The window is a small array of slots, each holding one spooled sequence:
 *   WAITING  to be sent (new, or its resend is due)
 *   SENT     handed to ZeroMQ; resend at `due` unless an ack comes first
 *   HOLD     not to be sent before `due` (RETRY_LATER, or a read error)
 * Slots are filled from a small queue of sequences listed from the spool
 * with agent_spool_list(after = cursor), PREFETCH at a time: sequences only
 * grow, so every pending entry at or below the cursor is queued, in a slot
 * or already gone, and entries appended later are above it. No part of the
 * spool is listed twice and memory stays bounded whatever its depth.
 *
 * A frame is read from disk (and its checksum verified) at the moment it is
 * sent, and only when ZMQ_EVENTS says the socket can take it: with
 * ZMQ_IMMEDIATE set, a DEALER without a live connection refuses frames
 * instead of queueing them, so nothing is read while the aggregator is away.
 *
 * Acks decide spool operations, so they are matched strictly: our agent id
 * and a sequence currently in the window. Anything else is logged at debug
 * and dropped (a late ack for a sequence already settled, a confused peer).
 */
#include "sender.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/codec.h"
#include "rsl/log.h"
#include "rsl/util.h"

#define ACKS_PER_HANDLE 1024 /* fairness: other poll items get their turn */
/* Sequences listed from the spool per directory pass. Listing walks all of
 * pending/, so taking only a window's worth per pass would make draining a
 * deep backlog quadratic; 1024 keeps it to one pass per 1024 reports for 8
 * KiB of memory, whatever the spool's depth. */
#define PREFETCH 1024

enum slot_state { SLOT_FREE = 0, SLOT_WAITING, SLOT_SENT, SLOT_HOLD };

struct slot {
    uint64_t sequence;
    enum slot_state state;
    int64_t due;        /* SENT/HOLD: monotonic ms when it becomes WAITING */
    unsigned tries;     /* times sent */
};

struct agent_sender {
    void *socket;                          /* DEALER, owned */
    void *monitor;                         /* PAIR reading the DEALER's events, owned */
    struct agent_spool *spool;             /* borrowed */
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char endpoint[256];                    /* the one connected to */
    int64_t resend_timeout_ms;
    size_t max_message_bytes;
    struct slot slots[AGENT_SEND_WINDOW];
    size_t window;
    uint64_t cursor;                       /* highest sequence listed from the spool */
    uint64_t queue[PREFETCH];              /* listed, not yet in a slot; ascending */
    size_t q_head, q_len;
    bool refill;                           /* the spool may hold entries above cursor */
    bool draining;                         /* shutting down: send nothing more */
    bool connected;                        /* last monitor event said so */
    bool auth_failure_logged;              /* one error line per failure streak */
    struct agent_sender_stats stats;
};

/* ---- socket set-up ------------------------------------------------------- */

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

int agent_sender_new(void *zmq_ctx, const struct agent_sender_options *opts,
                     struct agent_spool *spool, struct agent_sender **out, struct rsl_error *err)
{
    struct agent_sender *s = NULL;
    char monitor_ep[64];
    int rc = RSL_OK;

    *out = NULL;
    if (opts->n_endpoints == 0 || opts->window == 0 || opts->window > AGENT_SEND_WINDOW)
        return rsl_error_set(err, RSL_EINVAL, "sender: no endpoint or bad window");
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    s->spool = spool;
    s->resend_timeout_ms = opts->resend_timeout_ms;
    s->max_message_bytes = opts->max_message_bytes;
    s->window = opts->window;
    s->refill = true;
    if (rsl_strlcpy(s->agent_id, opts->agent_id, sizeof(s->agent_id)) != RSL_OK ||
        rsl_strlcpy(s->endpoint, opts->endpoints[0], sizeof(s->endpoint)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_EINVAL, "sender: agent id or endpoint too long");
        goto out;
    }

    s->socket = zmq_socket(zmq_ctx, ZMQ_DEALER);
    if (s->socket == NULL) {
        rc = rsl_error_set(err, RSL_EIO, "zmq_socket: %s", zmq_strerror(errno));
        goto out;
    }
    /* LINGER 0: frames not yet on the wire at close are simply dropped -
     * they are still in the spool. IMMEDIATE: no queueing towards a peer
     * that is not connected (see the top comment). */
    int64_t maxmsg = AGENT_ACK_MAX_BYTES;
    if ((rc = set_int(s->socket, ZMQ_LINGER, 0, "ZMQ_LINGER", err)) != RSL_OK ||
        (rc = set_int(s->socket, ZMQ_IMMEDIATE, 1, "ZMQ_IMMEDIATE", err)) != RSL_OK ||
        (rc = set_int(s->socket, ZMQ_RECONNECT_IVL_MAX, 10000, "ZMQ_RECONNECT_IVL_MAX", err)) !=
            RSL_OK ||
        (rc = set_int(s->socket, ZMQ_HEARTBEAT_IVL, 10000, "ZMQ_HEARTBEAT_IVL", err)) != RSL_OK ||
        (rc = set_int(s->socket, ZMQ_HEARTBEAT_TIMEOUT, 30000, "ZMQ_HEARTBEAT_TIMEOUT", err)) !=
            RSL_OK)
        goto out;
    if (zmq_setsockopt(s->socket, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg)) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "zmq_setsockopt ZMQ_MAXMSGSIZE: %s", zmq_strerror(errno));
        goto out;
    }
    if ((rc = set_key(s->socket, ZMQ_CURVE_SERVERKEY, opts->server_key, "ZMQ_CURVE_SERVERKEY",
                      err)) != RSL_OK ||
        (rc = set_key(s->socket, ZMQ_CURVE_PUBLICKEY, opts->client_public, "ZMQ_CURVE_PUBLICKEY",
                      err)) != RSL_OK ||
        (rc = set_key(s->socket, ZMQ_CURVE_SECRETKEY, opts->client_secret, "ZMQ_CURVE_SECRETKEY",
                      err)) != RSL_OK)
        goto out;

    /* The monitor turns silent CURVE failures (wrong server key, not
     * enrolled) into log lines. Best effort: delivery works without it. */
    snprintf(monitor_ep, sizeof(monitor_ep), "inproc://agent-sender-monitor-%p", (void *)s);
    if (zmq_socket_monitor(s->socket, monitor_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
        s->monitor = zmq_socket(zmq_ctx, ZMQ_PAIR);
        int zero = 0;
        if (s->monitor != NULL)
            zmq_setsockopt(s->monitor, ZMQ_LINGER, &zero, sizeof(zero));
        if (s->monitor != NULL && zmq_connect(s->monitor, monitor_ep) != 0) {
            zmq_close(s->monitor);
            s->monitor = NULL;
        }
    }
    if (s->monitor == NULL)
        RSL_WARN("sender", "no connection monitor: %s", zmq_strerror(errno));

    if (zmq_connect(s->socket, s->endpoint) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "connect %s: %s", s->endpoint, zmq_strerror(errno));
        goto out;
    }
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
    if (s->socket != NULL) {
        if (s->monitor != NULL)
            zmq_socket_monitor(s->socket, NULL, 0);
        zmq_close(s->socket);
    }
    if (s->monitor != NULL)
        zmq_close(s->monitor);
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

static void refill(struct agent_sender *s)
{
    struct rsl_error err;
    if (s->draining)
        return;
    for (size_t i = 0; i < s->window; i++) {
        if (s->slots[i].state != SLOT_FREE)
            continue;
        if (s->q_len == 0) {
            size_t got = 0;
            if (!s->refill)
                return;
            rsl_error_clear(&err);
            if (agent_spool_list(s->spool, s->cursor, s->queue, PREFETCH, &got, &err) != RSL_OK) {
                RSL_ERR("sender", "%s", err.text);
                return; /* refill stays set: tried again at the next tick */
            }
            if (got < PREFETCH)
                s->refill = false; /* all listed; agent_sender_notify sets it again */
            if (got == 0)
                return;
            s->q_head = 0;
            s->q_len = got;
            s->cursor = s->queue[got - 1];
        }
        s->slots[i].sequence = s->queue[s->q_head++];
        s->q_len--;
        s->slots[i].state = SLOT_WAITING;
        s->slots[i].tries = 0;
    }
}

void agent_sender_drain(struct agent_sender *s)
{
    s->draining = true;
}

void agent_sender_notify(struct agent_sender *s)
{
    s->refill = true;
}

static bool socket_writable(struct agent_sender *s)
{
    int events = 0;
    size_t len = sizeof(events);
    if (zmq_getsockopt(s->socket, ZMQ_EVENTS, &events, &len) != 0)
        return false;
    return (events & ZMQ_POLLOUT) != 0;
}

/* Send one WAITING slot. Returns false when the socket took nothing (stop
 * trying others for now). */
static bool send_slot(struct agent_sender *s, struct slot *slot, int64_t now)
{
    uint8_t *data = NULL;
    size_t len = 0;
    struct rsl_error err;
    rsl_error_clear(&err);

    int rc = agent_spool_read(s->spool, slot->sequence, s->max_message_bytes, &data, &len, &err);
    if (rc == RSL_ENOENT || rc == RSL_ECORRUPT) {
        /* Gone, or quarantined (agent_spool_read logged it): nothing to send. */
        if (rc == RSL_ENOENT)
            RSL_WARN("sender", "report %" PRIu64 " vanished from the spool", slot->sequence);
        slot_free(slot);
        return true;
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
        return true;
    }
    if (rc != RSL_OK) {
        RSL_ERR("sender", "%s; retrying in %gs", err.text, (double)s->resend_timeout_ms / 1000.0);
        slot->state = SLOT_HOLD;
        slot->due = now + s->resend_timeout_ms;
        return true;
    }
    int n = zmq_send(s->socket, data, len, ZMQ_DONTWAIT);
    int send_errno = errno;
    free(data);
    if (n < 0) {
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
    slot->due = now + s->resend_timeout_ms;
    return true;
}

static void send_waiting(struct agent_sender *s, int64_t now)
{
    if (s->draining)
        return;
    for (size_t i = 0; i < s->window; i++) {
        if (s->slots[i].state != SLOT_WAITING)
            continue;
        if (!socket_writable(s))
            return;
        if (!send_slot(s, &s->slots[i], now))
            return;
    }
}

void agent_sender_tick(struct agent_sender *s, int64_t now)
{
    for (size_t i = 0; i < s->window && !s->draining; i++) {
        struct slot *slot = &s->slots[i];
        if ((slot->state == SLOT_SENT || slot->state == SLOT_HOLD) && now >= slot->due) {
            if (slot->state == SLOT_SENT)
                RSL_DEBUG("sender", "no ack for report %" PRIu64 " after %gs; resending",
                          slot->sequence, (double)s->resend_timeout_ms / 1000.0);
            slot->state = SLOT_WAITING;
        }
    }
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
    switch (ack->status) {
    case RESILIENCE__V1__ACK__STATUS__ACCEPTED:
    case RESILIENCE__V1__ACK__STATUS__DUPLICATE:
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
    default:
        s->stats.retry_later++;
        RSL_INFO("sender", "report %" PRIu64 " RETRY_LATER%s%s; retrying in %gs", ack->sequence,
                 detail[0] != '\0' ? ": " : "", detail, (double)s->resend_timeout_ms / 1000.0);
        slot->state = SLOT_HOLD;
        slot->due = now + s->resend_timeout_ms;
        break;
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

/* ---- connection monitor ------------------------------------------------------ */

static void read_monitor(struct agent_sender *s)
{
    for (int i = 0; i < 64; i++) {
        zmq_msg_t msg;
        uint16_t event = 0;
        uint32_t value = 0;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        /* Frame 1: 16-bit event, 32-bit value; frame 2: the endpoint. */
        if (zmq_msg_size(&msg) >= 6) {
            const uint8_t *d = zmq_msg_data(&msg);
            memcpy(&event, d, sizeof(event));
            memcpy(&value, d + 2, sizeof(value));
        }
        while (zmq_msg_more(&msg)) {
            zmq_msg_close(&msg);
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, s->monitor, ZMQ_DONTWAIT) < 0)
                break;
        }
        zmq_msg_close(&msg);

        switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            if (!s->connected)
                RSL_INFO("sender", "connected to %s", s->endpoint);
            s->connected = true;
            s->auth_failure_logged = false;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            if (s->connected)
                RSL_WARN("sender", "disconnected from %s; reconnecting", s->endpoint);
            s->connected = false;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            s->connected = false;
            if (!s->auth_failure_logged)
                RSL_ERR("sender",
                        "CURVE handshake with %s failed (%s, code %u): check server_key and "
                        "that this agent's curve.pub is enrolled",
                        s->endpoint,
                        event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "refused" : "protocol error",
                        (unsigned)value);
            s->auth_failure_logged = true;
            break;
        default:
            break;
        }
    }
}

/* ---- poll integration -------------------------------------------------------- */

static bool has_waiting(const struct agent_sender *s)
{
    if (s->draining)
        return false;
    for (size_t i = 0; i < s->window; i++)
        if (s->slots[i].state == SLOT_WAITING)
            return true;
    return false;
}

size_t agent_sender_poll_fill(struct agent_sender *s, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    if (n < max) {
        items[n].socket = s->socket;
        items[n].fd = -1;
        items[n].events = (short)(ZMQ_POLLIN | (has_waiting(s) ? ZMQ_POLLOUT : 0));
        items[n].revents = 0;
        n++;
    }
    if (n < max && s->monitor != NULL) {
        items[n].socket = s->monitor;
        items[n].fd = -1;
        items[n].events = ZMQ_POLLIN;
        items[n].revents = 0;
        n++;
    }
    return n;
}

void agent_sender_poll_handle(struct agent_sender *s, const zmq_pollitem_t *items, size_t n,
                              int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        if (items[i].revents == 0)
            continue;
        if (items[i].socket == s->monitor && s->monitor != NULL) {
            read_monitor(s);
        } else if (items[i].socket == s->socket) {
            if (items[i].revents & ZMQ_POLLIN)
                read_acks(s, now);
            /* Acks free slots: refill and send in the same turn. */
            refill(s);
            send_waiting(s, now);
        }
    }
}

int64_t agent_sender_next_deadline(const struct agent_sender *s)
{
    int64_t best = -1;
    if (s->draining)
        return -1; /* nothing is resent while shutting down */
    for (size_t i = 0; i < s->window; i++) {
        const struct slot *slot = &s->slots[i];
        if (slot->state != SLOT_SENT && slot->state != SLOT_HOLD)
            continue;
        if (best < 0 || slot->due < best)
            best = slot->due;
    }
    return best;
}

size_t agent_sender_in_flight(const struct agent_sender *s)
{
    return s->window - slots_free(s);
}

size_t agent_sender_awaiting_ack(const struct agent_sender *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->window; i++)
        n += s->slots[i].state == SLOT_SENT ? 1 : 0;
    return n;
}

const struct agent_sender_stats *agent_sender_stats(const struct agent_sender *s)
{
    return &s->stats;
}
