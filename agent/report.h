/*
 * report.h - turning one collector run into a signed report frame.
 *
 * A report carries the agent's identity from the config, the sequence
 * number the caller already took (and persisted), and the run's samples as
 * measurements: observed_at_ms defaults to the collection time, unit and
 * indicator come from the sample, releasable_to from the collector (or the
 * agent default), source is the collector's name. The Report is encoded,
 * validated exactly as the aggregator will (rsl_report_validate), signed
 * with the domain prefix and wrapped in a SignedReport with the key id.
 */
#ifndef AGENT_REPORT_H
#define AGENT_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "rsl/error.h"
#include "rsl/lineformat.h"

struct rsl_signer;

/* Build the SignedReport frame into a new buffer (caller frees *out).
 * Samples without an observation time get collected_at_ms.
 * RSL_EINVAL with the field named when the content would not validate;
 * RSL_ETOOBIG when the frame exceeds cfg->max_message_bytes (the aggregator
 * would drop it and disconnect us: such a report must never be spooled). */
int agent_report_build(const struct agent_config *cfg, const struct agent_collector_config *cc,
                       const struct rsl_signer *signer, uint64_t sequence, int64_t created_at_ms,
                       int64_t collected_at_ms, const struct rsl_sample *samples, size_t n,
                       uint8_t **out, size_t *out_len, struct rsl_error *err);

#endif
