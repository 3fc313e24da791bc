/*
 * fault_loop.h - the SQLite-style loop shared by the fault tests: run one
 * operation failing its call 1, then 2, then 3, ... until a run completes
 * without reaching the injection, and check every run.
 *
 * Include after <cmocka.h>. An operation is a function that makes exactly
 * one library call, checks the result itself when the call succeeded
 * (succeeding is allowed: code may retry, fall back or ignore a failed
 * close), and frees whatever the call produced. The loop then checks:
 *   - a run that did not reach the injection succeeded (else the
 *     operation itself is broken, and the loop would never end);
 *   - a failed run returned one of the expected RSL_E* codes, and, for
 *     functions that take a struct rsl_error, the same code with a
 *     non-empty message (naming `must_name`, e.g. the path, if given);
 *   - FAULT_SHORT and FAULT_EINTR runs succeeded: neither is an error;
 *   - no allocation from the wrapped allocators or OpenSSL is left live
 *     (the operation freed its outputs), checked after every run;
 *   - LSan (sanitizer build) finds nothing unreachable after the loop;
 *   - `after`, if given, holds for the state the run left (files on disk);
 *   - OpenSSL's error queue is empty again (lib/sign.c's promise to the
 *     TLS code that may run next on the same thread).
 * A crash anywhere ends the test, which is the first thing checked.
 */
#ifndef RSL_FAULT_LOOP_H
#define RSL_FAULT_LOOP_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include "fault.h"
#include "rsl/error.h"

#define FAULT_MAX_CODES 6

struct fault_case {
    const char *name;
    unsigned kinds;                                   /* FAULT_* counted and failed */
    int (*run)(void *ctx, struct rsl_error *err);     /* the operation (top comment) */
    void (*after)(void *ctx, int rc, bool fired);     /* check and reset state; may be NULL */
    void *ctx;
    int codes[FAULT_MAX_CODES];                       /* acceptable errors; 0 ends the list */
    int ssl_codes[FAULT_MAX_CODES];                   /* also acceptable when the failed call
                                                         was OpenSSL's (it hides some causes) */
    bool has_err;                                     /* the call fills a struct rsl_error */
    const char *must_name;                            /* messages must contain this, or NULL */
};

/* A private temporary folder, on tmpfs when there is one: the loops make
 * thousands of fsync calls, which cost real disk flushes under /tmp. */
static int fault_mkdtemp(char *out, size_t outlen, const char *tag)
{
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
                               access("/dev/shm", W_OK) == 0
                           ? "/dev/shm"
                           : "/tmp";
    int n = snprintf(out, outlen, "%s/rsl-faults-%s-XXXXXX", base, tag);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return mkdtemp(out) != NULL ? 0 : -1;
}

static const char *fault_mode_name(enum fault_mode mode)
{
    switch (mode) {
    case FAULT_ONCE: return "once";
    case FAULT_PERSIST: return "persist";
    case FAULT_SHORT: return "short";
    case FAULT_EINTR: return "eintr";
    }
    return "?";
}

static bool fault_code_ok(const struct fault_case *c, int rc, const char *call)
{
    for (size_t i = 0; i < FAULT_MAX_CODES && c->codes[i] != 0; i++)
        if (c->codes[i] == rc)
            return true;
    if (strncmp(call, "OPENSSL_", 8) == 0)
        for (size_t i = 0; i < FAULT_MAX_CODES && c->ssl_codes[i] != 0; i++)
            if (c->ssl_codes[i] == rc)
                return true;
    return false;
}

/* Run the loop for one mode; returns the number of injection points. */
static long fault_run_case(const struct fault_case *c, enum fault_mode mode, int io_err)
{
    struct rsl_error err;
    int rc;

    /* Warm up twice unarmed: OpenSSL and libc fill caches on first use
     * (providers, method stores), which would look like leaks below. */
    for (int i = 0; i < 2; i++) {
        rsl_error_clear(&err);
        rc = c->run(c->ctx, &err);
        if (rc != RSL_OK) {
            print_error("%s: fails without injection: %d %s\n", c->name, rc, err.text);
            fail();
        }
        if (c->after != NULL)
            c->after(c->ctx, rc, false);
    }
    fault_arm(c->kinds, 0, mode, io_err);
    rc = c->run(c->ctx, &err);
    long total = fault_calls();
    fault_disarm();
    assert_int_equal(rc, RSL_OK);
    if (c->after != NULL)
        c->after(c->ctx, rc, false);

    long n = 1, errors = 0, recovered = 0;
    for (;; n++) {
        size_t ours = fault_live_ours(), ssl = fault_live_ssl();
        unsigned long mark = fault_live_mark();
        rsl_error_clear(&err);
        fault_arm(c->kinds, n, mode, io_err);
        rc = c->run(c->ctx, &err);
        fault_disarm();
        bool fired = fault_fired();
        const char *call = fault_fired_call();

        if (!fired) {
            if (rc != RSL_OK) {
                print_error("%s [%s] N=%ld: not reached but failed: %d %s\n", c->name,
                            fault_mode_name(mode), n, rc, err.text);
                fail();
            }
        } else if (rc == RSL_OK) {
            recovered++;
        } else {
            errors++;
            bool ok = fault_code_ok(c, rc, call) && mode != FAULT_SHORT && mode != FAULT_EINTR;
            if (ok && c->has_err)
                ok = err.code == rc && err.text[0] != '\0' &&
                     (c->must_name == NULL || strstr(err.text, c->must_name) != NULL);
            if (!ok) {
                print_error("%s [%s] N=%ld (%s failed): rc %d (%s), message code %d '%s'\n",
                            c->name, fault_mode_name(mode), n, call, rc, rsl_strerror(rc),
                            err.code, err.text);
                fail();
            }
        }
        /* sign.c's promise: no stale OpenSSL errors for the next TLS call
         * on this thread, after a success as after a failure. */
        unsigned long stale = ERR_peek_error();
        if (stale != 0) {
            char text[256];
            ERR_error_string_n(stale, text, sizeof(text));
            ERR_clear_error();
            print_error("%s [%s] N=%ld (%s failed, rc %d): OpenSSL error queue left: %s\n",
                        c->name, fault_mode_name(mode), n, fired ? call : "none", rc, text);
            fail();
        }
        if (c->after != NULL)
            c->after(c->ctx, rc, fired);
        if (fault_live_ours() != ours || fault_live_ssl() != ssl) {
            print_error("%s [%s] N=%ld (%s failed, rc %d): leak: %zd of ours, %zd of OpenSSL's "
                        "allocations left live\n",
                        c->name, fault_mode_name(mode), n, fired ? call : "none", rc,
                        (ssize_t)(fault_live_ours() - ours), (ssize_t)(fault_live_ssl() - ssl));
            fault_live_dump(mark);
            fail();
        }
        if (!fired)
            break;
        if (n > 4 * total + 100) {
            print_error("%s [%s]: the loop does not end (%ld calls unarmed)\n", c->name,
                        fault_mode_name(mode), total);
            fail();
        }
    }
    if (fault_leak_check() != 0) {
        print_error("%s [%s]: LeakSanitizer found leaks (report above)\n", c->name,
                    fault_mode_name(mode));
        fail();
    }
    const char *errno_name = mode == FAULT_SHORT || mode == FAULT_EINTR ? ""
                             : io_err == EIO                          ? "EIO"
                             : io_err == ENOSPC                       ? "ENOSPC"
                                                                      : "ENOMEM";
    print_message("  %-34s %-7s %-6s N=1..%ld: %ld errors returned, %ld recovered\n", c->name,
                  fault_mode_name(mode), errno_name, n - 1, errors, recovered);
    return n - 1;
}

#endif
