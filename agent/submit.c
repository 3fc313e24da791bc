/*
 * submit.c - manual reports into the shared spool (see submit.h).
 *
 * The sequence lock is held from taking the number until the entry is in
 * pending/: the daemon clears tmp/ only under the same lock, so it can
 * never remove a half-written submit, and the daemon's inotify watch sees
 * the rename.
 */
#include "submit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "rsl/codec.h"
#include "rsl/util.h"
#include "seq.h"
#include "spool.h"

#define ARG_MAX_LEN 512

int agent_submit_parse_arg(const char *arg, struct rsl_sample *out, struct rsl_error *err)
{
    char buf[ARG_MAX_LEN + 1];
    char shown[64];
    char part[48];
    memset(out, 0, sizeof(*out));
    size_t len = strlen(arg);
    if (len > ARG_MAX_LEN)
        return rsl_error_set(err, RSL_EINVAL, "'%s': longer than %d characters",
                             rsl_text_show(arg, shown, sizeof(shown)), ARG_MAX_LEN);
    memcpy(buf, arg, len + 1);
    char *eq = strchr(buf, '=');
    if (eq == NULL)
        return rsl_error_set(err, RSL_EINVAL, "'%s': expected INDICATOR=VALUE[:UNIT]",
                             rsl_text_show(arg, shown, sizeof(shown)));
    *eq = '\0';
    const char *indicator = buf;
    char *value = eq + 1;
    char *unit = strchr(value, ':');
    if (unit != NULL)
        *unit++ = '\0';
    if (!rsl_valid_indicator_id(indicator) || strlen(indicator) > RSL_INDICATOR_ID_MAX)
        return rsl_error_set(err, RSL_EINVAL,
                             "'%s': '%s' is not an indicator id (a-z 0-9 _ ., starting with a "
                             "letter)",
                             rsl_text_show(arg, shown, sizeof(shown)),
                             rsl_text_show(indicator, part, sizeof(part)));
    if (value[0] == '\0' || rsl_parse_double(value, &out->value) != RSL_OK)
        return rsl_error_set(err, RSL_EINVAL, "'%s': '%s' is not a finite number",
                             rsl_text_show(arg, shown, sizeof(shown)),
                             rsl_text_show(value, part, sizeof(part)));
    if (unit != NULL) {
        if (unit[0] == '\0' || strlen(unit) > RSL_UNIT_MAX || !rsl_valid_unit(unit))
            return rsl_error_set(err, RSL_EINVAL,
                                 "'%s': '%s' is not a unit (A-Z a-z 0-9 _ %% / "
                                 ". -, at most %d)",
                                 rsl_text_show(arg, shown, sizeof(shown)),
                                 rsl_text_show(unit, part, sizeof(part)), RSL_UNIT_MAX);
        memcpy(out->unit, unit, strlen(unit) + 1);
    }
    memcpy(out->indicator, indicator, strlen(indicator) + 1);
    return RSL_OK;
}

int agent_submit(const struct agent_config *cfg, const struct agent_keys *keys,
                 const struct rsl_sample *samples, size_t n, uint64_t *sequence,
                 struct rsl_error *err)
{
    struct agent_seq *seq = NULL;
    struct agent_spool *spool = NULL;
    struct agent_collector_config source;
    char path[AGENT_PATH_MAX + 16];
    uint8_t *frame = NULL;
    size_t len = 0;
    bool locked = false;
    int rc;

    *sequence = 0;
    memset(&source, 0, sizeof(source));
    memcpy(source.name, AGENT_SUBMIT_SOURCE, sizeof(AGENT_SUBMIT_SOURCE));
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    if ((rc = rsl_mkdir_p(cfg->spool_dir, 0700, err)) != RSL_OK ||
        (rc = agent_seq_open(path, &seq, err)) != RSL_OK)
        goto out;
    if ((rc = agent_seq_lock(seq, err)) != RSL_OK)
        goto out;
    locked = true;
    if ((rc = agent_spool_open_writer(cfg->spool_dir, &spool, err)) != RSL_OK)
        goto out;
    uint64_t n_seq = 0;
    if ((rc = agent_seq_take(seq, &n_seq, err)) != RSL_OK)
        goto out;
    if ((rc = agent_report_build(cfg, &source, keys->signer, n_seq, rsl_now_ms(), rsl_now_ms(),
                                 samples, n, &frame, &len, err)) != RSL_OK)
        goto out;
    if (cfg->spool_full_policy == AGENT_SPOOL_REFUSE_NEW) {
        struct agent_spool_summary sum;
        if ((rc = agent_spool_inspect(cfg->spool_dir, &sum, err)) != RSL_OK)
            goto out;
        if (sum.bytes + agent_spool_entry_bytes(spool, len) > cfg->spool_max_bytes) {
            rc = rsl_error_set(err, RSL_ENOSPC,
                               "the spool is full (%" PRIu64 " of %" PRIu64
                               " bytes, spool_full_policy = refuse_new); nothing submitted",
                               sum.bytes, cfg->spool_max_bytes);
            goto out;
        }
    }
    rc = agent_spool_append(spool, n_seq, frame, len, err);
    if (rc == RSL_EEXIST)
        rsl_error_prefix(err, "the sequence counter is behind the spool (start the agent once: it "
                              "repairs the counter)");
    if (rc == RSL_OK)
        *sequence = n_seq;
out:
    free(frame);
    agent_spool_close(&spool);
    if (locked)
        agent_seq_unlock(seq);
    agent_seq_close(&seq);
    return rc;
}
