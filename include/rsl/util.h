/*
 * util.h - small helpers every program needs: clocks, durable file writes,
 * strict number parsing, hex/base64, paths, secrets.
 */
#ifndef RSL_UTIL_H
#define RSL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"

/* Wall clock (CLOCK_REALTIME) and a monotonic clock, in milliseconds. */
int64_t rsl_now_ms(void);
int64_t rsl_monotonic_ms(void);

/* Durably replace `path` with `data`: write "<path>.tmp", fsync, rename over
 * `path`, fsync the folder. After a crash `path` holds either the old or the
 * new content, never a mix. `mode` applies to the new file (e.g. 0600). */
int rsl_file_write_atomic(const char *path, const void *data, size_t len, int mode,
                          struct rsl_error *err);

/* Read a whole regular file of at most `max` bytes into a new buffer (one
 * extra NUL byte appended, not counted in *len). Caller frees *out. */
int rsl_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len,
                      struct rsl_error *err);

/* fsync a folder so renames and unlinks inside it are durable. */
int rsl_fsync_dir(const char *dir, struct rsl_error *err);

/* Create a folder and its parents with `mode` if missing. */
int rsl_mkdir_p(const char *path, int mode, struct rsl_error *err);

/* Resolve `path` against the folder of `config_file` unless it is absolute.
 * Writes into out[outlen]; RSL_ETOOBIG if it does not fit. */
int rsl_path_resolve(const char *config_file, const char *path, char *out, size_t outlen);

/* Strict parsing: whole string, no trailing garbage, range-checked. */
int rsl_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);
int rsl_parse_uint64(const char *s, uint64_t *out);
int rsl_parse_double(const char *s, double *out); /* finite values only */
/* Seconds with optional unit: "30", "30s", "5m", "2h", "3d", "500ms".
 * Result in milliseconds, at least 0. */
int rsl_parse_duration_ms(const char *s, int64_t *out_ms);
/* "true/false/yes/no/on/off/1/0" */
int rsl_parse_bool(const char *s, bool *out);

/* RFC 3339 ("2026-11-27T09:00:00Z", "...+01:00", fractional seconds) or
 * unix milliseconds (all digits) to unix ms. */
int rsl_parse_time_ms(const char *s, int64_t *out_ms);
/* Format unix ms as RFC 3339 UTC with milliseconds: "2026-11-27T09:00:00.000Z".
 * `out` must hold at least 32 bytes. */
void rsl_format_time_ms(int64_t ms, char *out, size_t outlen);

/* Lowercase hex of `len` bytes into out (2*len+1 bytes). */
void rsl_hex_encode(const uint8_t *in, size_t len, char *out);
/* Value of one hex digit (either case), or -1. */
int rsl_hex_digit(char c);
/* Exactly `outlen` bytes from 2*outlen hex characters (either case). */
int rsl_hex_decode(const char *hex, uint8_t *out, size_t outlen);

/* Standard base64 with padding. Encode writes a NUL-terminated string into
 * out (needs 4*ceil(len/3)+1 bytes). Decode requires canonical input and
 * exactly `outlen` decoded bytes. */
void rsl_base64_encode(const uint8_t *in, size_t len, char *out);
int rsl_base64_decode(const char *in, uint8_t *out, size_t outlen);

/* SHA-256 of a buffer. */
void rsl_sha256(const void *data, size_t len, uint8_t out[32]);

/* Constant-time comparison; zeroing that the compiler will not remove. */
bool rsl_consttime_equal(const void *a, const void *b, size_t len);
void rsl_secure_zero(void *p, size_t len);

/* Write all `len` bytes to fd, retrying on EINTR and short writes: 0, or -1
 * with errno set. */
int rsl_write_full(int fd, const void *data, size_t len);

/* Read from fd until EOF or until `len` bytes; *got says how many arrived.
 * 0, or -1 with errno set. */
int rsl_read_full(int fd, void *buf, size_t len, size_t *got);

/* A piece of untrusted text as it may be quoted in a one-line message: at
 * most outlen-4 bytes, control characters and bytes that are not
 * well-formed UTF-8 replaced by '?' (the result is valid UTF-8, never cut
 * inside a character), "..." when cut. Returns out. */
const char *rsl_text_show(const char *s, char *out, size_t outlen);

/* Copy a NUL-terminated string, truncation is an error (RSL_ETOOBIG). */
int rsl_strlcpy(char *dst, const char *src, size_t dstlen);

/* Trim ASCII whitespace in place at both ends; returns s. */
char *rsl_trim(char *s);

#endif
