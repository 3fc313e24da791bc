/*
 * store_vfs.h - the store writer's SQLite VFS: the default VFS, with the
 * WAL's appends gathered into one write per commit (store_vfs.c).
 */
#ifndef AGG_STORE_VFS_H
#define AGG_STORE_VFS_H

#include <sqlite3.h>

#define AGG_STORE_VFS "rsl-walbuf"

/* Register the VFS (not as the default) once per process; SQLITE_OK, or
 * an SQLite error code when it cannot be (the caller then opens with the
 * default VFS). Thread-safe. */
int agg_store_vfs_register(void);

#endif
