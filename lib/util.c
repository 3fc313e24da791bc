/*
 * util.c - clocks, durable file writes, strict parsing, encodings, secrets.
 *
 * Durability: rsl_file_write_atomic is the one place that knows the
 * write-fsync-rename-fsync(dir) dance; everything that must survive kill -9
 * or power loss (sequence counter, key files) goes through it.
 * Parsing: every rsl_parse_* accepts the whole string or nothing.
 */
#include "rsl/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <sodium.h>

int64_t rsl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rsl_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The folder part of a path ("." when there is none). */
static void dir_of(const char *path, char *out, size_t outlen)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(out, outlen, ".");
    } else if (slash == path) {
        snprintf(out, outlen, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= outlen)
            n = outlen - 1;
        memcpy(out, path, n);
        out[n] = '\0';
    }
}

int rsl_fsync_dir(const char *dir, struct rsl_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return rsl_error_set(err, RSL_EIO, "%s: %s", dir, strerror(errno));
    int rc = RSL_OK;
    if (fsync(fd) != 0)
        rc = rsl_error_set(err, errno == ENOSPC ? RSL_ENOSPC : RSL_EIO, "%s: fsync: %s", dir,
                           strerror(errno));
    close(fd);
    return rc;
}

int rsl_write_full(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int rsl_read_full(int fd, void *buf, size_t len, size_t *got)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *got = done;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

/* Length (1..4) of the well-formed UTF-8 sequence at s (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. Stops at
 * the terminating NUL, which is never a continuation byte. */
static size_t utf8_sequence(const unsigned char *s)
{
    size_t n;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

const char *rsl_text_show(const char *s, char *out, size_t outlen)
{
    if (outlen < 5) {
        if (outlen > 0)
            out[0] = '\0';
        return out;
    }
    /* The result goes into log lines, error texts and JSON error bodies:
     * one line, and valid UTF-8 (jansson refuses anything else, which
     * once turned "unknown query parameter '%A4'" into a 500), so a
     * malformed byte becomes '?' and a cut never splits a character. */
    const unsigned char *u = (const unsigned char *)s;
    size_t limit = outlen - 4, i = 0, o = 0;
    while (u[i] != '\0') {
        size_t n = utf8_sequence(u + i);
        size_t w = n != 0 ? n : 1;
        if (o + w > limit)
            break;
        if (n == 0 || u[i] < 0x20 || u[i] == 0x7f) {
            out[o++] = '?';
        } else {
            memcpy(out + o, s + i, n);
            o += n;
        }
        i += w;
    }
    if (u[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

int rsl_file_write_atomic(const char *path, const void *data, size_t len, int mode,
                          struct rsl_error *err)
{
    char tmp[PATH_MAX];
    char dir[PATH_MAX];
    int fd = -1;
    int rc = RSL_OK;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", path);
    dir_of(path, dir, sizeof(dir));

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fchmod(fd, (mode_t)mode) != 0 || rsl_write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        rc = rsl_error_set(err, errno == ENOSPC ? RSL_ENOSPC : RSL_EIO, "%s: %s", tmp,
                           strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = rsl_error_set(err, RSL_EIO, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s: rename: %s", path, strerror(errno));
        goto out;
    }
    /* The new content is in place; only its durability is unknown if the
     * folder's fsync fails. Say which file it was: the folder alone does
     * not tell an operator what was being saved. */
    if ((rc = rsl_fsync_dir(dir, err)) != RSL_OK)
        rsl_error_prefix(err, "%s", path);
out:
    if (fd >= 0)
        close(fd);
    if (rc != RSL_OK)
        unlink(tmp);
    return rc;
}

int rsl_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len,
                      struct rsl_error *err)
{
    int fd = -1;
    uint8_t *buf = NULL;
    int rc = RSL_OK;
    struct stat st;

    *out = NULL;
    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = rsl_error_set(err, errno == ENOENT ? RSL_ENOENT : RSL_EIO, "%s: %s", path,
                           strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = rsl_error_set(err, RSL_EIO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    size_t got = 0;
    for (;;) {
        /* Read until EOF, bounded: the file may have grown since fstat. */
        if (got > max) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %zu bytes", path, max);
            goto out;
        }
        size_t room = (size_t)st.st_size + 1 - got;
        if (room == 0) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s: grew while being read", path);
            goto out;
        }
        ssize_t n = read(fd, buf + got, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got == (size_t)st.st_size + 1) {
            rc = rsl_error_set(err, RSL_ETOOBIG, "%s: grew while being read", path);
            goto out;
        }
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL; /* transferred */
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Messages name the folder asked for and, when a parent failed, that
 * parent: "/var/spool/x: mkdir /var/spool: Permission denied". */
static int mkdir_error(struct rsl_error *err, const char *path, const char *part, int code,
                       const char *what)
{
    if (strcmp(path, part) == 0)
        return rsl_error_set(err, code, "%s: %s", path, what);
    return rsl_error_set(err, code, "%s: mkdir %s: %s", path, part, what);
}

int rsl_mkdir_p(const char *path, int mode, struct rsl_error *err)
{
    char tmp[PATH_MAX];
    if (rsl_strlcpy(tmp, path, sizeof(tmp)) != RSL_OK)
        return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
            return mkdir_error(err, path, tmp, errno == ENOSPC ? RSL_ENOSPC : RSL_EIO,
                               strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
        return mkdir_error(err, path, tmp, errno == ENOSPC ? RSL_ENOSPC : RSL_EIO,
                           strerror(errno));
    struct stat st;
    if (stat(tmp, &st) != 0)
        return mkdir_error(err, path, tmp, RSL_EIO, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return mkdir_error(err, path, tmp, RSL_EIO, "not a folder");
    return RSL_OK;
}

int rsl_path_resolve(const char *config_file, const char *path, char *out, size_t outlen)
{
    int n;
    if (path[0] == '/' || config_file == NULL) {
        n = snprintf(out, outlen, "%s", path);
    } else {
        char dir[PATH_MAX];
        dir_of(config_file, dir, sizeof(dir));
        n = snprintf(out, outlen, "%s/%s", dir, path);
    }
    return (n < 0 || (size_t)n >= outlen) ? RSL_ETOOBIG : RSL_OK;
}

int rsl_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
        return RSL_EINVAL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return RSL_EINVAL;
    *out = (int64_t)v;
    return RSL_OK;
}

int rsl_parse_uint64(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return RSL_EINVAL;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return RSL_EINVAL;
    *out = (uint64_t)v;
    return RSL_OK;
}

int rsl_parse_double(const char *s, double *out)
{
    if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
        return RSL_EINVAL;
    /* Only plain decimal notation: strtod would also take hex floats,
     * "inf" and "nan", none of which belong in a measurement. */
    for (const char *p = s; *p != '\0'; p++)
        if (!isdigit((unsigned char)*p) && strchr("+-.eE", *p) == NULL)
            return RSL_EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v) || (errno == ERANGE && v != 0.0))
        return RSL_EINVAL;
    *out = v;
    return RSL_OK;
}

int rsl_parse_duration_ms(const char *s, int64_t *out_ms)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return RSL_EINVAL;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || v < 0)
        return RSL_EINVAL;
    int64_t mult;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 86400 * 1000;
    else
        return RSL_EINVAL;
    if (v > INT64_MAX / mult)
        return RSL_EINVAL;
    *out_ms = (int64_t)v * mult;
    return RSL_OK;
}

int rsl_parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"};
    static const char *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return RSL_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return RSL_OK;
        }
    }
    return RSL_EINVAL;
}

/* Read exactly `n` digits from *p into *v. */
static int take_digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

static int64_t days_from_civil(int y, int m, int d)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01 in the proleptic
     * Gregorian calendar, exact for every representable date. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int rsl_parse_time_ms(const char *s, int64_t *out_ms)
{
    if (s == NULL || *s == '\0' || strlen(s) > 40)
        return RSL_EINVAL;
    bool all_digits = true;
    for (const char *p = s; *p != '\0'; p++)
        if (!isdigit((unsigned char)*p))
            all_digits = false;
    if (all_digits)
        return rsl_parse_int64(s, 0, INT64_MAX / 2, out_ms);

    const char *p = s;
    int y, mo, d, h, mi, se;
    if (take_digits(&p, 4, &y) || *p++ != '-' || take_digits(&p, 2, &mo) || *p++ != '-' ||
        take_digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return RSL_EINVAL;
    p++;
    if (take_digits(&p, 2, &h) || *p++ != ':' || take_digits(&p, 2, &mi) || *p++ != ':' ||
        take_digits(&p, 2, &se))
        return RSL_EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return RSL_EINVAL;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return RSL_EINVAL;
    int64_t frac_ms = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return RSL_EINVAL;
        for (int i = digits; i < 3; i++)
            frac_ms *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (take_digits(&p, 2, &oh) || *p++ != ':' || take_digits(&p, 2, &om) || oh > 23 || om > 59)
            return RSL_EINVAL;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return RSL_EINVAL;
    }
    if (*p != '\0')
        return RSL_EINVAL;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    if (secs < 0)
        return RSL_EINVAL;
    *out_ms = secs * 1000 + frac_ms;
    return RSL_OK;
}

void rsl_format_time_ms(int64_t ms, char *out, size_t outlen)
{
    time_t secs = (time_t)(ms / 1000);
    int64_t rem = ms % 1000;
    if (rem < 0) {
        rem += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

void rsl_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * len] = '\0';
}

int rsl_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rsl_hex_decode(const char *hex, uint8_t *out, size_t outlen)
{
    if (strlen(hex) != 2 * outlen)
        return RSL_EINVAL;
    for (size_t i = 0; i < outlen; i++) {
        int hi = rsl_hex_digit(hex[2 * i]);
        int lo = rsl_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return RSL_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return RSL_OK;
}

void rsl_base64_encode(const uint8_t *in, size_t len, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

int rsl_base64_decode(const char *in, uint8_t *out, size_t outlen)
{
    size_t inlen = strlen(in);
    size_t want = 4 * ((outlen + 2) / 3);
    if (inlen != want || inlen > 4096)
        return RSL_EINVAL;
    uint8_t buf[3072 + 3];
    int n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)inlen);
    if (n < 0)
        return RSL_EINVAL;
    /* EVP_DecodeBlock counts padding as zero bytes: strip them. */
    size_t pad = (inlen >= 1 && in[inlen - 1] == '=') + (inlen >= 2 && in[inlen - 2] == '=');
    if ((size_t)n - pad != outlen)
        return RSL_EINVAL;
    /* Canonical form only: re-encoding must give the same text. */
    char check[4096 + 1];
    rsl_base64_encode(buf, outlen, check);
    if (strcmp(check, in) != 0)
        return RSL_EINVAL;
    memcpy(out, buf, outlen);
    rsl_secure_zero(buf, sizeof(buf));
    return RSL_OK;
}

/* rsl_sha256 cannot report failure, and its callers (key ids, bearer token
 * checks, report digests) trust the output: an unwritten digest would be
 * whatever the stack held, perhaps the digest of an earlier valid token.
 * EVP_Digest is the fast path (SHA-NI), but it allocates a context and so
 * fails when memory is short; libsodium's SHA-256 allocates nothing and
 * cannot fail, so it computes the same digest then. */
void rsl_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int outlen = 32;
    if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) == 1 && outlen == 32)
        return;
    /* OpenSSL's failure left entries in this thread's error queue, which
     * the next TLS call on the thread (the HTTPS server) would misread. */
    ERR_clear_error();
    /* libsodium asks for sodium_init before use; it is idempotent and its
     * result does not matter here: the SHA-256 code depends on nothing it
     * sets up. */
    int sodium_rc = sodium_init();
    (void)sodium_rc;
    crypto_hash_sha256(out, data, len);
}

bool rsl_consttime_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void rsl_secure_zero(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}

int rsl_strlcpy(char *dst, const char *src, size_t dstlen)
{
    size_t n = strlen(src);
    if (dstlen == 0)
        return RSL_ETOOBIG;
    if (n >= dstlen) {
        memcpy(dst, src, dstlen - 1);
        dst[dstlen - 1] = '\0';
        return RSL_ETOOBIG;
    }
    memcpy(dst, src, n + 1);
    return RSL_OK;
}

char *rsl_trim(char *s)
{
    char *start = s;
    while (*start != '\0' && isspace((unsigned char)*start))
        start++;
    size_t n = strlen(start);
    while (n > 0 && isspace((unsigned char)start[n - 1]))
        n--;
    memmove(s, start, n);
    s[n] = '\0';
    return s;
}
