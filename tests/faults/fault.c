/*
 * fault.c - the --wrap targets behind fault.h: counting, failing, and a side
 * table of live allocations for leak checks.
 *
 * Everything here must work while memory "runs out", so nothing in this
 * file allocates: the live table is a static open-addressing hash, the
 * counters are plain variables of the arming thread.
 */
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* The real functions, resolved by the linker because of --wrap. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void __real_free(void *p);
int __real_open(const char *path, int flags, ...);
int __real_openat(int dirfd, const char *path, int flags, ...);
int __real_close(int fd);
ssize_t __real_read(int fd, void *buf, size_t len);
ssize_t __real_write(int fd, const void *buf, size_t len);
ssize_t __real_pwrite(int fd, const void *buf, size_t len, off_t off);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_fchmod(int fd, mode_t mode);
int __real_ftruncate(int fd, off_t len);
int __real_rename(const char *from, const char *to);
int __real_renameat(int fromfd, const char *from, int tofd, const char *to);
int __real_unlink(const char *path);
int __real_mkdir(const char *path, mode_t mode);
int __real_fstat(int fd, struct stat *st);
int __real_stat(const char *path, struct stat *st);
int __real_lstat(const char *path, struct stat *st);

/* ---- the injection state (only the arming thread reads or writes it) ---- */

static _Thread_local bool armed_here;
static unsigned arm_kinds;
static long arm_n;
static enum fault_mode arm_mode;
static int arm_errno;
static long calls;
static bool fired;
static const char *fired_name;

void fault_arm(unsigned kinds, long n, enum fault_mode mode, int err)
{
    arm_kinds = kinds;
    arm_n = n;
    arm_mode = mode;
    arm_errno = err;
    calls = 0;
    fired = false;
    fired_name = NULL;
    armed_here = true;
}

void fault_disarm(void)
{
    armed_here = false;
}

long fault_calls(void)
{
    return calls;
}

bool fault_fired(void)
{
    return fired;
}

const char *fault_fired_call(void)
{
    return fired_name != NULL ? fired_name : "";
}

/* Count one call of `kind`; true if it is to fail. */
static bool fault_now(unsigned kind, const char *name)
{
    if (!armed_here || (arm_kinds & kind) == 0)
        return false;
    long c = ++calls;
    if (arm_n == 0)
        return false;
    if (c == arm_n || (arm_mode == FAULT_PERSIST && c > arm_n)) {
        if (!fired) {
            fired = true;
            fired_name = name;
        }
        return true;
    }
    return false;
}

/* ---- live allocation table ---------------------------------------------- */

/* Linear probing with backward-shift deletion, so no tombstones pile up
 * over the millions of alloc/free pairs a test run makes. */
#define LIVE_BITS 18
#define LIVE_SIZE ((size_t)1 << LIVE_BITS)

/* ORIGIN_SSL_ERR: OpenSSL's per-thread error state (crypto/err/), which
 * keeps message buffers for reuse after ERR_clear_error and frees them at
 * thread exit. Its growth is not a leak, so it is not in the counts the
 * tests compare; LSan still sees it. */
enum { ORIGIN_OURS = 1, ORIGIN_SSL = 2, ORIGIN_SSL_ERR = 3 };

static int ssl_origin(const char *file)
{
    return file != NULL && strstr(file, "crypto/err/") != NULL ? ORIGIN_SSL_ERR : ORIGIN_SSL;
}

/* Pointers are stored disguised (XOR with a constant): LeakSanitizer scans
 * static data for pointers, and a plain copy here would make every leaked
 * block look reachable. 0 is an empty slot. */
#define LIVE_DISGUISE ((uintptr_t)0xa5a5a5a5a5a5a5a5ULL)

struct live_slot {
    uintptr_t p; /* (uintptr_t)pointer ^ LIVE_DISGUISE, or 0 */
    int origin;
    unsigned long serial; /* order of allocation, for fault_live_dump */
    const char *file;     /* OpenSSL's OPENSSL_FILE/LINE, or NULL */
    int line;
};

static struct live_slot live[LIVE_SIZE];
static size_t live_count[4];
static unsigned long live_serial;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t live_hash(uintptr_t key)
{
    uint64_t x = (uint64_t)key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (LIVE_SIZE - 1);
}

static void live_add_at(void *p, int origin, const char *file, int line)
{
    if (p == NULL)
        return;
    uintptr_t key = (uintptr_t)p ^ LIVE_DISGUISE;
    pthread_mutex_lock(&live_lock);
    size_t i = live_hash(key);
    for (size_t probes = 0; live[i].p != 0; probes++) {
        if (probes == LIVE_SIZE) {
            /* A test infrastructure limit, not a finding: say so loudly. */
            static const char msg[] = "fault.c: live allocation table full\n";
            ssize_t w = __real_write(2, msg, sizeof(msg) - 1);
            (void)w;
            abort();
        }
        i = (i + 1) & (LIVE_SIZE - 1);
    }
    live[i].p = key;
    live[i].origin = origin;
    live[i].serial = ++live_serial;
    live[i].file = file;
    live[i].line = line;
    live_count[origin]++;
    pthread_mutex_unlock(&live_lock);
}

static void live_add(void *p, int origin)
{
    live_add_at(p, origin, NULL, 0);
}

/* Forget p if we know it (memory from unwrapped code is simply unknown). */
static void live_remove(void *p)
{
    if (p == NULL)
        return;
    uintptr_t key = (uintptr_t)p ^ LIVE_DISGUISE;
    pthread_mutex_lock(&live_lock);
    size_t i = live_hash(key);
    while (live[i].p != 0 && live[i].p != key)
        i = (i + 1) & (LIVE_SIZE - 1);
    if (live[i].p == 0) {
        pthread_mutex_unlock(&live_lock);
        return;
    }
    live_count[live[i].origin]--;
    live[i].p = 0;
    /* Shift later members of the probe run back into the hole. */
    size_t hole = i;
    size_t j = (i + 1) & (LIVE_SIZE - 1);
    while (live[j].p != 0) {
        size_t home = live_hash(live[j].p);
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            live[hole] = live[j];
            live[j].p = 0;
            hole = j;
        }
        j = (j + 1) & (LIVE_SIZE - 1);
    }
    pthread_mutex_unlock(&live_lock);
}

size_t fault_live_ours(void)
{
    pthread_mutex_lock(&live_lock);
    size_t n = live_count[ORIGIN_OURS];
    pthread_mutex_unlock(&live_lock);
    return n;
}

size_t fault_live_ssl(void)
{
    pthread_mutex_lock(&live_lock);
    size_t n = live_count[ORIGIN_SSL];
    pthread_mutex_unlock(&live_lock);
    return n;
}

unsigned long fault_live_mark(void)
{
    pthread_mutex_lock(&live_lock);
    unsigned long serial = live_serial;
    pthread_mutex_unlock(&live_lock);
    return serial;
}

void fault_live_dump(unsigned long mark)
{
    pthread_mutex_lock(&live_lock);
    for (size_t i = 0; i < LIVE_SIZE; i++) {
        if (live[i].p != 0 && live[i].serial > mark)
            fprintf(stderr, "  live since the mark: %p %s %s:%d\n",
                    (void *)(live[i].p ^ LIVE_DISGUISE),
                    live[i].origin == ORIGIN_OURS ? "ours" : "OpenSSL",
                    live[i].file != NULL ? live[i].file : "?", live[i].line);
    }
    pthread_mutex_unlock(&live_lock);
}

int fault_leak_check(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return __lsan_do_recoverable_leak_check();
#else
    return 0;
#endif
}

/* ---- allocators ----------------------------------------------------------- */

void *__wrap_malloc(size_t size)
{
    if (fault_now(FAULT_ALLOC, "malloc")) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(size);
    live_add(p, ORIGIN_OURS);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (fault_now(FAULT_ALLOC, "calloc")) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(n, size);
    live_add(p, ORIGIN_OURS);
    return p;
}

void *__wrap_realloc(void *p, size_t size)
{
    if (fault_now(FAULT_ALLOC, "realloc")) {
        errno = ENOMEM;
        return NULL; /* p stays valid, as with a real failure */
    }
    void *q = __real_realloc(p, size);
    if (q != NULL || size == 0) {
        live_remove(p);
        live_add(q, ORIGIN_OURS);
    }
    return q;
}

char *__wrap_strdup(const char *s)
{
    if (fault_now(FAULT_ALLOC, "strdup")) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = __real_strdup(s);
    live_add(p, ORIGIN_OURS);
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (fault_now(FAULT_ALLOC, "strndup")) {
        errno = ENOMEM;
        return NULL;
    }
    char *p = __real_strndup(s, n);
    live_add(p, ORIGIN_OURS);
    return p;
}

void __wrap_free(void *p)
{
    live_remove(p);
    __real_free(p);
}

/* OpenSSL 3 calls these directly for every OPENSSL_malloc/realloc/free,
 * including size 0 and NULL, so they behave like the C functions. */
static void *ssl_malloc(size_t size, const char *file, int line)
{
    if (fault_now(FAULT_SSL, "OPENSSL_malloc"))
        return NULL;
    void *p = __real_malloc(size);
    live_add_at(p, ssl_origin(file), file, line);
    return p;
}

static void *ssl_realloc(void *p, size_t size, const char *file, int line)
{
    if (size == 0) {
        live_remove(p);
        __real_free(p);
        return NULL;
    }
    if (fault_now(FAULT_SSL, "OPENSSL_realloc"))
        return NULL;
    void *q = __real_realloc(p, size);
    if (q != NULL) {
        live_remove(p);
        live_add_at(q, ssl_origin(file), file, line);
    }
    return q;
}

static void ssl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    live_remove(p);
    __real_free(p);
}

bool fault_init(void)
{
    return CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free) == 1;
}

/* ---- I/O ------------------------------------------------------------------ */

/* Fail a metadata call: errno from fault_arm. */
#define FAIL_META(name)                                                                          \
    do {                                                                                         \
        if (fault_now(FAULT_IO_META, (name))) {                                                 \
            errno = arm_errno;                                                                   \
            return -1;                                                                           \
        }                                                                                        \
    } while (0)

int __wrap_open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    FAIL_META("open");
    return __real_open(path, flags, mode);
}

int __wrap_openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    if ((flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    FAIL_META("openat");
    return __real_openat(dirfd, path, flags, mode);
}

int __wrap_close(int fd)
{
    if (fault_now(FAULT_IO_META, "close")) {
        /* Linux closes the descriptor even when close reports an error
         * (EIO from NFS, ENOSPC from delayed allocation): do the same, or
         * the test would leak descriptors the code rightly considers gone. */
        __real_close(fd);
        errno = arm_errno;
        return -1;
    }
    return __real_close(fd);
}

/* read/write/pwrite: FAULT_SHORT and FAULT_EINTR apply here only. */
static int rw_fault(const char *name, size_t *len)
{
    if (!fault_now(FAULT_IO_RW, name))
        return 0;
    if (arm_mode == FAULT_SHORT) {
        if (*len > 1)
            *len /= 2;
        return 0;
    }
    errno = arm_mode == FAULT_EINTR ? EINTR : arm_errno;
    return -1;
}

ssize_t __wrap_read(int fd, void *buf, size_t len)
{
    if (rw_fault("read", &len) != 0)
        return -1;
    return __real_read(fd, buf, len);
}

ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
    if (rw_fault("write", &len) != 0)
        return -1;
    return __real_write(fd, buf, len);
}

ssize_t __wrap_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (rw_fault("pwrite", &len) != 0)
        return -1;
    return __real_pwrite(fd, buf, len, off);
}

int __wrap_fsync(int fd)
{
    FAIL_META("fsync");
    return __real_fsync(fd);
}

int __wrap_fdatasync(int fd)
{
    FAIL_META("fdatasync");
    return __real_fdatasync(fd);
}

int __wrap_fchmod(int fd, mode_t mode)
{
    FAIL_META("fchmod");
    return __real_fchmod(fd, mode);
}

int __wrap_ftruncate(int fd, off_t len)
{
    FAIL_META("ftruncate");
    return __real_ftruncate(fd, len);
}

int __wrap_rename(const char *from, const char *to)
{
    FAIL_META("rename");
    return __real_rename(from, to);
}

int __wrap_renameat(int fromfd, const char *from, int tofd, const char *to)
{
    FAIL_META("renameat");
    return __real_renameat(fromfd, from, tofd, to);
}

int __wrap_unlink(const char *path)
{
    FAIL_META("unlink");
    return __real_unlink(path);
}

int __wrap_mkdir(const char *path, mode_t mode)
{
    FAIL_META("mkdir");
    return __real_mkdir(path, mode);
}

int __wrap_fstat(int fd, struct stat *st)
{
    FAIL_META("fstat");
    return __real_fstat(fd, st);
}

int __wrap_stat(const char *path, struct stat *st)
{
    FAIL_META("stat");
    return __real_stat(path, st);
}

int __wrap_lstat(const char *path, struct stat *st)
{
    FAIL_META("lstat");
    return __real_lstat(path, st);
}
