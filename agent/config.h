/*
 * config.h - agent.conf (ARCHITECTURE section 4, team brief) and the key
 * folder it names.
 *
 * agent_config_load parses the INI file strictly through rsl_ini_load:
 * unknown sections and keys, duplicate keys and bad values are errors
 * "FILE:LINE: ...". Checks that need the whole file (required keys, keys that
 * do not belong to a collector's type, the nation against an optional nation
 * list) run after loading and name the line of the key or of the section
 * header. Relative paths are resolved against the config file's folder.
 *
 * The result is a plain struct, immutable after load; the daemon borrows it
 * for its whole life. Keys are loaded separately (agent_keys_load) because
 * they hold secrets that only the running daemon and --check-config need.
 *
 * Collector types are a closed enum checked here, each with the keys that
 * apply to it (a key of another type is an error naming its line); the
 * runners live in collect.c. Strings that only some collectors need (paths,
 * URLs) are heap copies owned by the config, so a config with many
 * collectors stays small.
 */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/keys.h"
#include "spool.h"

struct rsl_signer;

#define AGENT_PATH_MAX 4096
#define AGENT_ENDPOINT_MAX 256        /* one ZeroMQ endpoint, "tcp://host:port" */
#define AGENT_MAX_ENDPOINTS 16
#define AGENT_COLLECTOR_NAME_MAX 64   /* [A-Za-z0-9._-], also the measurement source */
#define AGENT_COMMAND_MAX 1024
#define AGENT_MAX_COLLECTORS 256

/* Defaults (brief / ARCHITECTURE). */
#define AGENT_DEFAULT_CONFIG "/etc/resilience/agent.conf"
#define AGENT_DEFAULT_MARKING "NATO UNCLASSIFIED"
#define AGENT_DEFAULT_RESEND_TIMEOUT_MS (30 * 1000)
#define AGENT_DEFAULT_INTERVAL_MS (60 * 1000)
#define AGENT_DEFAULT_EXEC_TIMEOUT_MS (10 * 1000)
#define AGENT_DEFAULT_SPOOL_MAX_MB 512
#define AGENT_DEFAULT_SPOOL_MAX_AGE_MS (30LL * 24 * 3600 * 1000)
/* 512 in flight keep one connection's round trips (and the agent's own
 * spool work between acks and sends) from limiting a backfill: the
 * aggregator commits one batch while the next is being verified. The
 * memory it takes is 24 bytes a slot plus the frames queued in libzmq. */
#define AGENT_DEFAULT_WINDOW 512
#define AGENT_DEFAULT_BACKOFF_MAX_MS (5 * 60 * 1000)
#define AGENT_DEFAULT_HEARTBEAT_MS (10 * 1000)

/* Bounds on durations and sizes: a zero interval would spin the loop, a
 * message cap below a few hundred bytes cannot hold a signed report. */
#define AGENT_MIN_INTERVAL_MS 100
#define AGENT_MIN_TIMEOUT_MS 100
#define AGENT_MAX_DURATION_MS (7LL * 24 * 3600 * 1000)
#define AGENT_MIN_MESSAGE_BYTES 1024
#define AGENT_MAX_MESSAGE_BYTES (64 * 1024 * 1024)
/* Ages (spool_max_age, a file collector's max_age) may be long. */
#define AGENT_MAX_AGE_MS (3650LL * 24 * 3600 * 1000)
#define AGENT_MAX_SPOOL_MB (1024 * 1024)   /* 1 TiB */
#define AGENT_MAX_WINDOW 4096
/* ZMQ_HEARTBEAT_TTL travels in deciseconds in a 16-bit field: 3 x the
 * interval must stay under 6553.5 s. */
#define AGENT_MAX_HEARTBEAT_MS (2000 * 1000)
#define AGENT_URL_MAX 2048

enum agent_collector_type {
    AGENT_COLLECTOR_STATIC = 0, /* one fixed measurement from the config */
    AGENT_COLLECTOR_EXEC = 1,   /* /bin/sh -c command, stdout in the line format */
    AGENT_COLLECTOR_FILE = 2,   /* a drop folder of files in the line format */
    AGENT_COLLECTOR_HTTP = 3,   /* GET a URL: line format or a flat JSON object */
};

/* How an http collector reads the body. */
enum agent_http_format {
    AGENT_HTTP_AUTO = 0,  /* JSON when Content-Type is application/json, else lines */
    AGENT_HTTP_LINES = 1,
    AGENT_HTTP_JSON = 2,
};

/* A list of partner ids (releasable_to). */
struct agent_partners {
    char id[RSL_MAX_RELEASABLE][RSL_PARTNER_ID_MAX + 1];
    size_t n;
};

/* One [collector NAME] section. */
struct agent_collector_config {
    char name[AGENT_COLLECTOR_NAME_MAX + 1];
    enum agent_collector_type type;
    int64_t interval_ms;                      /* > 0; first run right after start */

    /* static */
    char indicator[RSL_INDICATOR_ID_MAX + 1]; /* default: the collector name */
    double value;
    char unit[RSL_UNIT_MAX + 1];              /* default "" */

    /* exec */
    char command[AGENT_COMMAND_MAX];          /* run by /bin/sh -c */
    int64_t timeout_ms;                       /* exec: whole run, then SIGKILL to the
                                               * group; http: whole transfer */

    /* file */
    char *path;                               /* the drop folder (resolved) */
    int64_t max_age_ms;                       /* older files are stale; default 3 x interval */

    /* http */
    char *url;                                /* http:// or https:// */
    char *ca_file;                            /* NULL: the system's CA store */
    char *pinned_public_key;                  /* NULL or "sha256//BASE64[;sha256//...]" */
    char *bearer_token_file;                  /* NULL or a 0600 file holding the token */
    enum agent_http_format format;

    /* all types: overrides the agent default when releasable_set */
    bool releasable_set;
    struct agent_partners releasable_to;
};

struct agent_config {
    char path[AGENT_PATH_MAX];                /* the config file as given */

    /* [agent] */
    char id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    char organisation[RSL_ORGANISATION_MAX + 1];
    char keys_dir[AGENT_PATH_MAX];
    int keys_line;                            /* for messages about key files */
    char spool_dir[AGENT_PATH_MAX];
    char marking[RSL_MARKING_MAX + 1];
    struct agent_partners releasable_to;      /* default for all collectors */
    int64_t resend_timeout_ms;
    size_t max_message_bytes;
    uint64_t spool_max_bytes;                 /* spool_max_mb in bytes */
    int64_t spool_max_age_ms;
    enum agent_spool_policy spool_full_policy;
    size_t window;                            /* reports in flight, 1..AGENT_MAX_WINDOW */
    int64_t backoff_max_ms;                   /* cap on resend backoff (>= resend_timeout) */
    int64_t heartbeat_ms;                     /* ZMQ heartbeat interval; 0 = off */

    /* [aggregator] */
    char endpoints[AGENT_MAX_ENDPOINTS][AGENT_ENDPOINT_MAX];
    size_t n_endpoints;                       /* >= 1, in failover order */
    char server_key[RSL_Z85_KEY_LEN + 1];

    /* [taxonomy] (optional): when given, the nation must be listed */
    char taxonomy_path[AGENT_PATH_MAX];       /* "" when not given */
    char nations_path[AGENT_PATH_MAX];        /* "" when not given */

    /* [collector NAME], in file order */
    struct agent_collector_config *collectors;
    size_t n_collectors;

    /* [log] */
    int log_level;                            /* enum rsl_log_level, default info */
};

/* Load and validate `path`. On error *out is NULL, the return is an RSL_E*
 * code (RSL_ECONFIG mostly, RSL_ENOENT for a missing file) and err holds one
 * line "PATH:LINE: what" (or "PATH: what" when no line applies). Does not
 * touch the key files or the spool. Free with agent_config_free. */
int agent_config_load(const char *path, struct agent_config **out, struct rsl_error *err);

/* NULL-safe; NULLs the caller's pointer. */
void agent_config_free(struct agent_config **cfg);

/* "static", "exec", "file", "http". */
const char *agent_collector_type_name(enum agent_collector_type type);

/* The agent's own keys, loaded from cfg->keys_dir. */
struct agent_keys {
    struct rsl_signer *signer;                      /* sign.key */
    char curve_secret[RSL_Z85_KEY_LEN + 1];         /* curve.key (zeroed on free) */
    char curve_public[RSL_Z85_KEY_LEN + 1];         /* curve.pub */
};

/* Load sign.key (refused when group/world readable), curve.key (same) and
 * curve.pub from the key folder, and check that curve.pub belongs to
 * curve.key. Errors read "CONFIG:LINE: keys: <file problem>" with the line of
 * the `keys` setting. Free with agent_keys_free. */
int agent_keys_load(const struct agent_config *cfg, struct agent_keys **out,
                    struct rsl_error *err);

/* NULL-safe; zeroes the secrets and NULLs the caller's pointer. */
void agent_keys_free(struct agent_keys **keys);

#endif
