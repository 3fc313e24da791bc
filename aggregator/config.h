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

/* [partner ID]: parsed and validated; releases are not built yet. */
struct agg_partner {
    char id[RSL_PARTNER_ID_MAX + 1];
    /* include: indicator ids (present in the taxonomy) or requirement names
     * ("BR1".."BR7", "X"); n_include may be 0 (nothing released). */
    char **include;
    size_t n_include;
    int min_nations;                         /* >= 1, default 3 */
    char url[AGG_PATH_MAX];                  /* "" when not set; https:// only */
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

    /* [store] */
    char store_path[AGG_PATH_MAX];

    /* [https] */
    char https_listen[AGG_HOST_MAX + 8];     /* as written, "host:port" */
    char https_host[AGG_HOST_MAX];           /* "0.0.0.0", "::1" (no brackets) */
    uint16_t https_port;
    char https_cert[AGG_PATH_MAX];
    char https_key[AGG_PATH_MAX];
    int https_threads;                       /* 1..64 */

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

/* "staff", "nation" or "partner". */
const char *agg_role_kind_name(enum agg_role_kind kind);

#endif
