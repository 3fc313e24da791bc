/*
 * test_spool.c - the agent's crash-safe spool, and delivery out of it.
 *
 * Spool: entries round-trip; listing is ordered and chunked, also across
 * long gaps in the numbers (probing falls back to reading the folder);
 * remove and reject do what the acks ask (rejected/<seq>.reason beside the
 * entry); a flipped byte, a truncated file or a bad header is quarantined
 * in corrupt/ while the other entries still read; leftovers in tmp/ and
 * stray names in pending/ are cleared at open; a sequence is never
 * overwritten; totals (entries, bytes) follow every operation without a
 * rescan; entries another process adds are adopted through the inotify
 * watch, our own are not counted twice; agent_spool_inspect (status) agrees.
 *
 * Delivery: the real daemon (--once) against a CURVE ROUTER running in a
 * thread of this test, which plays the aggregator with a script: no answer
 * (resend after resend_timeout), RETRY_LATER, REJECTED, DUPLICATE, plus
 * acks for other agents, unknown sequences and garbage that must be
 * ignored. Afterwards the spool must hold exactly what the acks imply, and
 * every frame the server saw must carry a valid signature. Also: the
 * sender fails over from a dead endpoint to the next and comes back to the
 * first once a probe finds it again; `submit` in another process while
 * the daemon runs shares the sequence counter (no number twice, no report
 * with two contents) and its reports are delivered; the backoff grows
 * exponentially with jitter and stays under its cap. SIGHUP reloads the
 * config (a changed value arrives) and a bad new config keeps the old one;
 * under systemd (a real NOTIFY_SOCKET in this test) the daemon says
 * READY=1, STATUS=..., STOPPING=1 and pings WATCHDOG=1 at half of
 * WATCHDOG_USEC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include "agent/config.h"
#include "agent/daemon.h"
#include "agent/report.h"
#include "rsl/codec.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/util.h"
#include "agent/sender.h"
#include "agent/seq.h"
#include "agent/spool.h"
#include "agent/submit.h"

struct spool_state {
    char dir[64];
};

static int setup(void **state)
{
    struct spool_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-spool-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct spool_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void entry_path(const char *spool, const char *sub, uint64_t seq, const char *suffix,
                       char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s/%020" PRIu64 "%s", spool, sub, seq, suffix);
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void payload_for(uint64_t seq, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seq * 31 + i * 7);
}

/* ---- spool ----------------------------------------------------------------- */

static void test_append_read_remove(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    uint8_t payload[300];
    uint8_t *data = NULL;
    size_t len = 0;
    char path[AGENT_PATH_MAX + 64];

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 0);
    assert_int_equal(agent_spool_max_sequence(sp), 0);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        payload_for(seq, payload, sizeof(payload));
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    }
    assert_int_equal(agent_spool_count(sp), 3);
    assert_int_equal(agent_spool_max_sequence(sp), 3);
    entry_path(s->dir, "pending", 2, ".rpt", path, sizeof(path));
    assert_true(exists(path));
    assert_int_equal(count_files(s->dir), 4); /* pending rejected corrupt tmp */
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s/tmp", s->dir);
    assert_int_equal(count_files(tmp), 0);

    payload_for(2, payload, sizeof(payload));
    assert_int_equal(agent_spool_read(sp, 2, 1 << 20, &data, &len, NULL), RSL_OK);
    assert_int_equal(len, sizeof(payload));
    assert_memory_equal(data, payload, len);
    free(data);

    /* A sequence is never overwritten. */
    struct rsl_error err;
    rsl_error_clear(&err);
    assert_int_equal(agent_spool_append(sp, 2, payload, 10, &err), RSL_EEXIST);
    assert_int_equal(agent_spool_count(sp), 3);
    assert_int_equal(count_files(tmp), 0);

    /* Ack: gone for good. */
    assert_int_equal(agent_spool_remove(sp, 2, NULL), RSL_OK);
    assert_false(exists(path));
    assert_int_equal(agent_spool_count(sp), 2);
    assert_int_equal(agent_spool_read(sp, 2, 1 << 20, &data, &len, NULL), RSL_ENOENT);
    assert_null(data);
    assert_int_equal(agent_spool_remove(sp, 2, NULL), RSL_ENOENT);
    agent_spool_close(&sp);
    assert_null(sp);

    /* Survives reopen. */
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 2);
    assert_int_equal(agent_spool_max_sequence(sp), 3);
    payload_for(3, payload, sizeof(payload));
    assert_int_equal(agent_spool_read(sp, 3, 1 << 20, &data, &len, NULL), RSL_OK);
    assert_memory_equal(data, payload, sizeof(payload));
    free(data);
    /* Larger than the caller's cap: reported, left in place. */
    assert_int_equal(agent_spool_read(sp, 3, 100, &data, &len, NULL), RSL_ETOOBIG);
    assert_null(data);
    entry_path(s->dir, "pending", 3, ".rpt", path, sizeof(path));
    assert_true(exists(path));
    /* Out-of-range sequences are refused. */
    assert_int_equal(agent_spool_append(sp, 0, payload, 1, NULL), RSL_EINVAL);
    assert_int_equal(agent_spool_append(sp, (uint64_t)INT64_MAX + 1, payload, 1, NULL),
                     RSL_EINVAL);
    agent_spool_close(&sp);
}

static void test_reject(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    uint8_t payload[40] = {1, 2, 3};
    char path[AGENT_PATH_MAX + 64];
    uint8_t *text = NULL;
    size_t len = 0;

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_append(sp, 7, payload, sizeof(payload), NULL), RSL_OK);
    assert_int_equal(agent_spool_reject(sp, 7, "signature does not verify", NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 0);
    entry_path(s->dir, "pending", 7, ".rpt", path, sizeof(path));
    assert_false(exists(path));
    entry_path(s->dir, "rejected", 7, ".rpt", path, sizeof(path));
    assert_true(exists(path));
    entry_path(s->dir, "rejected", 7, ".reason", path, sizeof(path));
    assert_int_equal(rsl_file_read_all(path, 4096, &text, &len, NULL), RSL_OK);
    assert_string_equal((char *)text, "signature does not verify\n");
    free(text);
    assert_int_equal(agent_spool_reject(sp, 8, "x", NULL), RSL_ENOENT);
    agent_spool_close(&sp);

    /* Rejected sequences still count for "highest ever seen". */
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 0);
    assert_int_equal(agent_spool_max_sequence(sp), 7);
    agent_spool_close(&sp);
}

static void flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void test_corrupt_entries_quarantined(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    uint8_t payload[200];
    uint8_t *data = NULL;
    size_t len = 0;
    char path[AGENT_PATH_MAX + 64];
    char corrupt[128];

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    for (uint64_t seq = 1; seq <= 5; seq++) {
        payload_for(seq, payload, sizeof(payload));
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    }
    agent_spool_close(&sp);

    /* 2: one flipped payload bit. 3: one flipped bit in the length field.
     * 4: truncated. 5: header magic damaged. */
    entry_path(s->dir, "pending", 2, ".rpt", path, sizeof(path));
    flip_byte(path, AGENT_SPOOL_HEADER_BYTES + 100);
    entry_path(s->dir, "pending", 3, ".rpt", path, sizeof(path));
    flip_byte(path, 31);
    entry_path(s->dir, "pending", 4, ".rpt", path, sizeof(path));
    assert_int_equal(truncate(path, AGENT_SPOOL_HEADER_BYTES + 10), 0);
    entry_path(s->dir, "pending", 5, ".rpt", path, sizeof(path));
    flip_byte(path, 0);

    /* Opening does not block on them. */
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 5);
    for (uint64_t seq = 2; seq <= 5; seq++) {
        struct rsl_error err;
        rsl_error_clear(&err);
        assert_int_equal(agent_spool_read(sp, seq, 1 << 20, &data, &len, &err), RSL_ECORRUPT);
        assert_null(data);
        assert_non_null(strstr(err.text, "corrupt/"));
        entry_path(s->dir, "pending", seq, ".rpt", path, sizeof(path));
        assert_false(exists(path));
        entry_path(s->dir, "corrupt", seq, ".rpt", path, sizeof(path));
        assert_true(exists(path));
    }
    /* The good one still reads. */
    payload_for(1, payload, sizeof(payload));
    assert_int_equal(agent_spool_read(sp, 1, 1 << 20, &data, &len, NULL), RSL_OK);
    assert_memory_equal(data, payload, sizeof(payload));
    free(data);
    assert_int_equal(agent_spool_count(sp), 1);
    snprintf(corrupt, sizeof(corrupt), "%s/corrupt", s->dir);
    assert_int_equal(count_files(corrupt), 4);
    agent_spool_close(&sp);

    /* A header with a valid checksum but another sequence (a renamed file)
     * is corrupt too. */
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    char from[256];
    entry_path(s->dir, "pending", 1, ".rpt", from, sizeof(from));
    entry_path(s->dir, "pending", 9, ".rpt", path, sizeof(path));
    assert_int_equal(rename(from, path), 0);
    assert_int_equal(agent_spool_read(sp, 9, 1 << 20, &data, &len, NULL), RSL_ECORRUPT);
    agent_spool_close(&sp);
}

static void test_open_cleans_tmp_and_strays(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    char path[AGENT_PATH_MAX + 64];
    uint8_t payload[16] = {0};

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_append(sp, 1, payload, sizeof(payload), NULL), RSL_OK);
    agent_spool_close(&sp);

    /* A write that crashed before its rename, and names that are not entries. */
    entry_path(s->dir, "tmp", 2, ".rpt", path, sizeof(path));
    write_file(path, "half", 4);
    snprintf(path, sizeof(path), "%s/tmp/junk", s->dir);
    write_file(path, "x", 1);
    snprintf(path, sizeof(path), "%s/pending/notes.txt", s->dir);
    write_file(path, "x", 1);
    snprintf(path, sizeof(path), "%s/pending/00000000000000000003.rpt.tmp", s->dir);
    write_file(path, "x", 1);
    snprintf(path, sizeof(path), "%s/pending/00000000000000000000.rpt", s->dir);
    write_file(path, "x", 1);

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    snprintf(path, sizeof(path), "%s/tmp", s->dir);
    assert_int_equal(count_files(path), 0);
    snprintf(path, sizeof(path), "%s/pending", s->dir);
    assert_int_equal(count_files(path), 1);
    snprintf(path, sizeof(path), "%s/corrupt", s->dir);
    assert_int_equal(count_files(path), 3);
    assert_int_equal(agent_spool_count(sp), 1);
    /* The unfinished write never existed: its sequence is not "seen". */
    assert_int_equal(agent_spool_max_sequence(sp), 1);
    agent_spool_close(&sp);
}

static void test_list_chunks_in_order(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    uint8_t payload[8] = {0};
    uint64_t out[7];
    size_t n = 0;

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    /* 100 entries written in a scrambled order (37 is coprime to 100). */
    for (uint64_t i = 0; i < 100; i++) {
        uint64_t seq = (i * 37) % 100 + 1000;
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    }
    uint64_t after = 0;
    uint64_t expect = 1000;
    size_t chunks = 0;
    for (;;) {
        assert_int_equal(agent_spool_list(sp, after, out, 7, &n, NULL), RSL_OK);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(out[i], expect++);
        chunks++;
        if (n < 7)
            break;
        after = out[n - 1];
    }
    assert_int_equal(expect, 1100);
    assert_int_equal(chunks, 15); /* 14 full chunks of 7 and one of 2 */
    assert_int_equal(agent_spool_list(sp, 1099, out, 7, &n, NULL), RSL_OK);
    assert_int_equal(n, 0);
    assert_int_equal(agent_spool_list(sp, 0, out, 0, &n, NULL), RSL_OK);
    assert_int_equal(n, 0);
    agent_spool_close(&sp);
}

/* Long gaps (acked or dropped runs) do not hide what is after them. */
/* Acked entries beyond what the recycler keeps are marked dead (mode 0000)
 * and unlinked by the reaper thread: no view shows them meanwhile, the
 * next open removes one a crash left behind, and over the byte limit the
 * unlink happens at once. */
static void test_acked_entries_reaped(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    struct agent_spool_summary sum;
    uint8_t payload[200];
    uint8_t *data = NULL;
    size_t len = 0, n = 0;
    uint64_t list[300];
    char pending[128], path[AGENT_PATH_MAX + 64];
    snprintf(pending, sizeof(pending), "%s/pending", s->dir);

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    for (uint64_t seq = 1; seq <= 200; seq++) {
        payload_for(seq, payload, sizeof(payload));
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    }
    uint64_t entry = agent_spool_bytes(sp) / 200;
    for (uint64_t seq = 1; seq <= 150; seq++)
        assert_int_equal(agent_spool_remove(sp, seq, NULL), RSL_OK);
    /* Gone from every view at once, whether or not the file is yet. */
    assert_int_equal(agent_spool_count(sp), 50);
    assert_int_equal(agent_spool_bytes(sp), 50 * entry);
    assert_int_equal(agent_spool_list(sp, 0, list, 300, &n, NULL), RSL_OK);
    assert_int_equal(n, 50);
    assert_int_equal(list[0], 151);
    uint64_t oldest = 0;
    int64_t mtime = 0;
    assert_int_equal(agent_spool_oldest(sp, &oldest, &mtime, NULL), RSL_OK);
    assert_int_equal(oldest, 151);
    for (uint64_t seq = 100; seq <= 150; seq++) {
        assert_int_equal(agent_spool_read(sp, seq, 1 << 20, &data, &len, NULL), RSL_ENOENT);
        assert_int_equal(agent_spool_remove(sp, seq, NULL), RSL_ENOENT); /* not counted twice */
    }
    assert_int_equal(agent_spool_count(sp), 50);
    assert_int_equal(agent_spool_inspect(s->dir, &sum, NULL), RSL_OK);
    assert_int_equal(sum.pending, 50);
    assert_int_equal(sum.oldest_sequence, 151);
    bool changed = true;
    assert_int_equal(agent_spool_rescan(sp, &changed, NULL), RSL_OK);
    assert_false(changed);
    assert_int_equal(agent_spool_count(sp), 50);
    /* The reaper removes the files (at idle priority: give it time). */
    for (int i = 0; i < 3000 && count_files(pending) > 50; i++)
        usleep(10000);
    assert_int_equal(count_files(pending), 50);
    assert_int_equal(agent_spool_corrupt(sp), 0);

    /* Acked, marked, and then a crash before the reaper got to it: the
     * next open removes it without counting or sending it. */
    entry_path(s->dir, "pending", 151, ".rpt", path, sizeof(path));
    assert_int_equal(chmod(path, 0), 0);
    assert_false(agent_spool_list(sp, 150, list, 1, &n, NULL) != RSL_OK || list[0] != 152);
    assert_int_equal(agent_spool_read(sp, 151, 1 << 20, &data, &len, NULL), RSL_ENOENT);
    assert_null(data);
    agent_spool_close(&sp);
    assert_int_equal(agent_spool_inspect(s->dir, &sum, NULL), RSL_OK);
    assert_int_equal(sum.pending, 49);
    assert_int_equal(count_files(pending), 50);
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 49);
    assert_false(exists(path));
    assert_int_equal(count_files(pending), 49);

    /* Close removes whatever the reaper had not got to. */
    for (uint64_t seq = 152; seq <= 190; seq++)
        assert_int_equal(agent_spool_remove(sp, seq, NULL), RSL_OK);
    agent_spool_close(&sp);
    assert_int_equal(count_files(pending), 10);

    /* At the byte limit, queued dead files would hold space the limit
     * needs: the removal unlinks at once. */
    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(sp), 10);
    for (uint64_t seq = 201; seq <= 290; seq++) {
        payload_for(seq, payload, sizeof(payload));
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    }
    for (uint64_t seq = 191; seq <= 290; seq++)
        assert_int_equal(agent_spool_remove(sp, seq, NULL), RSL_OK);
    /* The first 32 (RECYCLE_MAX) went to tmp/ for reuse, the other 68 are
     * dead; under a limit of 60 entries the next report would not fit
     * beside them: they go first. */
    struct agent_spool_limits limits = {.max_bytes = 60 * entry};
    agent_spool_set_limits(sp, &limits);
    assert_int_equal(agent_spool_admit(sp, sizeof(payload), "report 291", NULL), RSL_OK);
    assert_int_equal(count_files(pending), 0);
    assert_int_equal(agent_spool_counters(sp)->dropped_oldest, 0);
    assert_int_equal(agent_spool_count(sp), 0);
    agent_spool_close(&sp);
}

static void test_list_across_gaps(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *sp = NULL;
    uint8_t payload[8] = {0};
    uint64_t out[64];
    size_t n = 0;

    assert_int_equal(agent_spool_open(s->dir, &sp, NULL), RSL_OK);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    for (uint64_t seq = 500; seq <= 510; seq++)
        assert_int_equal(agent_spool_append(sp, seq, payload, sizeof(payload), NULL), RSL_OK);
    assert_int_equal(agent_spool_append(sp, 5000, payload, sizeof(payload), NULL), RSL_OK);
    for (uint64_t seq = 2; seq <= 9; seq++)
        assert_int_equal(agent_spool_remove(sp, seq, NULL), RSL_OK);
    assert_int_equal(agent_spool_list(sp, 0, out, 64, &n, NULL), RSL_OK);
    assert_int_equal(n, 2 + 11 + 1);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 10);
    assert_int_equal(out[2], 500);
    assert_int_equal(out[12], 510);
    assert_int_equal(out[13], 5000);
    /* Starting inside a gap, and in chunks smaller than what is there. */
    assert_int_equal(agent_spool_list(sp, 11, out, 3, &n, NULL), RSL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[0], 500);
    assert_int_equal(out[2], 502);
    assert_int_equal(agent_spool_list(sp, 510, out, 3, &n, NULL), RSL_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 5000);
    uint64_t oldest = 0;
    int64_t mtime = 0;
    assert_int_equal(agent_spool_oldest(sp, &oldest, &mtime, NULL), RSL_OK);
    assert_int_equal(oldest, 1);
    assert_int_equal(agent_spool_remove(sp, 1, NULL), RSL_OK);
    assert_int_equal(agent_spool_oldest(sp, &oldest, &mtime, NULL), RSL_OK);
    assert_int_equal(oldest, 10);
    assert_true(agent_spool_needs_sync(sp));
    assert_int_equal(agent_spool_sync(sp, NULL), RSL_OK);
    assert_false(agent_spool_needs_sync(sp));
    agent_spool_close(&sp);
}

/* Totals follow every operation; another writer's entries are adopted
 * through the watch exactly once; inspect (status) sees the same. */
static void test_totals_and_other_writers(void **state)
{
    struct spool_state *s = *state;
    struct agent_spool *owner = NULL;
    struct agent_spool *writer = NULL;
    uint8_t payload[100] = {0};
    size_t n_new = 0;
    uint64_t lowest = 0;

    assert_int_equal(agent_spool_open(s->dir, &owner, NULL), RSL_OK);
    assert_true(agent_spool_watch_fd(owner) >= 0);
    for (uint64_t seq = 1; seq <= 4; seq++)
        assert_int_equal(agent_spool_append(owner, seq, payload, sizeof(payload), NULL), RSL_OK);
    assert_int_equal(agent_spool_count(owner), 4);
    assert_int_equal(agent_spool_bytes(owner), 4 * 164);
    /* Our own appends caused events: they are not counted again. */
    assert_int_equal(agent_spool_watch_handle(owner, &n_new, &lowest, NULL), RSL_OK);
    assert_int_equal(n_new, 0);
    assert_int_equal(agent_spool_count(owner), 4);

    /* Another process (a writer-mode spool) adds 7, 5 and 6. */
    assert_int_equal(agent_spool_open_writer(s->dir, &writer, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(writer), 0); /* a writer keeps no totals */
    assert_int_equal(agent_spool_append(writer, 7, payload, 36, NULL), RSL_OK);
    assert_int_equal(agent_spool_append(writer, 5, payload, 36, NULL), RSL_OK);
    assert_int_equal(agent_spool_append(writer, 6, payload, 36, NULL), RSL_OK);
    agent_spool_close(&writer);
    assert_int_equal(agent_spool_watch_handle(owner, &n_new, &lowest, NULL), RSL_OK);
    assert_int_equal(n_new, 3);
    assert_int_equal(lowest, 5);
    assert_int_equal(agent_spool_count(owner), 7);
    assert_int_equal(agent_spool_bytes(owner), 4 * 164 + 3 * 100);
    assert_int_equal(agent_spool_max_sequence(owner), 7);

    /* Ack, reject, quarantine: totals follow. */
    assert_int_equal(agent_spool_remove(owner, 1, NULL), RSL_OK);
    assert_int_equal(agent_spool_reject(owner, 2, "no", NULL), RSL_OK);
    char path[AGENT_PATH_MAX + 64];
    entry_path(s->dir, "pending", 3, ".rpt", path, sizeof(path));
    flip_byte(path, AGENT_SPOOL_HEADER_BYTES + 3);
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(agent_spool_read(owner, 3, 1 << 20, &data, &len, NULL), RSL_ECORRUPT);
    assert_int_equal(agent_spool_count(owner), 4);
    assert_int_equal(agent_spool_bytes(owner), 164 + 3 * 100);
    assert_int_equal(agent_spool_rejected(owner), 1);
    assert_int_equal(agent_spool_corrupt(owner), 1);

    struct agent_spool_summary sum;
    assert_int_equal(agent_spool_inspect(s->dir, &sum, NULL), RSL_OK);
    assert_int_equal(sum.pending, 4);
    assert_int_equal(sum.bytes, 164 + 3 * 100);
    assert_int_equal(sum.oldest_sequence, 4);
    assert_true(sum.oldest_mtime_ms > rsl_now_ms() - 600000);
    assert_int_equal(sum.rejected, 1);
    assert_int_equal(sum.corrupt, 1);
    assert_string_equal(sum.counters_problem, "");

    /* Recounting from scratch agrees with the incremental totals. */
    bool changed = true;
    assert_int_equal(agent_spool_rescan(owner, &changed, NULL), RSL_OK);
    assert_false(changed);
    agent_spool_close(&owner);
    /* Reopen: the same, by the scan. */
    assert_int_equal(agent_spool_open(s->dir, &owner, NULL), RSL_OK);
    assert_int_equal(agent_spool_count(owner), 4);
    assert_int_equal(agent_spool_bytes(owner), 164 + 3 * 100);
    assert_int_equal(agent_spool_rejected(owner), 1);
    assert_int_equal(agent_spool_corrupt(owner), 1);
    agent_spool_close(&owner);

    /* inspect of a folder that does not exist: ENOENT, nothing created. */
    char nowhere[128];
    snprintf(nowhere, sizeof(nowhere), "%s/nowhere", s->dir);
    assert_int_equal(agent_spool_inspect(nowhere, &sum, NULL), RSL_ENOENT);
    assert_false(exists(nowhere));
}

/* ---- delivery: the daemon against a scripted aggregator ------------------------ */

enum script {
    SCRIPT_MIXED,     /* seq 1: silent first; 2: REJECTED; 3: RETRY_LATER first */
    SCRIPT_ACCEPT,    /* ACCEPTED for everything (DUPLICATE for repeats) */
    SCRIPT_DUPLICATE, /* DUPLICATE for everything */
    SCRIPT_SILENT,    /* never answer */
};

#define MAX_SEQ 2048

struct fake_aggregator {
    enum script script;
    char endpoint[128];
    char public_key[41];
    char secret_key[41];
    uint8_t agent_sign_key[RSL_ED25519_PUBLIC_BYTES];
    char agent_id[RSL_AGENT_ID_MAX + 1];
    sem_t ready;
    atomic_int stop;
    pthread_t thread;
    const char *bind_to;       /* NULL: an ephemeral port on 127.0.0.1 */
    /* Written by the thread, read after join. */
    unsigned received[MAX_SEQ];
    uint8_t digest[MAX_SEQ][32];   /* SHA-256 of the first frame seen per sequence */
    unsigned equivocations;        /* same sequence, different bytes */
    unsigned submitted;            /* reports whose source is "submit" */
    atomic_int last_value;         /* value of the last report's first measurement */
    unsigned bad_signatures;
    atomic_uint frames;
    char marking[RSL_MARKING_MAX + 1];
    char source[64];
};

static void send_ack(void *router, zmq_msg_t *identity, const char *agent_id, uint64_t seq,
                     int status, const char *detail)
{
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    ack.agent_id = (char *)agent_id;
    ack.sequence = seq;
    ack.status = (Resilience__V1__Ack__Status)status;
    ack.detail = (char *)detail;
    if (rsl_ack_encode(&ack, &buf, &len) != RSL_OK)
        return;
    zmq_send(router, zmq_msg_data(identity), zmq_msg_size(identity), ZMQ_SNDMORE);
    zmq_send(router, buf, len, 0);
    free(buf);
}

static void *aggregator_thread(void *arg)
{
    struct fake_aggregator *fa = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    void *ctx = zmq_ctx_new();
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1;
    int zero = 0;
    size_t eplen = sizeof(fa->endpoint);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof(one));
    zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, fa->secret_key, 41);
    zmq_bind(router, fa->bind_to != NULL ? fa->bind_to : "tcp://127.0.0.1:*");
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, fa->endpoint, &eplen);
    sem_post(&fa->ready);

    while (!atomic_load(&fa->stop)) {
        zmq_pollitem_t item = {router, -1, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 20) <= 0)
            continue;
        zmq_msg_t identity, body;
        zmq_msg_init(&identity);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&identity, router, 0) < 0 || zmq_msg_recv(&body, router, 0) < 0) {
            zmq_msg_close(&identity);
            zmq_msg_close(&body);
            continue;
        }
        fa->frames++;
        rsl_signed_report *sr = NULL;
        rsl_report *report = NULL;
        if (rsl_signed_report_decode(zmq_msg_data(&body), zmq_msg_size(&body), 1 << 20, &sr,
                                     NULL) == RSL_OK &&
            rsl_report_decode(sr->report.data, sr->report.len, &report, NULL) == RSL_OK) {
            if (rsl_verify_report(fa->agent_sign_key, sr->report.data, sr->report.len,
                                  sr->signature.data, sr->signature.len) != RSL_OK)
                fa->bad_signatures++;
            snprintf(fa->marking, sizeof(fa->marking), "%s", report->marking);
            if (report->n_measurements > 0) {
                snprintf(fa->source, sizeof(fa->source), "%s", report->measurements[0]->source);
                atomic_store(&fa->last_value, (int)report->measurements[0]->value);
            }
            uint64_t seq = report->sequence;
            unsigned attempt = seq < MAX_SEQ ? ++fa->received[seq] : 1;
            if (seq < MAX_SEQ) {
                uint8_t d[32];
                rsl_sha256(zmq_msg_data(&body), zmq_msg_size(&body), d);
                if (attempt == 1)
                    memcpy(fa->digest[seq], d, 32);
                else if (memcmp(fa->digest[seq], d, 32) != 0)
                    fa->equivocations++;
                if (attempt == 1 && report->n_measurements > 0 &&
                    strcmp(report->measurements[0]->source, "submit") == 0)
                    fa->submitted++;
            }
            /* Noise the agent must ignore, before the real answer: an ack
             * for another agent, one for a sequence not in flight, garbage. */
            if (fa->script == SCRIPT_MIXED || fa->script == SCRIPT_SILENT) {
                send_ack(router, &identity, "SOMEONE-ELSE", seq, 0, "");
                send_ack(router, &identity, fa->agent_id, seq + 1000, 0, "");
                zmq_send(router, zmq_msg_data(&identity), zmq_msg_size(&identity), ZMQ_SNDMORE);
                zmq_send(router, "\xff\xff\xff", 3, 0);
            }

            switch (fa->script) {
            case SCRIPT_MIXED:
                if (seq == 1 && attempt == 1)
                    break; /* no answer: the agent must resend */
                if (seq == 2)
                    send_ack(router, &identity, fa->agent_id, seq, 2, "nation is not DEU");
                else if (seq == 3 && attempt == 1)
                    send_ack(router, &identity, fa->agent_id, seq, 3, "store busy");
                else
                    send_ack(router, &identity, fa->agent_id, seq, attempt > 1 ? 1 : 0, "");
                break;
            case SCRIPT_ACCEPT:
                send_ack(router, &identity, fa->agent_id, seq, attempt > 1 ? 1 : 0, "");
                break;
            case SCRIPT_DUPLICATE:
                send_ack(router, &identity, fa->agent_id, seq, 1, "");
                break;
            case SCRIPT_SILENT:
                break;
            }
        }
        rsl_report_free(&report);
        rsl_signed_report_free(&sr);
        zmq_msg_close(&identity);
        zmq_msg_close(&body);
    }
    zmq_close(router);
    zmq_ctx_term(ctx);
    return NULL;
}

/* Start on `bind_to` (NULL: any port) with the given CURVE key pair
 * (NULL: a new one). */
static void aggregator_start_at(struct fake_aggregator *fa, enum script script,
                                const char *keys_dir, const char *agent_id, const char *bind_to,
                                const char *public_key, const char *secret_key)
{
    char path[AGENT_PATH_MAX + 64];
    memset(fa, 0, sizeof(*fa));
    fa->script = script;
    fa->bind_to = bind_to;
    snprintf(fa->agent_id, sizeof(fa->agent_id), "%s", agent_id);
    if (public_key != NULL) {
        memcpy(fa->public_key, public_key, 41);
        memcpy(fa->secret_key, secret_key, 41);
    } else {
        assert_int_equal(zmq_curve_keypair(fa->public_key, fa->secret_key), 0);
    }
    snprintf(path, sizeof(path), "%s/sign.pub", keys_dir);
    assert_int_equal(rsl_public_key_load_pem(path, fa->agent_sign_key, NULL), RSL_OK);
    assert_int_equal(sem_init(&fa->ready, 0, 0), 0);
    assert_int_equal(pthread_create(&fa->thread, NULL, aggregator_thread, fa), 0);
    while (sem_wait(&fa->ready) != 0)
        ;
}

static void aggregator_start(struct fake_aggregator *fa, enum script script, const char *keys_dir,
                             const char *agent_id)
{
    aggregator_start_at(fa, script, keys_dir, agent_id, NULL, NULL, NULL);
}

static void aggregator_stop(struct fake_aggregator *fa)
{
    atomic_store(&fa->stop, 1);
    pthread_join(fa->thread, NULL);
    sem_destroy(&fa->ready);
}

/* agent.conf in s->dir with `n_static` static collectors and the given
 * extra [agent] lines; keys in s->dir/keys. Returns the loaded config. */
static struct agent_config *write_agent_config(const struct spool_state *s,
                                               const struct fake_aggregator *fa, int n_static,
                                               const char *extra)
{
    char path[AGENT_PATH_MAX + 64];
    char text[4096];
    int off;
    struct agent_config *cfg = NULL;
    struct rsl_error err;

    off = snprintf(text, sizeof(text),
                   "[agent]\nid = DEU-TEST-01\nnation = DEU\norganisation = Test Ministry\n"
                   "keys = keys\nspool = spool\nresend_timeout = 200ms\nmarking = TEST MARK\n%s\n"
                   "[aggregator]\nendpoints = %s\nserver_key = %s\n",
                   extra, fa->endpoint, fa->public_key);
    for (int i = 1; i <= n_static; i++)
        off += snprintf(text + off, sizeof(text) - (size_t)off,
                        "[collector c%d]\ntype = static\nindicator = test.value_%d\nvalue = %d\n"
                        "unit = pct\n",
                        i, i, i * 10);
    snprintf(path, sizeof(path), "%s/agent.conf", s->dir);
    write_file(path, text, strlen(text));
    rsl_error_clear(&err);
    if (agent_config_load(path, &cfg, &err) != RSL_OK)
        fail_msg("config: %s", err.text);
    return cfg;
}

static int run_daemon(const struct agent_config *cfg, bool once, int64_t once_timeout_ms)
{
    struct agent_keys *keys = NULL;
    struct agent_daemon *d = NULL;
    struct rsl_error err;
    struct agent_run_options opts = {.once = once, .once_timeout_ms = once_timeout_ms};
    rsl_error_clear(&err);
    if (agent_keys_load(cfg, &keys, &err) != RSL_OK)
        fail_msg("keys: %s", err.text);
    if (agent_daemon_new(cfg, keys, &opts, &d, &err) != RSL_OK)
        fail_msg("daemon: %s", err.text);
    int code = agent_daemon_run(d);
    agent_daemon_free(&d);
    agent_keys_free(&keys);
    return code;
}

static void make_keys(const struct spool_state *s, char *keys_dir, size_t len)
{
    snprintf(keys_dir, len, "%s/keys", s->dir);
    assert_int_equal(rsl_keys_generate(keys_dir, NULL), RSL_OK);
}

static void test_delivery_resend_retry_reject(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];
    uint8_t *text = NULL;
    size_t len = 0;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_MIXED, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 3, "");
    int code = run_daemon(cfg, true, 60000);
    aggregator_stop(&fa);

    assert_int_equal(code, 0);
    /* 1 was resent after its silent first try, 3 after RETRY_LATER; 2 was
     * rejected once and never sent again. */
    assert_true(fa.received[1] >= 2);
    assert_int_equal(fa.received[2], 1);
    assert_true(fa.received[3] >= 2);
    assert_int_equal(fa.received[4], 0);
    assert_int_equal(fa.bad_signatures, 0);
    assert_string_equal(fa.marking, "TEST MARK");

    snprintf(path, sizeof(path), "%s/spool/pending", s->dir);
    assert_int_equal(count_files(path), 0);
    entry_path(cfg->spool_dir, "rejected", 2, ".rpt", path, sizeof(path));
    assert_true(exists(path));
    entry_path(cfg->spool_dir, "rejected", 2, ".reason", path, sizeof(path));
    assert_int_equal(rsl_file_read_all(path, 4096, &text, &len, NULL), RSL_OK);
    assert_string_equal((char *)text, "nation is not DEU\n");
    free(text);
    /* The counter says 4: three numbers used, none reused. */
    snprintf(path, sizeof(path), "%s/spool/sequence", s->dir);
    assert_int_equal(rsl_file_read_all(path, 64, &text, &len, NULL), RSL_OK);
    assert_string_equal((char *)text, "4\n");
    free(text);
    agent_config_free(&cfg);
}

/* Entries left by an earlier run go out first; a counter that fell behind
 * the spool is moved past it. */
static void test_delivery_backlog_and_counter(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];
    struct agent_keys *keys = NULL;
    struct agent_spool *sp = NULL;
    uint8_t *frame = NULL;
    size_t len = 0;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 1, "");

    /* Backlog: reports 5 and 6, and a counter file that says 3. */
    assert_int_equal(agent_keys_load(cfg, &keys, NULL), RSL_OK);
    assert_int_equal(agent_spool_open(cfg->spool_dir, &sp, NULL), RSL_OK);
    struct rsl_sample sample;
    memset(&sample, 0, sizeof(sample));
    snprintf(sample.indicator, sizeof(sample.indicator), "test.backlog");
    sample.value = 1.5;
    for (uint64_t seq = 5; seq <= 6; seq++) {
        assert_int_equal(agent_report_build(cfg, &cfg->collectors[0], keys->signer, seq,
                                            rsl_now_ms(), rsl_now_ms(), &sample, 1, &frame, &len,
                                            NULL),
                         RSL_OK);
        assert_int_equal(agent_spool_append(sp, seq, frame, len, NULL), RSL_OK);
        free(frame);
    }
    agent_spool_close(&sp);
    agent_keys_free(&keys);
    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    write_file(path, "3\n", 2);

    int code = run_daemon(cfg, true, 60000);
    aggregator_stop(&fa);
    assert_int_equal(code, 0);
    assert_int_equal(fa.received[5], 1);
    assert_int_equal(fa.received[6], 1);
    assert_int_equal(fa.received[7], 1); /* the new report: above the backlog */
    for (int i = 1; i <= 4; i++)
        assert_int_equal(fa.received[i], 0);
    assert_string_equal(fa.source, "c1");
    assert_int_equal(fa.bad_signatures, 0);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);
    agent_config_free(&cfg);
}

static void test_delivery_duplicate_drops(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_DUPLICATE, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 2, "");
    int code = run_daemon(cfg, true, 60000);
    aggregator_stop(&fa);
    assert_int_equal(code, 0);
    assert_int_equal(fa.received[1], 1);
    assert_int_equal(fa.received[2], 1);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);
    agent_config_free(&cfg);
}

/* A backlog deeper than one listing pass (1024) and many windows drains
 * completely, each report delivered. */
static void test_delivery_deep_backlog(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];
    struct agent_keys *keys = NULL;
    struct agent_spool *sp = NULL;
    uint8_t *frame = NULL;
    size_t len = 0;
    const uint64_t backlog = 1100;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 1, "");
    assert_int_equal(agent_keys_load(cfg, &keys, NULL), RSL_OK);
    assert_int_equal(agent_spool_open(cfg->spool_dir, &sp, NULL), RSL_OK);
    struct rsl_sample sample;
    memset(&sample, 0, sizeof(sample));
    snprintf(sample.indicator, sizeof(sample.indicator), "test.backlog");
    /* Appended in a scrambled order, as a directory listing would be. */
    for (uint64_t i = 0; i < backlog; i++) {
        uint64_t seq = (i * 7) % backlog + 1;
        sample.value = (double)seq;
        assert_int_equal(agent_report_build(cfg, &cfg->collectors[0], keys->signer, seq,
                                            rsl_now_ms(), rsl_now_ms(), &sample, 1, &frame, &len,
                                            NULL),
                         RSL_OK);
        assert_int_equal(agent_spool_append(sp, seq, frame, len, NULL), RSL_OK);
        free(frame);
    }
    agent_spool_close(&sp);
    agent_keys_free(&keys);

    int code = run_daemon(cfg, true, 120000);
    aggregator_stop(&fa);
    assert_int_equal(code, 0);
    for (uint64_t seq = 1; seq <= backlog + 1; seq++)
        if (fa.received[seq] == 0)
            fail_msg("report %" PRIu64 " never arrived", seq);
    assert_int_equal(fa.received[backlog + 2], 0);
    assert_int_equal(fa.bad_signatures, 0);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);
    agent_config_free(&cfg);
}

/* No acks: --once gives up with exit 1 and the spool keeps everything. */
static void test_delivery_unacked_kept(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_SILENT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 2, "");
    int code = run_daemon(cfg, true, 1500);
    aggregator_stop(&fa);
    assert_int_equal(code, 1);
    assert_true(fa.received[1] >= 1);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 2);
    agent_config_free(&cfg);
}

/* An oversized report is never spooled (the aggregator would disconnect
 * us for it, forever): the run is dropped and nothing is pending. */
static void test_oversized_report_not_spooled(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];
    char conf[4096];
    struct agent_config *cfg = NULL;
    struct rsl_error err;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    /* 600 lines of output make a report far above 1024 bytes. */
    snprintf(conf, sizeof(conf),
             "[agent]\nid = DEU-TEST-01\nnation = DEU\norganisation = T\nkeys = keys\n"
             "spool = spool\nmax_message_bytes = 1024\n"
             "[aggregator]\nendpoints = %s\nserver_key = %s\n"
             "[collector big]\ntype = exec\n"
             "command = i=0; while [ $i -lt 600 ]; do echo test.v_$i $i; i=$((i+1)); done\n",
             fa.endpoint, fa.public_key);
    snprintf(path, sizeof(path), "%s/agent.conf", s->dir);
    write_file(path, conf, strlen(conf));
    rsl_error_clear(&err);
    if (agent_config_load(path, &cfg, &err) != RSL_OK)
        fail_msg("config: %s", err.text);
    int code = run_daemon(cfg, true, 10000);
    aggregator_stop(&fa);
    assert_int_equal(code, 0); /* nothing pending */
    assert_int_equal(fa.frames, 0);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);
    agent_config_free(&cfg);
}

/* SIGTERM: the daemon stops and exits 0; unacked reports stay. */
static void *send_sigterm_later(void *arg)
{
    struct fake_aggregator *fa = arg;
    /* Wait until the agent has sent something, then signal the process. */
    for (int i = 0; i < 1000 && fa->frames == 0; i++)
        usleep(10000);
    kill(getpid(), SIGTERM);
    return NULL;
}

static void test_sigterm_stops_cleanly(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char path[AGENT_PATH_MAX + 64];
    pthread_t killer;
    sigset_t set, old;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_SILENT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 1, "");
    /* The helper thread must not take the signal itself. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    assert_int_equal(pthread_create(&killer, NULL, send_sigterm_later, &fa), 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int code = run_daemon(cfg, false, 0);
    pthread_join(killer, NULL);
    aggregator_stop(&fa);
    assert_int_equal(code, 0);
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 1);
    agent_config_free(&cfg);
}

/* ---- backoff ---------------------------------------------------------------- */

static void test_backoff(void **state)
{
    (void)state;
    /* Exponential from the base, capped, spread in [0.75, 1.25) x. */
    for (uint32_t r = 0; r < 2000; r += 7) {
        int64_t prev_lo = 0;
        for (unsigned attempt = 1; attempt <= 40; attempt++) {
            int64_t v = agent_backoff_ms(1000, 60000, attempt, r * 2654435761U);
            int64_t d = attempt <= 6 ? 1000LL << (attempt - 1) : 60000;
            if (d > 60000)
                d = 60000;
            if (v < d - d / 4 || v >= d + d / 4 + 1 || v > 60000)
                fail_msg("attempt %u: %lld outside [%lld, %lld)", attempt, (long long)v,
                         (long long)(d - d / 4), (long long)(d + d / 4));
            assert_true(d - d / 4 >= prev_lo); /* the range only moves up */
            prev_lo = d - d / 4;
        }
    }
    /* The spread is real: different randomness, different waits. */
    assert_int_not_equal(agent_backoff_ms(1000, 60000, 1, 0), agent_backoff_ms(1000, 60000, 1, 499));
    assert_int_equal(agent_backoff_ms(1000, 60000, 1, 0), 750);
    assert_int_equal(agent_backoff_ms(1000, 60000, 1, 499), 1249);
    /* A cap below the base is raised to it; huge attempts do not overflow. */
    assert_true(agent_backoff_ms(30000, 1000, 1, 0) <= 30000);
    assert_true(agent_backoff_ms(30000, 1000, 1, 0) >= 22500);
    assert_true(agent_backoff_ms(1000, INT64_MAX / 2, 4000000000U, 12345) > 0);
    assert_true(agent_backoff_ms(0, 0, 0, 0) >= 1);
}

/* ---- congestion window --------------------------------------------------------- */

static void test_cwnd(void **state)
{
    (void)state;
    struct agent_cwnd c;
    agent_cwnd_init(&c, 512);
    assert_int_equal(c.cwnd, AGENT_CWND_INITIAL);
    /* Slow start: one more per ack, up to the configured window. */
    for (int i = 0; i < 10; i++)
        agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, AGENT_CWND_INITIAL + 10);
    for (int i = 0; i < 10000; i++)
        agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, 512);

    /* A whole window turned away at once - every report sent before the
     * first RETRY_LATER came back, all in the same millisecond - is one
     * round: halved once, not 512 times. */
    uint64_t sent[512];
    for (int i = 0; i < 512; i++)
        sent[i] = agent_cwnd_sent(&c);
    assert_true(agent_cwnd_retry_later(&c, sent[0]));
    assert_int_equal(c.cwnd, 256);
    for (int i = 1; i < 512; i++)
        assert_false(agent_cwnd_retry_later(&c, sent[i]));
    assert_int_equal(c.cwnd, 256);
    /* Above the threshold: one more per window's worth of acks. */
    for (int i = 0; i < 255; i++)
        agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, 256);
    agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, 257);
    /* A report sent after the round began and turned away again: a new
     * round, halved again; down to the floor and not below it. */
    uint64_t later = agent_cwnd_sent(&c);
    assert_true(agent_cwnd_retry_later(&c, later));
    assert_int_equal(c.cwnd, 128);
    for (int round = 0; round < 20; round++)
        assert_true(agent_cwnd_retry_later(&c, agent_cwnd_sent(&c)));
    assert_int_equal(c.cwnd, AGENT_CWND_MIN);
    /* A resend of an old report that comes back late is not a new round. */
    assert_false(agent_cwnd_retry_later(&c, sent[7]));

    /* At the floor, an ack grows it again. */
    agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, AGENT_CWND_MIN + 1);

    /* A new connection: slow start again; nothing sent before it starts a
     * round, the first report sent after it does. */
    agent_cwnd_restart(&c);
    assert_int_equal(c.cwnd, AGENT_CWND_INITIAL);
    assert_int_equal(c.ssthresh, 512);
    assert_false(agent_cwnd_retry_later(&c, later));
    agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, AGENT_CWND_INITIAL + 1);
    assert_true(agent_cwnd_retry_later(&c, agent_cwnd_sent(&c)));
    assert_int_equal(c.cwnd, (AGENT_CWND_INITIAL + 1) / 2);

    /* Windows smaller than the start; a window of 0 is taken as 1. */
    agent_cwnd_init(&c, 2);
    assert_int_equal(c.cwnd, 2);
    assert_true(agent_cwnd_retry_later(&c, agent_cwnd_sent(&c)));
    assert_int_equal(c.cwnd, 1);
    agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, 2);
    agent_cwnd_progress(&c);
    assert_int_equal(c.cwnd, 2);
    agent_cwnd_init(&c, 0);
    assert_int_equal(c.cwnd, 1);
    assert_true(agent_cwnd_retry_later(&c, agent_cwnd_sent(&c)));
    assert_int_equal(c.cwnd, 1);
}

/* ---- failover ----------------------------------------------------------------- */

/* A tcp:// endpoint on 127.0.0.1 where nothing listens (for now). */
static void dead_endpoint(char *out, size_t outlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(out, outlen, "tcp://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    close(fd);
}

/* One round of the daemon's loop for a bare sender. */
static void sender_round(struct agent_sender *snd)
{
    zmq_pollitem_t items[AGENT_SENDER_POLL_ITEMS];
    int64_t now = rsl_monotonic_ms();
    agent_sender_tick(snd, now);
    size_t n = agent_sender_poll_fill(snd, items, AGENT_SENDER_POLL_ITEMS);
    int64_t deadline = agent_sender_next_deadline(snd);
    long timeout = 50;
    if (deadline >= 0 && deadline - now < timeout)
        timeout = deadline <= now ? 0 : (long)(deadline - now);
    assert_true(zmq_poll(items, (int)n, timeout) >= 0);
    agent_sender_poll_handle(snd, items, n, rsl_monotonic_ms());
}

static void spool_reports(struct agent_spool *sp, const struct agent_config *cfg,
                          const struct agent_keys *keys, uint64_t from, uint64_t to)
{
    struct rsl_sample sample;
    memset(&sample, 0, sizeof(sample));
    snprintf(sample.indicator, sizeof(sample.indicator), "test.failover");
    for (uint64_t seq = from; seq <= to; seq++) {
        uint8_t *frame = NULL;
        size_t len = 0;
        sample.value = (double)seq;
        assert_int_equal(agent_report_build(cfg, &cfg->collectors[0], keys->signer, seq,
                                            rsl_now_ms(), rsl_now_ms(), &sample, 1, &frame, &len,
                                            NULL),
                         RSL_OK);
        assert_int_equal(agent_spool_append(sp, seq, frame, len, NULL), RSL_OK);
        free(frame);
    }
}

static void test_failover_and_failback(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator second, first;
    char keys_dir[128];
    char dead[64];
    struct agent_keys *keys = NULL;
    struct agent_spool *sp = NULL;
    struct agent_sender *snd = NULL;

    make_keys(s, keys_dir, sizeof(keys_dir));
    dead_endpoint(dead, sizeof(dead));
    aggregator_start(&second, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &second, 1, "");
    assert_int_equal(agent_keys_load(cfg, &keys, NULL), RSL_OK);
    assert_int_equal(agent_spool_open(cfg->spool_dir, &sp, NULL), RSL_OK);

    void *ctx = zmq_ctx_new();
    const char *endpoints[2] = {dead, second.endpoint};
    struct agent_sender_options so = {
        .agent_id = cfg->id, .endpoints = endpoints, .n_endpoints = 2,
        .server_key = second.public_key, .client_public = keys->curve_public,
        .client_secret = keys->curve_secret, .resend_timeout_ms = 200, .backoff_max_ms = 1000,
        .heartbeat_ms = 200, .max_message_bytes = cfg->max_message_bytes, .window = 4,
        .failover_ms = 300, .failback_probe_ms = 200,
    };
    assert_int_equal(agent_sender_new(ctx, &so, sp, &snd, NULL), RSL_OK);
    assert_string_equal(agent_sender_endpoint(snd), dead);

    /* 1. The first endpoint is dead: the reports arrive at the second. */
    spool_reports(sp, cfg, keys, 1, 10);
    agent_sender_notify(snd, 0);
    int64_t give_up = rsl_monotonic_ms() + 60000;
    while (agent_spool_count(sp) > 0) {
        assert_true(rsl_monotonic_ms() < give_up);
        sender_round(snd);
    }
    assert_string_equal(agent_sender_endpoint(snd), second.endpoint);
    assert_true(agent_sender_stats(snd)->failovers >= 1);
    assert_true(agent_sender_last_ack_ms(snd) > 0);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_true(second.received[seq] >= 1);

    /* 2. The first comes back (same keys): the sender moves back to it and
     * what is spooled next goes there. */
    aggregator_start_at(&first, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01", dead, second.public_key,
                        second.secret_key);
    while (strcmp(agent_sender_endpoint(snd), dead) != 0) {
        assert_true(rsl_monotonic_ms() < give_up);
        sender_round(snd);
    }
    spool_reports(sp, cfg, keys, 11, 15);
    agent_sender_notify(snd, 11);
    while (agent_spool_count(sp) > 0) {
        assert_true(rsl_monotonic_ms() < give_up);
        sender_round(snd);
    }
    agent_sender_free(&snd);
    zmq_ctx_term(ctx);
    aggregator_stop(&first);
    aggregator_stop(&second);
    for (uint64_t seq = 11; seq <= 15; seq++)
        assert_true(first.received[seq] >= 1);
    assert_int_equal(first.equivocations + second.equivocations, 0);
    agent_spool_close(&sp);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
}

/* ---- submit next to a running daemon -------------------------------------------- */

struct submitter {
    const struct agent_config *cfg;
    const char *conf;           /* the config file the daemon was loaded from */
    unsigned n_submits;
    atomic_int done;            /* 1: every submit exited 0, 2: one failed */
    struct fake_aggregator *fa;
    unsigned expected;          /* reports the daemon must have delivered */
};

/* Runs the real `resilience-agent -c CONF submit test.manual=I:pct` as a
 * separate process N times (posix_spawn: this process has threads, so a
 * forked child running library code could deadlock on a lock another
 * thread held at the fork), then waits until everything arrived, then
 * stops the daemon (this process) with SIGTERM. */
static void *submit_watcher(void *arg)
{
    struct submitter *w = arg;
    extern char **environ;
    int result = 1;
    usleep(100000);
    for (unsigned i = 0; i < w->n_submits && result == 1; i++) {
        char value[64];
        snprintf(value, sizeof(value), "test.manual=%u:pct", i);
        char *argv[] = {(char *)"resilience-agent", (char *)"-c", (char *)w->conf,
                        (char *)"submit", value, NULL};
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status = 0;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        if (posix_spawn(&pid, RSL_AGENT_BIN, &fa, NULL, argv, environ) != 0 ||
            waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            result = 2;
        posix_spawn_file_actions_destroy(&fa);
        usleep(5000);
    }
    atomic_store(&w->done, result);
    char pending[AGENT_PATH_MAX + 16];
    snprintf(pending, sizeof(pending), "%s/pending", w->cfg->spool_dir);
    for (int i = 0; i < 6000 && result == 1; i++) {
        if (w->fa->submitted >= w->expected && count_files(pending) == 0)
            break;
        usleep(10000);
    }
    kill(getpid(), SIGTERM);
    return NULL;
}

static void test_submit_while_daemon_runs(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128], conf[AGENT_PATH_MAX + 64];
    pthread_t watcher;
    sigset_t set, old;
    const unsigned n_submits = 40;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    /* Three static collectors every 100 ms compete for numbers. */
    struct agent_config *cfg = write_agent_config(s, &fa, 3, "");
    for (size_t i = 0; i < cfg->n_collectors; i++)
        cfg->collectors[i].interval_ms = 100;
    snprintf(conf, sizeof(conf), "%s/agent.conf", s->dir);

    struct submitter w = {.cfg = cfg, .conf = conf, .n_submits = n_submits, .fa = &fa,
                          .expected = n_submits};
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    assert_int_equal(pthread_create(&watcher, NULL, submit_watcher, &w), 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int code = run_daemon(cfg, false, 0);
    pthread_join(watcher, NULL);
    aggregator_stop(&fa);

    assert_int_equal(code, 0);
    assert_int_equal(atomic_load(&w.done), 1);
    assert_int_equal(fa.submitted, n_submits);
    assert_int_equal(fa.equivocations, 0); /* no number carried two reports */
    assert_int_equal(fa.bad_signatures, 0);
    char path[AGENT_PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/pending", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);
    snprintf(path, sizeof(path), "%s/rejected", cfg->spool_dir);
    assert_int_equal(count_files(path), 0);

    /* Submitted with the daemon stopped: it waits in the spool and the next
     * start delivers it. */
    struct agent_keys *keys = NULL;
    struct rsl_sample sample;
    uint64_t seq = 0;
    assert_int_equal(agent_keys_load(cfg, &keys, NULL), RSL_OK);
    assert_int_equal(agent_submit_parse_arg("test.offline=1", &sample, NULL), RSL_OK);
    assert_int_equal(agent_submit(cfg, keys, &sample, 1, &seq, NULL), RSL_OK);
    agent_keys_free(&keys);
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    agent_config_free(&cfg);
    cfg = write_agent_config(s, &fa, 1, "");
    assert_int_equal(run_daemon(cfg, true, 60000), 0);
    aggregator_stop(&fa);
    assert_true(seq < MAX_SEQ);
    assert_int_equal(fa.received[seq], 1);
    assert_int_equal(fa.submitted, 1);
    agent_config_free(&cfg);
}

/* ---- SIGHUP reload ---------------------------------------------------------------- */

struct reloader {
    struct fake_aggregator *fa;
    const char *conf;
    char good_text[4096];
    atomic_int phase;     /* how far the script got */
};

static bool wait_value(struct fake_aggregator *fa, int value)
{
    for (int i = 0; i < 3000; i++) {
        if (atomic_load(&fa->last_value) == value)
            return true;
        usleep(10000);
    }
    return false;
}

static void *reload_script(void *arg)
{
    struct reloader *r = arg;
    /* 1. The first config's value arrives. */
    if (!wait_value(r->fa, 10))
        goto out;
    atomic_store(&r->phase, 1);
    /* 2. A bad file: nothing of it applies, the old value keeps coming. */
    char bad[4200];
    snprintf(bad, sizeof(bad), "%s\nintervall = 5\n", r->good_text);
    write_file(r->conf, bad, strlen(bad));
    kill(getpid(), SIGHUP);
    usleep(500000);
    atomic_store(&r->fa->last_value, 0);
    if (!wait_value(r->fa, 10))
        goto out;
    atomic_store(&r->phase, 2);
    /* 3. A good file with another value: it takes effect. */
    char good[4200];
    snprintf(good, sizeof(good), "%s", r->good_text);
    char *v = strstr(good, "value = 10");
    if (v == NULL)
        goto out;
    memcpy(v, "value = 20", 10);
    write_file(r->conf, good, strlen(good));
    kill(getpid(), SIGHUP);
    if (!wait_value(r->fa, 20))
        goto out;
    atomic_store(&r->phase, 3);
out:
    kill(getpid(), SIGTERM);
    return NULL;
}

static void test_sighup_reload(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    char conf[AGENT_PATH_MAX + 64];
    pthread_t thread;
    sigset_t set, old;
    struct rsl_error err;

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 1, "");
    snprintf(conf, sizeof(conf), "%s/agent.conf", s->dir);
    /* One static collector every 100 ms with value 10. */
    char text[4096];
    FILE *f = fopen(conf, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *val = strstr(text, "value = 10");
    assert_non_null(val);
    char *unit = strstr(text, "unit = pct\n");
    assert_non_null(unit);
    struct reloader r = {.fa = &fa, .conf = conf};
    snprintf(r.good_text, sizeof(r.good_text), "%.*sinterval = 100ms\n%s", (int)(unit - text),
             text, unit);
    write_file(conf, r.good_text, strlen(r.good_text));
    agent_config_free(&cfg);
    rsl_error_clear(&err);
    if (agent_config_load(conf, &cfg, &err) != RSL_OK)
        fail_msg("%s", err.text);

    struct agent_keys *keys = NULL;
    struct agent_daemon *d = NULL;
    struct agent_run_options opts = {.once = false};
    assert_int_equal(agent_keys_load(cfg, &keys, NULL), RSL_OK);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    assert_int_equal(agent_daemon_new(cfg, keys, &opts, &d, NULL), RSL_OK);
    assert_int_equal(pthread_create(&thread, NULL, reload_script, &r), 0);
    int code = agent_daemon_run(d);
    pthread_join(thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    aggregator_stop(&fa);
    assert_int_equal(code, 0);
    assert_int_equal(atomic_load(&r.phase), 3);
    assert_int_equal(agent_daemon_stats(d)->reload_failures, 1);
    assert_int_equal(agent_daemon_stats(d)->reloads, 1);
    /* The daemon owns the reloaded config; the first one is still ours. */
    assert_true(agent_daemon_config(d) != cfg);
    assert_true(agent_daemon_config(d)->collectors[0].value == 20.0);
    assert_int_equal(fa.equivocations, 0);
    agent_daemon_free(&d);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
}

/* ---- systemd notifications ---------------------------------------------------------- */

struct notify_listener {
    int fd;
    unsigned ready, stopping, watchdog, status_connected;
    char last_status[256];
};

static void *notify_script(void *arg)
{
    struct notify_listener *l = arg;
    /* Read notifications until READY, a connected STATUS and three
     * watchdog pings have come, then stop the daemon and read the rest. */
    bool stopped = false;
    for (int i = 0; i < 2000; i++) {
        struct pollfd pfd = {l->fd, POLLIN, 0};
        if (poll(&pfd, 1, 10) > 0) {
            char buf[512];
            ssize_t n = recv(l->fd, buf, sizeof(buf) - 1, 0);
            if (n > 0) {
                buf[n] = '\0';
                if (strstr(buf, "READY=1") != NULL)
                    l->ready++;
                if (strstr(buf, "STOPPING=1") != NULL)
                    l->stopping++;
                if (strstr(buf, "WATCHDOG=1") != NULL)
                    l->watchdog++;
                char *st = strstr(buf, "STATUS=");
                if (st != NULL) {
                    snprintf(l->last_status, sizeof(l->last_status), "%s", st + 7);
                    if (strstr(st, "connected to tcp://") != NULL)
                        l->status_connected++;
                }
            }
        }
        if (!stopped && l->ready > 0 && l->status_connected > 0 && l->watchdog >= 3) {
            kill(getpid(), SIGTERM);
            stopped = true;
        }
        if (stopped && l->stopping > 0)
            break;
    }
    if (!stopped)
        kill(getpid(), SIGTERM);
    return NULL;
}

static void test_systemd_notify(void **state)
{
    struct spool_state *s = *state;
    struct fake_aggregator fa;
    char keys_dir[128];
    struct sockaddr_un addr;
    struct notify_listener l;
    pthread_t thread;
    sigset_t set, old;

    memset(&l, 0, sizeof(l));
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/notify", s->dir);
    l.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(l.fd >= 0);
    assert_int_equal(bind(l.fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    setenv("NOTIFY_SOCKET", addr.sun_path, 1);
    setenv("WATCHDOG_USEC", "200000", 1); /* pings every 100 ms */

    make_keys(s, keys_dir, sizeof(keys_dir));
    aggregator_start(&fa, SCRIPT_ACCEPT, keys_dir, "DEU-TEST-01");
    struct agent_config *cfg = write_agent_config(s, &fa, 1, "");
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    assert_int_equal(pthread_create(&thread, NULL, notify_script, &l), 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int code = run_daemon(cfg, false, 0);
    pthread_join(thread, NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    aggregator_stop(&fa);
    close(l.fd);
    assert_int_equal(code, 0);
    assert_int_equal(l.ready, 1);
    assert_true(l.watchdog >= 3);
    assert_true(l.status_connected >= 1);
    assert_int_equal(l.stopping, 1);
    assert_non_null(strstr(l.last_status, "pending"));
    agent_config_free(&cfg);
}

int main(void)
{
    rsl_log_init("test_spool", RSL_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_read_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_entries_quarantined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_cleans_tmp_and_strays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_chunks_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acked_entries_reaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_across_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_totals_and_other_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff, setup, teardown),
        cmocka_unit_test(test_cwnd),
        cmocka_unit_test_setup_teardown(test_failover_and_failback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_while_daemon_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_systemd_notify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_resend_retry_reject, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_backlog_and_counter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_duplicate_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_deep_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delivery_unacked_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_report_not_spooled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_stops_cleanly, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
