/*
 * releaser.c - the release generator thread and the per-partner delivery
 * threads (see releaser.h for what each guarantees).
 *
 * Threads and handles: the generator owns a read-only report store handle
 * (to read the current picture and notice commits via the data version)
 * and a writable outbox handle; each delivery thread owns its own outbox
 * handle and its own curl easy handle. Nothing SQLite or curl is shared
 * between threads. The generator wakes a delivery thread through that
 * partner's condition variable after each new release; a delivery thread
 * in backoff is not woken early by new releases (the next attempt would
 * fail the same way), only by stop.
 *
 * Shutdown: `stop` is set, every condition variable broadcast, and a POST
 * in flight is aborted from libcurl's progress callback within a second;
 * the release stays in the outbox and goes out after the next start.
 *
 * Metrics are atomics in each partner's state, read by the HTTPS workers
 * through agg_release_metrics_text while the releaser runs (a mutex guards
 * the pointer to the running releaser, not the counters).
 */
#include "releaser.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "release.h"
#include "rsl/jws.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/util.h"
#include "store.h"
#include "store_outbox.h"

#define LOG_MODULE "release"
#define GEN_TICK_MAX_MS 1000
#define GEN_TICK_MIN_MS 100
#define IDLE_POLL_MS 1000
#define BACKOFF_START_MS 1000
#define TOKEN_MAX 4096
#define RESPONSE_KEEP_MAX 256

struct partner_state {
    struct agg_releaser *r;
    const struct agg_partner *p;
    /* generator-owned */
    int64_t last_seq;
    int64_t last_gen_ms;
    uint8_t last_digest[32];
    bool have_last;
    bool dirty;
    /* delivery */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool kick;
    char *auth_header;                    /* "Authorization: Bearer ..." or NULL */
    /* metrics */
    _Atomic uint64_t releases;
    _Atomic uint64_t deliveries;
    _Atomic uint64_t failures;
    _Atomic uint64_t dropped;
    _Atomic int64_t pending;
    _Atomic int64_t oldest_pending_ms;
    _Atomic int64_t last_release_ms;
    _Atomic int64_t last_delivery_ms;
};

struct agg_releaser {
    const struct agg_config *cfg;
    struct rsl_signer *signer;
    char instance[17];
    struct agg_store *store;
    struct agg_outbox *outbox;
    uint64_t data_version;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t gen;
    bool gen_started;
    int64_t tick_ms;
    struct partner_state *parts;
    size_t n;
};

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static struct agg_releaser *metrics_current;

/* ---- small helpers ---------------------------------------------------- */

static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

static struct timespec deadline_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Wait up to ms on (mu, cond) unless stopping; with `kick` non-NULL, a set
 * kick ends the wait too (and is consumed). */
static void wait_ms(struct agg_releaser *r, pthread_mutex_t *mu, pthread_cond_t *cond, bool *kick,
                    int64_t ms)
{
    struct timespec until = deadline_after(ms);
    pthread_mutex_lock(mu);
    while (!atomic_load(&r->stop) && (kick == NULL || !*kick))
        if (pthread_cond_timedwait(cond, mu, &until) == ETIMEDOUT)
            break;
    if (kick != NULL)
        *kick = false;
    pthread_mutex_unlock(mu);
}

/* ---- generation ------------------------------------------------------- */

/* Make the partner's release if it is due: by schedule (`forced`), or
 * because the picture changed and its figures differ from the last. */
static int make_release(struct agg_releaser *r, struct partner_state *ps, bool forced,
                        struct rsl_error *err)
{
    struct agg_release_filter *filter = NULL;
    json_t *figures = NULL;
    char *fig_text = NULL, *payload = NULL, *jws = NULL;
    size_t payload_len = 0, jws_len = 0;
    struct agg_release_row row;
    int rc;

    memset(&row, 0, sizeof(row));
    if (agg_release_filter_new(ps->p, r->cfg->taxonomy, &filter) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = agg_store_latest(r->store, -1, agg_release_filter_cb, filter, err)) != RSL_OK) {
        if (rc > 0)
            rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    int64_t now = rsl_now_ms();
    if ((rc = agg_release_figures(filter, now, &figures, err)) != RSL_OK)
        goto out;
    fig_text = json_dumps(figures, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    if (fig_text == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    uint8_t digest[32];
    rsl_sha256(fig_text, strlen(fig_text), digest);
    if (!forced && ps->have_last && memcmp(digest, ps->last_digest, 32) == 0) {
        ps->dirty = false; /* changes elsewhere in the picture, none in this view */
        rc = RSL_OK;
        goto out;
    }

    snprintf(row.partner, sizeof(row.partner), "%s", ps->p->id);
    row.seq = ps->last_seq + 1;
    /* <= 32 + 1 + 16 + 1 + 19 characters: always fits AGG_RELEASE_ID_MAX. */
    snprintf(row.release_id, sizeof(row.release_id), "%.*s-%.16s-%" PRId64, RSL_PARTNER_ID_MAX,
             ps->p->id, r->instance, row.seq);
    row.generated_at_ms = now;
    memcpy(row.digest, digest, 32);
    if ((rc = agg_release_payload(ps->p->id, row.release_id, row.seq, now, now, figures,
                                  &payload, &payload_len, err)) != RSL_OK)
        goto out;
    if ((rc = rsl_jws_sign(r->signer, (const uint8_t *)payload, payload_len, &jws, &jws_len,
                           err)) != RSL_OK)
        goto out;
    row.jws = jws;
    row.jws_len = jws_len;
    int64_t dropped = 0;
    rc = agg_outbox_append(r->outbox, &row, ps->p->url[0] != '\0', ps->p->outbox_max, &dropped,
                           err);
    row.jws = NULL; /* still owned by `jws` */
    if (rc != RSL_OK)
        goto out;
    ps->last_seq = row.seq;
    ps->last_gen_ms = now;
    memcpy(ps->last_digest, digest, 32);
    ps->have_last = true;
    ps->dirty = false;
    atomic_fetch_add(&ps->releases, 1);
    atomic_store(&ps->last_release_ms, now);
    RSL_INFO(LOG_MODULE, "partner %s: release %s made (%zu bytes, %s)", ps->p->id, row.release_id,
             jws_len, forced ? "scheduled" : "the picture changed");
    if (dropped > 0) {
        atomic_fetch_add(&ps->dropped, (uint64_t)dropped);
        RSL_WARN(LOG_MODULE, "partner %s: outbox over outbox_max = %" PRId64 ": dropped the "
                    "%" PRId64 " oldest undelivered release(s)", ps->p->id, ps->p->outbox_max,
                    dropped);
    }
    if (ps->thread_started) {
        pthread_mutex_lock(&ps->mu);
        ps->kick = true;
        pthread_cond_signal(&ps->cond);
        pthread_mutex_unlock(&ps->mu);
    }
    rc = RSL_OK;
out:
    agg_release_filter_free(&filter);
    json_decref(figures);
    free(fig_text);
    free(payload);
    free(jws);
    return rc;
}

/* One pass over the partners: note commits, make what is due. */
static void generate_pass(struct agg_releaser *r)
{
    struct rsl_error err;
    uint64_t version = 0;
    rsl_error_clear(&err);
    if (agg_store_data_version(r->store, &version, &err) == RSL_OK && version != r->data_version) {
        r->data_version = version;
        for (size_t i = 0; i < r->n; i++)
            r->parts[i].dirty = true;
    }
    int64_t now = rsl_now_ms();
    for (size_t i = 0; i < r->n && !atomic_load(&r->stop); i++) {
        struct partner_state *ps = &r->parts[i];
        int64_t since = now - ps->last_gen_ms;
        bool scheduled = !ps->have_last || since >= ps->p->interval_ms || since < 0;
        bool changed = ps->dirty && since >= ps->p->min_interval_ms;
        if (!scheduled && !changed)
            continue;
        rsl_error_clear(&err);
        if (make_release(r, ps, scheduled, &err) != RSL_OK)
            RSL_ERR(LOG_MODULE, "partner %s: release not made, will retry: %s", ps->p->id,
                    err.text);
    }
}

static void *generator_main(void *arg)
{
    struct agg_releaser *r = arg;
    while (!atomic_load(&r->stop)) {
        wait_ms(r, &r->mu, &r->cond, NULL, r->tick_ms);
        if (!atomic_load(&r->stop))
            generate_pass(r);
    }
    return NULL;
}

/* ---- delivery --------------------------------------------------------- */

static int progress_cb(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct agg_releaser *r = ctx;
    return atomic_load(&r->stop) ? 1 : 0; /* non-zero aborts the transfer */
}

/* Keep the first bytes of the answer for the log line; ignore the rest. */
struct response {
    char text[RESPONSE_KEEP_MAX + 1];
    size_t len;
};

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct response *resp = ctx;
    size_t n = size * nmemb;
    size_t room = RESPONSE_KEEP_MAX - resp->len;
    size_t take = n < room ? n : room;
    memcpy(resp->text + resp->len, data, take);
    resp->len += take;
    resp->text[resp->len] = '\0';
    return n;
}

/* POST one release. RSL_OK on a 2xx answer; otherwise why in `why`. */
static int post_release(struct partner_state *ps, CURL *c, const struct agg_release_row *row,
                        char *why, size_t whylen)
{
    const struct agg_partner *p = ps->p;
    char errbuf[CURL_ERROR_SIZE] = "";
    char idem[AGG_RELEASE_ID_MAX + 32];
    struct curl_slist *headers = NULL, *h;
    struct response resp = {.len = 0};
    int rc = RSL_EIO;

    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", row->release_id);
    h = curl_slist_append(headers, "Content-Type: application/jose");
    h = h != NULL ? curl_slist_append(headers = h, idem) : NULL;
    if (h != NULL && ps->auth_header != NULL)
        h = curl_slist_append(headers = h, ps->auth_header);
    if (h == NULL) {
        curl_slist_free_all(headers);
        snprintf(why, whylen, "out of memory");
        return RSL_ENOMEM;
    }
    headers = h;
    int64_t connect_ms = p->timeout_ms < 10000 ? p->timeout_ms : 10000;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, row->jws);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)row->jws_len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "resilience-aggregator/" RSL_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (p->ca_file[0] != '\0')
        curl_easy_setopt(c, CURLOPT_CAINFO, p->ca_file);
    if (p->client_cert[0] != '\0') {
        curl_easy_setopt(c, CURLOPT_SSLCERT, p->client_cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, p->client_key);
    }
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, ps->r);

    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else if (status < 200 || status > 299) {
        char shown[RESPONSE_KEEP_MAX + 1];
        snprintf(why, whylen, "HTTP %ld: %s", status,
                 rsl_text_show(resp.text, shown, sizeof(shown)));
    } else {
        rc = RSL_OK;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    return rc;
}

static void update_pending(struct partner_state *ps, struct agg_outbox *ob)
{
    struct rsl_error err;
    int64_t count = 0, oldest = 0;
    rsl_error_clear(&err);
    if (agg_outbox_pending(ob, ps->p->id, &count, &oldest, &err) == RSL_OK) {
        atomic_store(&ps->pending, count);
        atomic_store(&ps->oldest_pending_ms, oldest);
    }
}

/* ±25 % so that many aggregators (or partners' restarts) do not retry in
 * lockstep. */
static int64_t jitter(int64_t ms)
{
    int64_t span = ms / 2;
    if (span <= 0)
        return ms;
    return ms - ms / 4 + (int64_t)(randombytes_uniform((uint32_t)(span > UINT32_MAX ? UINT32_MAX : span)));
}

static void *delivery_main(void *arg)
{
    struct partner_state *ps = arg;
    struct agg_releaser *r = ps->r;
    struct agg_outbox *ob = NULL;
    struct agg_release_row row;
    struct rsl_error err;
    CURL *c = NULL;
    int64_t backoff = 0;

    memset(&row, 0, sizeof(row));
    rsl_error_clear(&err);
    while (!atomic_load(&r->stop) && ob == NULL) {
        if (agg_outbox_open(r->cfg->store_path, false, &ob, &err) != RSL_OK) {
            RSL_ERR(LOG_MODULE, "partner %s: delivery cannot open the outbox, retrying: %s",
                    ps->p->id, err.text);
            wait_ms(r, &ps->mu, &ps->cond, NULL, IDLE_POLL_MS * 5);
        }
    }
    c = curl_easy_init();
    if (c == NULL) {
        RSL_ERR(LOG_MODULE, "partner %s: curl_easy_init failed: no deliveries", ps->p->id);
        goto out;
    }
    while (!atomic_load(&r->stop)) {
        bool found = false;
        rsl_error_clear(&err);
        if (agg_outbox_next(ob, ps->p->id, 0, &row, &found, &err) != RSL_OK) {
            RSL_ERR(LOG_MODULE, "partner %s: reading the outbox: %s", ps->p->id, err.text);
            wait_ms(r, &ps->mu, &ps->cond, NULL, IDLE_POLL_MS);
            continue;
        }
        update_pending(ps, ob);
        if (!found) {
            wait_ms(r, &ps->mu, &ps->cond, &ps->kick, IDLE_POLL_MS);
            continue;
        }
        char why[512] = "";
        if (post_release(ps, c, &row, why, sizeof(why)) == RSL_OK) {
            int64_t now = rsl_now_ms();
            rsl_error_clear(&err);
            /* If this fails the release is simply sent again: at least once. */
            if (agg_outbox_mark_delivered(ob, ps->p->id, row.seq, now, &err) != RSL_OK)
                RSL_ERR(LOG_MODULE, "partner %s: %s delivered but not marked (it will be sent "
                        "again): %s", ps->p->id, row.release_id, err.text);
            atomic_fetch_add(&ps->deliveries, 1);
            atomic_store(&ps->last_delivery_ms, now);
            if (backoff > 0)
                RSL_NOTICE(LOG_MODULE, "partner %s: %s reachable again", ps->p->id, ps->p->url);
            RSL_INFO(LOG_MODULE, "partner %s: release %s delivered", ps->p->id, row.release_id);
            backoff = 0;
        } else if (!atomic_load(&r->stop)) {
            atomic_fetch_add(&ps->failures, 1);
            backoff = backoff == 0 ? BACKOFF_START_MS : backoff * 2;
            if (backoff > ps->p->backoff_max_ms)
                backoff = ps->p->backoff_max_ms;
            int64_t wait = jitter(backoff);
            char shown[600];
            RSL_WARN(LOG_MODULE, "partner %s: delivering %s to %s failed: %s; retry in %" PRId64
                        " ms", ps->p->id, row.release_id, ps->p->url,
                        rsl_text_show(why, shown, sizeof(shown)), wait);
            wait_ms(r, &ps->mu, &ps->cond, NULL, wait);
        }
        agg_release_row_clear(&row);
        update_pending(ps, ob);
    }
out:
    agg_release_row_clear(&row);
    if (c != NULL)
        curl_easy_cleanup(c);
    agg_outbox_close(&ob);
    return NULL;
}

/* ---- start and stop --------------------------------------------------- */

/* The bearer token of a push: a one-line secret file, private like a key. */
static int load_token(const struct agg_partner *p, char **header, struct rsl_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    *header = NULL;
    if (p->token_file[0] == '\0')
        return RSL_OK;
    if ((rc = rsl_key_file_check_private(p->token_file, err)) != RSL_OK ||
        (rc = rsl_file_read_all(p->token_file, TOKEN_MAX, &buf, &len, err)) != RSL_OK)
        goto out;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        len--;
    for (size_t i = 0; i < len; i++)
        if (buf[i] <= 0x20 || buf[i] >= 0x7f) {
            rc = rsl_error_set(err, RSL_ECONFIG, "%s: the token must be one line of printable "
                               "characters", p->token_file);
            goto out;
        }
    if (len == 0) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: empty token", p->token_file);
        goto out;
    }
    size_t hlen = len + sizeof("Authorization: Bearer ");
    *header = malloc(hlen);
    if (*header == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(*header, hlen, "Authorization: Bearer %.*s", (int)len, (const char *)buf);
    rc = RSL_OK;
out:
    if (buf != NULL) {
        rsl_secure_zero(buf, len);
        free(buf);
    }
    return rc;
}

static void releaser_free(struct agg_releaser *r)
{
    for (size_t i = 0; i < r->n; i++) {
        struct partner_state *ps = &r->parts[i];
        if (ps->auth_header != NULL) {
            rsl_secure_zero(ps->auth_header, strlen(ps->auth_header));
            free(ps->auth_header);
        }
        pthread_mutex_destroy(&ps->mu);
        pthread_cond_destroy(&ps->cond);
    }
    free(r->parts);
    agg_outbox_close(&r->outbox);
    agg_store_close(&r->store);
    rsl_signer_free(&r->signer);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r);
}

int agg_releaser_start(const struct agg_config *cfg, struct agg_releaser **out,
                       struct rsl_error *err)
{
    struct agg_releaser *r = NULL;
    char path[AGG_PATH_MAX + 16];
    int rc;

    *out = NULL;
    if (cfg->n_partners == 0)
        return RSL_OK;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    r->cfg = cfg;
    atomic_init(&r->stop, false);
    pthread_mutex_init(&r->mu, NULL);
    cond_init_monotonic(&r->cond);
    r->parts = calloc(cfg->n_partners, sizeof(*r->parts));
    if (r->parts == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto fail;
    }
    r->n = cfg->n_partners;
    r->tick_ms = GEN_TICK_MAX_MS;
    for (size_t i = 0; i < r->n; i++) {
        struct partner_state *ps = &r->parts[i];
        ps->r = r;
        ps->p = &cfg->partners[i];
        ps->dirty = true;
        pthread_mutex_init(&ps->mu, NULL);
        cond_init_monotonic(&ps->cond);
        int64_t half = ps->p->min_interval_ms / 2;
        if (half < r->tick_ms)
            r->tick_ms = half < GEN_TICK_MIN_MS ? GEN_TICK_MIN_MS : half;
        if ((rc = load_token(ps->p, &ps->auth_header, err)) != RSL_OK) {
            rsl_error_prefix(err, "%s: [partner %s] token_file", cfg->path, ps->p->id);
            goto fail;
        }
        if (ps->p->client_key[0] != '\0' &&
            (rc = rsl_key_file_check_private(ps->p->client_key, err)) != RSL_OK) {
            rsl_error_prefix(err, "%s: [partner %s] client_key", cfg->path, ps->p->id);
            goto fail;
        }
    }
    if (rsl_keys_path(cfg->keys_dir, "sign.key", path, sizeof(path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: [ingest] keys: path too long", cfg->path);
        goto fail;
    }
    if ((rc = rsl_signer_load(path, &r->signer, err)) != RSL_OK) {
        rsl_error_prefix(err, "%s: [partner] releases are signed with the aggregator's key",
                         cfg->path);
        goto fail;
    }
    if ((rc = agg_outbox_open(cfg->store_path, false, &r->outbox, err)) != RSL_OK ||
        (rc = agg_outbox_instance(r->outbox, r->instance, err)) != RSL_OK ||
        (rc = agg_store_open(cfg->store_path, true, &r->store, err)) != RSL_OK)
        goto fail;
    for (size_t i = 0; i < r->n; i++) {
        struct partner_state *ps = &r->parts[i];
        struct agg_release_row row;
        bool found = false;
        memset(&row, 0, sizeof(row));
        if ((rc = agg_outbox_last(r->outbox, ps->p->id, &row, &found, err)) != RSL_OK)
            goto fail;
        if (found) {
            ps->have_last = true;
            ps->last_seq = row.seq;
            ps->last_gen_ms = row.generated_at_ms;
            memcpy(ps->last_digest, row.digest, 32);
            atomic_store(&ps->last_release_ms, row.generated_at_ms);
        }
        agg_release_row_clear(&row);
        update_pending(ps, r->outbox);
    }
    /* The first pass here, so that a pull right after "ready" finds a
     * release; a failure is logged and retried by the thread. */
    generate_pass(r);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = rsl_error_set(err, RSL_ECRYPTO, "curl_global_init failed");
        goto fail;
    }
    for (size_t i = 0; i < r->n; i++) {
        struct partner_state *ps = &r->parts[i];
        if (ps->p->url[0] == '\0')
            continue;
        if (pthread_create(&ps->thread, NULL, delivery_main, ps) != 0) {
            rc = rsl_error_set(err, RSL_EIO, "cannot start the delivery thread of partner %s",
                               ps->p->id);
            *out = r;
            agg_releaser_stop(out);
            return rc;
        }
        ps->thread_started = true;
    }
    if (pthread_create(&r->gen, NULL, generator_main, r) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "cannot start the release generator thread");
        *out = r;
        agg_releaser_stop(out);
        return rc;
    }
    r->gen_started = true;
    pthread_mutex_lock(&metrics_mu);
    metrics_current = r;
    pthread_mutex_unlock(&metrics_mu);
    RSL_INFO(LOG_MODULE, "partner releases: %zu partner(s), signed with key %s", r->n,
             rsl_signer_key_id(r->signer));
    *out = r;
    return RSL_OK;
fail:
    releaser_free(r);
    return rc;
}

void agg_releaser_stop(struct agg_releaser **releaser)
{
    if (releaser == NULL || *releaser == NULL)
        return;
    struct agg_releaser *r = *releaser;
    pthread_mutex_lock(&metrics_mu);
    if (metrics_current == r)
        metrics_current = NULL;
    pthread_mutex_unlock(&metrics_mu);
    atomic_store(&r->stop, true);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        struct partner_state *ps = &r->parts[i];
        pthread_mutex_lock(&ps->mu);
        pthread_cond_broadcast(&ps->cond);
        pthread_mutex_unlock(&ps->mu);
    }
    if (r->gen_started)
        pthread_join(r->gen, NULL);
    for (size_t i = 0; i < r->n; i++)
        if (r->parts[i].thread_started)
            pthread_join(r->parts[i].thread, NULL);
    curl_global_cleanup();
    releaser_free(r);
    *releaser = NULL;
}

/* ---- metrics ---------------------------------------------------------- */

int agg_release_metrics_text(char **out, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL)
        return RSL_ENOMEM;
    pthread_mutex_lock(&metrics_mu);
    struct agg_releaser *r = metrics_current;
    if (r != NULL) {
        static const struct {
            const char *name, *type, *help;
        } fam[] = {
            {"resilience_partner_releases_total", "counter", "Releases made for the partner."},
            {"resilience_partner_deliveries_total", "counter", "Releases pushed and acknowledged "
                                                               "(2xx) by the partner."},
            {"resilience_partner_delivery_failures_total", "counter", "Failed push attempts."},
            {"resilience_partner_releases_dropped_total", "counter", "Undelivered releases "
                                                                     "dropped over outbox_max."},
            {"resilience_partner_outbox_pending", "gauge", "Releases waiting to be pushed."},
            {"resilience_partner_delivery_lag_seconds", "gauge", "Age of the oldest release "
                                                                 "waiting to be pushed (0: none)."},
            {"resilience_partner_last_release_timestamp_seconds", "gauge", "When the newest "
                                                                           "release was made."},
            {"resilience_partner_last_delivery_timestamp_seconds", "gauge", "When a release was "
                                                                            "last delivered."},
        };
        int64_t now = rsl_now_ms();
        for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help, fam[k].name,
                    fam[k].type);
            for (size_t i = 0; i < r->n; i++) {
                struct partner_state *ps = &r->parts[i];
                bool pushed = ps->p->url[0] != '\0';
                int64_t oldest = atomic_load(&ps->oldest_pending_ms);
                double v;
                switch (k) {
                case 0: v = (double)atomic_load(&ps->releases); break;
                case 1: v = (double)atomic_load(&ps->deliveries); break;
                case 2: v = (double)atomic_load(&ps->failures); break;
                case 3: v = (double)atomic_load(&ps->dropped); break;
                case 4: v = pushed ? (double)atomic_load(&ps->pending) : 0; break;
                case 5: v = pushed && oldest > 0 && now > oldest ? (double)(now - oldest) / 1000.0
                                                                 : 0;
                    break;
                case 6: v = (double)atomic_load(&ps->last_release_ms) / 1000.0; break;
                default: v = (double)atomic_load(&ps->last_delivery_ms) / 1000.0; break;
                }
                if ((k == 1 || k == 2 || k == 4 || k == 5 || k == 7) && !pushed)
                    continue; /* pull-only partners have no deliveries */
                fprintf(f, "%s{partner=\"%s\"} %.17g\n", fam[k].name, ps->p->id, v);
            }
        }
    }
    pthread_mutex_unlock(&metrics_mu);
    if (fclose(f) != 0) {
        free(buf);
        return RSL_ENOMEM;
    }
    *out = buf;
    *len = size;
    return RSL_OK;
}
