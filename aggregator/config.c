/*
 * config.c - loading and validating aggregator.conf.
 *
 * Two passes over the data, one over the file:
 *   1. rsl_ini_load calls config_handler for every key in order. Each key is
 *      validated on the spot, so a bad value is reported with its own
 *      FILE:LINE. Keys that need something defined elsewhere in the file
 *      (a token's nation must be in the nation list, a partner's include
 *      must name known indicators: the [taxonomy] section may come later)
 *      remember their line number in the load context.
 *   2. After the file is read: required keys are checked ("FILE: missing
 *      required key 'path' in [store]"), the taxonomy is loaded, and the
 *      remembered cross-references are checked, still naming their line.
 *
 * Every key may appear once per section and every section once: a repeated
 * key or section is almost always a copy-paste slip whose silent "last one
 * wins" would surprise an operator.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rsl/ini.h"
#include "rsl/log.h"
#include "rsl/util.h"

/* Upper bounds for numeric keys: generous, but they stop typos such as an
 * extra zero from turning into a 10 GiB message buffer. */
#define MAX_MESSAGE_BYTES_MIN 1024
#define MAX_MESSAGE_BYTES_MAX (64 * 1024 * 1024)
#define HTTPS_THREADS_MAX 64
#define MIN_NATIONS_MAX 1000
#define MAX_TOKENS 1024
#define MAX_PARTNERS 256
#define MAX_PARTNER_INCLUDE 1024
/* A clock more than a day ahead is broken, not skewed; a larger limit would
 * let one report pin its values as "latest" for that long. */
#define MAX_FUTURE_SKEW_MS_MAX (24 * 60 * 60 * 1000LL)

/* Bits for "this key was seen in this section" (duplicate detection and
 * required-key checks). One word per fixed section is plenty. */
enum {
    SEEN_INGEST_BIND = 1u << 0,
    SEEN_INGEST_KEYS = 1u << 1,
    SEEN_INGEST_REGISTRY = 1u << 2,
    SEEN_INGEST_MAXMSG = 1u << 3,
    SEEN_INGEST_SKEW = 1u << 4,
    SEEN_STORE_PATH = 1u << 5,
    SEEN_HTTPS_LISTEN = 1u << 6,
    SEEN_HTTPS_CERT = 1u << 7,
    SEEN_HTTPS_KEY = 1u << 8,
    SEEN_HTTPS_THREADS = 1u << 9,
    SEEN_TAX_PATH = 1u << 10,
    SEEN_TAX_NATIONS = 1u << 11,
    SEEN_LOG_LEVEL = 1u << 12,
};

/* [https] keys added for issue 5 (client certificates, HSTS); high bits so
 * keys other sections add from the low end never collide with them. */
enum {
    SEEN_HTTPS_CLIENT_CA = 1u << 28,
    SEEN_HTTPS_HSTS = 1u << 29,
};

/* [ingest] keys added for issue 4 (the verify/store pipeline); bits in the
 * middle so neither end's additions collide with them. */
enum {
    SEEN_INGEST_WORKERS = 1u << 20,
    SEEN_INGEST_MAX_QUEUE = 1u << 21,
    SEEN_INGEST_BATCH_MAX = 1u << 22,
};

enum { TOKEN_SEEN_ROLE = 1u << 0, TOKEN_SEEN_SHA = 1u << 1 };
enum { CLIENT_SEEN_SUBJECT = 1u << 0, CLIENT_SEEN_ROLE = 1u << 1 };
#define MAX_CLIENTS 1024
enum {
    PARTNER_SEEN_INCLUDE = 1u << 0,
    PARTNER_SEEN_MIN = 1u << 1,
    PARTNER_SEEN_URL = 1u << 2,
    PARTNER_SEEN_MARKING = 1u << 3,
    PARTNER_SEEN_INTERVAL = 1u << 4,
    PARTNER_SEEN_MIN_INTERVAL = 1u << 5,
    PARTNER_SEEN_OUTBOX_MAX = 1u << 6,
    PARTNER_SEEN_CA = 1u << 7,
    PARTNER_SEEN_CERT = 1u << 8,
    PARTNER_SEEN_KEY = 1u << 9,
    PARTNER_SEEN_TOKEN = 1u << 10,
    PARTNER_SEEN_TIMEOUT = 1u << 11,
    PARTNER_SEEN_BACKOFF = 1u << 12,
};

/* Per-entry facts needed only while loading (kept out of the public struct):
 * which keys a [token]/[partner] section set, and the line numbers that the
 * checks after the parse must still be able to name. Each array runs
 * parallel to its public counterpart (same index, grown together). */
struct token_load {
    unsigned seen;
    int role_line;
};

struct partner_load {
    unsigned seen;
    int include_line;
    int line;          /* the first line of the section, for section-wide errors */
};

struct client_load {
    unsigned seen;
    int role_line;
};

#define MAX_SECTIONS_SEEN (MAX_TOKENS + MAX_PARTNERS + MAX_CLIENTS + 16)

struct load_ctx {
    struct agg_config *cfg;
    const char *path;
    unsigned seen;
    struct token_load *token_load;     /* parallel to cfg->tokens */
    struct partner_load *partner_load; /* parallel to cfg->partners */
    struct client_load *client_load;   /* parallel to cfg->clients */
    size_t clients_cap;
    size_t tokens_cap;
    size_t partners_cap;
    /* Sections already finished, to refuse a section header seen twice. */
    char *sections[MAX_SECTIONS_SEEN];
    size_t n_sections;
    char current_section[RSL_INI_MAX_LINE + 1];
    bool in_section;
};

const char *agg_role_kind_name(enum agg_role_kind kind)
{
    switch (kind) {
    case AGG_ROLE_STAFF: return "staff";
    case AGG_ROLE_NATION: return "nation";
    case AGG_ROLE_PARTNER: return "partner";
    }
    return "unknown";
}

/* Resolve a path value against the config file's folder (ARCHITECTURE
 * section 4), so a config folder can be moved or copied as a whole and the
 * daemon's working directory never matters. An empty path is refused here
 * rather than resolving to the config folder itself. */
static int set_path(struct load_ctx *ctx, const char *key, const char *value, char *out,
                    size_t outlen, struct rsl_error *err)
{
    if (value[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "%s: empty path", key);
    if (rsl_path_resolve(ctx->path, value, out, outlen) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "%s: path too long", key);
    return RSL_OK;
}

/* Mark a fixed-section key as seen; a second occurrence is an error. */
static int mark_seen(unsigned *seen, unsigned bit, const char *key, const char *section,
                     struct rsl_error *err)
{
    if (*seen & bit)
        return rsl_error_set(err, RSL_ECONFIG, "duplicate key '%s' in [%s]", key, section);
    *seen |= bit;
    return RSL_OK;
}

/* "tcp://host:port" or "ipc://path": the two transports a ROUTER here may
 * sensibly bind. Anything else is most likely a typo. */
static bool endpoint_valid(const char *ep)
{
    if (strncmp(ep, "tcp://", 6) == 0)
        return strlen(ep) > 6 && strchr(ep + 6, ':') != NULL;
    if (strncmp(ep, "ipc://", 6) == 0)
        return strlen(ep) > 6;
    return false;
}

/* The bind list replaces the default entirely (no "default plus these"):
 * an operator who lists endpoints means exactly those. */
static int parse_bind(struct agg_config *cfg, const char *value, struct rsl_error *err)
{
    const char *cursor = value;
    char item[AGG_ENDPOINT_MAX];
    int rc;
    cfg->n_bind = 0;
    while ((rc = rsl_list_next(&cursor, item, sizeof(item))) == 1) {
        if (!endpoint_valid(item))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "bind: '%s' is not a tcp://HOST:PORT or ipc://PATH endpoint",
                                 item);
        if (cfg->n_bind >= AGG_MAX_BINDS)
            return rsl_error_set(err, RSL_ECONFIG, "bind: more than %d endpoints",
                                 AGG_MAX_BINDS);
        for (size_t i = 0; i < cfg->n_bind; i++)
            if (strcmp(cfg->bind[i], item) == 0)
                return rsl_error_set(err, RSL_ECONFIG, "bind: '%s' listed twice", item);
        memcpy(cfg->bind[cfg->n_bind++], item, sizeof(item));
    }
    if (rc < 0)
        return rsl_error_set(err, RSL_ECONFIG, "bind: endpoint longer than %d characters",
                             AGG_ENDPOINT_MAX - 1);
    if (cfg->n_bind == 0)
        return rsl_error_set(err, RSL_ECONFIG, "bind: no endpoint given");
    return RSL_OK;
}

/* "host:port", "[v6addr]:port" or ":port"/"*:port" (all addresses).
 * The host is kept as text, not resolved: resolution belongs to the moment
 * of binding (the HTTPS module), where the error can say what failed. The
 * port may be 0 ("any free port") for tests; the server reports the real
 * one. */
static int parse_listen(struct agg_config *cfg, const char *value, struct rsl_error *err)
{
    const char *colon;
    const char *host_start = value;
    size_t host_len;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL || close[1] != ':')
            return rsl_error_set(err, RSL_ECONFIG,
                                 "listen: '%s' is not [ADDRESS]:PORT", value);
        host_start = value + 1;
        host_len = (size_t)(close - host_start);
        colon = close + 1;
    } else {
        colon = strrchr(value, ':');
        if (colon == NULL)
            return rsl_error_set(err, RSL_ECONFIG, "listen: '%s' is not HOST:PORT", value);
        host_len = (size_t)(colon - value);
        /* A bare IPv6 address without brackets is ambiguous. */
        if (memchr(value, ':', host_len) != NULL)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "listen: write IPv6 addresses in brackets: [%.*s]:PORT",
                                 (int)host_len, value);
    }
    int64_t port;
    if (rsl_parse_int64(colon + 1, 0, 65535, &port) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "listen: port '%s' is not 0..65535", colon + 1);
    if (host_len >= sizeof(cfg->https_host))
        return rsl_error_set(err, RSL_ECONFIG, "listen: host too long");
    if (rsl_strlcpy(cfg->https_listen, value, sizeof(cfg->https_listen)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "listen: value too long");
    if (host_len == 0 || (host_len == 1 && host_start[0] == '*')) {
        /* Empty or "*" means every IPv4 address, like the default. */
        memcpy(cfg->https_host, "0.0.0.0", sizeof("0.0.0.0"));
    } else {
        memcpy(cfg->https_host, host_start, host_len);
        cfg->https_host[host_len] = '\0';
    }
    cfg->https_port = (uint16_t)port;
    return RSL_OK;
}

/* The token for [token NAME], created on its first key. inih reports no
 * section headers, only keys, so an entry is born when its first key is
 * seen; a section without keys never exists (and cannot grant anything). */
static struct agg_token *token_get(struct load_ctx *ctx, const char *name, size_t *index,
                                   struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        if (strcmp(cfg->tokens[i].name, name) == 0) {
            *index = i;
            return &cfg->tokens[i];
        }
    }
    if (cfg->n_tokens >= MAX_TOKENS) {
        rsl_error_set(err, RSL_ECONFIG, "more than %d [token] sections", MAX_TOKENS);
        return NULL;
    }
    if (cfg->n_tokens == ctx->tokens_cap) {
        size_t cap = ctx->tokens_cap ? ctx->tokens_cap * 2 : 4;
        struct agg_token *t = realloc(cfg->tokens, cap * sizeof(*t));
        if (t == NULL)
            goto nomem;
        cfg->tokens = t;
        struct token_load *l = realloc(ctx->token_load, cap * sizeof(*l));
        if (l == NULL)
            goto nomem;
        ctx->token_load = l;
        ctx->tokens_cap = cap;
    }
    struct agg_token *tok = &cfg->tokens[cfg->n_tokens];
    memset(tok, 0, sizeof(*tok));
    memset(&ctx->token_load[cfg->n_tokens], 0, sizeof(ctx->token_load[0]));
    if (rsl_strlcpy(tok->name, name, sizeof(tok->name)) != RSL_OK) {
        rsl_error_set(err, RSL_ECONFIG, "token name longer than %d characters",
                      AGG_TOKEN_NAME_MAX);
        return NULL;
    }
    *index = cfg->n_tokens++;
    return tok;
nomem:
    rsl_error_set(err, RSL_ENOMEM, "out of memory");
    return NULL;
}

/* Same pattern as token_get for [partner ID]; min_nations starts at the
 * documented default of 3 (ARCHITECTURE section 7). */
static struct agg_partner *partner_get(struct load_ctx *ctx, const char *id, size_t *index,
                                       struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_partners; i++) {
        if (strcmp(cfg->partners[i].id, id) == 0) {
            *index = i;
            return &cfg->partners[i];
        }
    }
    if (cfg->n_partners >= MAX_PARTNERS) {
        rsl_error_set(err, RSL_ECONFIG, "more than %d [partner] sections", MAX_PARTNERS);
        return NULL;
    }
    if (cfg->n_partners == ctx->partners_cap) {
        size_t cap = ctx->partners_cap ? ctx->partners_cap * 2 : 4;
        struct agg_partner *p = realloc(cfg->partners, cap * sizeof(*p));
        if (p == NULL)
            goto nomem;
        cfg->partners = p;
        struct partner_load *l = realloc(ctx->partner_load, cap * sizeof(*l));
        if (l == NULL)
            goto nomem;
        ctx->partner_load = l;
        ctx->partners_cap = cap;
    }
    struct agg_partner *part = &cfg->partners[cfg->n_partners];
    memset(part, 0, sizeof(*part));
    memset(&ctx->partner_load[cfg->n_partners], 0, sizeof(ctx->partner_load[0]));
    part->min_nations = AGG_DEFAULT_MIN_NATIONS;
    snprintf(part->marking, sizeof(part->marking), "NATO UNCLASSIFIED RELEASABLE TO %.*s",
             RSL_PARTNER_ID_MAX, id);
    part->interval_ms = AGG_DEFAULT_RELEASE_INTERVAL_MS;
    part->min_interval_ms = AGG_DEFAULT_RELEASE_MIN_INTERVAL_MS;
    part->outbox_max = AGG_DEFAULT_OUTBOX_MAX;
    part->timeout_ms = AGG_DEFAULT_PUSH_TIMEOUT_MS;
    part->backoff_max_ms = AGG_DEFAULT_PUSH_BACKOFF_MAX_MS;
    /* The id was validated by the caller, so it fits. */
    rsl_strlcpy(part->id, id, sizeof(part->id));
    *index = cfg->n_partners++;
    return part;
nomem:
    rsl_error_set(err, RSL_ENOMEM, "out of memory");
    return NULL;
}

/* [token NAME] role / sha256. The role's nation is checked only for syntax
 * here; membership in the nation list waits for the taxonomy, which may be
 * configured further down the file. The config stores the hash, never the
 * token, so a leaked config file does not leak credentials. */
static int token_key(struct load_ctx *ctx, const char *name, const char *key, const char *value,
                     int line, struct rsl_error *err)
{
    size_t index;
    struct agg_token *tok = token_get(ctx, name, &index, err);
    if (tok == NULL)
        return err != NULL ? err->code : RSL_ECONFIG;
    struct token_load *tl = &ctx->token_load[index];

    if (strcmp(key, "role") == 0) {
        if (tl->seen & TOKEN_SEEN_ROLE)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'role' in [token %s]", name);
        tl->seen |= TOKEN_SEEN_ROLE;
        tl->role_line = line;
        if (strcmp(value, "staff") == 0) {
            tok->role = AGG_ROLE_STAFF;
        } else if (strncmp(value, "nation:", 7) == 0) {
            if (!rsl_valid_nation_code(value + 7))
                return rsl_error_set(err, RSL_ECONFIG,
                                     "role: '%s' is not a nation code (3 uppercase letters)",
                                     value + 7);
            tok->role = AGG_ROLE_NATION;
            memcpy(tok->nation, value + 7, 4);
        } else if (strncmp(value, "partner:", 8) == 0) {
            if (!rsl_valid_partner_id(value + 8) ||
                rsl_strlcpy(tok->partner, value + 8, sizeof(tok->partner)) != RSL_OK)
                return rsl_error_set(err, RSL_ECONFIG, "role: '%s' is not a valid partner id",
                                     value + 8);
            tok->role = AGG_ROLE_PARTNER;
        } else {
            return rsl_error_set(err, RSL_ECONFIG,
                                 "role: '%s' is not staff, nation:CODE or partner:ID", value);
        }
        return RSL_OK;
    }
    if (strcmp(key, "sha256") == 0) {
        if (tl->seen & TOKEN_SEEN_SHA)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'sha256' in [token %s]",
                                 name);
        tl->seen |= TOKEN_SEEN_SHA;
        if (strlen(value) != 64 || rsl_hex_decode(value, tok->sha256, 32) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "sha256: not 64 hexadecimal characters (the SHA-256 of the "
                                 "token, e.g. from `printf %%s TOKEN | sha256sum`)");
        return RSL_OK;
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [token %s]", key, name);
}

static void partner_include_free(struct agg_partner *p)
{
    for (size_t i = 0; i < p->n_include; i++)
        free(p->include[i]);
    free(p->include);
    p->include = NULL;
    p->n_include = 0;
}

/* [partner ID]: what is released (include, min_nations, marking), how
 * often (interval, min_interval), and the push (url and its credentials,
 * timeout, backoff_max, outbox_max). Cross-key rules (credentials need a
 * url, cert and key together, min_interval <= interval) are checked once
 * the whole file is read. */
static int partner_key(struct load_ctx *ctx, const char *id, const char *key, const char *value,
                       int line, struct rsl_error *err)
{
    if (!rsl_valid_partner_id(id))
        return rsl_error_set(err, RSL_ECONFIG, "[partner %s]: not a valid partner id "
                             "(letters, digits, '_' and '-', at most %d)", id,
                             RSL_PARTNER_ID_MAX);
    size_t index;
    struct agg_partner *p = partner_get(ctx, id, &index, err);
    if (p == NULL)
        return err != NULL ? err->code : RSL_ECONFIG;
    struct partner_load *pl = &ctx->partner_load[index];

    if (strcmp(key, "include") == 0) {
        if (pl->seen & PARTNER_SEEN_INCLUDE)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'include' in [partner %s]", id);
        pl->seen |= PARTNER_SEEN_INCLUDE;
        pl->include_line = line;
        const char *cursor = value;
        char item[RSL_INDICATOR_ID_MAX + 1];
        int rc;
        while ((rc = rsl_list_next(&cursor, item, sizeof(item))) == 1) {
            if (p->n_include >= MAX_PARTNER_INCLUDE)
                return rsl_error_set(err, RSL_ECONFIG, "include: more than %d entries",
                                     MAX_PARTNER_INCLUDE);
            /* Existence in the taxonomy is checked after the file is read. */
            char **grown = realloc(p->include, (p->n_include + 1) * sizeof(*grown));
            if (grown == NULL)
                return rsl_error_set(err, RSL_ENOMEM, "out of memory");
            p->include = grown;
            p->include[p->n_include] = strdup(item);
            if (p->include[p->n_include] == NULL)
                return rsl_error_set(err, RSL_ENOMEM, "out of memory");
            p->n_include++;
        }
        if (rc < 0)
            return rsl_error_set(err, RSL_ECONFIG, "include: entry longer than %d characters",
                                 RSL_INDICATOR_ID_MAX);
        return RSL_OK;
    }
    if (strcmp(key, "min_nations") == 0) {
        if (pl->seen & PARTNER_SEEN_MIN)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'min_nations' in [partner %s]",
                                 id);
        pl->seen |= PARTNER_SEEN_MIN;
        int64_t n;
        if (rsl_parse_int64(value, 1, MIN_NATIONS_MAX, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "min_nations: '%s' is not a number 1..%d",
                                 value, MIN_NATIONS_MAX);
        p->min_nations = (int)n;
        return RSL_OK;
    }
    if (strcmp(key, "url") == 0) {
        if (pl->seen & PARTNER_SEEN_URL)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'url' in [partner %s]", id);
        pl->seen |= PARTNER_SEEN_URL;
        /* Releases leave the site: plain http would expose them. */
        if (strncmp(value, "https://", 8) != 0 || strlen(value) <= 8)
            return rsl_error_set(err, RSL_ECONFIG, "url: '%s' is not an https:// URL", value);
        for (const char *c = value; *c; c++)
            if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
                return rsl_error_set(err, RSL_ECONFIG, "url: contains a space or control "
                                     "character");
        if (rsl_strlcpy(p->url, value, sizeof(p->url)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "url: too long");
        return RSL_OK;
    }
    if (strcmp(key, "marking") == 0) {
        if (mark_seen(&pl->seen, PARTNER_SEEN_MARKING, key, "partner", err) != RSL_OK)
            return RSL_ECONFIG;
        /* It is printed into the release and shown by partners' tools. */
        for (const char *c = value; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
                return rsl_error_set(err, RSL_ECONFIG, "marking: contains a control character");
        if (value[0] == '\0' || rsl_strlcpy(p->marking, value, sizeof(p->marking)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "marking: empty or longer than %d characters",
                                 AGG_PARTNER_MARKING_MAX);
        return RSL_OK;
    }
    struct {
        const char *name;
        unsigned bit;
        int64_t min, max;
        int64_t *out;
    } durations[] = {
        {"interval", PARTNER_SEEN_INTERVAL, 1000, 7 * 24 * 3600 * INT64_C(1000), &p->interval_ms},
        {"min_interval", PARTNER_SEEN_MIN_INTERVAL, 0, 24 * 3600 * INT64_C(1000),
         &p->min_interval_ms},
        {"timeout", PARTNER_SEEN_TIMEOUT, 100, 3600 * INT64_C(1000), &p->timeout_ms},
        {"backoff_max", PARTNER_SEEN_BACKOFF, 1000, 24 * 3600 * INT64_C(1000), &p->backoff_max_ms},
    };
    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
        if (strcmp(key, durations[i].name) != 0)
            continue;
        if (mark_seen(&pl->seen, durations[i].bit, key, "partner", err) != RSL_OK)
            return RSL_ECONFIG;
        int64_t ms;
        if (rsl_parse_duration_ms(value, &ms) != RSL_OK || ms < durations[i].min ||
            ms > durations[i].max)
            return rsl_error_set(err, RSL_ECONFIG, "%s: '%s' is not a duration between %lld ms "
                                 "and %lld ms (e.g. 30s, 5m, 1h)", key, value,
                                 (long long)durations[i].min, (long long)durations[i].max);
        *durations[i].out = ms;
        return RSL_OK;
    }
    if (strcmp(key, "outbox_max") == 0) {
        if (mark_seen(&pl->seen, PARTNER_SEEN_OUTBOX_MAX, key, "partner", err) != RSL_OK)
            return RSL_ECONFIG;
        if (rsl_parse_int64(value, 1, INT64_C(10000000), &p->outbox_max) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "outbox_max: '%s' is not a number 1..10000000",
                                 value);
        return RSL_OK;
    }
    struct {
        const char *name;
        unsigned bit;
        char *out;
        size_t outlen;
    } paths[] = {
        {"ca_file", PARTNER_SEEN_CA, p->ca_file, sizeof(p->ca_file)},
        {"client_cert", PARTNER_SEEN_CERT, p->client_cert, sizeof(p->client_cert)},
        {"client_key", PARTNER_SEEN_KEY, p->client_key, sizeof(p->client_key)},
        {"token_file", PARTNER_SEEN_TOKEN, p->token_file, sizeof(p->token_file)},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        if (strcmp(key, paths[i].name) != 0)
            continue;
        if (mark_seen(&pl->seen, paths[i].bit, key, "partner", err) != RSL_OK)
            return RSL_ECONFIG;
        return set_path(ctx, key, value, paths[i].out, paths[i].outlen, err);
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [partner %s]", key, id);
}

/* [ingest]. max_message_bytes has a floor as well as a ceiling: below a
 * few KiB not even one small report would fit, and every agent would be
 * disconnected by ZMQ_MAXMSGSIZE in a loop. */
static int ingest_key(struct load_ctx *ctx, const char *key, const char *value,
                      struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    int rc;
    if (strcmp(key, "bind") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_BIND, key, "ingest", err)) != RSL_OK)
            return rc;
        return parse_bind(cfg, value, err);
    }
    if (strcmp(key, "keys") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_KEYS, key, "ingest", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->keys_dir, sizeof(cfg->keys_dir), err);
    }
    if (strcmp(key, "registry") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_REGISTRY, key, "ingest", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->registry_path, sizeof(cfg->registry_path), err);
    }
    if (strcmp(key, "max_message_bytes") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_MAXMSG, key, "ingest", err)) != RSL_OK)
            return rc;
        int64_t n;
        if (rsl_parse_int64(value, MAX_MESSAGE_BYTES_MIN, MAX_MESSAGE_BYTES_MAX, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "max_message_bytes: '%s' is not a number %d..%d", value,
                                 MAX_MESSAGE_BYTES_MIN, MAX_MESSAGE_BYTES_MAX);
        cfg->max_message_bytes = (size_t)n;
        return RSL_OK;
    }
    if (strcmp(key, "max_future_skew") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_SKEW, key, "ingest", err)) != RSL_OK)
            return rc;
        int64_t skew;
        if (rsl_parse_duration_ms(value, &skew) != RSL_OK || skew > MAX_FUTURE_SKEW_MS_MAX)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "max_future_skew: '%s' is not a duration of at most 1d "
                                 "(e.g. 300, 5m)", value);
        cfg->max_future_skew_ms = skew;
        return RSL_OK;
    }
    /* The pipeline's sizes (issue 4): bounded so a typo cannot ask for a
     * thousand threads or a queue that holds gigabytes. */
    if (strcmp(key, "workers") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_WORKERS, key, "ingest", err)) != RSL_OK)
            return rc;
        int64_t n;
        if (rsl_parse_int64(value, 1, AGG_MAX_WORKERS, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "workers: '%s' is not a number 1..%d",
                                 value, AGG_MAX_WORKERS);
        cfg->ingest_workers = (int)n;
        return RSL_OK;
    }
    if (strcmp(key, "max_queue") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_MAX_QUEUE, key, "ingest", err)) != RSL_OK)
            return rc;
        int64_t n;
        if (rsl_parse_int64(value, 1, AGG_MAX_QUEUE_MAX, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "max_queue: '%s' is not a number 1..%d",
                                 value, AGG_MAX_QUEUE_MAX);
        cfg->ingest_max_queue = (size_t)n;
        return RSL_OK;
    }
    if (strcmp(key, "batch_max") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_INGEST_BATCH_MAX, key, "ingest", err)) != RSL_OK)
            return rc;
        int64_t n;
        if (rsl_parse_int64(value, 1, AGG_BATCH_MAX_MAX, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "batch_max: '%s' is not a number 1..%d",
                                 value, AGG_BATCH_MAX_MAX);
        cfg->ingest_batch_max = (size_t)n;
        return RSL_OK;
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [ingest]", key);
}

/* [https]. The cert and key files are only resolved here; the HTTPS module
 * loads them (and checks the key file's mode) when it starts, and
 * --check-config checks them too. */
static int https_key(struct load_ctx *ctx, const char *key, const char *value,
                     struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    int rc;
    if (strcmp(key, "listen") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_LISTEN, key, "https", err)) != RSL_OK)
            return rc;
        return parse_listen(cfg, value, err);
    }
    if (strcmp(key, "cert") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_CERT, key, "https", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->https_cert, sizeof(cfg->https_cert), err);
    }
    if (strcmp(key, "key") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_KEY, key, "https", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->https_key, sizeof(cfg->https_key), err);
    }
    if (strcmp(key, "threads") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_THREADS, key, "https", err)) != RSL_OK)
            return rc;
        int64_t n;
        if (rsl_parse_int64(value, 1, HTTPS_THREADS_MAX, &n) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "threads: '%s' is not a number 1..%d",
                                 value, HTTPS_THREADS_MAX);
        cfg->https_threads = (int)n;
        return RSL_OK;
    }
    if (strcmp(key, "client_ca") == 0) {
        /* Loaded by the HTTPS module at start; only resolved here. */
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_CLIENT_CA, key, "https", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->https_client_ca, sizeof(cfg->https_client_ca),
                        err);
    }
    if (strcmp(key, "hsts") == 0) {
        if ((rc = mark_seen(&ctx->seen, SEEN_HTTPS_HSTS, key, "https", err)) != RSL_OK)
            return rc;
        if (rsl_parse_bool(value, &cfg->https_hsts) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "hsts: '%s' is not true or false", value);
        return RSL_OK;
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [https]", key);
}

/* ---- [client NAME] (issue 5) ------------------------------------------ */

/* The entry for [client NAME], created on its first key. */
static struct agg_client *client_get(struct load_ctx *ctx, const char *name, size_t *index,
                                     struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_clients; i++) {
        if (strcmp(cfg->clients[i].name, name) == 0) {
            *index = i;
            return &cfg->clients[i];
        }
    }
    if (cfg->n_clients >= MAX_CLIENTS) {
        rsl_error_set(err, RSL_ECONFIG, "more than %d [client] sections", MAX_CLIENTS);
        return NULL;
    }
    if (cfg->n_clients == ctx->clients_cap) {
        size_t cap = ctx->clients_cap ? ctx->clients_cap * 2 : 4;
        struct agg_client *c = realloc(cfg->clients, cap * sizeof(*c));
        if (c == NULL)
            goto nomem;
        cfg->clients = c;
        struct client_load *l = realloc(ctx->client_load, cap * sizeof(*l));
        if (l == NULL)
            goto nomem;
        ctx->client_load = l;
        ctx->clients_cap = cap;
    }
    struct agg_client *client = &cfg->clients[cfg->n_clients];
    memset(client, 0, sizeof(*client));
    memset(&ctx->client_load[cfg->n_clients], 0, sizeof(ctx->client_load[0]));
    if (rsl_strlcpy(client->name, name, sizeof(client->name)) != RSL_OK) {
        rsl_error_set(err, RSL_ECONFIG, "client name longer than %d characters",
                      AGG_TOKEN_NAME_MAX);
        return NULL;
    }
    *index = cfg->n_clients++;
    return client;
nomem:
    rsl_error_set(err, RSL_ENOMEM, "out of memory");
    return NULL;
}

/* role = staff | nation:XXX | partner:ID, as for [token]. */
static int client_parse_role(struct agg_client *c, const char *value, struct rsl_error *err)
{
    if (strcmp(value, "staff") == 0) {
        c->role = AGG_ROLE_STAFF;
        return RSL_OK;
    }
    if (strncmp(value, "nation:", 7) == 0) {
        if (!rsl_valid_nation_code(value + 7))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "role: '%s' is not a nation code (3 uppercase letters)",
                                 value + 7);
        c->role = AGG_ROLE_NATION;
        memcpy(c->nation, value + 7, 4);
        return RSL_OK;
    }
    if (strncmp(value, "partner:", 8) == 0) {
        if (!rsl_valid_partner_id(value + 8) ||
            rsl_strlcpy(c->partner, value + 8, sizeof(c->partner)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "role: '%s' is not a valid partner id",
                                 value + 8);
        c->role = AGG_ROLE_PARTNER;
        return RSL_OK;
    }
    return rsl_error_set(err, RSL_ECONFIG, "role: '%s' is not staff, nation:CODE or partner:ID",
                         value);
}

/* [client NAME] subject / role. The subject is compared byte for byte with
 * the RFC 2253 form of a verified certificate's subject, so it must be a
 * single line of printable text; nothing else about it can be checked
 * without the certificate. */
static int client_key(struct load_ctx *ctx, const char *name, const char *key, const char *value,
                      int line, struct rsl_error *err)
{
    size_t index;
    struct agg_client *c = client_get(ctx, name, &index, err);
    if (c == NULL)
        return err != NULL ? err->code : RSL_ECONFIG;
    struct client_load *cl = &ctx->client_load[index];
    if (strcmp(key, "subject") == 0) {
        if (cl->seen & CLIENT_SEEN_SUBJECT)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'subject' in [client %s]",
                                 name);
        cl->seen |= CLIENT_SEEN_SUBJECT;
        if (value[0] == '\0')
            return rsl_error_set(err, RSL_ECONFIG, "subject: empty");
        for (const char *p = value; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
                return rsl_error_set(err, RSL_ECONFIG, "subject: contains a control character");
        if (rsl_strlcpy(c->subject, value, sizeof(c->subject)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "subject: longer than %d characters",
                                 AGG_CLIENT_SUBJECT_MAX);
        return RSL_OK;
    }
    if (strcmp(key, "role") == 0) {
        if (cl->seen & CLIENT_SEEN_ROLE)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate key 'role' in [client %s]", name);
        cl->seen |= CLIENT_SEEN_ROLE;
        cl->role_line = line;
        return client_parse_role(c, value, err);
    }
    return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [client %s]", key, name);
}

/* After the whole file: required keys, unique subjects, nations in the
 * list, and [client] sections only when client_ca is set (without a CA no
 * certificate can ever be verified: such a section would silently never
 * match). */
static int check_clients(struct load_ctx *ctx, struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->n_clients; i++) {
        const struct agg_client *c = &cfg->clients[i];
        unsigned seen = ctx->client_load[i].seen;
        if (!(seen & CLIENT_SEEN_SUBJECT))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s: missing required key 'subject' in [client %s]", ctx->path,
                                 c->name);
        if (!(seen & CLIENT_SEEN_ROLE))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s: missing required key 'role' in [client %s]", ctx->path,
                                 c->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->subject, cfg->clients[j].subject) == 0)
                return rsl_error_set(err, RSL_ECONFIG,
                                     "%s: [client %s] has the same subject as [client %s]",
                                     ctx->path, c->name, cfg->clients[j].name);
        if (c->role == AGG_ROLE_NATION && rsl_taxonomy_nation_index(cfg->taxonomy, c->nation) < 0)
            return rsl_error_set(err, RSL_ECONFIG, "%s:%d: role: nation '%s' is not in %s",
                                 ctx->path, ctx->client_load[i].role_line, c->nation,
                                 cfg->nations_path);
    }
    if (cfg->n_clients > 0 && cfg->https_client_ca[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG,
                             "%s: [client %s] needs client_ca in [https] (the CA that issues "
                             "client certificates)", ctx->path, cfg->clients[0].name);
    return RSL_OK;
}

const struct agg_client *agg_config_client_find(const struct agg_config *cfg,
                                                const char *subject)
{
    if (cfg == NULL || subject == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_clients; i++)
        if (strcmp(cfg->clients[i].subject, subject) == 0)
            return &cfg->clients[i];
    return NULL;
}

/* Refuse a section header that appears a second time. inih reports only
 * keys, so a section "starts" when the section name changes between keys. */
static int track_section(struct load_ctx *ctx, const char *section, struct rsl_error *err)
{
    if (ctx->in_section && strcmp(ctx->current_section, section) == 0)
        return RSL_OK;
    for (size_t i = 0; i < ctx->n_sections; i++)
        if (strcmp(ctx->sections[i], section) == 0)
            return rsl_error_set(err, RSL_ECONFIG, "duplicate section [%s]", section);
    if (ctx->n_sections >= MAX_SECTIONS_SEEN)
        return rsl_error_set(err, RSL_ECONFIG, "too many sections");
    ctx->sections[ctx->n_sections] = strdup(section);
    if (ctx->sections[ctx->n_sections] == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    ctx->n_sections++;
    rsl_strlcpy(ctx->current_section, section, sizeof(ctx->current_section));
    ctx->in_section = true;
    return RSL_OK;
}

/* The rsl_ini_handler: split the section name into kind and name, refuse
 * names where none belong (and the reverse), then dispatch by kind. Any
 * message returned gets "FILE:LINE: " prepended by rsl_ini_load. */
static int config_handler(void *vctx, const char *section, const char *key, const char *value,
                          int line, struct rsl_error *err)
{
    struct load_ctx *ctx = vctx;
    struct agg_config *cfg = ctx->cfg;
    char kind[32];
    char name[RSL_INI_MAX_LINE + 1];
    int rc;

    if (section[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "key '%s' outside of any section", key);
    if (rsl_ini_section_split(section, kind, sizeof(kind), name, sizeof(name)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);
    if ((rc = track_section(ctx, section, err)) != RSL_OK)
        return rc;

    bool named = strcmp(kind, "token") == 0 || strcmp(kind, "partner") == 0 ||
                 strcmp(kind, "client") == 0;
    if (named && name[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "[%s] needs a name: [%s NAME]", kind, kind);
    if (!named && name[0] != '\0' &&
        (strcmp(kind, "ingest") == 0 || strcmp(kind, "store") == 0 ||
         strcmp(kind, "https") == 0 || strcmp(kind, "taxonomy") == 0 ||
         strcmp(kind, "log") == 0))
        return rsl_error_set(err, RSL_ECONFIG, "[%s] takes no name (found [%s])", kind,
                             section);

    if (strcmp(kind, "ingest") == 0)
        return ingest_key(ctx, key, value, err);
    if (strcmp(kind, "https") == 0)
        return https_key(ctx, key, value, err);
    if (strcmp(kind, "store") == 0) {
        if (strcmp(key, "path") != 0)
            return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [store]", key);
        if ((rc = mark_seen(&ctx->seen, SEEN_STORE_PATH, key, "store", err)) != RSL_OK)
            return rc;
        return set_path(ctx, key, value, cfg->store_path, sizeof(cfg->store_path), err);
    }
    if (strcmp(kind, "taxonomy") == 0) {
        if (strcmp(key, "path") == 0) {
            if ((rc = mark_seen(&ctx->seen, SEEN_TAX_PATH, key, "taxonomy", err)) != RSL_OK)
                return rc;
            return set_path(ctx, key, value, cfg->taxonomy_path, sizeof(cfg->taxonomy_path),
                            err);
        }
        if (strcmp(key, "nations") == 0) {
            if ((rc = mark_seen(&ctx->seen, SEEN_TAX_NATIONS, key, "taxonomy", err)) != RSL_OK)
                return rc;
            return set_path(ctx, key, value, cfg->nations_path, sizeof(cfg->nations_path), err);
        }
        return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [taxonomy]", key);
    }
    if (strcmp(kind, "log") == 0) {
        if (strcmp(key, "level") != 0)
            return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [log]", key);
        if ((rc = mark_seen(&ctx->seen, SEEN_LOG_LEVEL, key, "log", err)) != RSL_OK)
            return rc;
        int level = rsl_log_level_parse(value);
        if (level < 0)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "level: '%s' is not error, warning, notice, info or debug",
                                 value);
        cfg->log_level = level;
        return RSL_OK;
    }
    if (strcmp(kind, "token") == 0)
        return token_key(ctx, name, key, value, line, err);
    if (strcmp(kind, "partner") == 0)
        return partner_key(ctx, name, key, value, line, err);
    if (strcmp(kind, "client") == 0)
        return client_key(ctx, name, key, value, line, err);
    return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);
}

/* Replace the file name in `path` by `name` (the nations.csv default). */
static int sibling_path(const char *path, const char *name, char *out, size_t outlen)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash != NULL ? (size_t)(slash - path) + 1 : 0;
    int n = snprintf(out, outlen, "%.*s%s", (int)dirlen, path, name);
    return n < 0 || (size_t)n >= outlen ? RSL_ETOOBIG : RSL_OK;
}

/* A baseline requirement id as partner include lists use them. */
static bool is_requirement(const char *s)
{
    if (strcmp(s, "X") == 0)
        return true;
    return s[0] == 'B' && s[1] == 'R' && s[2] >= '1' && s[2] <= '7' && s[3] == '\0';
}

/* Checks that need the whole file and the taxonomy. Required keys come
 * first: they are cheap and their message is the most useful one when a
 * config is still half-written. Missing keys have no line, so the message
 * names the file and the section instead. */
static int check_after_parse(struct load_ctx *ctx, struct rsl_error *err)
{
    struct agg_config *cfg = ctx->cfg;
    static const struct {
        unsigned bit;
        const char *key;
        const char *section;
    } required[] = {
        {SEEN_INGEST_KEYS, "keys", "ingest"},
        {SEEN_INGEST_REGISTRY, "registry", "ingest"},
        {SEEN_STORE_PATH, "path", "store"},
        {SEEN_HTTPS_CERT, "cert", "https"},
        {SEEN_HTTPS_KEY, "key", "https"},
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!(ctx->seen & required[i].bit))
            return rsl_error_set(err, RSL_ECONFIG, "%s: missing required key '%s' in [%s]",
                                 ctx->path, required[i].key, required[i].section);

    for (size_t i = 0; i < cfg->n_tokens; i++) {
        unsigned seen = ctx->token_load[i].seen;
        if (!(seen & TOKEN_SEEN_ROLE))
            return rsl_error_set(err, RSL_ECONFIG, "%s: missing required key 'role' in [token %s]",
                                 ctx->path, cfg->tokens[i].name);
        if (!(seen & TOKEN_SEEN_SHA))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s: missing required key 'sha256' in [token %s]", ctx->path,
                                 cfg->tokens[i].name);
        /* Two tokens with the same hash would make the role ambiguous. */
        for (size_t j = 0; j < i; j++)
            if (memcmp(cfg->tokens[i].sha256, cfg->tokens[j].sha256, 32) == 0)
                return rsl_error_set(err, RSL_ECONFIG,
                                     "%s: [token %s] has the same sha256 as [token %s]",
                                     ctx->path, cfg->tokens[i].name, cfg->tokens[j].name);
    }

    if (cfg->nations_path[0] == '\0' &&
        sibling_path(cfg->taxonomy_path, "nations.csv", cfg->nations_path,
                     sizeof(cfg->nations_path)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "%s: [taxonomy] path too long", ctx->path);
    int rc = rsl_taxonomy_load(cfg->taxonomy_path, cfg->nations_path, &cfg->taxonomy, err);
    if (rc != RSL_OK) {
        rsl_error_prefix(err, "%s: [taxonomy]", ctx->path);
        return RSL_ECONFIG;
    }

    for (size_t i = 0; i < cfg->n_tokens; i++) {
        const struct agg_token *tok = &cfg->tokens[i];
        if (tok->role == AGG_ROLE_NATION &&
            rsl_taxonomy_nation_index(cfg->taxonomy, tok->nation) < 0)
            return rsl_error_set(err, RSL_ECONFIG, "%s:%d: role: nation '%s' is not in %s",
                                 ctx->path, ctx->token_load[i].role_line, tok->nation,
                                 cfg->nations_path);
    }
    for (size_t i = 0; i < cfg->n_partners; i++) {
        const struct agg_partner *p = &cfg->partners[i];
        /* Delivery settings without a url, or half a client certificate,
         * are mistakes that would otherwise only show at the first push. */
        if (p->url[0] == '\0' && (p->ca_file[0] || p->client_cert[0] || p->client_key[0] ||
                                  p->token_file[0]))
            return rsl_error_set(err, RSL_ECONFIG, "%s: [partner %s]: ca_file, client_cert, "
                                 "client_key and token_file need url", ctx->path, p->id);
        if ((p->client_cert[0] == '\0') != (p->client_key[0] == '\0'))
            return rsl_error_set(err, RSL_ECONFIG, "%s: [partner %s]: client_cert and client_key "
                                 "go together", ctx->path, p->id);
        if (p->min_interval_ms > p->interval_ms)
            return rsl_error_set(err, RSL_ECONFIG, "%s: [partner %s]: min_interval is longer than "
                                 "interval", ctx->path, p->id);
        for (size_t j = 0; j < p->n_include; j++) {
            const char *item = p->include[j];
            if (!is_requirement(item) && rsl_taxonomy_indicator(cfg->taxonomy, item) == NULL)
                return rsl_error_set(err, RSL_ECONFIG,
                                     "%s:%d: include: '%s' is neither a requirement (BR1..BR7, "
                                     "X) nor an indicator in %s",
                                     ctx->path, ctx->partner_load[i].include_line, item,
                                     cfg->taxonomy_path);
        }
    }
    return RSL_OK;
}

/* Defaults from the shared config contract (team brief / ARCHITECTURE);
 * keys present in the file overwrite them. */
static void config_set_defaults(struct agg_config *cfg)
{
    memcpy(cfg->bind[0], AGG_DEFAULT_BIND, sizeof(AGG_DEFAULT_BIND));
    cfg->n_bind = 1;
    cfg->max_message_bytes = RSL_MAX_MESSAGE_BYTES_DEFAULT;
    cfg->max_future_skew_ms = AGG_DEFAULT_MAX_FUTURE_SKEW_MS;
    /* Issue 4: one verify thread per online core (at least 1, at most the cap). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->ingest_workers = cores < 1 ? 1 : cores > AGG_MAX_WORKERS ? AGG_MAX_WORKERS : (int)cores;
    cfg->ingest_max_queue = AGG_DEFAULT_MAX_QUEUE;
    cfg->ingest_batch_max = AGG_DEFAULT_BATCH_MAX;
    memcpy(cfg->https_listen, AGG_DEFAULT_HTTPS_LISTEN, sizeof(AGG_DEFAULT_HTTPS_LISTEN));
    memcpy(cfg->https_host, "0.0.0.0", sizeof("0.0.0.0"));
    cfg->https_port = 8443;
    cfg->https_threads = AGG_DEFAULT_HTTPS_THREADS;
    cfg->https_hsts = true;
    memcpy(cfg->taxonomy_path, AGG_DEFAULT_TAXONOMY, sizeof(AGG_DEFAULT_TAXONOMY));
    cfg->log_level = RSL_LOG_INFO;
}

/* Single exit: the load context's scratch memory is always freed, the
 * config only survives when every check passed. */
int agg_config_load(const char *path, struct agg_config **out, struct rsl_error *err)
{
    struct agg_config *cfg = NULL;
    struct load_ctx ctx;
    int rc;

    memset(&ctx, 0, sizeof(ctx));
    if (out == NULL || path == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_config_load: NULL argument");
    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    if (rsl_strlcpy(cfg->path, path, sizeof(cfg->path)) != RSL_OK) {
        rc = rsl_error_set(err, RSL_ECONFIG, "%s: path too long", path);
        goto out;
    }
    config_set_defaults(cfg);
    ctx.cfg = cfg;
    ctx.path = path;

    rc = rsl_ini_load(path, config_handler, &ctx, err);
    if (rc != RSL_OK)
        goto out;
    rc = check_after_parse(&ctx, err);
    if (rc != RSL_OK)
        goto out;
    rc = check_clients(&ctx, err);
    if (rc != RSL_OK)
        goto out;

    *out = cfg;
    cfg = NULL; /* transferred */
out:
    for (size_t i = 0; i < ctx.n_sections; i++)
        free(ctx.sections[i]);
    free(ctx.token_load);
    free(ctx.partner_load);
    free(ctx.client_load);
    agg_config_free(&cfg);
    return rc;
}

void agg_config_free(struct agg_config **cfgp)
{
    if (cfgp == NULL || *cfgp == NULL)
        return;
    struct agg_config *cfg = *cfgp;
    rsl_taxonomy_free(&cfg->taxonomy);
    if (cfg->tokens != NULL) {
        /* Hashes of bearer tokens are not secrets in the strict sense, but
         * there is no reason to leave them in freed memory either. */
        rsl_secure_zero(cfg->tokens, cfg->n_tokens * sizeof(*cfg->tokens));
        free(cfg->tokens);
    }
    for (size_t i = 0; i < cfg->n_partners; i++)
        partner_include_free(&cfg->partners[i]);
    free(cfg->partners);
    free(cfg->clients);
    free(cfg);
    *cfgp = NULL;
}

const struct agg_token *agg_config_token_find(const struct agg_config *cfg,
                                              const uint8_t sha256[32])
{
    const struct agg_token *found = NULL;
    if (cfg == NULL || sha256 == NULL)
        return NULL;
    /* Visit every token whatever matches, so the time taken does not tell
     * an attacker how far down the list a near-guess got. */
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        bool eq = rsl_consttime_equal(cfg->tokens[i].sha256, sha256, 32);
        if (eq && found == NULL)
            found = &cfg->tokens[i];
    }
    return found;
}
