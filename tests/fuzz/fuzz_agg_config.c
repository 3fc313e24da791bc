/*
 * fuzz_agg_config.c - aggregator.conf as the aggregator reads it
 * (agg_config_load, aggregator/config.c): the strict INI loader plus the
 * [ingest], [store], [https], [taxonomy], [token], [client], [partner] and
 * [log] handlers and the checks that need the whole file and the taxonomy.
 *
 * The loader takes a path, so each input is written to aggregator.conf in
 * a private temp folder (fuzz_tmp.h) beside a small taxonomy, which seeds
 * name with `[taxonomy] path = indicators.csv` (nations.csv beside it).
 *
 * Beyond "no crash, no leak, no UB": a loaded config has what the daemon
 * uses without re-checking (a taxonomy, at least one bind endpoint, a
 * listen port, worker counts in range, tokens whose nation exists), and a
 * refused one says why in one line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/config.h"
#include "fuzz_tmp.h"
#include "rsl/log.h"
#include "rsl/taxonomy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_config(const struct agg_config *cfg)
{
    if (cfg->taxonomy == NULL || cfg->n_bind == 0 || cfg->n_bind > AGG_MAX_BINDS ||
        cfg->https_threads < 1 || cfg->https_threads > 64 || cfg->ingest_workers < 1 ||
        cfg->ingest_workers > AGG_MAX_WORKERS || cfg->ingest_max_queue == 0 ||
        cfg->ingest_batch_max == 0 || cfg->keys_dir[0] == '\0' ||
        cfg->registry_path[0] == '\0' || cfg->store_path[0] == '\0' ||
        cfg->https_cert[0] == '\0' || cfg->https_key[0] == '\0' || cfg->max_future_skew_ms < 0)
        abort();
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        const struct agg_token *t = &cfg->tokens[i];
        if (t->name[0] == '\0')
            abort();
        if (t->role == AGG_ROLE_NATION && rsl_taxonomy_nation_index(cfg->taxonomy, t->nation) < 0)
            abort();
        if (t->role == AGG_ROLE_PARTNER && t->partner[0] == '\0')
            abort();
        /* The look-up the transport does must find every token. */
        if (agg_config_token_find(cfg, t->sha256) == NULL)
            abort();
    }
    for (size_t i = 0; i < cfg->n_clients; i++)
        if (agg_config_client_find(cfg, cfg->clients[i].subject) == NULL)
            abort();
    for (size_t i = 0; i < cfg->n_partners; i++)
        if (cfg->partners[i].id[0] == '\0' || cfg->partners[i].min_nations < 1)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static char path[640];
    if (!ready) {
        rsl_log_init("fuzz_agg_config", RSL_LOG_ERR); /* warnings are expected */
        fuzz_tmp_write_taxonomy();
        ready = 1;
    }
    fuzz_tmp_write("aggregator.conf", data, size, path, sizeof(path));

    struct rsl_error err = {0};
    struct agg_config *cfg = NULL;
    int rc = agg_config_load(path, &cfg, &err);
    if (rc == RSL_OK) {
        if (cfg == NULL)
            abort();
        check_config(cfg);
        fuzz_note_ok();
    } else {
        if (cfg != NULL)
            abort();
        fuzz_check_error(err.text);
    }
    agg_config_free(&cfg);
    return 0;
}
