/*
 * registry.h - the enrolled agents (ARCHITECTURE section 3).
 *
 * The registry file is INI, one section per agent:
 *
 *   [agent DEU-BMI-01]
 *   nation = DEU
 *   organisation = Federal Ministry of the Interior
 *   sign_key = <base64 raw Ed25519 public key>[, <another> ...]
 *   curve_key = <Z85 CURVE public key>
 *   revoked_keys = <base64>[, ...]          ; optional
 *
 * A loaded struct agg_registry is immutable and reference counted, so the
 * ZAP thread and the ingest thread can keep using the registry they looked
 * up while a SIGHUP reload builds a new one. struct agg_registry_holder is
 * the one mutable place: a pointer to the current registry, guarded by a
 * mutex that is held only to copy or swap that pointer and bump its count.
 */
#ifndef AGG_REGISTRY_H
#define AGG_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"

#define AGG_REGISTRY_MAX_KEYS 8       /* sign_key / revoked_keys entries per agent */
#define AGG_REGISTRY_MAX_AGENTS 10000

/* One enrolled agent; read-only, owned by its registry. */
struct agg_agent {
    char id[RSL_AGENT_ID_MAX + 1];
    char nation[4];
    char organisation[RSL_ORGANISATION_MAX + 1];
    char curve_key[RSL_Z85_KEY_LEN + 1];             /* Z85 */
    size_t n_sign_keys;
    uint8_t sign_keys[AGG_REGISTRY_MAX_KEYS][RSL_ED25519_PUBLIC_BYTES];
    char sign_key_ids[AGG_REGISTRY_MAX_KEYS][RSL_KEY_ID_HEX_LEN + 1];
    size_t n_revoked;
    char revoked_key_ids[AGG_REGISTRY_MAX_KEYS][RSL_KEY_ID_HEX_LEN + 1];
    /* The raw revoked keys, kept so `resilience-ctl audit` can still check
     * what a since-revoked key signed (ingest never uses them). */
    uint8_t revoked_keys[AGG_REGISTRY_MAX_KEYS][RSL_ED25519_PUBLIC_BYTES];
};

struct agg_registry;

/* Load and validate `path`: every agent id valid, nation in the taxonomy's
 * nation list, organisation present, every sign_key / revoked_keys entry
 * base64 of 32 bytes, curve_key valid Z85, no CURVE key enrolled twice.
 * Errors name "FILE:LINE" (or "FILE: [agent X]" for a missing key). The new
 * registry has one reference: release it with agg_registry_release. */
int agg_registry_load(const char *path, const struct rsl_taxonomy *tax,
                      struct agg_registry **out, struct rsl_error *err);

/* Take another reference (returns reg) / drop one and NULL the caller's
 * pointer; the last release frees. Both are thread-safe and NULL-safe. */
struct agg_registry *agg_registry_ref(struct agg_registry *reg);
void agg_registry_release(struct agg_registry **reg);

size_t agg_registry_count(const struct agg_registry *reg);

/* Look-ups; NULL when absent. The agent is borrowed from reg. */
const struct agg_agent *agg_registry_find_agent(const struct agg_registry *reg, const char *id);
const struct agg_agent *agg_registry_find_curve(const struct agg_registry *reg,
                                                const char *z85_public_key);

enum agg_key_state {
    AGG_KEY_UNKNOWN = 0, /* not one of this agent's keys */
    AGG_KEY_VALID = 1,   /* enrolled, not revoked: *public_key is set */
    AGG_KEY_REVOKED = 2, /* listed in revoked_keys (wins over sign_key) */
};

/* State of `key_id` (32 lowercase hex) for `agent`. For AGG_KEY_VALID,
 * *public_key (if not NULL) points at the raw key inside the agent. */
enum agg_key_state agg_agent_key_state(const struct agg_agent *agent, const char *key_id,
                                       const uint8_t **public_key);

/* The raw public key of `agent`'s revoked key `key_id`, or NULL if it has
 * no such revoked key. For audits of what was stored before a revocation;
 * never a reason to accept anything new. */
const uint8_t *agg_agent_revoked_key(const struct agg_agent *agent, const char *key_id);

/* ---- the swappable "current registry" ---------------------------------- */

struct agg_registry_holder;

/* A holder owning `*reg` (the reference moves in; *reg is NULLed). */
int agg_registry_holder_new(struct agg_registry **reg, struct agg_registry_holder **out);
/* Releases the held registry and frees the holder; NULL-safe. Only when no
 * thread uses the holder any more. */
void agg_registry_holder_free(struct agg_registry_holder **holder);

/* A new reference to the current registry (never NULL for a live holder):
 * release it with agg_registry_release when done. */
struct agg_registry *agg_registry_holder_get(struct agg_registry_holder *holder);

/* Make `*reg` current (reference moves in); the previous one is released
 * and freed once its last user lets go. */
void agg_registry_holder_swap(struct agg_registry_holder *holder, struct agg_registry **reg);

#endif
