/*
 * fault.h - allocation and I/O failure injection for the fault tests
 * (tests/faults/test_faults_*.c), in the manner of SQLite's malloc and I/O
 * error tests: count the calls an operation makes, fail the Nth one, run it
 * again failing the N+1th, ... until a run finishes without reaching N.
 *
 * How calls are caught, without changing production code: the fault test
 * executables are linked with GNU ld's --wrap (tests/CMakeLists.txt), so
 * every reference to malloc, read, rename, ... in the objects linked
 * statically into them (librsl.a, the test itself) goes to __wrap_malloc,
 * __wrap_read, ... in fault.c, which either fail or call the real function
 * (__real_malloc: libc's, or ASan's interceptor in the sanitizer build).
 * Shared libraries (libcrypto, libprotobuf-c, libinih, libzmq) keep their
 * own references, except that OpenSSL's allocator is replaced through
 * CRYPTO_set_mem_functions (fault_init), so OpenSSL allocations made for
 * our calls can be failed too.
 *
 * Leaks: every pointer the wrapped allocators return is kept in a side
 * table until it is freed through the wrapped free, so a test can compare
 * the number of live allocations before and after an operation (and LSan
 * checks again in the sanitizer build). The table never changes the
 * pointers, so memory may still be freed by code that is not wrapped.
 *
 * Only the thread that armed the injection counts calls: background
 * threads of libraries cannot shift N.
 */
#ifndef RSL_FAULT_H
#define RSL_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Kinds of call that are counted (and may fail). */
enum {
    FAULT_ALLOC = 1 << 0,   /* malloc calloc realloc strdup strndup in our objects */
    FAULT_SSL = 1 << 1,     /* OpenSSL's allocations (CRYPTO_set_mem_functions) */
    FAULT_IO_RW = 1 << 2,   /* read write pwrite */
    FAULT_IO_META = 1 << 3, /* open openat close fsync fdatasync fchmod fstat stat lstat
                               mkdir rename renameat unlink ftruncate */
};
#define FAULT_IO (FAULT_IO_RW | FAULT_IO_META)

/* How a chosen call fails. */
enum fault_mode {
    FAULT_ONCE,       /* only call N fails; later calls succeed (a transient fault) */
    FAULT_PERSIST,    /* call N and every counted call after it fail (memory or disk
                         stays exhausted, as SQLite's "persistent" mode) */
    FAULT_SHORT,      /* read/write N transfers about half of what was asked; not an
                         error: the caller must loop */
    FAULT_EINTR,      /* read/write N fails with EINTR before transferring anything:
                         the caller must retry */
};

/* Install OpenSSL's allocator hooks. Call first thing in main, before
 * anything touches OpenSSL; returns false if OpenSSL had already allocated
 * (then FAULT_SSL calls are never counted). */
bool fault_init(void);

/* Start counting calls of `kinds` on this thread and fail the nth (1-based)
 * as `mode` says, with `err` as errno for I/O calls (ENOMEM for allocations).
 * n == 0 only counts. Resets the counters. */
void fault_arm(unsigned kinds, long n, enum fault_mode mode, int err);

/* Stop counting and failing. */
void fault_disarm(void);

/* Calls counted since fault_arm; whether the injection fired (call n was
 * reached); the name of the first failed call ("malloc", "rename", ...). */
long fault_calls(void);
bool fault_fired(void);
const char *fault_fired_call(void);

/* Live allocations from the wrapped allocators (ours) and from OpenSSL. */
size_t fault_live_ours(void);
size_t fault_live_ssl(void);

/* A mark in the allocation order, and a dump (to stderr) of the tracked
 * allocations made after it that are still live: which call leaked. */
unsigned long fault_live_mark(void);
void fault_live_dump(unsigned long mark);

/* Under LSan, 1 if a leak check now finds unreachable memory; else 0. */
int fault_leak_check(void);

/* The wrappers, for the linker (--wrap) and -Wmissing-prototypes. */
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void __wrap_free(void *p);
int __wrap_open(const char *path, int flags, ...);
int __wrap_openat(int dirfd, const char *path, int flags, ...);
int __wrap_close(int fd);
ssize_t __wrap_read(int fd, void *buf, size_t len);
ssize_t __wrap_write(int fd, const void *buf, size_t len);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t len, off_t off);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_fchmod(int fd, mode_t mode);
int __wrap_ftruncate(int fd, off_t len);
int __wrap_rename(const char *from, const char *to);
int __wrap_renameat(int fromfd, const char *from, int tofd, const char *to);
int __wrap_unlink(const char *path);
int __wrap_mkdir(const char *path, mode_t mode);
struct stat;
int __wrap_fstat(int fd, struct stat *st);
int __wrap_stat(const char *path, struct stat *st);
int __wrap_lstat(const char *path, struct stat *st);

#endif
