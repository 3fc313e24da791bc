/*
 * error.c - RSL_E* codes and the one-line error message buffer.
 */
#include "rsl/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *rsl_strerror(int err)
{
    switch (err) {
    case RSL_OK: return "success";
    case RSL_EINVAL: return "invalid argument or value";
    case RSL_ENOMEM: return "out of memory";
    case RSL_EIO: return "input/output error";
    case RSL_EPARSE: return "malformed input";
    case RSL_ETOOBIG: return "too large";
    case RSL_EPERM: return "permission problem";
    case RSL_ENOENT: return "not found";
    case RSL_ECRYPTO: return "cryptographic failure";
    case RSL_EVERIFY: return "signature does not verify";
    case RSL_EEXIST: return "already exists";
    case RSL_EAGAIN: return "try again later";
    case RSL_ECONFIG: return "configuration error";
    case RSL_ESTORE: return "storage error";
    case RSL_ECORRUPT: return "integrity check failed";
    case RSL_ENOSPC: return "no space left on device";
    default: return "unknown error";
    }
}

int rsl_error_set(struct rsl_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
    return code;
}

int rsl_error_prefix(struct rsl_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return RSL_EINVAL;
    char prefix[RSL_ERROR_TEXT_MAX];
    char old[RSL_ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->text, sizeof(old));
    /* Truncation keeps the start of the line, which names the place. */
    if (snprintf(err->text, sizeof(err->text), "%s: %s", prefix, old) < 0)
        err->text[0] = '\0';
    return err->code;
}

void rsl_error_clear(struct rsl_error *err)
{
    if (err == NULL)
        return;
    err->code = RSL_OK;
    err->text[0] = '\0';
}
