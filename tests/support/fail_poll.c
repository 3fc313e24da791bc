/*
 * fail_poll.c - LD_PRELOAD shim for tests/integration/test_ingest_thread_lost.py:
 * makes zmq_poll() fail (EFAULT) in the thread named by
 * RSL_TEST_POLL_FAIL_THREAD (pthread name, e.g. "agg-store") once the file
 * named by RSL_TEST_POLL_FAIL_FILE exists. Every other call goes to the
 * real zmq_poll. Test-only: never installed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

typedef int (*poll_fn)(zmq_pollitem_t *, int, long);

int zmq_poll(zmq_pollitem_t *items, int nitems, long timeout)
{
    static poll_fn real;
    if (real == NULL) {
        void *sym = dlsym(RTLD_NEXT, "zmq_poll");
        memcpy(&real, &sym, sizeof(real));
    }
    const char *file = getenv("RSL_TEST_POLL_FAIL_FILE");
    const char *thread = getenv("RSL_TEST_POLL_FAIL_THREAD");
    if (file != NULL && thread != NULL) {
        char name[16] = "";
        if (pthread_getname_np(pthread_self(), name, sizeof(name)) == 0 &&
            strcmp(name, thread) == 0 && access(file, F_OK) == 0) {
            errno = EFAULT;
            return -1;
        }
    }
    return real(items, nitems, timeout);
}
