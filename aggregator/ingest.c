/*
 * ingest.c - the per-frame decision, the batch transaction, the ZAP handler
 * thread and the ingest thread (see ingest.h).
 *
 * Invariant that everything below serves: an agent only ever hears ACCEPTED
 * (or DUPLICATE) for a report whose transaction has committed. Verdicts are
 * born RETRY_LATER; agg_ingest_check_frame can only turn them into
 * REJECTED or "store me"; agg_ingest_store_batch turns "store me" into
 * ACCEPTED / DUPLICATE / REJECTED (equivocation) only after COMMIT
 * returned, and back into RETRY_LATER on any failure. A frame that goes
 * wrong in a way nobody foresaw therefore makes the agent resend, never
 * drop, a report.
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
 * handler in this context, a libzmq without inproc), we do not start. If
 * the ZAP thread ends (or is slow), libzmq finds no handler (or gets no
 * reply before ZMQ_HANDSHAKE_IVL) and refuses the handshake: with the
 * domain enforced, a missing handler means "deny", not "admit".
 *
 * A batch (one poll wake-up): up to AGG_INGEST_BATCH_MAX messages (and
 * AGG_INGEST_BATCH_MAX_BYTES) are read without blocking and checked one by
 * one; the survivors are appended in one store transaction; only after
 * COMMIT returns do the acks go out. If the commit fails (disk full, I/O
 * error) every stored candidate gets RETRY_LATER and the agents resend
 * later; rejections are permanent and go out regardless.
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
 * everyone", so we set it, read it back, and refuse to start if libzmq
 * refuses it. */
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
    if ((int)c >= 0 && c < AGG_COUNT_N)
        atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

/* ---- verdicts ------------------------------------------------------------ */

/* The blank verdict: nothing owned, nothing decided. */
static void verdict_init(struct agg_verdict *v)
{
    memset(v, 0, sizeof(*v));
    /* Zero is ACCEPTED in the protobuf enum: never the default. */
    v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
    v->reason = AGG_COUNT_N;
    v->append_result = -1;
}

void agg_verdict_clear(struct agg_verdict *v)
{
    if (v == NULL)
        return;
    rsl_signed_report_free(&v->signed_report);
    rsl_report_free(&v->report);
    free(v->excluded);
    verdict_init(v);
}

/* Reject with a reason; the detail ("reason: text") goes to the agent.
 * Details are built only from validated fields and our own words, so they
 * are ASCII and safe both in the Ack (which must be UTF-8) and in logs. */
static void verdict_reject(struct agg_verdict *v, enum agg_ingest_counter reason,
                           const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void verdict_reject(struct agg_verdict *v, enum agg_ingest_counter reason,
                           const char *fmt, ...)
{
    /* Leaves room for the "reason: " prefix in the detail. */
    char text[RSL_ACK_DETAIL_MAX - 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(v->detail, sizeof(v->detail), "%s: %s", agg_ingest_counter_name(reason), text);
    v->status = RESILIENCE__V1__ACK__STATUS__REJECTED;
    v->reason = reason;
    v->store = false;
}

/* t is more than `limit` ms ahead of `now`, computed without signed
 * overflow whatever the operands (t - now can exceed INT64_MAX). */
static bool ahead_by_more_than(int64_t t, int64_t now, int64_t limit)
{
    if (t <= now)
        return false;
    uint64_t ahead = (uint64_t)t - (uint64_t)now; /* exact: 0 < t - now < 2^64 */
    return ahead > (uint64_t)(limit < 0 ? 0 : limit);
}

/* Mark measurements that must not be aggregated and name them in the
 * detail (truncated with a count if it would not fit):
 *  - indicator not in the taxonomy, or a unit other than the taxonomy's
 *    (ARCHITECTURE section 2);
 *  - observed further in the future than the clock-skew limit allows: the
 *    latest observation wins `current`, so one such value (a collector
 *    printing microseconds, a wrong clock) would shadow every real one for
 *    that nation until the bogus date passed.
 * The signed original, all measurements included, is stored regardless. */
static int mark_excluded(struct agg_verdict *v, const struct rsl_taxonomy *tax, int64_t now_ms,
                         int64_t skew_ms)
{
    const rsl_report *r = v->report;
    v->excluded = calloc(r->n_measurements > 0 ? r->n_measurements : 1, sizeof(bool));
    if (v->excluded == NULL)
        return RSL_ENOMEM;
    size_t off = 0;
    size_t left_out = 0;
    v->detail[0] = '\0';
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
        } else if (ahead_by_more_than(m->observed_at_ms, now_ms, skew_ms)) {
            snprintf(why, sizeof(why), "observed_at_ms is in the future");
        } else {
            continue;
        }
        v->excluded[i] = true;
        v->n_excluded++;
        char entry[RSL_INDICATOR_ID_MAX + sizeof(why) + 48];
        int n = snprintf(entry, sizeof(entry), "%smeasurements[%zu] %s: %s",
                         off == 0 ? "excluded: " : "; ", i, m->indicator, why);
        /* Keep room for a "; and N more" tail. */
        if (n > 0 && off + (size_t)n < RSL_ACK_DETAIL_MAX - 32) {
            memcpy(v->detail + off, entry, (size_t)n + 1);
            off += (size_t)n;
        } else {
            left_out++;
        }
    }
    if (left_out > 0)
        snprintf(v->detail + off, sizeof(v->detail) - off, "; and %zu more", left_out);
    return RSL_OK;
}

/* Base-128 varint of at most 10 bytes from [*p, end). */
static bool peek_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7fu) << shift;
        if ((b & 0x80u) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* A Report that failed decoding or validation may still name its agent and
 * sequence: read only the two top-level fields (agent_id = 1, sequence = 4)
 * with a scan that allocates nothing - handing an invalid frame to
 * protobuf-c again would let a frame of empty sub-messages cost ~40 times
 * its size in memory, the very thing rsl_report_decode's count check
 * prevents. Used only if the whole top level is well-formed and both
 * values are valid; last occurrence wins, as in protobuf. */
static void peek_report_identity(struct agg_verdict *v, const uint8_t *data, size_t len)
{
    const uint8_t *p = data;
    const uint8_t *end = data + len;
    char id[RSL_AGENT_ID_MAX + 1] = "";
    uint64_t sequence = 0;
    while (p < end) {
        uint64_t tag;
        uint64_t value;
        if (!peek_varint(&p, end, &tag))
            return;
        uint64_t field = tag >> 3;
        switch (tag & 7u) {
        case 0:
            if (!peek_varint(&p, end, &value))
                return;
            if (field == 4)
                sequence = value;
            break;
        case 1:
            if ((size_t)(end - p) < 8)
                return;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4)
                return;
            p += 4;
            break;
        case 2:
            if (!peek_varint(&p, end, &value) || value > (uint64_t)(end - p))
                return;
            if (field == 1) {
                id[0] = '\0';
                if (value <= RSL_AGENT_ID_MAX && memchr(p, 0, (size_t)value) == NULL) {
                    memcpy(id, p, (size_t)value);
                    id[value] = '\0';
                }
            }
            p += value;
            break;
        default:
            return;
        }
    }
    if (rsl_valid_agent_id(id) && sequence >= 1 && sequence <= (uint64_t)INT64_MAX) {
        memcpy(v->agent_id, id, sizeof(id));
        v->sequence = sequence;
    }
}

int agg_ingest_check_frame(const uint8_t *frame, size_t len, const char *zap_user_id,
                           int64_t now_ms, const struct agg_registry *reg,
                           const struct rsl_taxonomy *tax, const struct agg_config *cfg,
                           struct agg_verdict *v)
{
    struct rsl_error err;
    if (v == NULL)
        return RSL_EINVAL;
    verdict_init(v); /* overwritten, not freed: see ingest.h */
    if ((frame == NULL && len > 0) || reg == NULL || tax == NULL || cfg == NULL)
        return RSL_EINVAL;
    v->frame = frame;
    v->frame_len = len;
    v->received_at_ms = now_ms;
    /* Our ZAP handler sets at most an agent id; anything longer is not one
     * of ours, and an empty user id can match no agent below. */
    if (zap_user_id != NULL && rsl_strlcpy(v->user_id, zap_user_id, sizeof(v->user_id)) != RSL_OK)
        v->user_id[0] = '\0';

    rsl_error_clear(&err);
    int rc = rsl_signed_report_decode(frame, len, cfg->max_message_bytes, &v->signed_report, &err);
    if (rc == RSL_ETOOBIG) {
        verdict_reject(v, AGG_COUNT_OVERSIZED, "%zu bytes is over max_message_bytes %zu", len,
                       cfg->max_message_bytes);
        return RSL_OK;
    }
    if (rc != RSL_OK) {
        verdict_reject(v, AGG_COUNT_MALFORMED, "SignedReport: %s", err.text);
        return RSL_OK;
    }
    const rsl_signed_report *sr = v->signed_report;
    rc = rsl_report_decode(sr->report.data, sr->report.len, &v->report, &err);
    if (rc != RSL_OK) {
        peek_report_identity(v, sr->report.data, sr->report.len);
        verdict_reject(v, AGG_COUNT_MALFORMED, "Report: %s", err.text);
        return RSL_OK;
    }
    const rsl_report *r = v->report;
    rsl_strlcpy(v->agent_id, r->agent_id, sizeof(v->agent_id));
    v->sequence = r->sequence;

    const struct agg_agent *agent = agg_registry_find_agent(reg, r->agent_id);
    if (agent == NULL) {
        verdict_reject(v, AGG_COUNT_UNKNOWN_AGENT, "agent '%s' is not enrolled", r->agent_id);
        return RSL_OK;
    }
    const uint8_t *pub = NULL;
    switch (agg_agent_key_state(agent, sr->key_id, &pub)) {
    case AGG_KEY_VALID:
        break;
    case AGG_KEY_REVOKED:
        verdict_reject(v, AGG_COUNT_REVOKED_KEY, "key %s of agent %s is revoked", sr->key_id,
                       r->agent_id);
        return RSL_OK;
    case AGG_KEY_UNKNOWN:
    default:
        verdict_reject(v, AGG_COUNT_UNKNOWN_KEY, "key %s is not enrolled for agent %s",
                       sr->key_id, r->agent_id);
        return RSL_OK;
    }
    /* Over exactly the bytes that will be stored and digested: the
     * SignedReport's `report` field, prefixed with the signing domain. */
    if (rsl_verify_report(pub, sr->report.data, sr->report.len, sr->signature.data,
                          sr->signature.len) != RSL_OK) {
        verdict_reject(v, AGG_COUNT_BAD_SIGNATURE, "signature does not verify with key %s",
                       sr->key_id);
        return RSL_OK;
    }
    /* The CURVE key authenticated the connection as user_id; a valid
     * signature alone does not let one agent deliver for another. */
    if (strcmp(v->user_id, r->agent_id) != 0) {
        verdict_reject(v, AGG_COUNT_WRONG_SENDER,
                       "connection authenticated as '%s' sent a report of agent '%s'",
                       v->user_id[0] != '\0' ? v->user_id : "(nobody)", r->agent_id);
        return RSL_OK;
    }
    if (strcmp(r->nation, agent->nation) != 0) {
        verdict_reject(v, AGG_COUNT_NATION_MISMATCH, "nation '%s' is not the enrolled nation '%s'",
                       r->nation, agent->nation);
        return RSL_OK;
    }
    if (ahead_by_more_than(r->created_at_ms, now_ms, cfg->max_future_skew_ms)) {
        verdict_reject(v, AGG_COUNT_FUTURE_TIMESTAMP,
                       "created_at_ms %" PRId64 " is %" PRIu64 " ms ahead of the aggregator's "
                       "clock (allowed: %" PRId64 ")",
                       r->created_at_ms, (uint64_t)r->created_at_ms - (uint64_t)now_ms,
                       cfg->max_future_skew_ms);
        return RSL_OK;
    }
    if (mark_excluded(v, tax, now_ms, cfg->max_future_skew_ms) != RSL_OK) {
        /* Out of memory: not the agent's fault, let it resend. */
        snprintf(v->detail, sizeof(v->detail), "aggregator out of memory");
        return RSL_OK;
    }
    v->store = true; /* still RETRY_LATER: nothing is committed yet */
    return RSL_OK;
}

/* ---- the batch transaction ---------------------------------------------- */

int agg_ingest_store_batch(struct agg_store *store, struct agg_verdict *const *verdicts, size_t n,
                           struct rsl_error *err)
{
    size_t candidates = 0;
    for (size_t i = 0; i < n; i++) {
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        /* Whatever happened before, nothing is decided until COMMIT. */
        v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
        v->reason = AGG_COUNT_N;
        v->append_result = -1;
        candidates++;
    }
    if (candidates == 0)
        return RSL_OK;

    int rc = agg_store_begin(store, err);
    for (size_t i = 0; i < n && rc == RSL_OK; i++) {
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        if (v->report == NULL || v->signed_report == NULL || v->frame == NULL) {
            rc = rsl_error_set(err, RSL_EINVAL, "agg_ingest_store_batch: verdict %zu has no "
                               "report", i);
            break;
        }
        const rsl_report *r = v->report;
        struct agg_report_in in = {
            .agent_id = r->agent_id,
            .nation = r->nation,
            .sequence = r->sequence,
            .created_at_ms = r->created_at_ms,
            .received_at_ms = v->received_at_ms,
            .key_id = v->signed_report->key_id,
            .signed_bytes = v->frame,
            .signed_len = v->frame_len,
            .report_bytes = v->signed_report->report.data,
            .report_len = v->signed_report->report.len,
            .report = r,
            .excluded = v->excluded,
        };
        enum agg_append_result result;
        rc = agg_store_append(store, &in, &result, err);
        if (rc == RSL_OK)
            v->append_result = (int)result;
    }
    if (rc == RSL_OK)
        rc = agg_store_commit(store, err);
    if (rc != RSL_OK) {
        /* Nothing of this batch is stored, whatever the appends said
         * (an "equivocation" may have been against a row of this very
         * batch that is now gone): every candidate is asked to resend. */
        agg_store_rollback(store);
        for (size_t i = 0; i < n; i++) {
            struct agg_verdict *v = verdicts[i];
            if (v == NULL || !v->store)
                continue;
            v->status = RESILIENCE__V1__ACK__STATUS__RETRY_LATER;
            v->reason = AGG_COUNT_N;
            snprintf(v->detail, sizeof(v->detail), "%s",
                     rc == RSL_ENOSPC ? "aggregator storage full" : "aggregator storage error");
        }
        return rc;
    }
    /* Committed: now the outcomes are true. */
    for (size_t i = 0; i < n; i++) {
        struct agg_verdict *v = verdicts[i];
        if (v == NULL || !v->store)
            continue;
        switch (v->append_result) {
        case AGG_APPEND_INSERTED:
            v->status = RESILIENCE__V1__ACK__STATUS__ACCEPTED;
            break; /* the detail keeps the excluded measurements, if any */
        case AGG_APPEND_DUPLICATE:
            v->status = RESILIENCE__V1__ACK__STATUS__DUPLICATE;
            snprintf(v->detail, sizeof(v->detail), "already stored");
            break;
        case AGG_APPEND_CONFLICT:
            /* Permanent, and the stored original stays the only one. */
            verdict_reject(v, AGG_COUNT_EQUIVOCATION,
                           "sequence %" PRIu64 " is already stored with different content",
                           v->sequence);
            break;
        default:
            /* Cannot happen (every append succeeded); stay RETRY_LATER. */
            break;
        }
    }
    return RSL_OK;
}

void agg_ingest_record(const struct agg_verdict *v)
{
    if (v == NULL)
        return;
    switch (v->status) {
    case RESILIENCE__V1__ACK__STATUS__ACCEPTED:
        count(AGG_COUNT_ACCEPTED, 1);
        count(AGG_COUNT_EXCLUDED_MEASUREMENTS, v->n_excluded);
        RSL_DEBUG("ingest", "accepted %s/%" PRIu64 " (%zu measurements, %zu excluded)",
                  v->agent_id, v->sequence, v->report != NULL ? v->report->n_measurements : 0,
                  v->n_excluded);
        break;
    case RESILIENCE__V1__ACK__STATUS__DUPLICATE:
        count(AGG_COUNT_DUPLICATE, 1);
        RSL_DEBUG("ingest", "duplicate %s/%" PRIu64, v->agent_id, v->sequence);
        break;
    case RESILIENCE__V1__ACK__STATUS__REJECTED: {
        count(v->reason, 1);
        const char *agent = v->agent_id[0] != '\0' ? v->agent_id : "?";
        if (v->reason == AGG_COUNT_EQUIVOCATION)
            RSL_WARN("ingest", "EQUIVOCATION by agent %s: %s", agent, v->detail);
        else
            RSL_NOTICE("ingest", "rejected report from %s (connection %s) sequence %" PRIu64
                       ": %s", agent, v->user_id[0] != '\0' ? v->user_id : "?", v->sequence,
                       v->detail);
        break;
    }
    case RESILIENCE__V1__ACK__STATUS__RETRY_LATER:
    default:
        count(AGG_COUNT_RETRY_LATER, 1);
        break;
    }
}

/* ---- helpers ------------------------------------------------------------ */

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

/* DONTWAIT: a PAIR whose peer has gone (the thread ended on its own after
 * an error and closed its end) would block a plain send forever, and with
 * it the daemon's SIGTERM handling. The thread is then joined anyway. */
static void pipe_stop(struct control_pipe *p)
{
    if (p->parent != NULL && zmq_send(p->parent, "STOP", 4, ZMQ_DONTWAIT) != 4 &&
        errno != EAGAIN)
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
            /* Closing the socket below unbinds the handler: with the
             * domain enforced, every later handshake is refused. Say so,
             * since agents will now all be turned away. */
            RSL_ERR("zap", "poll: %s; ZAP handler stopping, all new agent connections will be "
                    "refused", zmq_strerror(errno));
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
    bool decided;                      /* verdict reached while receiving */
    int64_t received_at_ms;
    char user_id[RSL_AGENT_ID_MAX + 1];
    struct agg_verdict verdict;        /* borrows the payload's bytes */
};

/* Release everything and leave the item ready for reuse (its verdict
 * RETRY_LATER, see agg_verdict_clear). */
static void item_clear(struct item *it)
{
    agg_verdict_clear(&it->verdict);
    if (it->payload_valid)
        zmq_msg_close(&it->payload);
    it->payload_valid = false;
    it->decided = false;
    it->routing_len = 0;
    it->received_at_ms = 0;
    it->user_id[0] = '\0';
}

/* Receive one message (routing id + frames) without blocking. Returns 1 if
 * an item was filled, 0 if nothing was waiting, -1 on ETERM (the item is
 * then cleared again). The protocol is one frame per message; anything else
 * is answered as malformed (the whole multipart message is consumed so the
 * next read starts at a message boundary). The payload zmq_msg_t is kept,
 * not copied: its bytes go to the store as the signed original. */
static int receive_item(void *router, struct item *it)
{
    item_clear(it);
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
            int e = errno;
            zmq_msg_close(&m);
            if (e == ETERM) {
                item_clear(it);
                return -1;
            }
            /* Cannot happen (parts arrive together); the verdict stays
             * RETRY_LATER so the agent resends rather than loses it. */
            snprintf(it->verdict.detail, sizeof(it->verdict.detail),
                     "aggregator could not read the message");
            it->decided = true;
            return 1;
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
         * enrolled under. ZAP properties take precedence over anything the
         * peer announces about itself in its handshake metadata. */
        const char *uid = zmq_msg_gets(&it->payload, "User-Id");
        if (uid == NULL || rsl_strlcpy(it->user_id, uid, sizeof(it->user_id)) != RSL_OK)
            it->user_id[0] = '\0';
    }
    memcpy(it->verdict.user_id, it->user_id, sizeof(it->user_id)); /* for the log line */
    if (frames != 1) {
        verdict_reject(&it->verdict, AGG_COUNT_MALFORMED,
                       "expected one frame per message, got %zu", frames);
        it->decided = true;
    }
    return 1;
}

/* Acks go out in the order the messages arrived; each is one frame
 * (rsl_ack_encode) behind the routing id. An item without a routing id
 * (oversized id, cannot happen with libzmq's 5-byte ids) gets no ack. */
static void send_ack(void *router, const struct item *it)
{
    const struct agg_verdict *v = &it->verdict;
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (it->routing_len == 0)
        return;
    ack.agent_id = (char *)v->agent_id;
    ack.sequence = v->sequence;
    ack.status = (Resilience__V1__Ack__Status)v->status;
    ack.detail = (char *)v->detail;
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
                      v->agent_id, v->sequence);
        else
            RSL_WARN("ingest", "ack for %s/%" PRIu64 " not sent: %s", v->agent_id,
                     v->sequence, zmq_strerror(errno));
    }
    free(buf);
}

/* One poll wake-up: read up to a batch, check, store, ack. Returns -1 on
 * ETERM. `verdicts` is scratch space of AGG_INGEST_BATCH_MAX pointers. */
static int process_batch(struct agg_ingest *ing, struct item *items,
                         struct agg_verdict **verdicts)
{
    size_t n = 0;
    size_t bytes = 0;
    int result = 0;
    while (n < AGG_INGEST_BATCH_MAX && bytes < AGG_INGEST_BATCH_MAX_BYTES) {
        int r = receive_item(ing->router, &items[n]);
        if (r < 0)
            result = -1;
        if (r <= 0)
            break;
        if (items[n].payload_valid)
            bytes += zmq_msg_size(&items[n].payload);
        n++;
    }
    if (n == 0)
        return result;

    /* One registry reference for the batch: a reload mid-batch cannot
     * change the rules for half of it. */
    struct agg_registry *reg = agg_registry_holder_get(ing->registry);
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[i];
        verdicts[i] = &it->verdict;
        if (it->decided || !it->payload_valid)
            continue;
        /* The verdict borrows the payload's bytes, which the item keeps
         * until item_clear. */
        agg_ingest_check_frame(zmq_msg_data(&it->payload), zmq_msg_size(&it->payload),
                               it->user_id, it->received_at_ms, reg, ing->cfg->taxonomy,
                               ing->cfg, &it->verdict);
    }
    agg_registry_release(&reg);

    struct rsl_error err;
    rsl_error_clear(&err);
    if (agg_ingest_store_batch(ing->store, verdicts, n, &err) != RSL_OK)
        RSL_ERR("ingest", "storing a batch failed, asking its agents to retry: %s", err.text);
    for (size_t i = 0; i < n; i++) {
        agg_ingest_record(&items[i].verdict);
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
    struct agg_verdict **verdicts = calloc(AGG_INGEST_BATCH_MAX, sizeof(*verdicts));
    if (items == NULL || verdicts == NULL) {
        RSL_ERR("ingest", "out of memory; ingest stopped");
        goto out;
    }
    for (size_t i = 0; i < AGG_INGEST_BATCH_MAX; i++)
        item_clear(&items[i]);
    zmq_pollitem_t poll[2] = {
        {ing->ingest_pipe.child, 0, ZMQ_POLLIN, 0},
        {ing->router, 0, ZMQ_POLLIN, 0},
    };
    for (;;) {
        if (zmq_poll(poll, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            RSL_ERR("ingest", "poll: %s; ingest stopped", zmq_strerror(errno));
            break;
        }
        /* Messages first: a stop request still lets the batch in hand be
         * committed and acknowledged (process_batch runs to completion). */
        if ((poll[1].revents & ZMQ_POLLIN) && process_batch(ing, items, verdicts) < 0)
            break;
        if (poll[0].revents & ZMQ_POLLIN)
            break;
    }
out:
    free(verdicts);
    free(items); /* every item was cleared at the end of its batch */
    close_socket(&ing->router);
    close_socket(&ing->ingest_pipe.child);
    agg_store_close(&ing->store);
    return NULL;
}

/* ---- start / stop ------------------------------------------------------- */

int agg_ingest_router_new(void *zmq_ctx, const struct agg_config *cfg, void **out,
                          struct rsl_error *err)
{
    char path[AGG_PATH_MAX + 16];
    char secret[RSL_Z85_KEY_LEN + 1];
    void *router = NULL;
    int rc;

    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_router_new: NULL argument");
    *out = NULL;
    if (zmq_ctx == NULL || cfg == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_ingest_router_new: NULL argument");
    if (rsl_keys_path(cfg->keys_dir, "curve.key", path, sizeof(path)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "ingest: keys path too long");
    rc = rsl_curve_load_secret(path, secret, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "ingest");
        return rc;
    }

    router = zmq_socket(zmq_ctx, ZMQ_ROUTER);
    if (router == NULL) {
        rsl_secure_zero(secret, sizeof(secret));
        return rsl_error_set(err, RSL_EIO, "ingest: socket: %s", zmq_strerror(errno));
    }
    int one = 1;
    int linger = ROUTER_LINGER_MS;
    int rcvhwm = AGG_INGEST_RCVHWM;
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
        {ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm), "ZMQ_RCVHWM"},
        {ZMQ_LINGER, &linger, sizeof(linger), "ZMQ_LINGER"},
    };
    rc = RSL_OK;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (zmq_setsockopt(router, opts[i].option, opts[i].value, opts[i].len) != 0) {
            /* Every option is security- or correctness-relevant: no
             * "best effort" start. */
            rc = rsl_error_set(err, RSL_EIO, "ingest: setting %s: %s", opts[i].name,
                               zmq_strerror(errno));
            break;
        }
    }
    rsl_secure_zero(secret, sizeof(secret));
    if (rc != RSL_OK)
        goto fail;

    /* Read the security options back: a libzmq that accepted but ignored
     * one (a build without the draft options, a future rename) must not
     * leave us with an open door. */
    int mechanism = 0;
    int enforce = 0;
    size_t optlen = sizeof(mechanism);
    if (zmq_getsockopt(router, ZMQ_MECHANISM, &mechanism, &optlen) != 0 ||
        mechanism != ZMQ_CURVE) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: the ROUTER is not a CURVE server");
        goto fail;
    }
    optlen = sizeof(enforce);
    if (zmq_getsockopt(router, ZMQ_ZAP_ENFORCE_DOMAIN, &enforce, &optlen) != 0 || enforce != 1) {
        rc = rsl_error_set(err, RSL_EIO, "ingest: this libzmq does not enforce the ZAP domain; "
                           "refusing to start without authentication");
        goto fail;
    }

    for (size_t i = 0; i < cfg->n_bind; i++) {
        if (zmq_bind(router, cfg->bind[i]) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "ingest: bind %s: %s", cfg->bind[i],
                               zmq_strerror(errno));
            goto fail;
        }
    }
    char last[AGG_ENDPOINT_MAX];
    size_t last_len = sizeof(last);
    if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, last, &last_len) == 0)
        RSL_INFO("ingest", "listening on %s (CURVE, ZAP domain '%s')", last, AGG_ZAP_DOMAIN);
    *out = router;
    return RSL_OK;
fail:
    close_socket(&router);
    return rc;
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
    /* A reply nobody can take any more must not hold up zmq_ctx_term. */
    int zero = 0;
    if (ing->zap_socket != NULL)
        zmq_setsockopt(ing->zap_socket, ZMQ_LINGER, &zero, sizeof(zero));
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
    /* The ZAP thread owns zap_socket and zap_pipe.child now and closes them
     * itself (NULLing the fields) before it ends. */

    /* 2. The ROUTER. */
    if ((rc = pipe_open(ing->ctx, &ing->ingest_pipe, "ingest", err)) != RSL_OK)
        goto fail;
    if ((rc = agg_ingest_router_new(ing->ctx, cfg, &ing->router, err)) != RSL_OK)
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
