/*
 * fuzz_agent_config.c - agent.conf as the agent reads it (agent_config_load,
 * agent/config.c): the strict INI loader plus every [agent], [aggregator],
 * [collector NAME], [taxonomy] and [log] handler and the whole-file checks.
 *
 * The loader takes a path, so each input is written to agent.conf in a
 * private temp folder (fuzz_tmp.h) that also holds a small taxonomy:
 * `[taxonomy] path = indicators.csv` reaches the nation check.
 *
 * Beyond "no crash, no leak, no UB": a loaded config keeps the promises the
 * daemon relies on without re-checking (at least one endpoint and one
 * collector, a valid agent id, bounded intervals and windows), and a
 * refused one says why in one line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "fuzz_tmp.h"
#include "rsl/codec.h"
#include "rsl/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_config(const struct agent_config *cfg)
{
    if (!rsl_valid_agent_id(cfg->id) || strlen(cfg->nation) != 3 || cfg->n_endpoints == 0 ||
        cfg->n_endpoints > AGENT_MAX_ENDPOINTS || cfg->n_collectors == 0 ||
        cfg->n_collectors > AGENT_MAX_COLLECTORS || cfg->window == 0 ||
        cfg->window > AGENT_MAX_WINDOW || cfg->max_message_bytes < AGENT_MIN_MESSAGE_BYTES ||
        cfg->max_message_bytes > AGENT_MAX_MESSAGE_BYTES || cfg->resend_timeout_ms <= 0 ||
        cfg->keys_dir[0] == '\0' || cfg->spool_dir[0] == '\0' ||
        strlen(cfg->server_key) != RSL_Z85_KEY_LEN)
        abort();
    for (size_t i = 0; i < cfg->n_collectors; i++) {
        const struct agent_collector_config *c = &cfg->collectors[i];
        if (c->name[0] == '\0' || c->interval_ms < AGENT_MIN_INTERVAL_MS ||
            strcmp(agent_collector_type_name(c->type), "unknown") == 0)
            abort();
        if (c->type == AGENT_COLLECTOR_STATIC && !rsl_valid_indicator_id(c->indicator))
            abort();
        if (c->type == AGENT_COLLECTOR_EXEC && c->command[0] == '\0')
            abort();
        if (c->type == AGENT_COLLECTOR_FILE && (c->path == NULL || c->path[0] == '\0'))
            abort();
        if (c->type == AGENT_COLLECTOR_HTTP && (c->url == NULL || c->url[0] == '\0'))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static char path[640];
    if (!ready) {
        rsl_log_init("fuzz_agent_config", RSL_LOG_ERR); /* warnings are expected */
        fuzz_tmp_write_taxonomy();
        ready = 1;
    }
    fuzz_tmp_write("agent.conf", data, size, path, sizeof(path));

    struct rsl_error err = {0};
    struct agent_config *cfg = NULL;
    int rc = agent_config_load(path, &cfg, &err);
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
    agent_config_free(&cfg);
    return 0;
}
