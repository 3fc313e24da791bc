/*
 * config.h - aggregator.conf (ARCHITECTURE section 4, team brief).
 *
 * agg_config_load parses the INI file strictly (unknown sections and keys are
 * errors "FILE:LINE: ..."), validates every value, resolves relative paths
 * against the config file's folder, loads the taxonomy (indicators + nations)
 * and checks required keys once the whole file is read.
 *
 * The result is a plain struct, immutable after load: any thread may read it
 * without a lock as long as the owner (main) keeps it alive until all threads
 * have stopped. Paths are absolute or as written if already absolute.
 */
#ifndef AGG_CONFIG_H
#define AGG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/taxonomy.h"

#define AGG_PATH_MAX 4096
#define AGG_ENDPOINT_MAX 256     /* one ZeroMQ endpoint, "tcp://HOST:PORT" */
#define AGG_MAX_BINDS 16
#define AGG_TOKEN_NAME_MAX 64    /* [token NAME] */
#define AGG_HOST_MAX 256

/* Defaults (brief / ARCHITECTURE). */
#define AGG_DEFAULT_BIND "tcp://*:7450"
#define AGG_DEFAULT_HTTPS_LISTEN "0.0.0.0:8443"
#define AGG_DEFAULT_HTTPS_THREADS 2
#define AGG_DEFAULT_MAX_FUTURE_SKEW_MS (5 * 60 * 1000)
#define AGG_DEFAULT_TAXONOMY "/usr/share/resilience/indicators.csv"
#define AGG_DEFAULT_MIN_NATIONS 3
#define AGG_DEFAULT_RELEASE_INTERVAL_MS (15 * 60 * INT64_C(1000))
#define AGG_DEFAULT_RELEASE_MIN_INTERVAL_MS (10 * INT64_C(1000))
#define AGG_DEFAULT_OUTBOX_MAX 10000
#define AGG_DEFAULT_PUSH_TIMEOUT_MS (10 * INT64_C(1000))
#define AGG_DEFAULT_PUSH_BACKOFF_MAX_MS (5 * 60 * INT64_C(1000))
/* [ingest] workers / max_queue / batch_max (issue 4); workers defaults to
 * the number of online cores. */
#define AGG_DEFAULT_MAX_QUEUE 10000
#define AGG_DEFAULT_BATCH_MAX 2048
#define AGG_MAX_WORKERS 64
#define AGG_MAX_QUEUE_MAX 1000000
#define AGG_BATCH_MAX_MAX 10000

/* Role of a bearer token: [token NAME] role = staff | nation:XXX | partner:ID */
enum agg_role_kind {
    AGG_ROLE_STAFF = 0,   /* everything */
    AGG_ROLE_NATION = 1,  /* alliance aggregates + that nation's own values */
    AGG_ROLE_PARTNER = 2, /* only that partner's releasable view */
};

struct agg_token {
    char name[AGG_TOKEN_NAME_MAX + 1];
    enum agg_role_kind role;
    char nation[4];                          /* AGG_ROLE_NATION: "DEU"; else "" */
    char partner[RSL_PARTNER_ID_MAX + 1];    /* AGG_ROLE_PARTNER: "EU"; else "" */
    uint8_t sha256[32];                      /* SHA-256 of the bearer token */
};

/* [client NAME] (issue 5): a TLS client certificate, verified against
 * [https] client_ca, whose subject (RFC 2253 form, exactly as
 * `openssl x509 -noout -subject -nameopt RFC2253` prints it after
 * "subject=") maps to a role, as a [token] does. */
#define AGG_CLIENT_SUBJECT_MAX 1024
struct agg_client {
    char name[AGG_TOKEN_NAME_MAX + 1];
    char subject[AGG_CLIENT_SUBJECT_MAX + 1];
    enum agg_role_kind role;
    char nation[4];                          /* AGG_ROLE_NATION: "DEU"; else "" */
    char partner[RSL_PARTNER_ID_MAX + 1];    /* AGG_ROLE_PARTNER: "EU"; else "" */
};

/* [partner ID] (ARCHITECTURE section 7, issue 6): what is released to a
 * partner organisation, how often, and where it is pushed. */
#define AGG_PARTNER_MARKING_MAX 128
struct agg_partner {
    char id[RSL_PARTNER_ID_MAX + 1];
    /* include: indicator ids (present in the taxonomy) or requirement names
     * ("BR1".."BR7", "X"); n_include may be 0 (nothing released). */
    char **include;
    size_t n_include;
    int min_nations;                         /* >= 1, default 3 */
    /* The marking the release carries; default
     * "NATO UNCLASSIFIED RELEASABLE TO <ID>". */
    char marking[AGG_PARTNER_MARKING_MAX + 1];
    int64_t interval_ms;                     /* a release at least this often (default 15m) */
    int64_t min_interval_ms;                 /* change-driven releases at most this often (10s) */
    int64_t outbox_max;                      /* undelivered releases kept (default 10000) */
    /* Push delivery (all optional; only with url). */
    char url[AGG_PATH_MAX];                  /* "" when not set; https:// only */
    char ca_file[AGG_PATH_MAX];              /* "" = the system's CAs */
    char client_cert[AGG_PATH_MAX];          /* PEM; with client_key */
    char client_key[AGG_PATH_MAX];
    char token_file[AGG_PATH_MAX];           /* bearer token, one line, mode 0600 */
    int64_t timeout_ms;                      /* per POST (default 10s) */
    int64_t backoff_max_ms;                  /* retry delay cap (default 5m) */
};

struct agg_config {
    char path[AGG_PATH_MAX];                 /* the config file as given */

    /* [ingest] */
    char bind[AGG_MAX_BINDS][AGG_ENDPOINT_MAX]; /* ZeroMQ endpoints to bind */
    size_t n_bind;
    char keys_dir[AGG_PATH_MAX];             /* sign.key, curve.key, curve.pub */
    char registry_path[AGG_PATH_MAX];
    size_t max_message_bytes;                /* ZMQ_MAXMSGSIZE */
    int64_t max_future_skew_ms;
    /* [ingest] pipeline (issue 4, ingest.h): */
    int ingest_workers;                      /* verify threads, 1..AGG_MAX_WORKERS; default cores */
    size_t ingest_max_queue;                 /* reports in flight before RETRY_LATER */
    size_t ingest_batch_max;                 /* reports per store transaction, at most */

    /* [store] */
    char store_path[AGG_PATH_MAX];

    /* [https] */
    char https_listen[AGG_HOST_MAX + 8];     /* as written, "host:port" */
    char https_host[AGG_HOST_MAX];           /* "0.0.0.0", "::1" (no brackets) */
    uint16_t https_port;
    char https_cert[AGG_PATH_MAX];
    char https_key[AGG_PATH_MAX];
    int https_threads;                       /* 1..64 */
    char https_client_ca[AGG_PATH_MAX];      /* "" = no client certificates */
    bool https_hsts;                         /* Strict-Transport-Security, default true */

    /* [taxonomy] */
    char taxonomy_path[AGG_PATH_MAX];
    char nations_path[AGG_PATH_MAX];
    struct rsl_taxonomy *taxonomy;           /* owned, loaded by agg_config_load */

    /* [token NAME] */
    struct agg_token *tokens;
    size_t n_tokens;

    /* [partner ID] */
    struct agg_partner *partners;
    size_t n_partners;

    /* [client NAME] */
    struct agg_client *clients;
    size_t n_clients;

    /* [log] */
    int log_level;                           /* enum rsl_log_level, default info */
};

/* Load and validate `path`, including the taxonomy it names. On error *out
 * is NULL, the return is an RSL_E* code (RSL_ECONFIG mostly, RSL_ENOENT for a
 * missing config file) and err holds one line naming the file and line (or
 * the file and section for a missing required key). The registry is not
 * loaded here (see registry.h). Free with agg_config_free. */
int agg_config_load(const char *path, struct agg_config **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. Token hashes are zeroed. */
void agg_config_free(struct agg_config **cfg);

/* The token whose SHA-256 equals `sha256`, or NULL. Compares against every
 * token in constant time so timing reveals nothing about which matched. */
const struct agg_token *agg_config_token_find(const struct agg_config *cfg,
                                              const uint8_t sha256[32]);

/* The [client] entry whose subject is exactly `subject`, or NULL. */
const struct agg_client *agg_config_client_find(const struct agg_config *cfg,
                                                const char *subject);

/* "staff", "nation" or "partner". */
const char *agg_role_kind_name(enum agg_role_kind kind);

#endif
