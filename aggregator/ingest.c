/*
 * ingest.c - ZAP handler thread and ingest thread (see ingest.h).
 *
 * Socket ownership: agg_ingest_start creates and configures every socket in
 * the calling thread (so bind errors come back synchronously), then hands
 * each to the thread that will use it exclusively. pthread_create is a full
 * memory barrier, which is what libzmq requires to migrate a socket. The
 * parent ends of the two control pipes stay with the caller.
 *
 * Order matters for security: the ZAP REP socket is bound before the ROUTER
 * binds, and the ROUTER sets ZMQ_ZAP_DOMAIN with ZMQ_ZAP_ENFORCE_DOMAIN, so
 * there is no moment at which a CURVE handshake succeeds without the
 * registry being consulted. If the ZAP endpoint cannot be bound (another
 * handler in this context, a libzmq without inproc), we do not start.
 *
 * A batch (one poll wake-up): up to AGG_INGEST_BATCH_MAX messages are read
 * without blocking and checked one by one (decode, registry, signature,
 * sender, nation, clock); the survivors are appended in one store
 * transaction; only after COMMIT returns do the acks go out. If the commit
 * fails (disk full, I/O error) every stored-candidate gets RETRY_LATER and
 * the agents resend later; rejections are permanent and go out regardless.
 *
 * Counters are process-wide C11 atomics (relaxed: they are statistics), so
 * the HTTPS threads can read them for /metrics without a lock.
 */
#include "ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "rsl/codec.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

/* Part of libzmq's draft API in the headers, but implemented by the
 * shipped library (4.3.x); without it a missing ZAP handler means "admit
 * everyone", so we set it and refuse to start if libzmq refuses it. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8
#define ROUTING_ID_MAX 256
/* Let the last acks drain on shutdown, but never hang on a dead peer. */
#define ROUTER_LINGER_MS 2000

static atomic_uint_fast64_t counters[AGG_COUNT_N];

static const char *const counter_names[AGG_COUNT_N] = {
    [AGG_COUNT_ACCEPTED] = "accepted",
    [AGG_COUNT_DUPLICATE] = "duplicate",
    [AGG_COUNT_EXCLUDED_MEASUREMENTS] = "excluded_measurements",
    [AGG_COUNT_RETRY_LATER] = "retry_later",
    [AGG_COUNT_MALFORMED] = "malformed",
    [AGG_COUNT_OVERSIZED] = "oversized",
    [AGG_COUNT_UNKNOWN_AGENT] = "unknown_agent",
    [AGG_COUNT_UNKNOWN_KEY] = "unknown_key",
    [AGG_COUNT_REVOKED_KEY] = "revoked_key",
    [AGG_COUNT_BAD_SIGNATURE] = "bad_signature",
    [AGG_COUNT_WRONG_SENDER] = "wrong_sender",
    [AGG_COUNT_NATION_MISMATCH] = "nation_mismatch",
    [AGG_COUNT_FUTURE_TIMESTAMP] = "future_timestamp",
    [AGG_COUNT_EQUIVOCATION] = "equivocation",
};

uint64_t agg_ingest_counter(enum agg_ingest_counter c)
{
    if ((int)c < 0 || c >= AGG_COUNT_N)
        return 0;
    return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

const char *agg_ingest_counter_name(enum agg_ingest_counter c)
{
    if ((int)c < 0 || c >= AGG_COUNT_N)
        return "unknown";
    return counter_names[c];
}

static void count(enum agg_ingest_counter c, uint64_t n)
{
    atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

/* A control pipe: the parent end stays with agg_ingest_*, the child end
 * belongs to the worker thread. One message, "STOP", is ever sent. */
struct control_pipe {
    void *parent;
    void *child;
};

struct agg_ingest {
    const struct agg_config *cfg;            /* borrowed, outlives us */
    struct agg_registry_holder *registry;    /* borrowed, has its own lock */
    void *ctx;                               /* the ZeroMQ context */

    /* ZAP thread */
    pthread_t zap_thread;
    bool zap_running;
    void *zap_socket;                        /* owned by the ZAP thread once it runs */
    struct control_pipe zap_pipe;

    /* ingest thread */
    pthread_t ingest_thread;
    bool ingest_running;
    void *router;                            /* owned by the ingest thread once it runs */
    struct control_pipe ingest_pipe;
    struct agg_store *store;                 /* owned by the ingest thread once it runs */
};

/* ---- helpers ------------------------------------------------------------ */

static void close_socket(void **s)
{
    if (*s != NULL) {
        zmq_close(*s);
        *s = NULL;
    }
}

/* Both ends are created here (caller's thread); the child end is handed to
 * the worker with pthread_create. LINGER 0: a STOP that was never read must
 * not hold up context termination. */
static int pipe_open(void *ctx, struct control_pipe *p, const char *name, struct rsl_error *err)
{
    char endpoint[64];
    int zero = 0;
    /* Unique per pipe object: the address of the struct. */
    snprintf(endpoint, sizeof(endpoint), "inproc://agg-%s-%p", name, (void *)p);
    p->parent = zmq_socket(ctx, ZMQ_PAIR);
    p->child = zmq_socket(ctx, ZMQ_PAIR);
    if (p->parent == NULL || p->child == NULL)
        goto fail;
    zmq_setsockopt(p->parent, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(p->child, ZMQ_LINGER, &zero, sizeof(zero));
    if (zmq_bind(p->parent, endpoint) != 0 || zmq_connect(p->child, endpoint) != 0)
        goto fail;
    return RSL_OK;
fail:
    rsl_error_set(err, RSL_EIO, "ingest: control pipe %s: %s", name, zmq_strerror(errno));
    close_socket(&p->parent);
    close_socket(&p->child);
    return RSL_EIO;
}

static void pipe_stop(struct control_pipe *p)
{
    if (p->parent != NULL && zmq_send(p->parent, "STOP", 4, 0) != 4)
        RSL_ERR("ingest", "cannot signal a thread to stop: %s", zmq_strerror(errno));
}

/* ---- ZAP handler (RFC 27) ---------------------------------------------- */

static bool frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

static void zap_send_reply(void *sock, zmq_msg_t *request_id, const char *status,
                           const char *text, const char *user_id)
{
    /* version, request id (echoed), status code, status text, user id,
     * metadata (empty). A failing send on REP can only mean shutdown. */
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(sock, request_id != NULL ? zmq_msg_data(request_id) : "",
             request_id != NULL ? zmq_msg_size(request_id) : 0, ZMQ_SNDMORE);
    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/* Read one ZAP request and answer it. Returns -1 only on ETERM.
 * A REP socket must answer every request, or it can receive no more; so
 * even a malformed request gets a 400 reply, never silence. The decision
 * uses a registry reference taken just for this look-up, so a registry
 * swap takes effect from the next handshake on. */
static int zap_handle(struct agg_ingest *ing, void *sock)
{
    zmq_msg_t frames[ZAP_MAX_FRAMES];
    size_t n = 0;
    int more = 1;
    int result = 0;

    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = n < ZAP_MAX_FRAMES ? &frames[n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            zmq_msg_close(m);
            result = errno == ETERM ? -1 : 0;
            goto out;
        }
        more = zmq_msg_more(m);
        if (m == &scratch)
            zmq_msg_close(m); /* excess frames: a malformed request */
        else
            n++;
    }

    /* 0 version, 1 request id, 2 domain, 3 address, 4 identity, 5 mechanism,
     * 6.. credentials (CURVE: one 32-byte client public key). */
    zmq_msg_t *request_id = n > 1 ? &frames[1] : NULL;
    if (n < 7 || !frame_is(&frames[0], "1.0")) {
        RSL_WARN("zap", "malformed ZAP request (%zu frames)", n);
        zap_send_reply(sock, request_id, "400", "malformed request", "");
        goto out;
    }
    char address[64];
    snprintf(address, sizeof(address), "%.*s", (int)zmq_msg_size(&frames[3]),
             (const char *)zmq_msg_data(&frames[3]));
    if (!frame_is(&frames[2], AGG_ZAP_DOMAIN) || !frame_is(&frames[5], "CURVE") || n != 7 ||
        zmq_msg_size(&frames[6]) != 32) {
        RSL_NOTICE("zap", "refused a connection from %s: not CURVE in domain '%s'", address,
                   AGG_ZAP_DOMAIN);
        zap_send_reply(sock, request_id, "400", "CURVE required", "");
        goto out;
    }

    char z85[RSL_Z85_KEY_LEN + 1];
    if (zmq_z85_encode(z85, zmq_msg_data(&frames[6]), 32) == NULL) {
        zap_send_reply(sock, request_id, "500", "internal error", "");
        goto out;
    }
    /* Copy the agent id before letting go of the registry reference. */
    char agent_id[RSL_AGENT_ID_MAX + 1] = "";
    struct agg_registry *reg = agg_registry_holder_get(ing->registry);
    const struct agg_agent *agent = agg_registry_find_curve(reg, z85);
    if (agent != NULL)
        rsl_strlcpy(agent_id, agent->id, sizeof(agent_id));
    agg_registry_release(&reg);

    if (agent_id[0] == '\0') {
        RSL_NOTICE("zap", "refused CURVE key %s from %s: not enrolled", z85, address);
        zap_send_reply(sock, request_id, "400", "key not enrolled", "");
    } else {
        RSL_DEBUG("zap", "admitted agent %s from %s", agent_id, address);
        zap_send_reply(sock, request_id, "200", "OK", agent_id);
    }
out:
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    return result;
}

/* The ZAP thread: wait on the control pipe and the ZAP socket; a STOP (or
 * context termination) ends it. It closes its own sockets: they were
 * created elsewhere but belong to this thread now. */
static void *zap_main(void *arg)
{
    struct agg_ingest *ing = arg;
    void *sock = ing->zap_socket;
    zmq_pollitem_t items[2] = {
        {ing->zap_pipe.child, 0, ZMQ_POLLIN, 0},
        {sock, 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("zap", "poll: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            break; /* STOP */
        if ((items[1].revents & ZMQ_POLLIN) && zap_handle(ing, sock) < 0)
            break;
    }
    close_socket(&ing->zap_socket);
    close_socket(&ing->zap_pipe.child);
    return NULL;
}

/* ---- the ingest thread --------------------------------------------------- */

/* One received message and what becomes of it. */
struct item {
    uint8_t routing_id[ROUTING_ID_MAX];
    size_t routing_len;
    zmq_msg_t payload;                 /* the SignedReport frame */
    bool payload_valid;                /* payload initialised */
    int64_t received_at_ms;
    char user_id[RSL_AGENT_ID_MAX + 1];
    rsl_signed_report *signed_report;
    rsl_report *report;
    /* Who the ack is for. Taken from the report once decoded; for a Report
     * that parses but fails validation, a best-effort read so the agent can
     * still match the REJECTED ack to its spooled report. */
    char ack_agent_id[RSL_AGENT_ID_MAX + 1];
    uint64_t ack_sequence;
    bool *excluded;
    size_t n_excluded;
    bool candidate;                    /* passed all checks: goes to the store */
    int status;                        /* RESILIENCE__V1__ACK__STATUS__* */
    char detail[RSL_ACK_DETAIL_MAX + 1];
};

static void item_clear(struct item *it)
{
    if (it->payload_valid)
        zmq_msg_close(&it->payload);
    rsl_signed_report_free(&it->signed_report);
    rsl_report_free(&it->report);
    free(it->excluded);
    memset(it, 0, sizeof(*it));
}

/* Reject with a reason counter and a log line; the detail goes to the agent. */
static void reject(struct item *it, enum agg_ingest_counter reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reject(struct item *it, enum agg_ingest_counter reason, const char *fmt, ...)
{
    /* Leaves room for the "reason: " prefix in the detail. */
    char text[RSL_ACK_DETAIL_MAX - 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(it->detail, sizeof(it->detail), "%s: %s", counter_names[reason], text);
    it->status = RESILIENCE__V1__ACK__STATUS__REJECTED;
    it->candidate = false;
    count(reason, 1);
    const char *agent = it->ack_agent_id[0] ? it->ack_agent_id : "?";
    uint64_t seq = it->ack_sequence;
    if (reason == AGG_COUNT_EQUIVOCATION)
        RSL_WARN("ingest", "equivocation: agent %s sequence %" PRIu64 ": %s", agent, seq, text);
    else
        RSL_NOTICE("ingest", "rejected report from %s (connection %s) sequence %" PRIu64
                   ": %s: %s", agent, it->user_id[0] ? it->user_id : "?", seq,
                   counter_names[reason], text);
}

/* Mark measurements outside the taxonomy or with another unit; write the
 * ack detail naming them (truncated with a count if it would not fit). */
static int mark_excluded(struct item *it, const struct rsl_taxonomy *tax)
{
    const rsl_report *r = it->report;
    it->excluded = calloc(r->n_measurements > 0 ? r->n_measurements : 1, sizeof(bool));
    if (it->excluded == NULL)
        return RSL_ENOMEM;
    size_t off = 0;
    size_t left_out = 0;
    it->detail[0] = '\0';
    for (size_t i = 0; i < r->n_measurements; i++) {
        const rsl_measurement *m = r->measurements[i];
        const struct rsl_indicator *ind = rsl_taxonomy_indicator(tax, m->indicator);
        const char *unit = m->unit != NULL ? m->unit : "";
        char why[RSL_UNIT_MAX * 2 + 64];
        if (ind == NULL) {
            snprintf(why, sizeof(why), "unknown indicator");
        } else if (unit[0] != '\0' && strcmp(unit, ind->unit) != 0) {
            /* Empty means "the taxonomy unit"; anything else must match. */
            snprintf(why, sizeof(why), "unit '%s' is not the taxonomy unit '%s'", unit,
                     ind->unit);
        } else {
            continue;
        }
        it->excluded[i] = true;
        it->n_excluded++;
        char entry[RSL_INDICATOR_ID_MAX + sizeof(why) + 48];
        int n = snprintf(entry, sizeof(entry), "%smeasurements[%zu] %s: %s",
                         off == 0 ? "excluded: " : "; ", i, m->indicator, why);
        /* Keep room for a "; and N more" tail. */
        if (n > 0 && off + (size_t)n < RSL_ACK_DETAIL_MAX - 32) {
            memcpy(it->detail + off, entry, (size_t)n + 1);
            off += (size_t)n;
        } else {
            left_out++;
        }
    }
    if (left_out > 0)
        snprintf(it->detail + off, sizeof(it->detail) - off, "; and %zu more", left_out);
    return RSL_OK;
}

/* A Report that failed validation may still carry a usable agent id and
 * sequence: copy them (only if well-formed) so the ack can name them. The
 * bytes are bounded by max_message_bytes already. */
static void peek_report_identity(struct item *it, const uint8_t *data, size_t len)
{
    Resilience__V1__Report *r = resilience__v1__report__unpack(NULL, len, data);
    if (r == NULL)
        return;
    if (r->agent_id != NULL && rsl_valid_agent_id(r->agent_id) && r->sequence <= INT64_MAX) {
        rsl_strlcpy(it->ack_agent_id, r->agent_id, sizeof(it->ack_agent_id));
        it->ack_sequence = r->sequence;
    }
    resilience__v1__report__free_unpacked(r, NULL);
}

/* All checks that need no store. On success it->candidate is set. */
static void check_item(struct agg_ingest *ing, struct item *it, const struct agg_registry *reg,
                       int64_t now_ms)
{
    const struct agg_config *cfg = ing->cfg;
    struct rsl_error err;
    rsl_error_clear(&err);
    const uint8_t *data = zmq_msg_data(&it->payload);
    size_t len = zmq_msg_size(&it->payload);

    int rc = rsl_signed_report_decode(data, len, cfg->max_message_bytes, &it->signed_report,
                                      &err);
    if (rc == RSL_ETOOBIG) {
        reject(it, AGG_COUNT_OVERSIZED, "%zu bytes is over max_message_bytes %zu", len,
               cfg->max_message_bytes);
        return;
    }
    if (rc != RSL_OK) {
        reject(it, AGG_COUNT_MALFORMED, "SignedReport: %s", err.text);
        return;
    }
    const rsl_signed_report *sr = it->signed_report;
    rc = rsl_report_decode(sr->report.data, sr->report.len, &it->report, &err);
    if (rc != RSL_OK) {
        peek_report_identity(it, sr->report.data, sr->report.len);
        reject(it, AGG_COUNT_MALFORMED, "Report: %s", err.text);
        return;
    }
    const rsl_report *r = it->report;
    rsl_strlcpy(it->ack_agent_id, r->agent_id, sizeof(it->ack_agent_id));
    it->ack_sequence = r->sequence;

    const struct agg_agent *agent = agg_registry_find_agent(reg, r->agent_id);
    if (agent == NULL) {
        reject(it, AGG_COUNT_UNKNOWN_AGENT, "agent '%s' is not enrolled", r->agent_id);
        return;
    }
    const uint8_t *pub = NULL;
    switch (agg_agent_key_state(agent, sr->key_id, &pub)) {
    case AGG_KEY_VALID:
        break;
    case AGG_KEY_REVOKED:
        reject(it, AGG_COUNT_REVOKED_KEY, "key %s of agent %s is revoked", sr->key_id,
               r->agent_id);
        return;
    case AGG_KEY_UNKNOWN:
    default:
        reject(it, AGG_COUNT_UNKNOWN_KEY, "key %s is not enrolled for agent %s", sr->key_id,
               r->agent_id);
        return;
    }
    if (rsl_verify_report(pub, sr->report.data, sr->report.len, sr->signature.data,
                          sr->signature.len) != RSL_OK) {
        reject(it, AGG_COUNT_BAD_SIGNATURE, "signature does not verify with key %s",
               sr->key_id);
        return;
    }
    /* The CURVE key authenticated the connection as user_id; a valid
     * signature alone does not let one agent deliver for another. */
    if (strcmp(it->user_id, r->agent_id) != 0) {
        reject(it, AGG_COUNT_WRONG_SENDER, "connection authenticated as '%s' sent a report of "
               "agent '%s'", it->user_id, r->agent_id);
        return;
    }
    if (strcmp(r->nation, agent->nation) != 0) {
        reject(it, AGG_COUNT_NATION_MISMATCH, "nation '%s' is not the enrolled nation '%s'",
               r->nation, agent->nation);
        return;
    }
    if (r->created_at_ms > now_ms + cfg->max_future_skew_ms) {
        reject(it, AGG_COUNT_FUTURE_TIMESTAMP,
               "created_at_ms %" PRId64 " is %" PRId64 " ms ahead of the aggregator's clock "
               "(allowed: %" PRId64 ")", r->created_at_ms, r->created_at_ms - now_ms,
               cfg->max_future_skew_ms);
        return;
    }
    if (mark_excluded(it, cfg->taxonomy) != RSL_OK) {
        /* Out of memory: not the agent's fault, let it resend. */
        it->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
        snprintf(it->detail, sizeof(it->detail), "aggregator out of memory");
        count(AGG_COUNT_RETRY_LATER, 1);
        return;
    }
    it->candidate = true;
}

/* Receive one message (routing id + frames) without blocking. Returns 1 if
 * an item was filled, 0 if nothing was waiting, -1 on ETERM.
 * The protocol is one frame per message; anything else is answered as
 * malformed (the whole multipart message is consumed so the next read
 * starts at a message boundary). The payload zmq_msg_t is kept, not
 * copied: its bytes go to the store as the signed original. */
static int receive_item(void *router, struct item *it)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, router, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&id);
        return e == ETERM ? -1 : 0;
    }
    it->received_at_ms = rsl_now_ms();
    it->routing_len = zmq_msg_size(&id) <= ROUTING_ID_MAX ? zmq_msg_size(&id) : 0;
    memcpy(it->routing_id, zmq_msg_data(&id), it->routing_len);
    bool more = zmq_msg_more(&id);
    zmq_msg_close(&id);

    size_t frames = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        /* The rest of a multipart message is already here: blocking is safe. */
        if (zmq_msg_recv(&m, router, 0) < 0) {
            zmq_msg_close(&m);
            return errno == ETERM ? -1 : 1;
        }
        more = zmq_msg_more(&m);
        if (frames == 0) {
            it->payload = m; /* ownership moves into the item */
            it->payload_valid = true;
        } else {
            zmq_msg_close(&m);
        }
        frames++;
    }
    if (it->payload_valid) {
        /* Metadata set by the ZAP handler: the agent id the CURVE key is
         * enrolled under. */
        const char *uid = zmq_msg_gets(&it->payload, "User-Id");
        if (uid != NULL)
            rsl_strlcpy(it->user_id, uid, sizeof(it->user_id));
    }
    if (frames != 1) {
        reject(it, AGG_COUNT_MALFORMED, "expected one frame per message, got %zu", frames);
        if (it->payload_valid) {
            zmq_msg_close(&it->payload);
            it->payload_valid = false;
        }
    }
    return 1;
}

/* Acks go out in the order the messages arrived; each is one frame
 * (rsl_ack_encode) behind the routing id. An item without a routing id
 * (oversized id, cannot happen with libzmq's 5-byte ids) gets no ack. */
static void send_ack(void *router, struct item *it)
{
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    ack.agent_id = it->ack_agent_id;
    ack.sequence = it->ack_sequence;
    ack.status = (Resilience__V1__Ack__Status)it->status;
    ack.detail = it->detail;
    if (it->routing_len == 0)
        return;
    if (rsl_ack_encode(&ack, &buf, &len) != RSL_OK) {
        RSL_ERR("ingest", "cannot encode an ack (out of memory)");
        return;
    }
    /* ZMQ_ROUTER_MANDATORY: an unknown routing id fails with EHOSTUNREACH
     * instead of a silent drop; DONTWAIT so one slow peer at its high-water
     * mark cannot stall ingest for everyone (it will resend and get
     * DUPLICATE). */
    if (zmq_send(router, it->routing_id, it->routing_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(router, buf, len, ZMQ_DONTWAIT) < 0) {
        if (errno == EHOSTUNREACH)
            RSL_DEBUG("ingest", "ack for %s/%" PRIu64 " not sent: peer disconnected",
                      ack.agent_id, ack.sequence);
        else
            RSL_WARN("ingest", "ack for %s/%" PRIu64 " not sent: %s", ack.agent_id,
                     ack.sequence, zmq_strerror(errno));
    }
    free(buf);
}

/* Store all candidates in one transaction. Returns false if the batch
 * could not be committed (every candidate then gets RETRY_LATER). */
static void store_batch(struct agg_ingest *ing, struct item *items, size_t n)
{
    struct rsl_error err;
    size_t candidates = 0;
    for (size_t i = 0; i < n; i++)
        if (items[i].candidate)
            candidates++;
    if (candidates == 0)
        return;

    rsl_error_clear(&err);
    int rc = agg_store_begin(ing->store, &err);
    for (size_t i = 0; i < n && rc == RSL_OK; i++) {
        struct item *it = &items[i];
        if (!it->candidate)
            continue;
        const rsl_report *r = it->report;
        struct agg_report_in in = {
            .agent_id = r->agent_id,
            .nation = r->nation,
            .sequence = r->sequence,
            .created_at_ms = r->created_at_ms,
            .received_at_ms = it->received_at_ms,
            .key_id = it->signed_report->key_id,
            .signed_bytes = zmq_msg_data(&it->payload),
            .signed_len = zmq_msg_size(&it->payload),
            .report_bytes = it->signed_report->report.data,
            .report_len = it->signed_report->report.len,
            .report = r,
            .excluded = it->excluded,
        };
        enum agg_append_result result;
        rc = agg_store_append(ing->store, &in, &result, &err);
        if (rc != RSL_OK)
            break;
        switch (result) {
        case AGG_APPEND_INSERTED:
            it->status = RESILIENCE__V1__ACK__STATUS__ACCEPTED;
            break;
        case AGG_APPEND_DUPLICATE:
            it->status = RESILIENCE__V1__ACK__STATUS__DUPLICATE;
            snprintf(it->detail, sizeof(it->detail), "already stored");
            break;
        case AGG_APPEND_CONFLICT:
        default:
            /* Not stored; reject() turns candidate off and counts it. */
            reject(it, AGG_COUNT_EQUIVOCATION,
                   "sequence %" PRIu64 " is already stored with different content", r->sequence);
            break;
        }
    }
    if (rc == RSL_OK)
        rc = agg_store_commit(ing->store, &err);
    if (rc != RSL_OK) {
        agg_store_rollback(ing->store);
        RSL_ERR("ingest", "storing a batch of %zu reports failed, asking agents to retry: %s",
                candidates, err.text);
        for (size_t i = 0; i < n; i++) {
            struct item *it = &items[i];
            if (!it->candidate)
                continue;
            it->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
            snprintf(it->detail, sizeof(it->detail), "%s",
                     rc == RSL_ENOSPC ? "aggregator storage full" : "aggregator storage error");
            count(AGG_COUNT_RETRY_LATER, 1);
        }
        return;
    }
    /* Committed: now the outcomes are true, count them. */
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        if (!it->candidate)
            continue;
        if (it->status == RESILIENCE__V1__ACK__STATUS__ACCEPTED) {
            count(AGG_COUNT_ACCEPTED, 1);
            count(AGG_COUNT_EXCLUDED_MEASUREMENTS, it->n_excluded);
            RSL_DEBUG("ingest", "accepted %s/%" PRIu64 " (%zu measurements, %zu excluded)",
                      it->report->agent_id, it->report->sequence,
                      it->report->n_measurements, it->n_excluded);
        } else if (it->status == RESILIENCE__V1__ACK__STATUS__DUPLICATE) {
            count(AGG_COUNT_DUPLICATE, 1);
        }
    }
}

/* One poll wake-up: read up to a batch, check, store, ack. Returns -1 on ETERM. */
static int process_batch(struct agg_ingest *ing, struct item *items)
{
    size_t n = 0;
    int result = 0;
    while (n < AGG_INGEST_BATCH_MAX) {
        int r = receive_item(ing->router, &items[n]);
        if (r < 0)
            result = -1;
        if (r <= 0)
            break;
        n++;
    }
    if (n == 0)
        return result;

    int64_t now = rsl_now_ms();
    /* One registry reference for the batch: a reload mid-batch cannot
     * change the rules for half of it. */
    struct agg_registry *reg = agg_registry_holder_get(ing->registry);
    for (size_t i = 0; i < n; i++)
        if (items[i].payload_valid) /* else already rejected as malformed */
            check_item(ing, &items[i], reg, now);
    agg_registry_release(&reg);

    store_batch(ing, items, n);
    for (size_t i = 0; i < n; i++) {
        send_ack(ing->router, &items[i]);
        item_clear(&items[i]);
    }
    return result;
}

/* The ingest thread. Blocking poll with no timeout: the control pipe
 * wakes it for STOP, so there is no periodic wake-up and no latency added
 * to shutdown. The item array lives for the thread's lifetime so batches
 * do not allocate. */
static void *ingest_main(void *arg)
{
    struct agg_ingest *ing = arg;
    struct item *items = calloc(AGG_INGEST_BATCH_MAX, sizeof(*items));
    if (items == NULL) {
        RSL_ERR("ingest", "out of memory; ingest stopped");
        goto out;
    }
    zmq_pollitem_t poll[2] = {
        {ing->ingest_pipe.child, 0, ZMQ_POLLIN, 0},
        {ing->router, 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        if (zmq_poll(poll, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("ingest", "poll: %s", zmq_strerror(errno));
            break;
        }
        /* Messages first: a stop request still lets the batch in hand be
         * committed and acknowledged (process_batch runs to completion). */
        if ((poll[1].revents & ZMQ_POLLIN) && process_batch(ing, items) < 0)
            break;
        if (poll[0].revents & ZMQ_POLLIN)
            break;
    }
out:
    free(items);
    close_socket(&ing->router);
    close_socket(&ing->ingest_pipe.child);
    agg_store_close(&ing->store);
    return NULL;
}

/* ---- start / stop ------------------------------------------------------- */

/* Create, configure and bind the ROUTER in the caller's thread, so a bind
 * error ("Address already in use") becomes agg_ingest_start's error and the
 * daemon exits 1 with that line. Options are set before bind: libzmq
 * applies CURVE and ZAP settings to connections accepted afterwards. The
 * secret key is zeroed as soon as libzmq has copied it. */
static int router_setup(struct agg_ingest *ing, struct rsl_error *err)
{
    const struct agg_config *cfg = ing->cfg;
    char path[AGG_PATH_MAX + 16];
    char secret[RSL_Z85_KEY_LEN + 1];
    int rc;

    if (rsl_keys_path(cfg->keys_dir, "curve.key", path, sizeof(path)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "ingest: keys path too long");
    rc = rsl_curve_load_secret(path, secret, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "ingest");
        return rc;
    }

    ing->router = zmq_socket(ing->ctx, ZMQ_ROUTER);
    if (ing->router == NULL) {
        rsl_secure_zero(secret, sizeof(secret));
        return rsl_error_set(err, RSL_EIO, "ingest: socket: %s", zmq_strerror(errno));
    }
    int one = 1;
    int linger = ROUTER_LINGER_MS;
    int64_t maxmsg = (int64_t)cfg->max_message_bytes;
    struct {
        int option;
        const void *value;
        size_t len;
        const char *name;
    } opts[] = {
        {ZMQ_CURVE_SERVER, &one, sizeof(one), "ZMQ_CURVE_SERVER"},
        {ZMQ_CURVE_SECRETKEY, secret, RSL_Z85_KEY_LEN, "ZMQ_CURVE_SECRETKEY"},
        {ZMQ_ZAP_DOMAIN, AGG_ZAP_DOMAIN, strlen(AGG_ZAP_DOMAIN), "ZMQ_ZAP_DOMAIN"},
        {ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof(one), "ZMQ_ZAP_ENFORCE_DOMAIN"},
        {ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg), "ZMQ_MAXMSGSIZE"},
        {ZMQ_ROUTER_MANDATORY, &one, sizeof(one), "ZMQ_ROUTER_MANDATORY"},
        {ZMQ_LINGER, &linger, sizeof(linger), "ZMQ_LINGER"},
    };
    rc = RSL_OK;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (zmq_setsockopt(ing->router, opts[i].option, opts[i].value, opts[i].len) != 0) {
            /* Every option is security- or correctness-relevant: no
             * "best effort" start. */
            rc = rsl_error_set(err, RSL_EIO, "ingest: setting %s: %s", opts[i].name,
                               zmq_strerror(errno));
            break;
        }
    }
    rsl_secure_zero(secret, sizeof(secret));
    if (rc != RSL_OK)
        return rc;

    for (size_t i = 0; i < cfg->n_bind; i++) {
        if (zmq_bind(ing->router, cfg->bind[i]) != 0)
            return rsl_error_set(err, RSL_EIO, "ingest: bind %s: %s", cfg->bind[i],
                                 zmq_strerror(errno));
    }
    char last[AGG_ENDPOINT_MAX];
    size_t last_len = sizeof(last);
    if (zmq_getsockopt(ing->router, ZMQ_LAST_ENDPOINT, last, &last_len) == 0)
        RSL_INFO("ingest", "listening on %s (CURVE, ZAP domain '%s')", last, AGG_ZAP_DOMAIN);
    return RSL_OK;
}

static void ingest_free(struct agg_ingest *ing)
{
    if (ing == NULL)
        return;
    close_socket(&ing->router);
    close_socket(&ing->zap_socket);
    close_socket(&ing->zap_pipe.parent);
    close_socket(&ing->zap_pipe.child);
    close_socket(&ing->ingest_pipe.parent);
    close_socket(&ing->ingest_pipe.child);
    if (ing->ctx != NULL)
        zmq_ctx_term(ing->ctx);
    free(ing);
}

static void stop_thread(struct control_pipe *p, pthread_t thread, bool *running)
{
    if (!*running)
        return;
    pipe_stop(p);
    pthread_join(thread, NULL);
    *running = false;
}

int agg_ingest_start(const struct agg_config *cfg, struct agg_registry_holder *registry,
                     struct agg_store **store, struct agg_ingest **out, struct rsl_error *err)
{
    struct agg_ingest *ing = NULL;
    int rc;

    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_start: NULL argument");
    *out = NULL;
    if (cfg == NULL || registry == NULL || store == NULL || *store == NULL ||
        cfg->taxonomy == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_start: NULL argument");
    ing = calloc(1, sizeof(*ing));
    if (ing == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    ing->cfg = cfg;
    ing->registry = registry;
    ing->ctx = zmq_ctx_new();
    if (ing->ctx == NULL) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if (!zmq_has("curve")) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: this libzmq has no CURVE support");
        goto fail;
    }

    /* 1. ZAP handler, bound before anything could ask it. */
    if ((rc = pipe_open(ing->ctx, &ing->zap_pipe, "zap", err)) != RSL_OK)
        goto fail;
    ing->zap_socket = zmq_socket(ing->ctx, ZMQ_REP);
    if (ing->zap_socket == NULL || zmq_bind(ing->zap_socket, ZAP_ENDPOINT) != 0) {
        rc = rsl_error_set(err, RSL_EIO,
                           "ingest: cannot bind the ZAP handler at %s (%s); refusing to start "
                           "without authentication", ZAP_ENDPOINT, zmq_strerror(errno));
        goto fail;
    }
    if (pthread_create(&ing->zap_thread, NULL, zap_main, ing) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start the ZAP thread");
        goto fail;
    }
    ing->zap_running = true;
    /* The thread owns these now; forget them here so cleanup cannot touch. */

    /* 2. The ROUTER. */
    if ((rc = pipe_open(ing->ctx, &ing->ingest_pipe, "ingest", err)) != RSL_OK)
        goto fail;
    if ((rc = router_setup(ing, err)) != RSL_OK)
        goto fail;
    ing->store = *store;
    if (pthread_create(&ing->ingest_thread, NULL, ingest_main, ing) != 0) {
        ing->store = NULL;
        rc = rsl_error_set(err, RSL_EIO, "ingest: cannot start the ingest thread");
        goto fail;
    }
    ing->ingest_running = true;
    *store = NULL; /* transferred to the ingest thread */
    *out = ing;
    return RSL_OK;

fail:
    if (ing->zap_running) {
        /* The ZAP thread closes its own sockets. */
        stop_thread(&ing->zap_pipe, ing->zap_thread, &ing->zap_running);
    }
    ingest_free(ing);
    return rc;
}

void agg_ingest_stop(struct agg_ingest **ingestp)
{
    if (ingestp == NULL || *ingestp == NULL)
        return;
    struct agg_ingest *ing = *ingestp;
    /* Ingest first: its last batch may still need the registry, and acks
     * must leave before the context goes. Then ZAP. */
    stop_thread(&ing->ingest_pipe, ing->ingest_thread, &ing->ingest_running);
    stop_thread(&ing->zap_pipe, ing->zap_thread, &ing->zap_running);
    ingest_free(ing);
    *ingestp = NULL;
}
