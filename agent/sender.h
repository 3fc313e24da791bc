/*
 * sender.h - delivering spooled reports to the aggregator and acting on its
 * acks (ARCHITECTURE section 2).
 *
 * One ZeroMQ DEALER with CURVE client keys connects to the aggregator's
 * ROUTER. Up to `window` spooled entries are in flight at once; the sender
 * takes them from the spool in sequence order, in bounded chunks, and reads
 * each from disk (verifying its checksum) when it sends it, so memory holds
 * sequence numbers, never the spool's contents. An entry whose ack has not
 * come within resend_timeout is sent again (the aggregator answers a repeat
 * with DUPLICATE); RETRY_LATER waits resend_timeout before the next try.
 *
 * Acks: ACCEPTED and DUPLICATE remove the entry (spool unlink + fsync);
 * REJECTED moves it to rejected/ with the detail beside it. Acks for other
 * agent ids or for sequences not in flight are ignored (logged at debug).
 *
 * The sender owns its socket; it is used only from the daemon's loop thread.
 * The spool is borrowed. Failover between endpoints and backoff windows are
 * later additions behind the same interface (the endpoint list is kept).
 */
#ifndef AGENT_SENDER_H
#define AGENT_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "rsl/error.h"
#include "rsl/keys.h"
#include "spool.h"

#define AGENT_SEND_WINDOW 32
/* Acks are small; anything larger from the wire is refused by ZeroMQ. */
#define AGENT_ACK_MAX_BYTES (8 * 1024)

struct agent_sender_options {
    const char *agent_id;                     /* acks for other ids are ignored */
    const char *const *endpoints;             /* tcp://..., failover order */
    size_t n_endpoints;
    const char *server_key;                   /* Z85, the aggregator's CURVE public key */
    const char *client_public;                /* Z85, our curve.pub */
    const char *client_secret;                /* Z85, our curve.key (copied into libzmq only) */
    int64_t resend_timeout_ms;
    size_t max_message_bytes;                 /* an entry over this is rejected locally */
    size_t window;                            /* 1..AGENT_SEND_WINDOW */
};

struct agent_sender_stats {
    uint64_t sent;        /* frames handed to ZeroMQ, first tries */
    uint64_t resent;      /* frames sent again after a timeout or RETRY_LATER */
    uint64_t accepted;
    uint64_t duplicate;
    uint64_t rejected;    /* by the aggregator or locally (oversized) */
    uint64_t retry_later;
};

struct agent_sender;

/* Create the DEALER on `zmq_ctx`, set CURVE and socket options, connect to
 * the first endpoint. Connecting is asynchronous: nothing blocks here. */
int agent_sender_new(void *zmq_ctx, const struct agent_sender_options *opts,
                     struct agent_spool *spool, struct agent_sender **out,
                     struct rsl_error *err);

/* Closes the socket (linger 0: unsent frames are dropped, the spool keeps
 * them). NULL-safe; NULLs the caller's pointer. */
void agent_sender_free(struct agent_sender **sender);

/* Stop sending (shutdown grace): acks are still read and acted on. */
void agent_sender_drain(struct agent_sender *sender);

/* The spool has a new entry: fill free window slots at the next tick. */
void agent_sender_notify(struct agent_sender *sender);

/* Fill the window from the spool, turn timed-out entries into resends and,
 * if the socket can take them, send what waits. `now` is monotonic ms. */
void agent_sender_tick(struct agent_sender *sender, int64_t now);

/* Poll items the sender needs (the DEALER, for ZMQ_POLLIN always and
 * ZMQ_POLLOUT while frames wait for a connection; its connection monitor).
 * Writes at most AGENT_SENDER_POLL_ITEMS items; returns how many. The same
 * items, after zmq_poll set revents, go to agent_sender_poll_handle, which
 * reads acks, sends waiting frames and logs connection changes. */
#define AGENT_SENDER_POLL_ITEMS 2
size_t agent_sender_poll_fill(struct agent_sender *sender, zmq_pollitem_t *items, size_t max);
void agent_sender_poll_handle(struct agent_sender *sender, const zmq_pollitem_t *items, size_t n,
                              int64_t now);

/* Monotonic ms at which tick has work (a resend due), or -1. */
int64_t agent_sender_next_deadline(const struct agent_sender *sender);

/* Entries in the window (sent and awaiting an ack, or waiting to be sent). */
size_t agent_sender_in_flight(const struct agent_sender *sender);
/* Entries sent and still waiting for their ack. */
size_t agent_sender_awaiting_ack(const struct agent_sender *sender);

const struct agent_sender_stats *agent_sender_stats(const struct agent_sender *sender);

#endif
