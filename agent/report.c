/*
 * report.c - build, validate, sign and wrap one report (see report.h).
 *
 * The protobuf-c structs only point at strings owned elsewhere (config,
 * samples): nothing here is freed field by field, only the two pointer
 * arrays and the encoded buffers.
 */
#include "report.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/codec.h"
#include "rsl/sign.h"

int agent_report_build(const struct agent_config *cfg, const struct agent_collector_config *cc,
                       const struct rsl_signer *signer, uint64_t sequence, int64_t created_at_ms,
                       int64_t collected_at_ms, const struct rsl_sample *samples, size_t n,
                       uint8_t **out, size_t *out_len, struct rsl_error *err)
{
    rsl_report report = RESILIENCE__V1__REPORT__INIT;
    rsl_signed_report signed_report = RESILIENCE__V1__SIGNED_REPORT__INIT;
    rsl_measurement *ms = NULL;
    rsl_measurement **ptrs = NULL;
    char *partners[RSL_MAX_RELEASABLE];
    uint8_t signature[RSL_ED25519_SIGNATURE_BYTES];
    uint8_t *report_bytes = NULL;
    size_t report_len = 0;
    uint8_t *frame = NULL;
    size_t frame_len = 0;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (n == 0 || n > RSL_MAX_MEASUREMENTS)
        return rsl_error_set(err, RSL_EINVAL, "report: %zu measurements (1..%d)", n,
                             RSL_MAX_MEASUREMENTS);
    ms = calloc(n, sizeof(*ms));
    ptrs = calloc(n, sizeof(*ptrs));
    if (ms == NULL || ptrs == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    /* One releasable list per run: the collector's if it set one (even an
     * empty one), else the agent default. */
    const struct agent_partners *rel = cc->releasable_set ? &cc->releasable_to
                                                          : &cfg->releasable_to;
    for (size_t i = 0; i < rel->n; i++)
        partners[i] = (char *)rel->id[i];

    for (size_t i = 0; i < n; i++) {
        resilience__v1__measurement__init(&ms[i]);
        ms[i].indicator = (char *)samples[i].indicator;
        ms[i].value = samples[i].value;
        ms[i].unit = (char *)samples[i].unit;
        ms[i].observed_at_ms = samples[i].observed_at_ms > 0 ? samples[i].observed_at_ms
                                                             : collected_at_ms;
        ms[i].n_releasable_to = rel->n;
        ms[i].releasable_to = rel->n > 0 ? partners : NULL;
        ms[i].source = (char *)cc->name;
        ptrs[i] = &ms[i];
    }
    report.agent_id = (char *)cfg->id;
    report.nation = (char *)cfg->nation;
    report.organisation = (char *)cfg->organisation;
    report.sequence = sequence;
    report.created_at_ms = created_at_ms;
    report.n_measurements = n;
    report.measurements = ptrs;
    report.marking = (char *)cfg->marking;

    /* Refuse here what the aggregator would refuse: a report it rejects
     * would sit in rejected/ instead of telling the operator now. */
    if ((rc = rsl_report_validate(&report, err)) != RSL_OK) {
        rsl_error_prefix(err, "report %" PRIu64, sequence);
        goto out;
    }
    if ((rc = rsl_report_encode(&report, &report_bytes, &report_len)) != RSL_OK) {
        rsl_error_set(err, rc, "report %" PRIu64 ": encoding failed", sequence);
        goto out;
    }
    if ((rc = rsl_sign_report(signer, report_bytes, report_len, signature)) != RSL_OK) {
        rsl_error_set(err, rc, "report %" PRIu64 ": signing failed", sequence);
        goto out;
    }
    signed_report.report.data = report_bytes;
    signed_report.report.len = report_len;
    signed_report.signature.data = signature;
    signed_report.signature.len = sizeof(signature);
    signed_report.key_id = (char *)rsl_signer_key_id(signer);
    if ((rc = rsl_signed_report_encode(&signed_report, &frame, &frame_len)) != RSL_OK) {
        rsl_error_set(err, rc, "report %" PRIu64 ": encoding failed", sequence);
        goto out;
    }
    if (frame_len > cfg->max_message_bytes) {
        rc = rsl_error_set(err, RSL_ETOOBIG,
                           "report %" PRIu64 " from collector %s is %zu bytes, over "
                           "max_message_bytes %zu",
                           sequence, cc->name, frame_len, cfg->max_message_bytes);
        goto out;
    }
    *out = frame;
    *out_len = frame_len;
    frame = NULL; /* transferred */
out:
    free(frame);
    free(report_bytes);
    free(ptrs);
    free(ms);
    return rc;
}
