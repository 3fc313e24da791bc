/*
 * config.c - strict loading of agent.conf and of the agent's key folder.
 *
 * Loading happens in two passes. The INI handler (one call per key, in file
 * order) checks each value on its own and records the line it came from;
 * afterwards finish_config checks what needs the whole file: required keys,
 * keys that do not apply to a collector's type (the type may come after
 * them), defaults that depend on other keys, and the nation against an
 * optional nation list. Every message names FILE:LINE so an operator can go
 * straight to the problem, as `nginx -t` does.
 *
 * Keys are remembered per section in a small table of line numbers: it gives
 * duplicate detection ("already set on line 4") and the lines for the
 * second-pass messages without a second parse.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "rsl/ini.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

/* ---- key tables ---------------------------------------------------------- */

#define MAX_SECTION_KEYS 24

/* Line on which each key of one section was set; 0 = not set. */
struct section_seen {
    int header_line; /* first line seen of this section (first key) */
    int line[MAX_SECTION_KEYS];
};

enum { A_ID, A_NATION, A_ORGANISATION, A_KEYS, A_SPOOL, A_MARKING, A_RELEASABLE, A_RESEND,
       A_MAXMSG, A_SPOOL_MAX_MB, A_SPOOL_MAX_AGE, A_SPOOL_POLICY, A_WINDOW, A_BACKOFF_MAX,
       A_HEARTBEAT, A_COUNT };
static const char *const agent_key_names[A_COUNT] = {
    "id", "nation", "organisation", "keys", "spool", "marking", "releasable_to",
    "resend_timeout", "max_message_bytes", "spool_max_mb", "spool_max_age",
    "spool_full_policy", "window", "backoff_max", "heartbeat"};

enum { G_ENDPOINTS, G_SERVER_KEY, G_COUNT };
static const char *const aggregator_key_names[G_COUNT] = {"endpoints", "server_key"};

enum { T_PATH, T_NATIONS, T_COUNT };
static const char *const taxonomy_key_names[T_COUNT] = {"path", "nations"};

enum { L_LEVEL, L_COUNT };
static const char *const log_key_names[L_COUNT] = {"level"};

enum { C_TYPE, C_INTERVAL, C_INDICATOR, C_VALUE, C_UNIT, C_COMMAND, C_TIMEOUT, C_RELEASABLE,
       C_PATH, C_MAX_AGE, C_URL, C_CA_FILE, C_PIN, C_FORMAT, C_TOKEN_FILE, C_COUNT };
static const char *const collector_key_names[C_COUNT] = {
    "type", "interval", "indicator", "value", "unit", "command", "timeout", "releasable_to",
    "path", "max_age", "url", "ca_file", "pinned_public_key", "format", "bearer_token_file"};

/* Which collector keys each type accepts (type, interval, releasable_to: all),
 * indexed by enum agent_collector_type. */
static const bool type_keys[4][C_COUNT] = {
    /*            type  intv  ind   val   unit  cmd   tmo   rel   path  mage  url   ca    pin   fmt   tok */
    [AGENT_COLLECTOR_STATIC] = {true, true, true, true, true, false, false, true,
                                false, false, false, false, false, false, false},
    [AGENT_COLLECTOR_EXEC] = {true, true, false, false, false, true, true, true,
                              false, false, false, false, false, false, false},
    [AGENT_COLLECTOR_FILE] = {true, true, false, false, false, false, false, true,
                              true, true, false, false, false, false, false},
    [AGENT_COLLECTOR_HTTP] = {true, true, false, false, false, false, true, true,
                              false, false, true, true, true, true, true},
};
#define TYPE_LIST "static | exec | file | http"

struct load_ctx {
    struct agent_config *cfg;
    struct section_seen agent, aggregator, taxonomy, log;
    struct section_seen *collector_seen; /* parallel to cfg->collectors */
    size_t collector_cap;
};

static int key_index(const char *const *names, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], key) == 0)
            return (int)i;
    return -1;
}

const char *agent_collector_type_name(enum agent_collector_type type)
{
    switch (type) {
    case AGENT_COLLECTOR_STATIC: return "static";
    case AGENT_COLLECTOR_EXEC: return "exec";
    case AGENT_COLLECTOR_FILE: return "file";
    case AGENT_COLLECTOR_HTTP: return "http";
    }
    return "unknown";
}

/* ---- value parsers (messages without FILE:LINE: the loader adds it) ------ */

static int set_string(char *dst, size_t dstlen, const char *value, const char *key,
                      struct rsl_error *err)
{
    if (rsl_strlcpy(dst, value, dstlen) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "'%s' is longer than %zu characters", key,
                             dstlen - 1);
    return RSL_OK;
}

static int set_path(const struct agent_config *cfg, char *dst, size_t dstlen, const char *value,
                    const char *key, struct rsl_error *err)
{
    if (value[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "'%s' is empty", key);
    if (rsl_path_resolve(cfg->path, value, dst, dstlen) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "'%s': path too long", key);
    return RSL_OK;
}

/* Durations: whole-string "30", "30s", "5m", "500ms" ..., within
 * [min_ms, max_ms]. */
static int set_duration_in(int64_t *dst, const char *value, int64_t min_ms, int64_t max_ms,
                           const char *key, struct rsl_error *err)
{
    int64_t ms;
    if (rsl_parse_duration_ms(value, &ms) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG,
                             "invalid duration for '%s': '%s' (e.g. 30, 30s, 5m, 500ms)", key,
                             value);
    if (ms < min_ms || ms > max_ms)
        return rsl_error_set(err, RSL_ECONFIG, "'%s' must be between %lldms and %gd, not '%s'",
                             key, (long long)min_ms, (double)max_ms / 86400000.0, value);
    *dst = ms;
    return RSL_OK;
}

static int set_duration(int64_t *dst, const char *value, int64_t min_ms, const char *key,
                        struct rsl_error *err)
{
    return set_duration_in(dst, value, min_ms, AGENT_MAX_DURATION_MS, key, err);
}

/* A heap copy of a string value (collector keys most collectors lack). */
static int set_heap_string(char **dst, const char *value, size_t max, const char *key,
                           struct rsl_error *err)
{
    if (value[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "'%s' is empty", key);
    if (strlen(value) > max)
        return rsl_error_set(err, RSL_ECONFIG, "'%s' is longer than %zu characters", key, max);
    char *copy = strdup(value);
    if (copy == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    free(*dst);
    *dst = copy;
    return RSL_OK;
}

static int set_heap_path(const struct agent_config *cfg, char **dst, const char *value,
                         const char *key, struct rsl_error *err)
{
    char resolved[AGENT_PATH_MAX];
    int rc = set_path(cfg, resolved, sizeof(resolved), value, key, err);
    if (rc != RSL_OK)
        return rc;
    return set_heap_string(dst, resolved, AGENT_PATH_MAX - 1, key, err);
}

/* http collector URL: http:// or https://, a host, no spaces or control
 * characters (libcurl would take more; an operator's typo should fail
 * here, not at 3 a.m.). */
static int set_url(char **dst, const char *value, struct rsl_error *err)
{
    size_t skip = strncmp(value, "https://", 8) == 0 ? 8 : strncmp(value, "http://", 7) == 0 ? 7 : 0;
    if (skip == 0)
        return rsl_error_set(err, RSL_ECONFIG, "'url' must start with https:// or http://, not "
                             "'%s'", value);
    if (value[skip] == '\0' || value[skip] == '/')
        return rsl_error_set(err, RSL_ECONFIG, "'url' has no host: '%s'", value);
    for (const char *p = value; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return rsl_error_set(err, RSL_ECONFIG, "'url' contains a space or control character");
    return set_heap_string(dst, value, AGENT_URL_MAX, "url", err);
}

/* libcurl's CURLOPT_PINNEDPUBLICKEY hash form: "sha256//BASE64" (44
 * characters of base64 for 32 bytes), several joined by ';'. */
static int set_pin(char **dst, const char *value, struct rsl_error *err)
{
    const char *p = value;
    for (;;) {
        if (strncmp(p, "sha256//", 8) != 0)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'pinned_public_key' must be sha256//BASE64 (as curl "
                                 "--pinnedpubkey), several separated by ';'");
        p += 8;
        const char *end = strchr(p, ';');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        char b64[45];
        uint8_t raw[32];
        if (n != 44) 
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'pinned_public_key': a SHA-256 pin is 44 base64 characters");
        memcpy(b64, p, 44);
        b64[44] = '\0';
        if (rsl_base64_decode(b64, raw, sizeof(raw)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "'pinned_public_key': '%s' is not base64 of "
                                 "32 bytes", b64);
        if (end == NULL)
            break;
        p = end + 1;
    }
    return set_heap_string(dst, value, 4096, "pinned_public_key", err);
}

/* A comma list of partner ids; duplicates are dropped, an empty value gives
 * an empty list (nothing releasable). */
static int set_partners(struct agent_partners *dst, const char *value, const char *key,
                        struct rsl_error *err)
{
    const char *cursor = value;
    char item[RSL_PARTNER_ID_MAX + 1];
    int r;
    dst->n = 0;
    while ((r = rsl_list_next(&cursor, item, sizeof(item))) == 1) {
        if (!rsl_valid_partner_id(item))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'%s': invalid partner id '%s' (letters, digits, '_', '-')",
                                 key, item);
        bool dup = false;
        for (size_t i = 0; i < dst->n; i++)
            dup = dup || strcmp(dst->id[i], item) == 0;
        if (dup)
            continue;
        if (dst->n >= RSL_MAX_RELEASABLE)
            return rsl_error_set(err, RSL_ECONFIG, "'%s': more than %d partners", key,
                                 RSL_MAX_RELEASABLE);
        memcpy(dst->id[dst->n++], item, sizeof(item));
    }
    if (r < 0)
        return rsl_error_set(err, RSL_ECONFIG, "'%s': a partner id is longer than %d characters",
                             key, RSL_PARTNER_ID_MAX);
    return RSL_OK;
}

static int set_endpoints(struct agent_config *cfg, const char *value, struct rsl_error *err)
{
    const char *cursor = value;
    char item[AGENT_ENDPOINT_MAX];
    int r;
    cfg->n_endpoints = 0;
    while ((r = rsl_list_next(&cursor, item, sizeof(item))) == 1) {
        /* tcp://host:port - the port is what people forget. */
        const char *colon = strrchr(item, ':');
        if (strncmp(item, "tcp://", 6) != 0 || item[6] == '\0' || colon == NULL ||
            colon < item + 7 || colon[1] == '\0')
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid endpoint '%s' (expected tcp://HOST:PORT)", item);
        if (cfg->n_endpoints >= AGENT_MAX_ENDPOINTS)
            return rsl_error_set(err, RSL_ECONFIG, "more than %d endpoints",
                                 AGENT_MAX_ENDPOINTS);
        memcpy(cfg->endpoints[cfg->n_endpoints++], item, sizeof(item));
    }
    if (r < 0)
        return rsl_error_set(err, RSL_ECONFIG, "an endpoint is longer than %d characters",
                             AGENT_ENDPOINT_MAX - 1);
    if (cfg->n_endpoints == 0)
        return rsl_error_set(err, RSL_ECONFIG, "'endpoints' is empty");
    return RSL_OK;
}

static bool valid_collector_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > AGENT_COLLECTOR_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* ---- per-section handlers ------------------------------------------------ */

static int handle_agent(struct agent_config *cfg, int k, const char *value, int line,
                        struct rsl_error *err)
{
    switch (k) {
    case A_ID:
        if (!rsl_valid_agent_id(value))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid agent id '%s' (up to %d of A-Z a-z 0-9 . _ -, "
                                 "starting with a letter or digit)",
                                 value, RSL_AGENT_ID_MAX);
        return set_string(cfg->id, sizeof(cfg->id), value, "id", err);
    case A_NATION:
        if (!rsl_valid_nation_code(value))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid nation '%s' (3 uppercase letters, ISO 3166-1 alpha-3)",
                                 value);
        return set_string(cfg->nation, sizeof(cfg->nation), value, "nation", err);
    case A_ORGANISATION:
        if (value[0] == '\0')
            return rsl_error_set(err, RSL_ECONFIG, "'organisation' is empty");
        return set_string(cfg->organisation, sizeof(cfg->organisation), value, "organisation",
                          err);
    case A_KEYS:
        cfg->keys_line = line;
        return set_path(cfg, cfg->keys_dir, sizeof(cfg->keys_dir), value, "keys", err);
    case A_SPOOL:
        return set_path(cfg, cfg->spool_dir, sizeof(cfg->spool_dir), value, "spool", err);
    case A_MARKING:
        return set_string(cfg->marking, sizeof(cfg->marking), value, "marking", err);
    case A_RELEASABLE:
        return set_partners(&cfg->releasable_to, value, "releasable_to", err);
    case A_RESEND:
        return set_duration(&cfg->resend_timeout_ms, value, AGENT_MIN_TIMEOUT_MS,
                            "resend_timeout", err);
    case A_MAXMSG: {
        int64_t v;
        if (rsl_parse_int64(value, AGENT_MIN_MESSAGE_BYTES, AGENT_MAX_MESSAGE_BYTES, &v) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'max_message_bytes' must be a number of bytes from %d to %d, "
                                 "not '%s'",
                                 AGENT_MIN_MESSAGE_BYTES, AGENT_MAX_MESSAGE_BYTES, value);
        cfg->max_message_bytes = (size_t)v;
        return RSL_OK;
    }
    case A_SPOOL_MAX_MB: {
        /* Fractions allowed ("0.5"): small caps are handy for tests. */
        double mb;
        if (rsl_parse_double(value, &mb) != RSL_OK || mb < 0.0625 || mb > AGENT_MAX_SPOOL_MB)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'spool_max_mb' must be a number of MiB from 0.0625 to %d, not "
                                 "'%s'",
                                 AGENT_MAX_SPOOL_MB, value);
        cfg->spool_max_bytes = (uint64_t)(mb * 1024.0 * 1024.0);
        return RSL_OK;
    }
    case A_SPOOL_MAX_AGE:
        return set_duration_in(&cfg->spool_max_age_ms, value, 1000, AGENT_MAX_AGE_MS,
                               "spool_max_age", err);
    case A_SPOOL_POLICY:
        if (strcmp(value, "drop_oldest") == 0)
            cfg->spool_full_policy = AGENT_SPOOL_DROP_OLDEST;
        else if (strcmp(value, "refuse_new") == 0)
            cfg->spool_full_policy = AGENT_SPOOL_REFUSE_NEW;
        else
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid spool_full_policy '%s' (drop_oldest | refuse_new)",
                                 value);
        return RSL_OK;
    case A_WINDOW: {
        int64_t v;
        if (rsl_parse_int64(value, 1, AGENT_MAX_WINDOW, &v) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "'window' must be a number of reports from 1 to %d, not '%s'",
                                 AGENT_MAX_WINDOW, value);
        cfg->window = (size_t)v;
        return RSL_OK;
    }
    case A_BACKOFF_MAX:
        return set_duration(&cfg->backoff_max_ms, value, AGENT_MIN_TIMEOUT_MS, "backoff_max",
                            err);
    case A_HEARTBEAT:
        /* 0 turns heartbeats off (not recommended: a dead peer then goes
         * unnoticed until TCP gives up, which can take hours). */
        if (strcmp(value, "0") == 0) {
            cfg->heartbeat_ms = 0;
            return RSL_OK;
        }
        return set_duration_in(&cfg->heartbeat_ms, value, AGENT_MIN_TIMEOUT_MS,
                               AGENT_MAX_HEARTBEAT_MS, "heartbeat", err);
    default:
        return rsl_error_set(err, RSL_EINVAL, "internal: agent key %d", k);
    }
}

static int handle_aggregator(struct agent_config *cfg, int k, const char *value,
                             struct rsl_error *err)
{
    if (k == G_ENDPOINTS)
        return set_endpoints(cfg, value, err);
    /* G_SERVER_KEY: checked here so a key mangled by an editor (or a '#'
     * treated as a comment elsewhere) is caught at its own line. */
    if (!rsl_z85_key_valid(value))
        return rsl_error_set(err, RSL_ECONFIG,
                             "'server_key' is not a valid Z85 CURVE public key (40 characters)");
    return set_string(cfg->server_key, sizeof(cfg->server_key), value, "server_key", err);
}

static int handle_taxonomy(struct agent_config *cfg, int k, const char *value,
                           struct rsl_error *err)
{
    if (k == T_PATH)
        return set_path(cfg, cfg->taxonomy_path, sizeof(cfg->taxonomy_path), value, "path", err);
    return set_path(cfg, cfg->nations_path, sizeof(cfg->nations_path), value, "nations", err);
}

static int handle_log(struct agent_config *cfg, const char *value, struct rsl_error *err)
{
    int level = rsl_log_level_parse(value);
    if (level < 0)
        return rsl_error_set(err, RSL_ECONFIG,
                             "invalid log level '%s' (error|warning|notice|info|debug)", value);
    cfg->log_level = level;
    return RSL_OK;
}

/* The collector called `name`, created with its defaults on first sight. A
 * section may appear twice; its keys still may not repeat. */
static int collector_get(struct load_ctx *ctx, const char *name,
                         struct agent_collector_config **out, struct section_seen **seen,
                         struct rsl_error *err)
{
    struct agent_config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_collectors; i++) {
        if (strcmp(cfg->collectors[i].name, name) == 0) {
            *out = &cfg->collectors[i];
            *seen = &ctx->collector_seen[i];
            return RSL_OK;
        }
    }
    if (cfg->n_collectors >= AGENT_MAX_COLLECTORS)
        return rsl_error_set(err, RSL_ECONFIG, "more than %d collectors", AGENT_MAX_COLLECTORS);
    if (cfg->n_collectors == ctx->collector_cap) {
        size_t cap = ctx->collector_cap == 0 ? 8 : ctx->collector_cap * 2;
        struct agent_collector_config *c = realloc(cfg->collectors, cap * sizeof(*c));
        if (c == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
        cfg->collectors = c;
        struct section_seen *s = realloc(ctx->collector_seen, cap * sizeof(*s));
        if (s == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
        ctx->collector_seen = s;
        ctx->collector_cap = cap;
    }
    struct agent_collector_config *c = &cfg->collectors[cfg->n_collectors];
    memset(c, 0, sizeof(*c));
    memset(&ctx->collector_seen[cfg->n_collectors], 0, sizeof(struct section_seen));
    memcpy(c->name, name, strlen(name) + 1);
    c->interval_ms = AGENT_DEFAULT_INTERVAL_MS;
    c->timeout_ms = AGENT_DEFAULT_EXEC_TIMEOUT_MS;
    *out = c;
    *seen = &ctx->collector_seen[cfg->n_collectors];
    cfg->n_collectors++;
    return RSL_OK;
}

static int handle_collector(const struct agent_config *cfg, struct agent_collector_config *c,
                            int k, const char *value, struct rsl_error *err)
{
    switch (k) {
    case C_TYPE:
        if (strcmp(value, "static") == 0)
            c->type = AGENT_COLLECTOR_STATIC;
        else if (strcmp(value, "exec") == 0)
            c->type = AGENT_COLLECTOR_EXEC;
        else if (strcmp(value, "file") == 0)
            c->type = AGENT_COLLECTOR_FILE;
        else if (strcmp(value, "http") == 0)
            c->type = AGENT_COLLECTOR_HTTP;
        else
            return rsl_error_set(err, RSL_ECONFIG, "unknown collector type '%s' (" TYPE_LIST ")",
                                 value);
        return RSL_OK;
    case C_INTERVAL:
        return set_duration(&c->interval_ms, value, AGENT_MIN_INTERVAL_MS, "interval", err);
    case C_INDICATOR:
        if (!rsl_valid_indicator_id(value))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid indicator '%s' (a-z 0-9 _ ., starting with a letter)",
                                 value);
        return set_string(c->indicator, sizeof(c->indicator), value, "indicator", err);
    case C_VALUE:
        if (rsl_parse_double(value, &c->value) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "'value' is not a finite number: '%s'", value);
        return RSL_OK;
    case C_UNIT:
        if (!rsl_valid_unit(value))
            return rsl_error_set(err, RSL_ECONFIG, "invalid unit '%s'", value);
        return set_string(c->unit, sizeof(c->unit), value, "unit", err);
    case C_COMMAND:
        if (value[0] == '\0')
            return rsl_error_set(err, RSL_ECONFIG, "'command' is empty");
        return set_string(c->command, sizeof(c->command), value, "command", err);
    case C_TIMEOUT:
        return set_duration(&c->timeout_ms, value, AGENT_MIN_TIMEOUT_MS, "timeout", err);
    case C_RELEASABLE:
        c->releasable_set = true;
        return set_partners(&c->releasable_to, value, "releasable_to", err);
    case C_PATH:
        return set_heap_path(cfg, &c->path, value, "path", err);
    case C_MAX_AGE:
        return set_duration_in(&c->max_age_ms, value, 1000, AGENT_MAX_AGE_MS, "max_age", err);
    case C_URL:
        return set_url(&c->url, value, err);
    case C_CA_FILE:
        return set_heap_path(cfg, &c->ca_file, value, "ca_file", err);
    case C_PIN:
        return set_pin(&c->pinned_public_key, value, err);
    case C_FORMAT:
        if (strcmp(value, "auto") == 0)
            c->format = AGENT_HTTP_AUTO;
        else if (strcmp(value, "lines") == 0)
            c->format = AGENT_HTTP_LINES;
        else if (strcmp(value, "json") == 0)
            c->format = AGENT_HTTP_JSON;
        else
            return rsl_error_set(err, RSL_ECONFIG, "invalid format '%s' (lines | json | auto)",
                                 value);
        return RSL_OK;
    case C_TOKEN_FILE:
        return set_heap_path(cfg, &c->bearer_token_file, value, "bearer_token_file", err);
    default:
        return rsl_error_set(err, RSL_EINVAL, "internal: collector key %d", k);
    }
}

/* Common bookkeeping: known key? set before? Returns the key index or an
 * error (negative RSL_E* code). */
static int mark_key(struct section_seen *seen, const char *const *names, size_t n,
                    const char *section, const char *key, int line, struct rsl_error *err)
{
    int k = key_index(names, n, key);
    if (k < 0)
        return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [%s]", key, section);
    if (seen->line[k] != 0)
        return rsl_error_set(err, RSL_ECONFIG, "duplicate key '%s' in [%s] (first set on line %d)",
                             key, section, seen->line[k]);
    seen->line[k] = line;
    if (seen->header_line == 0)
        seen->header_line = line;
    return k;
}

static int ini_handler(void *vctx, const char *section, const char *key, const char *value,
                       int line, struct rsl_error *err)
{
    struct load_ctx *ctx = vctx;
    struct agent_config *cfg = ctx->cfg;
    char kind[32];
    char name[256];
    int k;

    if (section[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "key '%s' outside any section", key);
    if (rsl_ini_section_split(section, kind, sizeof(kind), name, sizeof(name)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);

    if (strcmp(kind, "collector") == 0) {
        if (!valid_collector_name(name))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "invalid collector name in [%s] (1 to %d of A-Z a-z 0-9 . _ -)",
                                 section, AGENT_COLLECTOR_NAME_MAX);
        struct agent_collector_config *c = NULL;
        struct section_seen *seen = NULL;
        int rc = collector_get(ctx, name, &c, &seen, err);
        if (rc != RSL_OK)
            return rc;
        if ((k = mark_key(seen, collector_key_names, C_COUNT, section, key, line, err)) < 0)
            return k;
        return handle_collector(cfg, c, k, value, err);
    }
    if (name[0] != '\0')
        return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);
    if (strcmp(kind, "agent") == 0) {
        if ((k = mark_key(&ctx->agent, agent_key_names, A_COUNT, section, key, line, err)) < 0)
            return k;
        return handle_agent(cfg, k, value, line, err);
    }
    if (strcmp(kind, "aggregator") == 0) {
        if ((k = mark_key(&ctx->aggregator, aggregator_key_names, G_COUNT, section, key, line,
                          err)) < 0)
            return k;
        return handle_aggregator(cfg, k, value, err);
    }
    if (strcmp(kind, "taxonomy") == 0) {
        if ((k = mark_key(&ctx->taxonomy, taxonomy_key_names, T_COUNT, section, key, line, err)) <
            0)
            return k;
        return handle_taxonomy(cfg, k, value, err);
    }
    if (strcmp(kind, "log") == 0) {
        if ((k = mark_key(&ctx->log, log_key_names, L_COUNT, section, key, line, err)) < 0)
            return k;
        return handle_log(cfg, value, err);
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);
}

/* ---- whole-file checks --------------------------------------------------- */

/* Line of the "[section]" header in the file, so "missing key" messages
 * point at the section even when it has no keys; falls back to `fallback`
 * (the first key's line, or 0) when the file cannot be re-read. inih takes
 * the section name as the raw text between '[' and the first ']'. */
static int section_header_line(const char *path, const char *section, int fallback)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int found = fallback;
    if (rsl_file_read_all(path, 16 * 1024 * 1024, &buf, &len, NULL) != RSL_OK)
        return fallback;
    size_t slen = strlen(section);
    int line = 1;
    const char *p = (const char *)buf;
    const char *end = p + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        const char *s = p;
        while (s < eol && (*s == ' ' || *s == '\t'))
            s++;
        if (s < eol && *s == '[' && (size_t)(eol - s) > slen + 1 &&
            memcmp(s + 1, section, slen) == 0 && s[1 + slen] == ']') {
            found = line;
            break;
        }
        p = eol + 1;
        line++;
    }
    free(buf);
    return found;
}

static int missing_key(const struct agent_config *cfg, const struct section_seen *seen,
                       const char *section, const char *key, const char *hint,
                       struct rsl_error *err)
{
    int line = section_header_line(cfg->path, section, seen->header_line);
    if (line > 0)
        return rsl_error_set(err, RSL_ECONFIG, "%s:%d: missing required key '%s' in [%s]%s",
                             cfg->path, line, key, section, hint);
    return rsl_error_set(err, RSL_ECONFIG, "%s: missing required key '%s' in [%s]%s", cfg->path,
                         key, section, hint);
}

/* The optional nation list: the agent's nation must be on it (the
 * aggregator would reject every report otherwise). Indicator ids of static
 * collectors are checked against the indicator file when one is given, as a
 * warning: the aggregator's taxonomy is the one that counts. */
static int check_taxonomy(struct load_ctx *ctx, struct rsl_error *err)
{
    struct agent_config *cfg = ctx->cfg;
    struct rsl_taxonomy *tax = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = RSL_OK;

    if (cfg->taxonomy_path[0] == '\0' && cfg->nations_path[0] == '\0')
        return RSL_OK;
    if (cfg->nations_path[0] == '\0' &&
        rsl_path_resolve(cfg->taxonomy_path, "nations.csv", cfg->nations_path,
                         sizeof(cfg->nations_path)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "%s: [taxonomy] path too long", cfg->path);

    tax = calloc(1, sizeof(*tax));
    if (tax == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    if (cfg->taxonomy_path[0] != '\0') {
        if ((rc = rsl_file_read_all(cfg->taxonomy_path, RSL_TAXONOMY_MAX_BYTES, &buf, &len,
                                    err)) != RSL_OK ||
            (rc = rsl_taxonomy_parse_indicators((const char *)buf, len, cfg->taxonomy_path, tax,
                                                err)) != RSL_OK) {
            rsl_error_prefix(err, "%s:%d: [taxonomy] path", cfg->path, ctx->taxonomy.line[T_PATH]);
            rc = RSL_ECONFIG;
            goto out;
        }
        free(buf);
        buf = NULL;
    }
    if ((rc = rsl_file_read_all(cfg->nations_path, RSL_TAXONOMY_MAX_BYTES, &buf, &len, err)) !=
            RSL_OK ||
        (rc = rsl_taxonomy_parse_nations((const char *)buf, len, cfg->nations_path, tax, err)) !=
            RSL_OK) {
        int line = ctx->taxonomy.line[T_NATIONS] ? ctx->taxonomy.line[T_NATIONS]
                                                 : ctx->taxonomy.line[T_PATH];
        rsl_error_prefix(err, "%s:%d: [taxonomy] nations", cfg->path, line);
        rc = RSL_ECONFIG;
        goto out;
    }
    if (cfg->nation[0] != '\0' && rsl_taxonomy_nation_index(tax, cfg->nation) < 0) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s:%d: nation '%s' is not in %s", cfg->path,
                           ctx->agent.line[A_NATION], cfg->nation, cfg->nations_path);
        goto out;
    }
    if (cfg->taxonomy_path[0] != '\0') {
        for (size_t i = 0; i < cfg->n_collectors; i++) {
            const struct agent_collector_config *c = &cfg->collectors[i];
            if (c->type != AGENT_COLLECTOR_STATIC)
                continue;
            const struct rsl_indicator *ind = rsl_taxonomy_indicator(tax, c->indicator);
            if (ind == NULL)
                RSL_WARN("config", "%s: [collector %s]: indicator '%s' is not in %s", cfg->path,
                         c->name, c->indicator, cfg->taxonomy_path);
            else if (strcmp(ind->unit, c->unit) != 0)
                RSL_WARN("config", "%s: [collector %s]: unit '%s' differs from '%s' in %s",
                         cfg->path, c->name, c->unit, ind->unit, cfg->taxonomy_path);
        }
    }
out:
    free(buf);
    rsl_taxonomy_free(&tax);
    return rc;
}

static int finish_collector(struct load_ctx *ctx, size_t i, struct rsl_error *err)
{
    struct agent_config *cfg = ctx->cfg;
    struct agent_collector_config *c = &cfg->collectors[i];
    const struct section_seen *seen = &ctx->collector_seen[i];
    char section[AGENT_COLLECTOR_NAME_MAX + 16];
    snprintf(section, sizeof(section), "collector %s", c->name);

    if (seen->line[C_TYPE] == 0)
        return missing_key(cfg, seen, section, "type", " (" TYPE_LIST ")", err);
    const bool *allowed = type_keys[c->type];
    for (int k = 0; k < C_COUNT; k++)
        if (seen->line[k] != 0 && !allowed[k])
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s:%d: key '%s' does not apply to a %s collector in [%s]",
                                 cfg->path, seen->line[k], collector_key_names[k],
                                 agent_collector_type_name(c->type), section);
    if (c->type == AGENT_COLLECTOR_STATIC) {
        if (seen->line[C_VALUE] == 0)
            return missing_key(cfg, seen, section, "value", "", err);
        if (seen->line[C_INDICATOR] == 0) {
            /* The indicator defaults to the collector's name, which has a
             * wider alphabet than indicator ids. */
            if (!rsl_valid_indicator_id(c->name) ||
                rsl_strlcpy(c->indicator, c->name, sizeof(c->indicator)) != RSL_OK)
                return rsl_error_set(err, RSL_ECONFIG,
                                     "%s:%d: [%s]: the collector name is not a valid indicator "
                                     "id (a-z 0-9 _ .); set 'indicator'",
                                     cfg->path, seen->line[C_TYPE], section);
        }
    } else if (c->type == AGENT_COLLECTOR_EXEC && seen->line[C_COMMAND] == 0) {
        return missing_key(cfg, seen, section, "command", "", err);
    } else if (c->type == AGENT_COLLECTOR_FILE) {
        if (seen->line[C_PATH] == 0)
            return missing_key(cfg, seen, section, "path", " (the drop folder)", err);
        /* node_exporter's textfile convention: stale after a few missed
         * updates, not after one late writer. */
        if (seen->line[C_MAX_AGE] == 0)
            c->max_age_ms = 3 * c->interval_ms;
    } else if (c->type == AGENT_COLLECTOR_HTTP) {
        if (seen->line[C_URL] == 0)
            return missing_key(cfg, seen, section, "url", "", err);
        if (c->bearer_token_file != NULL && strncmp(c->url, "http://", 7) == 0)
            RSL_WARN("config", "%s:%d: [%s]: a bearer token is sent over plain http://",
                     cfg->path, seen->line[C_TOKEN_FILE], section);
        if (c->pinned_public_key != NULL && strncmp(c->url, "http://", 7) == 0)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s:%d: 'pinned_public_key' needs an https:// url in [%s]",
                                 cfg->path, seen->line[C_PIN], section);
    }
    return RSL_OK;
}

static int finish_config(struct load_ctx *ctx, struct rsl_error *err)
{
    struct agent_config *cfg = ctx->cfg;
    static const int agent_required[] = {A_ID, A_NATION, A_ORGANISATION, A_KEYS, A_SPOOL};
    int rc;

    for (size_t i = 0; i < sizeof(agent_required) / sizeof(agent_required[0]); i++) {
        int k = agent_required[i];
        if (ctx->agent.line[k] == 0)
            return missing_key(cfg, &ctx->agent, "agent", agent_key_names[k], "", err);
    }
    if (ctx->aggregator.line[G_ENDPOINTS] == 0)
        return missing_key(cfg, &ctx->aggregator, "aggregator", "endpoints", "", err);
    if (ctx->aggregator.line[G_SERVER_KEY] == 0)
        return missing_key(cfg, &ctx->aggregator, "aggregator", "server_key", "", err);
    if (cfg->n_collectors == 0)
        return rsl_error_set(err, RSL_ECONFIG,
                             "%s: no [collector NAME] section: at least one collector is required",
                             cfg->path);
    for (size_t i = 0; i < cfg->n_collectors; i++)
        if ((rc = finish_collector(ctx, i, err)) != RSL_OK)
            return rc;
    return check_taxonomy(ctx, err);
}

int agent_config_load(const char *path, struct agent_config **out, struct rsl_error *err)
{
    struct agent_config *cfg = NULL;
    struct load_ctx ctx;
    int rc;

    *out = NULL;
    memset(&ctx, 0, sizeof(ctx));
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    if (rsl_strlcpy(cfg->path, path, sizeof(cfg->path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: path too long", path);
        goto out;
    }
    /* Defaults. */
    memcpy(cfg->marking, AGENT_DEFAULT_MARKING, sizeof(AGENT_DEFAULT_MARKING));
    cfg->resend_timeout_ms = AGENT_DEFAULT_RESEND_TIMEOUT_MS;
    cfg->max_message_bytes = RSL_MAX_MESSAGE_BYTES_DEFAULT;
    cfg->spool_max_bytes = (uint64_t)AGENT_DEFAULT_SPOOL_MAX_MB * 1024 * 1024;
    cfg->spool_max_age_ms = AGENT_DEFAULT_SPOOL_MAX_AGE_MS;
    cfg->spool_full_policy = AGENT_SPOOL_DROP_OLDEST;
    cfg->window = AGENT_DEFAULT_WINDOW;
    cfg->backoff_max_ms = AGENT_DEFAULT_BACKOFF_MAX_MS;
    cfg->heartbeat_ms = AGENT_DEFAULT_HEARTBEAT_MS;
    cfg->log_level = RSL_LOG_INFO;

    ctx.cfg = cfg;
    if ((rc = rsl_ini_load(path, ini_handler, &ctx, err)) != RSL_OK)
        goto out;
    if ((rc = finish_config(&ctx, err)) != RSL_OK)
        goto out;
    *out = cfg;
    cfg = NULL; /* transferred */
out:
    free(ctx.collector_seen);
    agent_config_free(&cfg);
    return rc;
}

void agent_config_free(struct agent_config **cfg)
{
    if (cfg == NULL || *cfg == NULL)
        return;
    for (size_t i = 0; i < (*cfg)->n_collectors; i++) {
        struct agent_collector_config *c = &(*cfg)->collectors[i];
        free(c->path);
        free(c->url);
        free(c->ca_file);
        free(c->pinned_public_key);
        free(c->bearer_token_file);
    }
    free((*cfg)->collectors);
    free(*cfg);
    *cfg = NULL;
}

/* ---- keys ---------------------------------------------------------------- */

int agent_keys_load(const struct agent_config *cfg, struct agent_keys **out,
                    struct rsl_error *err)
{
    struct agent_keys *keys = NULL;
    char path[AGENT_PATH_MAX];
    char derived[RSL_Z85_KEY_LEN + 1];
    int rc = RSL_OK;

    *out = NULL;
    keys = calloc(1, sizeof(*keys));
    if (keys == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");

    if (rsl_keys_path(cfg->keys_dir, "sign.key", path, sizeof(path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: path too long", cfg->keys_dir);
        goto fail;
    }
    if ((rc = rsl_signer_load(path, &keys->signer, err)) != RSL_OK)
        goto fail;
    if (rsl_keys_path(cfg->keys_dir, "curve.key", path, sizeof(path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: path too long", cfg->keys_dir);
        goto fail;
    }
    if ((rc = rsl_curve_load_secret(path, keys->curve_secret, err)) != RSL_OK)
        goto fail;
    if (rsl_keys_path(cfg->keys_dir, "curve.pub", path, sizeof(path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: path too long", cfg->keys_dir);
        goto fail;
    }
    if ((rc = rsl_curve_load_public(path, keys->curve_public, err)) != RSL_OK)
        goto fail;
    /* A curve.pub from another key pair would make every CURVE handshake
     * fail with nothing in our log; catch it here instead. */
    if (zmq_curve_public(derived, keys->curve_secret) != 0) {
        rc = rsl_error_set(err, RSL_ECRYPTO, "libzmq cannot derive CURVE keys: %s",
                           zmq_strerror(errno));
        goto fail;
    }
    if (strcmp(derived, keys->curve_public) != 0) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s does not belong to curve.key", path);
        goto fail;
    }
    rsl_secure_zero(derived, sizeof(derived));
    *out = keys;
    return RSL_OK;
fail:
    rsl_secure_zero(derived, sizeof(derived));
    agent_keys_free(&keys);
    if (cfg->keys_line > 0)
        rsl_error_prefix(err, "%s:%d: keys", cfg->path, cfg->keys_line);
    else
        rsl_error_prefix(err, "%s: keys", cfg->path);
    return rc == RSL_ENOENT ? RSL_ECONFIG : rc;
}

void agent_keys_free(struct agent_keys **keys)
{
    if (keys == NULL || *keys == NULL)
        return;
    rsl_signer_free(&(*keys)->signer);
    rsl_secure_zero((*keys)->curve_secret, sizeof((*keys)->curve_secret));
    free(*keys);
    *keys = NULL;
}
