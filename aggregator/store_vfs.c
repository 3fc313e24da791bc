/*
 * store_vfs.c - a SQLite VFS shim that gathers the writer's WAL appends
 * into one write per commit (see store_vfs.h).
 *
 * SQLite writes every WAL frame as two write() calls - the 24-byte frame
 * header, then the page - so a commit of 600 pages costs 1,200 system
 * calls, each paying the file system's per-call work (locking the inode,
 * updating its times) on top of copying the bytes. This shim wraps the
 * default VFS: for a file opened as a WAL (SQLITE_OPEN_WAL), writes that
 * follow on from the previous one are copied into a buffer and handed to
 * the real file in one write when anything else happens to the file:
 * xSync, xRead, xTruncate, xFileSize, xFileControl, xUnlock, xClose, a
 * write that does not continue the buffered run, or a full buffer. A
 * failed write is reported by the next write, read or sync, whichever call
 * it happened in (flush_keep). Everything else is passed through
 * unchanged.
 *
 * Durability is unchanged: SQLite considers WAL frames written only once
 * xSync has returned (synchronous=FULL syncs the WAL at every commit), and
 * xSync writes the buffer out before it syncs. Readers never see buffered
 * frames: a commit becomes visible in the WAL index only after that sync.
 * What a crash leaves is a prefix of what SQLite would have left, written
 * in the same order; WAL recovery checks frame checksums either way.
 */
#include "store_vfs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Less than 128 KiB: the unix VFS writes at most 0x1ffff bytes per call
 * (its seekAndWriteFd masks the length) and reports a longer write as a
 * full disk. 31 frames of 4 KiB pages per write instead of 62 calls. */
#define WALBUF_BYTES 0x1ffff

struct walbuf_file {
    sqlite3_file base;     /* pMethods: &walbuf_io */
    sqlite3_file *real;    /* the wrapped file, right after this struct */
    unsigned char *buf;    /* WAL only, allocated at the first buffered write */
    size_t len;            /* bytes buffered */
    sqlite3_int64 start;   /* file offset of buf[0] */
    int error;             /* a failed write not yet reported (flush_keep) */
};

static sqlite3_vfs walbuf_vfs;
static sqlite3_vfs *real_vfs;
static pthread_once_t register_once = PTHREAD_ONCE_INIT;
static int register_rc = SQLITE_ERROR;

/* Write the buffer out; the buffered bytes are dropped either way. A
 * failure is kept until an operation whose result SQLite checks reports it
 * (flush): SQLite ignores what xUnlock and some file controls return, and
 * the frames lost with the buffer belong to a transaction not yet synced,
 * which must then fail instead of committing without them. */
static void flush_keep(struct walbuf_file *f)
{
    if (f->len == 0)
        return;
    int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->start);
    f->len = 0;
    if (rc != SQLITE_OK && f->error == SQLITE_OK)
        f->error = rc;
}

/* flush_keep, then report (and forget) any failure kept so far. */
static int flush(struct walbuf_file *f)
{
    flush_keep(f);
    int rc = f->error;
    f->error = SQLITE_OK;
    return rc;
}

static int wb_close(sqlite3_file *file)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    int crc = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : crc;
}

static int wb_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, amt, off);
}

static int wb_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    if (f->error != SQLITE_OK)
        return flush(f);
    if (f->buf == NULL || amt <= 0)
        return f->real->pMethods->xWrite(f->real, data, amt, off);
    size_t n = (size_t)amt;
    if (f->len > 0 && (off != f->start + (sqlite3_int64)f->len || f->len + n > WALBUF_BYTES)) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (n > WALBUF_BYTES)
        return f->real->pMethods->xWrite(f->real, data, amt, off);
    if (f->len == 0)
        f->start = off;
    memcpy(f->buf + f->len, data, n);
    f->len += n;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wb_lock(sqlite3_file *file, int level)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int wb_unlock(sqlite3_file *file, int level)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    flush_keep(f); /* a failure waits for the next write, read or sync */
    return f->real->pMethods->xUnlock(f->real, level);
}

static int wb_check_reserved(sqlite3_file *file, int *out)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wb_file_control(sqlite3_file *file, int op, void *arg)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    flush_keep(f); /* a failure waits for the next write, read or sync */
    if (op == SQLITE_FCNTL_VFSNAME) {
        /* Name the shim in front of the real VFS, as SQLite's shims do. */
        int frc = f->real->pMethods->xFileControl(f->real, op, arg);
        if (frc == SQLITE_OK && arg != NULL)
            *(char **)arg = sqlite3_mprintf("%s/%z", walbuf_vfs.zName, *(char **)arg);
        return frc;
    }
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wb_sector_size(sqlite3_file *file)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int wb_device_characteristics(sqlite3_file *file)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int wb_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xShmMap(f->real, page, size, extend, out);
}

static int wb_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void wb_shm_barrier(sqlite3_file *file)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    f->real->pMethods->xShmBarrier(f->real);
}

static int wb_shm_unmap(sqlite3_file *file, int delete_flag)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int wb_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **out)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, amt, out);
}

static int wb_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    struct walbuf_file *f = (struct walbuf_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

/* Version 3 methods; a real file with fewer is refused at open (the unix
 * VFS of every SQLite this builds against has 3). */
static const sqlite3_io_methods walbuf_io = {
    3,
    wb_close,
    wb_read,
    wb_write,
    wb_truncate,
    wb_sync,
    wb_file_size,
    wb_lock,
    wb_unlock,
    wb_check_reserved,
    wb_file_control,
    wb_sector_size,
    wb_device_characteristics,
    wb_shm_map,
    wb_shm_lock,
    wb_shm_barrier,
    wb_shm_unmap,
    wb_fetch,
    wb_unfetch,
};

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    (void)vfs;
    struct walbuf_file *f = (struct walbuf_file *)file;
    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)(f + 1);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK)
        return rc; /* base.pMethods stays NULL: SQLite will not call xClose */
    if (f->real->pMethods == NULL || f->real->pMethods->iVersion < 3) {
        if (f->real->pMethods != NULL)
            f->real->pMethods->xClose(f->real);
        return SQLITE_CANTOPEN;
    }
    if ((flags & SQLITE_OPEN_WAL) != 0) {
        f->buf = malloc(WALBUF_BYTES);
        /* Without the buffer the WAL is written call by call, as always. */
    }
    f->base.pMethods = &walbuf_io;
    return SQLITE_OK;
}

/* The rest of the VFS is the real one's. */
static int wb_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int wb_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int wb_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *wb_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void wb_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, n, out);
}

static void (*wb_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, handle, sym);
}

static void wb_dl_close(sqlite3_vfs *vfs, void *handle)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, handle);
}

static int wb_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int wb_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, us);
}

static int wb_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int wb_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int wb_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static void register_vfs(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (real_vfs == NULL || real_vfs->iVersion < 2 || real_vfs->xCurrentTimeInt64 == NULL)
        return;
    walbuf_vfs.iVersion = 2;
    walbuf_vfs.szOsFile = (int)sizeof(struct walbuf_file) + real_vfs->szOsFile;
    walbuf_vfs.mxPathname = real_vfs->mxPathname;
    walbuf_vfs.zName = AGG_STORE_VFS;
    walbuf_vfs.xOpen = wb_open;
    walbuf_vfs.xDelete = wb_delete;
    walbuf_vfs.xAccess = wb_access;
    walbuf_vfs.xFullPathname = wb_full_pathname;
    walbuf_vfs.xDlOpen = wb_dl_open;
    walbuf_vfs.xDlError = wb_dl_error;
    walbuf_vfs.xDlSym = wb_dl_sym;
    walbuf_vfs.xDlClose = wb_dl_close;
    walbuf_vfs.xRandomness = wb_randomness;
    walbuf_vfs.xSleep = wb_sleep;
    walbuf_vfs.xCurrentTime = wb_current_time;
    walbuf_vfs.xGetLastError = wb_get_last_error;
    walbuf_vfs.xCurrentTimeInt64 = wb_current_time_int64;
    register_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

int agg_store_vfs_register(void)
{
    if (pthread_once(&register_once, register_vfs) != 0)
        return SQLITE_ERROR;
    return register_rc;
}
