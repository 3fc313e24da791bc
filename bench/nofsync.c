/*
 * nofsync.c - LD_PRELOAD shim that turns fsync/fdatasync/syncfs/sync into
 * no-ops, for preparing benchmark spools quickly (bench/agent_spoolfill).
 * Never use it with a daemon whose durability is being measured.
 *
 *   cc -shared -fPIC -o nofsync.so nofsync.c
 */
#define _GNU_SOURCE
#include <unistd.h>

int fsync(int fd)
{
    (void)fd;
    return 0;
}

int fdatasync(int fd)
{
    (void)fd;
    return 0;
}

int syncfs(int fd)
{
    (void)fd;
    return 0;
}

void sync(void)
{
}
