/*
 * jsonbody.h - the flat JSON object an http collector may return
 * (ARCHITECTURE section 4): {"indicator": number, ...}.
 *
 * The body comes from a server we do not control: the parser is bounded
 * (AGENT_JSON_MAX_BYTES), all-or-nothing like the line format, and says
 * "ORIGIN:LINE:COLUMN: what" for syntax errors (from jansson) and
 * "ORIGIN: 'key': what" for content errors. Accepted: one JSON object whose
 * members are valid indicator ids mapped to finite numbers. Rejected:
 * anything else at the top level, nested values, strings, booleans, null,
 * duplicate keys, numbers too large for a double, NUL bytes, trailing data.
 * Units and observation times cannot be expressed: units are empty (the
 * taxonomy's) and observed_at_ms is 0 (the collection time).
 *
 * Lives in the agent: no other program reads this format.
 */
#ifndef AGENT_JSONBODY_H
#define AGENT_JSONBODY_H

#include <stddef.h>

#include "rsl/error.h"
#include "rsl/lineformat.h"

/* Largest JSON body accepted (also the http collector's body cap). */
#define AGENT_JSON_MAX_BYTES (1024 * 1024)

/* Parse `len` bytes (need not be NUL-terminated). At most max_samples
 * members (RSL_ETOOBIG beyond). *out is a new array (caller frees), *n its
 * length, in the object's order; both cleared on error. An empty object
 * gives n = 0. */
int agent_json_parse(const char *buf, size_t len, const char *origin, size_t max_samples,
                     struct rsl_sample **out, size_t *n, struct rsl_error *err);

#endif
