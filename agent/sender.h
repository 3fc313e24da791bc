/*
 * sender.h - delivering spooled reports to the aggregator and acting on its
 * acks (ARCHITECTURE section 2).
 *
 * One ZeroMQ DEALER with CURVE client keys connects to one aggregator
 * endpoint at a time. Up to `window` spooled entries are in flight at once;
 * the sender takes them from the spool in sequence order, in bounded
 * chunks, and reads each from disk (verifying its checksum) when it sends
 * it, so memory holds sequence numbers, never the spool's contents.
 *
 * Resends: an entry whose ack has not come is sent again after an
 * exponential backoff with jitter (agent_backoff_ms): resend_timeout after
 * the first try, twice that after the second, ..., never more than
 * backoff_max. The aggregator answers a repeat with DUPLICATE.
 *
 * Congestion (RETRY_LATER: the aggregator's queue is full): how many
 * reports may be in flight adapts like TCP's congestion window (struct
 * agent_cwnd). It starts at AGENT_CWND_INITIAL and grows by one per ack up
 * to `window` (slow start); a round of RETRY_LATER halves it (never below
 * AGENT_CWND_MIN), after which it grows by one per window's worth of acks.
 * A round is one event at the aggregator: only a RETRY_LATER for a report
 * sent after the previous round began starts a new one, so a whole window
 * turned away at once halves the window once. Each round also pauses all
 * sending - AGENT_RETRY_PAUSE_MS, doubling with every round in a row
 * without an ACCEPTED or DUPLICATE in between, up to backoff_max, spread
 * by +-25% - and the turned-away entries go out again after it. A move to
 * another endpoint starts again from AGENT_CWND_INITIAL. Hundreds
 * of agents back from an outage with deep spools so share the aggregator's
 * queue (max_queue) instead of all pausing for a resend_timeout together.
 *
 * Acks: ACCEPTED and DUPLICATE remove the entry; REJECTED moves it to
 * rejected/ with the detail beside it, never to be sent again. Acks for
 * other agent ids or for sequences not in flight are ignored (debug log).
 *
 * Endpoints, in failover order: when the current one has had no
 * connection, or no answer to reports in flight, for the failover time
 * (AGENT_FAILOVER_MIN_MS..AGENT_FAILOVER_MAX_MS, 2 x resend_timeout), the
 * socket is closed and a new one connects to the next endpoint; reports in
 * flight are resent there. While not on the first endpoint, a probe socket
 * tries the first one every AGENT_FAILBACK_PROBE_MS and the sender moves
 * back as soon as a CURVE handshake with it succeeds. ZeroMQ heartbeats
 * (ZMQ_HEARTBEAT_IVL, TTL and TIMEOUT 3 x the interval) notice a dead peer
 * on an idle connection. Host names are resolved again at every connect:
 * libzmq resolves a tcp:// endpoint each time it (re)connects, and a failover
 * makes a new socket anyway.
 *
 * The sender owns its sockets; they are used only from the daemon's loop
 * thread. The spool is borrowed.
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

/* Acks are small; anything larger from the wire is refused by ZeroMQ. */
#define AGENT_ACK_MAX_BYTES (8 * 1024)
#define AGENT_FAILOVER_MIN_MS (5 * 1000)
#define AGENT_FAILOVER_MAX_MS (60 * 1000)
#define AGENT_FAILBACK_PROBE_MS (60 * 1000)

struct agent_sender_options {
    const char *agent_id;                     /* acks for other ids are ignored */
    const char *const *endpoints;             /* tcp://..., failover order (copied) */
    size_t n_endpoints;
    const char *server_key;                   /* Z85, the aggregator's CURVE public key */
    const char *client_public;                /* Z85, our curve.pub */
    const char *client_secret;                /* Z85, our curve.key (copied into libzmq only) */
    int64_t resend_timeout_ms;                /* wait after the first try */
    int64_t backoff_max_ms;                   /* cap on waits (raised to resend_timeout) */
    int64_t heartbeat_ms;                     /* ZMQ_HEARTBEAT_IVL; 0 = off */
    size_t max_message_bytes;                 /* an entry over this is rejected locally */
    size_t window;                            /* 1..AGENT_MAX_WINDOW reports in flight */
    int64_t failover_ms;                      /* 0: derived from resend_timeout (above) */
    int64_t failback_probe_ms;                /* 0: AGENT_FAILBACK_PROBE_MS */
};

struct agent_sender_stats {
    uint64_t sent;        /* frames handed to ZeroMQ, first tries */
    uint64_t resent;      /* frames sent again after a timeout, RETRY_LATER or failover */
    uint64_t accepted;
    uint64_t duplicate;
    uint64_t rejected;    /* by the aggregator or locally (oversized) */
    uint64_t retry_later;
    uint64_t failovers;   /* endpoint changes (failover and failback) */
};

struct agent_sender;

/* Create the DEALER on `zmq_ctx`, set CURVE and socket options, connect to
 * the first endpoint. Connecting is asynchronous: nothing blocks here. */
int agent_sender_new(void *zmq_ctx, const struct agent_sender_options *opts,
                     struct agent_spool *spool, struct agent_sender **out,
                     struct rsl_error *err);

/* Closes the sockets (linger 0: unsent frames are dropped, the spool keeps
 * them). NULL-safe; NULLs the caller's pointer. */
void agent_sender_free(struct agent_sender **sender);

/* Stop sending (shutdown grace): acks are still read and acted on. */
void agent_sender_drain(struct agent_sender *sender);

/* The spool has a new entry `sequence` (0: unknown which): fill free
 * window slots at the next tick. An entry below what was already listed
 * (another process's, or numbers interleaved between processes) makes the
 * sender list again from there. */
void agent_sender_notify(struct agent_sender *sender, uint64_t sequence);

/* The spool dropped `sequence`: forget it if it is in the window. */
void agent_sender_forget(struct agent_sender *sender, uint64_t sequence);

/* Fill the window from the spool, turn timed-out entries into resends,
 * fail over if the endpoint is dead and, if the socket can take them, send
 * what waits. `now` is monotonic ms. */
void agent_sender_tick(struct agent_sender *sender, int64_t now);

/* Poll items the sender needs (the DEALER, for ZMQ_POLLIN always and
 * ZMQ_POLLOUT while frames wait for a connection; its connection monitor;
 * the failback probe's monitor). Writes at most AGENT_SENDER_POLL_ITEMS
 * items; returns how many. The same items, after zmq_poll set revents, go
 * to agent_sender_poll_handle, which reads acks, sends waiting frames and
 * follows connection changes. */
#define AGENT_SENDER_POLL_ITEMS 3
size_t agent_sender_poll_fill(struct agent_sender *sender, zmq_pollitem_t *items, size_t max);
void agent_sender_poll_handle(struct agent_sender *sender, const zmq_pollitem_t *items, size_t n,
                              int64_t now);

/* Monotonic ms at which tick has work (a resend or failover due), or -1. */
int64_t agent_sender_next_deadline(const struct agent_sender *sender);

/* Entries in the window (sent and awaiting an ack, or waiting to be sent). */
size_t agent_sender_in_flight(const struct agent_sender *sender);
/* Entries sent and still waiting for their ack. */
size_t agent_sender_awaiting_ack(const struct agent_sender *sender);

/* The endpoint in use, whether a CURVE handshake with it succeeded (and no
 * disconnect since), and the wall-clock ms of the last ack (0: none yet). */
const char *agent_sender_endpoint(const struct agent_sender *sender);
bool agent_sender_connected(const struct agent_sender *sender);
int64_t agent_sender_last_ack_ms(const struct agent_sender *sender);

const struct agent_sender_stats *agent_sender_stats(const struct agent_sender *sender);

/* The congestion window: how many reports may be in flight now. */
size_t agent_sender_window(const struct agent_sender *sender);

/* The wait before resending after `attempt` tries (1 = after the first
 * send): base * 2^(attempt-1) capped at max_ms (itself at least base),
 * spread by a random factor in [0.75, 1.25) from `random`, never above the
 * cap. Pure: the caller supplies the randomness. */
int64_t agent_backoff_ms(int64_t base_ms, int64_t max_ms, unsigned attempt, uint32_t random);

/* The first pause after RETRY_LATER, and the congestion window's start and
 * floor (see the top of this file). */
#define AGENT_RETRY_PAUSE_MS 250
#define AGENT_CWND_INITIAL 32
#define AGENT_CWND_MIN 1

/* The congestion window: reports allowed in flight, 1..limit. Pure
 * arithmetic, used by the sender and tested on its own. */
struct agent_cwnd {
    size_t limit;     /* the configured window */
    size_t cwnd;      /* in flight at most, now */
    size_t ssthresh;  /* below it, +1 per ack; at or above, +1 per cwnd acks */
    size_t acks;      /* acks counted towards the next +1 above ssthresh */
    uint64_t sends;   /* reports sent so far, counted by agent_cwnd_sent */
    uint64_t round;   /* `sends` when the last RETRY_LATER round began */
};

void agent_cwnd_init(struct agent_cwnd *c, size_t limit);
/* A new connection (failover, failback): slow start again from
 * AGENT_CWND_INITIAL - another aggregator, another queue; what was sent
 * before does not start a round. */
void agent_cwnd_restart(struct agent_cwnd *c);
/* A report is sent: returns its send number (1, 2, ...), kept with it. */
uint64_t agent_cwnd_sent(struct agent_cwnd *c);
/* An ACCEPTED or DUPLICATE. */
void agent_cwnd_progress(struct agent_cwnd *c);
/* A RETRY_LATER for the report whose last send had number `sent_no`: true
 * when it begins a new round (the window was halved), false when it
 * belongs to the round under way (that send came before the round began,
 * however close in time). */
bool agent_cwnd_retry_later(struct agent_cwnd *c, uint64_t sent_no);

#endif
