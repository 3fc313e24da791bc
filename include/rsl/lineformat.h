/*
 * lineformat.h - the collector output format (ARCHITECTURE section 4).
 *
 * One measurement a line: `<indicator> <value> [<unit>] [<observed_at_ms>]`,
 * fields separated by spaces or tabs; `#` starts a comment; blank lines are
 * ignored. This is untrusted input (collector programs, drop files, HTTP
 * bodies): the parser is bounded, rejects the whole input on the first bad
 * line and says "ORIGIN:LINE: what".
 */
#ifndef RSL_LINEFORMAT_H
#define RSL_LINEFORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "rsl/codec.h"
#include "rsl/error.h"

#define RSL_LINEFORMAT_MAX_LINE 1024

struct rsl_sample {
    char indicator[RSL_INDICATOR_ID_MAX + 1];
    double value;                       /* finite */
    char unit[RSL_UNIT_MAX + 1];        /* "" when not given */
    int64_t observed_at_ms;             /* 0 when not given */
};

/* Parse `len` bytes (need not be NUL-terminated; a NUL byte is an error).
 * At most max_samples samples (RSL_ETOOBIG beyond). *out is a new array
 * (caller frees), *n its length; both cleared on error. `origin` names the
 * input in messages (e.g. "collector fuel"). */
int rsl_lineformat_parse(const char *buf, size_t len, const char *origin, size_t max_samples,
                         struct rsl_sample **out, size_t *n, struct rsl_error *err);

#endif
