/*
 * fuzz_registry.c - the aggregator's registry of enrolled agents
 * (agents.conf, agg_registry_load in aggregator/registry.c): INI with one
 * [agent ID] section each, base64 Ed25519 keys (several for rotation,
 * revoked ones), Z85 CURVE keys, nations checked against a fixed taxonomy.
 *
 * The loader takes a path, so each input is written to agents.conf in a
 * private temp folder (fuzz_tmp.h).
 *
 * Beyond "no crash, no leak, no UB": every agent a loaded registry holds
 * is found again by its id and by its CURVE key (what the ZAP handler
 * does), its key ids are known to it and revoked keys win, and a refused
 * file says why in one line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/registry.h"
#include "fuzz_tmp.h"
#include "rsl/codec.h"
#include "rsl/log.h"
#include "rsl/taxonomy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rsl_taxonomy *taxonomy;

/* Ids worth looking up: the seeds' agents. Ids found in the input itself
 * are checked too (see below). */
static void check_agent(const struct agg_registry *reg, const struct agg_agent *a)
{
    if (a == NULL)
        return;
    if (!rsl_valid_agent_id(a->id) || rsl_taxonomy_nation_index(taxonomy, a->nation) < 0 ||
        a->n_sign_keys == 0 || a->n_sign_keys > AGG_REGISTRY_MAX_KEYS ||
        a->n_revoked > AGG_REGISTRY_MAX_KEYS)
        abort();
    if (agg_registry_find_curve(reg, a->curve_key) != a)
        abort(); /* the ZAP handler finds agents by CURVE key */
    for (size_t i = 0; i < a->n_sign_keys; i++) {
        enum agg_key_state st = agg_agent_key_state(a, a->sign_key_ids[i], NULL);
        if (st == AGG_KEY_UNKNOWN)
            abort();
    }
    for (size_t i = 0; i < a->n_revoked; i++) {
        if (agg_agent_key_state(a, a->revoked_key_ids[i], NULL) != AGG_KEY_REVOKED ||
            agg_agent_revoked_key(a, a->revoked_key_ids[i]) == NULL)
            abort(); /* revoked wins over sign_key */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[640];
    struct rsl_error err = {0};
    if (taxonomy == NULL) {
        rsl_log_init("fuzz_registry", RSL_LOG_ERR);
        taxonomy = calloc(1, sizeof(*taxonomy));
        if (taxonomy == NULL ||
            rsl_taxonomy_parse_indicators(fuzz_indicators_csv, sizeof(fuzz_indicators_csv) - 1,
                                          "fuzz", taxonomy, &err) != RSL_OK ||
            rsl_taxonomy_parse_nations(fuzz_nations_csv, sizeof(fuzz_nations_csv) - 1, "fuzz",
                                       taxonomy, &err) != RSL_OK) {
            fprintf(stderr, "fuzz_registry: taxonomy: %s\n", err.text);
            abort();
        }
    }
    fuzz_tmp_write("agents.conf", data, size, path, sizeof(path));

    struct agg_registry *reg = NULL;
    int rc = agg_registry_load(path, taxonomy, &reg, &err);
    if (rc != RSL_OK) {
        if (reg != NULL)
            abort();
        fuzz_check_error(err.text);
        return 0;
    }
    if (reg == NULL || agg_registry_count(reg) > AGG_REGISTRY_MAX_AGENTS)
        abort();
    fuzz_note_ok();
    /* Every "[agent ID]" header in the input names an agent now loaded. */
    size_t found = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        char id[RSL_AGENT_ID_MAX + 8];
        size_t len = (size_t)(line_end - p);
        if (len > 8 && len < sizeof(id) + 7 && memcmp(p, "[agent ", 7) == 0 &&
            line_end[-1] == ']') {
            memcpy(id, p + 7, len - 8);
            id[len - 8] = '\0';
            const struct agg_agent *a = agg_registry_find_agent(reg, id);
            if (a != NULL) {
                check_agent(reg, a);
                found++;
            }
        }
        p = line_end + 1;
    }
    if (found > agg_registry_count(reg))
        abort();
    agg_registry_release(&reg);
    return 0;
}
