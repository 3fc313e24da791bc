/*
 * codec.h - the wire messages (proto/resilience/v1/resilience.proto) with
 * size limits and validation.
 *
 * Decoders take untrusted bytes: they enforce a size bound before parsing,
 * reject anything protobuf-c rejects (truncation, wrong wire types, lengths
 * past the end), and then validate the content (required fields, lengths,
 * character sets, finite values). Errors name the field.
 *
 * The protobuf-c generated structs are the in-memory form; they are our own
 * schema, so they appear here rather than being copied into look-alikes.
 */
#ifndef RSL_CODEC_H
#define RSL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "resilience/v1/resilience.pb-c.h"
#include "rsl/error.h"

typedef Resilience__V1__Measurement rsl_measurement;
typedef Resilience__V1__Report rsl_report;
typedef Resilience__V1__SignedReport rsl_signed_report;
typedef Resilience__V1__Ack rsl_ack;

/* Default cap on one ZeroMQ message (aggregator `max_message_bytes`). */
#define RSL_MAX_MESSAGE_BYTES_DEFAULT (256 * 1024)

/* Content limits checked by rsl_report_validate. */
#define RSL_AGENT_ID_MAX 64        /* [A-Za-z0-9._-], starts alphanumeric */
#define RSL_ORGANISATION_MAX 256
#define RSL_MARKING_MAX 128
#define RSL_INDICATOR_ID_MAX 128   /* [a-z0-9_.], starts with a letter */
#define RSL_UNIT_MAX 32            /* [A-Za-z0-9_%/.-] or empty */
#define RSL_SOURCE_MAX 128
#define RSL_PARTNER_ID_MAX 32      /* [A-Za-z0-9_-] */
#define RSL_MAX_RELEASABLE 16      /* releasable_to entries per measurement */
#define RSL_MAX_MEASUREMENTS 4096  /* per report */
#define RSL_ACK_DETAIL_MAX 1024

/* Decode a SignedReport frame of `len` bytes. RSL_ETOOBIG if len > max_len;
 * RSL_EPARSE if malformed or if report/signature/key_id are missing or of the
 * wrong size (signature 64 bytes, key_id 32 lowercase hex). Does not decode
 * the inner report. Free with rsl_signed_report_free. */
int rsl_signed_report_decode(const uint8_t *buf, size_t len, size_t max_len,
                             rsl_signed_report **out, struct rsl_error *err);
void rsl_signed_report_free(rsl_signed_report **msg);

/* Decode and validate (rsl_report_validate) the inner Report bytes. */
int rsl_report_decode(const uint8_t *buf, size_t len, rsl_report **out, struct rsl_error *err);
void rsl_report_free(rsl_report **msg);

/* Check a Report's content: agent_id, nation (3 uppercase letters),
 * sequence in 1..INT64_MAX, created_at_ms > 0, 1..RSL_MAX_MEASUREMENTS
 * measurements each with a valid indicator id, finite value, valid unit,
 * observed_at_ms > 0, valid partner ids; lengths as above; valid UTF-8.
 * The message names the offending field, e.g. "measurements[3].value: not finite". */
int rsl_report_validate(const rsl_report *report, struct rsl_error *err);

/* Character-set checks shared by config loading and validation. */
int rsl_valid_agent_id(const char *s);
int rsl_valid_nation_code(const char *s);   /* syntax only: [A-Z]{3} */
int rsl_valid_indicator_id(const char *s);
int rsl_valid_unit(const char *s);
int rsl_valid_partner_id(const char *s);

/* Serialize into a new malloc'd buffer (caller frees). */
int rsl_report_encode(const rsl_report *report, uint8_t **out, size_t *len);
int rsl_signed_report_encode(const rsl_signed_report *msg, uint8_t **out, size_t *len);
int rsl_ack_encode(const rsl_ack *ack, uint8_t **out, size_t *len);

/* Decode an Ack (the agent side of the wire); bounded by max_len. */
int rsl_ack_decode(const uint8_t *buf, size_t len, size_t max_len, rsl_ack **out,
                   struct rsl_error *err);
void rsl_ack_free(rsl_ack **msg);

/* "ACCEPTED", "DUPLICATE", "REJECTED", "RETRY_LATER" or "UNKNOWN". */
const char *rsl_ack_status_name(int status);

#endif
