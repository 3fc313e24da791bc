/*
 * registry.c - the enrolled agents, loaded from INI, immutable once built.
 *
 * Loading fills a growing array of struct agg_agent while rsl_ini_load walks
 * the file (each value checked on its own line), then checks what needs the
 * whole file (required keys, CURVE keys enrolled twice) and builds two
 * sorted index arrays for binary search: by agent id and by CURVE key.
 *
 * Sharing between threads: an agg_registry is never modified after
 * agg_registry_load returns, so readers need no lock. Its lifetime is a
 * reference count (C11 atomic). The holder's mutex guards only the
 * holder's `current` pointer: get = lock, ref, unlock; swap = lock, replace,
 * unlock, then release the old one outside the lock. A reader that got the
 * old registry keeps a valid object until it releases it.
 */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/ini.h"
#include "rsl/util.h"

struct agg_registry {
    atomic_int refs;
    struct agg_agent *agents;        /* sorted by id after load */
    size_t n_agents;
    const struct agg_agent **by_curve; /* sorted by curve_key */
};

struct agg_registry_holder {
    pthread_mutex_t lock;            /* guards `current` only */
    struct agg_registry *current;    /* one reference owned by the holder */
};

enum {
    SEEN_NATION = 1u << 0,
    SEEN_ORGANISATION = 1u << 1,
    SEEN_SIGN_KEY = 1u << 2,
    SEEN_CURVE_KEY = 1u << 3,
    SEEN_REVOKED = 1u << 4,
};

struct agent_load {
    unsigned seen;
    int first_line;
    int curve_line;
};

struct reg_load {
    const char *path;
    const struct rsl_taxonomy *tax;
    struct agg_registry *reg;
    struct agent_load *load;     /* parallel to reg->agents */
    size_t cap;
    size_t current;              /* index of the section being read */
    bool in_agent;
};

/* Parse a comma list of base64 keys into raw keys and/or key ids. The key
 * id (not the raw key) is what a SignedReport names, so it is computed once
 * here instead of on every report. A key listed twice is refused: harmless
 * in itself, but it usually means a rotation was pasted wrongly. */
static int parse_key_list(const char *key, const char *value,
                          uint8_t raw[][RSL_ED25519_PUBLIC_BYTES],
                          char ids[][RSL_KEY_ID_HEX_LEN + 1], size_t *n, struct rsl_error *err)
{
    const char *cursor = value;
    /* A base64 32-byte key is 44 characters; leave room to report junk. */
    char item[128];
    int rc;
    *n = 0;
    while ((rc = rsl_list_next(&cursor, item, sizeof(item))) == 1) {
        uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
        if (*n >= AGG_REGISTRY_MAX_KEYS)
            return rsl_error_set(err, RSL_ECONFIG, "%s: more than %d keys", key,
                                 AGG_REGISTRY_MAX_KEYS);
        if (rsl_public_key_from_base64(item, pub) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "%s: entry %zu is not base64 of a 32-byte Ed25519 public key",
                                 key, *n + 1);
        char id[RSL_KEY_ID_HEX_LEN + 1];
        rsl_key_id(pub, id);
        for (size_t i = 0; i < *n; i++)
            if (strcmp(ids[i], id) == 0)
                return rsl_error_set(err, RSL_ECONFIG, "%s: key %s listed twice", key, id);
        if (raw != NULL)
            memcpy(raw[*n], pub, sizeof(pub));
        memcpy(ids[*n], id, sizeof(id));
        (*n)++;
    }
    if (rc < 0)
        return rsl_error_set(err, RSL_ECONFIG, "%s: entry too long for a base64 key", key);
    if (*n == 0)
        return rsl_error_set(err, RSL_ECONFIG, "%s: no key given", key);
    return RSL_OK;
}

/* Find or start the agent for this section; a section seen earlier and
 * left is a duplicate. */
static int agent_for_section(struct reg_load *ctx, const char *id, int line,
                             struct agg_agent **out, struct rsl_error *err)
{
    struct agg_registry *reg = ctx->reg;
    if (ctx->in_agent && strcmp(reg->agents[ctx->current].id, id) == 0) {
        *out = &reg->agents[ctx->current];
        return RSL_OK;
    }
    /* Linear scan while loading: the file is read once and O(n^2) over a
     * few thousand short strings is negligible next to the disk read. */
    for (size_t i = 0; i < reg->n_agents; i++)
        if (strcmp(reg->agents[i].id, id) == 0)
            return rsl_error_set(err, RSL_ECONFIG,
                                 "duplicate section [agent %s] (first at line %d)", id,
                                 ctx->load[i].first_line);
    if (!rsl_valid_agent_id(id))
        return rsl_error_set(err, RSL_ECONFIG,
                             "[agent %s]: not a valid agent id (letters, digits, '.', '_', '-'; "
                             "at most %d)", id, RSL_AGENT_ID_MAX);
    if (reg->n_agents >= AGG_REGISTRY_MAX_AGENTS)
        return rsl_error_set(err, RSL_ECONFIG, "more than %d agents", AGG_REGISTRY_MAX_AGENTS);
    if (reg->n_agents == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 16;
        struct agg_agent *a = realloc(reg->agents, cap * sizeof(*a));
        if (a == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
        reg->agents = a;
        struct agent_load *l = realloc(ctx->load, cap * sizeof(*l));
        if (l == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
        ctx->load = l;
        ctx->cap = cap;
    }
    struct agg_agent *agent = &reg->agents[reg->n_agents];
    memset(agent, 0, sizeof(*agent));
    memset(&ctx->load[reg->n_agents], 0, sizeof(ctx->load[0]));
    rsl_strlcpy(agent->id, id, sizeof(agent->id));
    ctx->load[reg->n_agents].first_line = line;
    ctx->current = reg->n_agents++;
    ctx->in_agent = true;
    *out = agent;
    return RSL_OK;
}

/* The rsl_ini_handler for the registry: only [agent ID] sections, only the
 * five documented keys, each at most once. Nation membership is checked
 * against the taxonomy given to agg_registry_load (NULL: syntax only, for
 * tools that have no taxonomy). */
static int registry_handler(void *vctx, const char *section, const char *key, const char *value,
                            int line, struct rsl_error *err)
{
    struct reg_load *ctx = vctx;
    char kind[16];
    char id[RSL_INI_MAX_LINE + 1];
    struct agg_agent *agent = NULL;
    int rc;

    if (section[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "key '%s' outside of any [agent ID] section", key);
    if (rsl_ini_section_split(section, kind, sizeof(kind), id, sizeof(id)) != RSL_OK ||
        strcmp(kind, "agent") != 0)
        return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s] (expected [agent ID])",
                             section);
    if (id[0] == '\0')
        return rsl_error_set(err, RSL_ECONFIG, "[agent] needs an id: [agent ID]");
    if ((rc = agent_for_section(ctx, id, line, &agent, err)) != RSL_OK)
        return rc;
    struct agent_load *al = &ctx->load[ctx->current];

    unsigned bit;
    if (strcmp(key, "nation") == 0)
        bit = SEEN_NATION;
    else if (strcmp(key, "organisation") == 0)
        bit = SEEN_ORGANISATION;
    else if (strcmp(key, "sign_key") == 0)
        bit = SEEN_SIGN_KEY;
    else if (strcmp(key, "curve_key") == 0)
        bit = SEEN_CURVE_KEY;
    else if (strcmp(key, "revoked_keys") == 0)
        bit = SEEN_REVOKED;
    else
        return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [agent %s]", key, id);
    if (al->seen & bit)
        return rsl_error_set(err, RSL_ECONFIG, "duplicate key '%s' in [agent %s]", key, id);
    al->seen |= bit;

    switch (bit) {
    case SEEN_NATION:
        if (!rsl_valid_nation_code(value))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "nation: '%s' is not a nation code (3 uppercase letters)", value);
        if (ctx->tax != NULL && rsl_taxonomy_nation_index(ctx->tax, value) < 0)
            return rsl_error_set(err, RSL_ECONFIG, "nation: '%s' is not in the nation list",
                                 value);
        memcpy(agent->nation, value, 4);
        return RSL_OK;
    case SEEN_ORGANISATION:
        if (value[0] == '\0')
            return rsl_error_set(err, RSL_ECONFIG, "organisation: empty");
        if (rsl_strlcpy(agent->organisation, value, sizeof(agent->organisation)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "organisation: longer than %d characters",
                                 RSL_ORGANISATION_MAX);
        return RSL_OK;
    case SEEN_SIGN_KEY:
        return parse_key_list(key, value, agent->sign_keys, agent->sign_key_ids,
                              &agent->n_sign_keys, err);
    case SEEN_REVOKED:
        return parse_key_list(key, value, agent->revoked_keys, agent->revoked_key_ids,
                              &agent->n_revoked, err);
    case SEEN_CURVE_KEY:
        al->curve_line = line;
        if (!rsl_z85_key_valid(value))
            return rsl_error_set(err, RSL_ECONFIG,
                                 "curve_key: not a 40-character Z85 CURVE public key");
        memcpy(agent->curve_key, value, RSL_Z85_KEY_LEN + 1);
        return RSL_OK;
    default:
        return rsl_error_set(err, RSL_ECONFIG, "internal error: key '%s'", key);
    }
}

/* Orderings for the two binary-search indexes. */
static int agent_cmp_id(const void *a, const void *b)
{
    return strcmp(((const struct agg_agent *)a)->id, ((const struct agg_agent *)b)->id);
}

static int agent_cmp_curve(const void *a, const void *b)
{
    const struct agg_agent *const *x = a;
    const struct agg_agent *const *y = b;
    return strcmp((*x)->curve_key, (*y)->curve_key);
}

/* (CURVE key, line) pairs for the duplicate check; ties in line order so
 * the message names the later line as the duplicate. */
struct curve_ref {
    const char *key;
    const char *id;
    int line;
};

static int curve_ref_cmp(const void *a, const void *b)
{
    const struct curve_ref *x = a;
    const struct curve_ref *y = b;
    int c = strcmp(x->key, y->key);
    if (c != 0)
        return c;
    return (x->line > y->line) - (x->line < y->line);
}

static void registry_free(struct agg_registry *reg)
{
    if (reg == NULL)
        return;
    free(reg->agents);
    free(reg->by_curve);
    free(reg);
}

/* Parse, check required keys per agent, refuse shared CURVE keys, then
 * build the indexes. The registry is published (*out) only when complete:
 * a reload that fails leaves the running one untouched. */
int agg_registry_load(const char *path, const struct rsl_taxonomy *tax,
                      struct agg_registry **out, struct rsl_error *err)
{
    struct reg_load ctx;
    struct agg_registry *reg = NULL;
    int rc;

    memset(&ctx, 0, sizeof(ctx));
    if (out == NULL || path == NULL)
        return rsl_error_set(err, RSL_EINVAL, "agg_registry_load: NULL argument");
    *out = NULL;
    reg = calloc(1, sizeof(*reg));
    if (reg == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    atomic_init(&reg->refs, 1);
    ctx.path = path;
    ctx.tax = tax;
    ctx.reg = reg;

    rc = rsl_ini_load(path, registry_handler, &ctx, err);
    if (rc != RSL_OK)
        goto out;

    for (size_t i = 0; i < reg->n_agents; i++) {
        const struct agg_agent *a = &reg->agents[i];
        static const struct {
            unsigned bit;
            const char *key;
        } required[] = {
            {SEEN_NATION, "nation"},
            {SEEN_ORGANISATION, "organisation"},
            {SEEN_SIGN_KEY, "sign_key"},
            {SEEN_CURVE_KEY, "curve_key"},
        };
        for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++) {
            if (!(ctx.load[i].seen & required[k].bit)) {
                rc = rsl_error_set(err, RSL_ECONFIG, "%s:%d: [agent %s]: missing required key '%s'",
                                   path, ctx.load[i].first_line, a->id, required[k].key);
                goto out;
            }
        }
    }

    /* The same CURVE key twice: ZAP could not tell the two agents apart, so
     * one could send as the other. Checked before sorting the agents, while
     * ctx.load still lines up with them, so the message can name lines. */
    if (reg->n_agents > 1) {
        struct curve_ref *refs = malloc(reg->n_agents * sizeof(*refs));
        if (refs == NULL) {
            rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < reg->n_agents; i++) {
            refs[i].key = reg->agents[i].curve_key;
            refs[i].id = reg->agents[i].id;
            refs[i].line = ctx.load[i].curve_line;
        }
        qsort(refs, reg->n_agents, sizeof(*refs), curve_ref_cmp);
        for (size_t i = 1; i < reg->n_agents; i++) {
            if (strcmp(refs[i - 1].key, refs[i].key) == 0) {
                rc = rsl_error_set(err, RSL_ECONFIG,
                                   "%s:%d: curve_key of [agent %s] is already enrolled for "
                                   "[agent %s] (line %d); each agent needs its own key pair",
                                   path, refs[i].line, refs[i].id, refs[i - 1].id,
                                   refs[i - 1].line);
                free(refs);
                goto out;
            }
        }
        free(refs);
    }

    /* Sort the agents by id, then build the CURVE index over the sorted
     * array (pointers into it stay valid: it is never moved again). */
    if (reg->n_agents > 0) {
        qsort(reg->agents, reg->n_agents, sizeof(*reg->agents), agent_cmp_id);
        reg->by_curve = malloc(reg->n_agents * sizeof(*reg->by_curve));
        if (reg->by_curve == NULL) {
            rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < reg->n_agents; i++)
            reg->by_curve[i] = &reg->agents[i];
        qsort(reg->by_curve, reg->n_agents, sizeof(*reg->by_curve), agent_cmp_curve);
    }

    *out = reg;
    reg = NULL; /* transferred */
out:
    free(ctx.load);
    registry_free(reg);
    return rc;
}

/* Relaxed is enough for taking a reference: the caller already holds one
 * (or the holder's mutex), so the object cannot go away meanwhile. */
struct agg_registry *agg_registry_ref(struct agg_registry *reg)
{
    if (reg != NULL)
        atomic_fetch_add_explicit(&reg->refs, 1, memory_order_relaxed);
    return reg;
}

void agg_registry_release(struct agg_registry **regp)
{
    if (regp == NULL || *regp == NULL)
        return;
    struct agg_registry *reg = *regp;
    *regp = NULL;
    /* acq_rel: the thread that frees must see every other user's reads done. */
    if (atomic_fetch_sub_explicit(&reg->refs, 1, memory_order_acq_rel) == 1)
        registry_free(reg);
}

size_t agg_registry_count(const struct agg_registry *reg)
{
    return reg != NULL ? reg->n_agents : 0;
}

const struct agg_agent *agg_registry_find_agent(const struct agg_registry *reg, const char *id)
{
    if (reg == NULL || id == NULL || reg->n_agents == 0)
        return NULL;
    size_t lo = 0;
    size_t hi = reg->n_agents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(id, reg->agents[mid].id);
        if (c == 0)
            return &reg->agents[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const struct agg_agent *agg_registry_find_curve(const struct agg_registry *reg,
                                                const char *z85_public_key)
{
    if (reg == NULL || z85_public_key == NULL || reg->n_agents == 0)
        return NULL;
    size_t lo = 0;
    size_t hi = reg->n_agents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z85_public_key, reg->by_curve[mid]->curve_key);
        if (c == 0)
            return reg->by_curve[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

enum agg_key_state agg_agent_key_state(const struct agg_agent *agent, const char *key_id,
                                       const uint8_t **public_key)
{
    if (public_key != NULL)
        *public_key = NULL;
    if (agent == NULL || key_id == NULL)
        return AGG_KEY_UNKNOWN;
    /* Revocation wins: an operator who revokes a key but forgets to remove
     * it from sign_key must still see it refused. */
    for (size_t i = 0; i < agent->n_revoked; i++)
        if (strcmp(agent->revoked_key_ids[i], key_id) == 0)
            return AGG_KEY_REVOKED;
    for (size_t i = 0; i < agent->n_sign_keys; i++) {
        if (strcmp(agent->sign_key_ids[i], key_id) == 0) {
            if (public_key != NULL)
                *public_key = agent->sign_keys[i];
            return AGG_KEY_VALID;
        }
    }
    return AGG_KEY_UNKNOWN;
}

const uint8_t *agg_agent_revoked_key(const struct agg_agent *agent, const char *key_id)
{
    if (agent == NULL || key_id == NULL)
        return NULL;
    for (size_t i = 0; i < agent->n_revoked; i++)
        if (strcmp(agent->revoked_key_ids[i], key_id) == 0)
            return agent->revoked_keys[i];
    return NULL;
}

int agg_registry_holder_new(struct agg_registry **reg, struct agg_registry_holder **out)
{
    if (out == NULL)
        return RSL_EINVAL;
    *out = NULL;
    if (reg == NULL || *reg == NULL)
        return RSL_EINVAL;
    struct agg_registry_holder *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return RSL_ENOMEM;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        return RSL_ENOMEM;
    }
    h->current = *reg;
    *reg = NULL; /* transferred */
    *out = h;
    return RSL_OK;
}

void agg_registry_holder_free(struct agg_registry_holder **holder)
{
    if (holder == NULL || *holder == NULL)
        return;
    struct agg_registry_holder *h = *holder;
    agg_registry_release(&h->current);
    pthread_mutex_destroy(&h->lock);
    free(h);
    *holder = NULL;
}

struct agg_registry *agg_registry_holder_get(struct agg_registry_holder *holder)
{
    if (holder == NULL)
        return NULL;
    pthread_mutex_lock(&holder->lock);
    struct agg_registry *reg = agg_registry_ref(holder->current);
    pthread_mutex_unlock(&holder->lock);
    return reg;
}

void agg_registry_holder_swap(struct agg_registry_holder *holder, struct agg_registry **reg)
{
    if (holder == NULL || reg == NULL || *reg == NULL)
        return;
    pthread_mutex_lock(&holder->lock);
    struct agg_registry *old = holder->current;
    holder->current = *reg;
    pthread_mutex_unlock(&holder->lock);
    *reg = NULL; /* transferred */
    /* Outside the lock: freeing a large registry must not stall look-ups. */
    agg_registry_release(&old);
}
