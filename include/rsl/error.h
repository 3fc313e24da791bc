/*
 * error.h - the one error space of the shared library and the programs.
 *
 * Every fallible function returns int: RSL_OK (0) or a negative RSL_E* code.
 * Functions that can say more take a `struct rsl_error *` (may be NULL) and
 * write one human-readable line into it that names the thing and the place,
 * e.g. "agent.conf:14: unknown key 'intervall' in [collector fuel]".
 */
#ifndef RSL_ERROR_H
#define RSL_ERROR_H

#include <stddef.h>

enum {
    RSL_OK = 0,
    RSL_EINVAL = -1,    /* bad argument or bad value */
    RSL_ENOMEM = -2,    /* allocation failed */
    RSL_EIO = -3,       /* system call failed (errno in the message) */
    RSL_EPARSE = -4,    /* malformed input */
    RSL_ETOOBIG = -5,   /* input over its size limit */
    RSL_EPERM = -6,     /* insecure file permissions or not allowed */
    RSL_ENOENT = -7,    /* no such file or entry */
    RSL_ECRYPTO = -8,   /* cryptographic library failure */
    RSL_EVERIFY = -9,   /* signature does not verify */
    RSL_EEXIST = -10,   /* already exists (refusing to overwrite) */
    RSL_EAGAIN = -11,   /* try again later */
    RSL_ECONFIG = -12,  /* configuration error */
    RSL_ESTORE = -13,   /* storage error */
    RSL_ECORRUPT = -14, /* checksum or integrity failure */
    RSL_ENOSPC = -15,   /* no space left on device */
};

/* Short text for an RSL_E* code; never NULL. */
const char *rsl_strerror(int err);

#define RSL_ERROR_TEXT_MAX 512

struct rsl_error {
    int code;                        /* the RSL_E* code last set, or RSL_OK */
    char text[RSL_ERROR_TEXT_MAX];   /* one line, no trailing newline */
};

/* Record `code` and a printf-style message in `err` (NULL-safe); returns
 * `code` so callers can write `return rsl_error_set(err, RSL_EINVAL, ...)`. */
int rsl_error_set(struct rsl_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend "prefix: " to an existing message (NULL-safe); returns err->code. */
int rsl_error_prefix(struct rsl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reset to RSL_OK and an empty message (NULL-safe). */
void rsl_error_clear(struct rsl_error *err);

#endif
