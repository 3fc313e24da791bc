/*
 * status.c - the daemon's status file, its lock, and `resilience-agent
 * status` (see status.h).
 *
 * Numbers that must be right even after a crash (depth, bytes, oldest
 * entry, drops, rejected) come from the spool; the status file only adds
 * what lives in the daemon's memory (endpoint, connection, last ack, this
 * run's counters). When the daemon is not running, its last status file is
 * still shown, marked as such: "last ack" then means the last one before
 * it stopped.
 */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <jansson.h>

#include "rsl/util.h"
#include "seq.h"

/* ---- the status file ------------------------------------------------------- */

static json_t *sender_json(const struct agent_sender_stats *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "sent", (json_int_t)s->sent, "resent",
                     (json_int_t)s->resent, "accepted", (json_int_t)s->accepted, "duplicate",
                     (json_int_t)s->duplicate, "rejected", (json_int_t)s->rejected, "retry_later",
                     (json_int_t)s->retry_later, "failovers", (json_int_t)s->failovers);
}

int agent_status_write(const char *spool_dir, const struct agent_status *st, struct rsl_error *err)
{
    char path[AGENT_PATH_MAX + 16];
    char *text = NULL;
    int fd = -1;
    int rc = RSL_OK;
    json_t *root = json_pack(
        "{s:s, s:I, s:I, s:I, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "agent_id",
        st->agent_id, "pid", (json_int_t)st->pid, "started_at_ms", (json_int_t)st->started_at_ms,
        "updated_at_ms", (json_int_t)st->updated_at_ms, "endpoint", st->endpoint, "connected",
        st->connected ? 1 : 0, "pending", (json_int_t)st->pending, "bytes", (json_int_t)st->bytes,
        "in_flight", (json_int_t)st->in_flight, "awaiting_ack", (json_int_t)st->awaiting_ack,
        "window", (json_int_t)st->window, "last_ack_at_ms", (json_int_t)st->last_ack_at_ms, "spooled", (json_int_t)st->spooled,
        "sender", sender_json(&st->sender));
    if (root == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "status: cannot build JSON");
    text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "status: cannot build JSON");
    snprintf(path, sizeof(path), "%s/status", spool_dir);
    /* Rewritten in place (one write from offset 0, then the length cut),
     * not fsynced: it is a view, written up to a few times a second, and a
     * new file each time would cost the file system an inode allocation
     * and free each time. A reader may catch it half-written; it reads
     * again (agent_status_report). */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room: its NUL becomes the newline */
    ssize_t w = pwrite(fd, text, len + 1, 0);
    if (w != (ssize_t)(len + 1) || ftruncate(fd, (off_t)(len + 1)) != 0)
        rc = rsl_error_set(err, RSL_EIO, "%s: %s", path, w < 0 ? strerror(errno) : "short write");
out:
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}

/* Typed members: absent is fine (stays 0), present with another type is
 * an error naming the member. */
static int member_uint(json_t *obj, const char *key, const char *origin, uint64_t *out,
                       struct rsl_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return RSL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return rsl_error_set(err, RSL_EPARSE, "%s: '%s' is not a non-negative integer", origin,
                             key);
    *out = (uint64_t)json_integer_value(v);
    return RSL_OK;
}

static int member_int(json_t *obj, const char *key, const char *origin, int64_t *out,
                      struct rsl_error *err)
{
    uint64_t v = 0;
    int rc = member_uint(obj, key, origin, &v, err);
    if (rc == RSL_OK)
        *out = (int64_t)v;
    return rc;
}

static int member_string(json_t *obj, const char *key, const char *origin, char *out, size_t outlen,
                         struct rsl_error *err)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return RSL_OK;
    if (!json_is_string(v) || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v))
        return rsl_error_set(err, RSL_EPARSE, "%s: '%s' is not a string of at most %zu bytes",
                             origin, key, outlen - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return RSL_OK;
}

int agent_status_parse(const char *buf, size_t len, const char *origin, struct agent_status *out,
                       struct rsl_error *err)
{
    json_error_t jerr;
    json_t *root = NULL;
    struct agent_status st;
    int rc = RSL_OK;

    memset(out, 0, sizeof(*out));
    memset(&st, 0, sizeof(st));
    if (len > AGENT_STATUS_FILE_MAX)
        return rsl_error_set(err, RSL_ETOOBIG, "%s: larger than %d bytes", origin,
                             AGENT_STATUS_FILE_MAX);
    if (memchr(buf, '\0', len) != NULL)
        return rsl_error_set(err, RSL_EPARSE, "%s: contains a NUL byte", origin);
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d:%d: %s", origin, jerr.line, jerr.column,
                             jerr.text);
    if (!json_is_object(root)) {
        rc = rsl_error_set(err, RSL_EPARSE, "%s: not a JSON object", origin);
        goto out;
    }
    json_t *connected = json_object_get(root, "connected");
    if (connected != NULL && !json_is_boolean(connected)) {
        rc = rsl_error_set(err, RSL_EPARSE, "%s: 'connected' is not true or false", origin);
        goto out;
    }
    st.connected = connected != NULL && json_is_true(connected);
    if ((rc = member_string(root, "agent_id", origin, st.agent_id, sizeof(st.agent_id), err)) ||
        (rc = member_string(root, "endpoint", origin, st.endpoint, sizeof(st.endpoint), err)) ||
        (rc = member_int(root, "pid", origin, &st.pid, err)) ||
        (rc = member_int(root, "started_at_ms", origin, &st.started_at_ms, err)) ||
        (rc = member_int(root, "updated_at_ms", origin, &st.updated_at_ms, err)) ||
        (rc = member_uint(root, "pending", origin, &st.pending, err)) ||
        (rc = member_uint(root, "bytes", origin, &st.bytes, err)) ||
        (rc = member_uint(root, "in_flight", origin, &st.in_flight, err)) ||
        (rc = member_uint(root, "awaiting_ack", origin, &st.awaiting_ack, err)) ||
        (rc = member_uint(root, "window", origin, &st.window, err)) ||
        (rc = member_int(root, "last_ack_at_ms", origin, &st.last_ack_at_ms, err)) ||
        (rc = member_uint(root, "spooled", origin, &st.spooled, err)))
        goto out;
    json_t *sender = json_object_get(root, "sender");
    if (sender != NULL) {
        if (!json_is_object(sender)) {
            rc = rsl_error_set(err, RSL_EPARSE, "%s: 'sender' is not an object", origin);
            goto out;
        }
        if ((rc = member_uint(sender, "sent", origin, &st.sender.sent, err)) ||
            (rc = member_uint(sender, "resent", origin, &st.sender.resent, err)) ||
            (rc = member_uint(sender, "accepted", origin, &st.sender.accepted, err)) ||
            (rc = member_uint(sender, "duplicate", origin, &st.sender.duplicate, err)) ||
            (rc = member_uint(sender, "rejected", origin, &st.sender.rejected, err)) ||
            (rc = member_uint(sender, "retry_later", origin, &st.sender.retry_later, err)) ||
            (rc = member_uint(sender, "failovers", origin, &st.sender.failovers, err)))
            goto out;
    }
    *out = st;
out:
    json_decref(root);
    return rc;
}

/* ---- the lock -------------------------------------------------------------- */

int agent_status_lock(const char *spool_dir, int *fd, struct rsl_error *err)
{
    char path[AGENT_PATH_MAX + 16];
    char text[32];
    *fd = -1;
    snprintf(path, sizeof(path), "%s/agent.lock", spool_dir);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (f < 0)
        return rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
    /* `status` holds a shared lock for an instant to ask whether a daemon
     * runs: retry for a second before calling the spool taken. */
    int e = 0;
    for (int tries = 0;; tries++) {
        if (flock(f, LOCK_EX | LOCK_NB) == 0) {
            e = 0;
            break;
        }
        e = errno;
        if (e != EWOULDBLOCK || tries == 19)
            break;
        usleep(50000);
    }
    if (e != 0) {
        ssize_t n = pread(f, text, sizeof(text) - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        close(f);
        if (e == EWOULDBLOCK)
            return rsl_error_set(err, RSL_EEXIST,
                                 "another resilience-agent (pid %s) is running on spool %s",
                                 rsl_trim(text)[0] != '\0' ? rsl_trim(text) : "?", spool_dir);
        return rsl_error_set(err, RSL_EIO, "%s: flock: %s", path, strerror(e));
    }
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, text, (size_t)n, 0) != n) {
        e = errno;
        close(f);
        return rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(e));
    }
    *fd = f;
    return RSL_OK;
}

bool agent_status_daemon_running(const char *spool_dir, int64_t *pid)
{
    char path[AGENT_PATH_MAX + 16];
    char text[32];
    bool running = false;
    *pid = 0;
    snprintf(path, sizeof(path), "%s/agent.lock", spool_dir);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0)
        return false;
    if (flock(f, LOCK_SH | LOCK_NB) != 0) {
        running = errno == EWOULDBLOCK;
    } else {
        flock(f, LOCK_UN);
    }
    if (running) {
        ssize_t n = pread(f, text, sizeof(text) - 1, 0);
        text[n > 0 ? n : 0] = '\0';
        int64_t v;
        if (rsl_parse_int64(rsl_trim(text), 1, INT32_MAX, &v) == RSL_OK)
            *pid = v;
    }
    close(f);
    return running;
}

/* ---- the report ------------------------------------------------------------ */

/* "2d 3h", "1h 05m", "4m 02s", "12s", "0.4s". */
static void fmt_age(int64_t ms, char *out, size_t outlen)
{
    if (ms < 0)
        ms = 0;
    int64_t s = ms / 1000;
    if (s < 10)
        snprintf(out, outlen, "%.1fs", (double)ms / 1000.0);
    else if (s < 60)
        snprintf(out, outlen, "%llds", (long long)s);
    else if (s < 3600)
        snprintf(out, outlen, "%lldm %02llds", (long long)(s / 60), (long long)(s % 60));
    else if (s < 86400)
        snprintf(out, outlen, "%lldh %02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        snprintf(out, outlen, "%lldd %lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

static void fmt_bytes(uint64_t b, char *out, size_t outlen)
{
    if (b < 1024)
        snprintf(out, outlen, "%llu B", (unsigned long long)b);
    else if (b < 1024 * 1024)
        snprintf(out, outlen, "%.1f KiB", (double)b / 1024.0);
    else if (b < 1024ULL * 1024 * 1024)
        snprintf(out, outlen, "%.1f MiB", (double)b / (1024.0 * 1024.0));
    else
        snprintf(out, outlen, "%.2f GiB", (double)b / (1024.0 * 1024.0 * 1024.0));
}

static json_t *time_or_null(int64_t ms)
{
    char text[40];
    if (ms <= 0)
        return json_null();
    rsl_format_time_ms(ms, text, sizeof(text));
    return json_string(text);
}

static json_t *age_or_null(int64_t now, int64_t ms)
{
    if (ms <= 0)
        return json_null();
    return json_real((double)(now - ms) / 1000.0);
}

int agent_status_report(const struct agent_config *cfg, bool json, int64_t now_ms, FILE *out,
                        struct rsl_error *err)
{
    struct agent_spool_summary sum;
    struct agent_status st;
    struct rsl_error serr;
    char path[AGENT_PATH_MAX + 16];
    uint8_t *buf = NULL;
    size_t len = 0;
    bool have_status = false;
    bool spool_exists = true;
    char status_problem[RSL_ERROR_TEXT_MAX] = "";
    uint64_t next_sequence = 0;

    memset(&st, 0, sizeof(st));
    int rc = agent_spool_inspect(cfg->spool_dir, &sum, err);
    if (rc == RSL_ENOENT) {
        spool_exists = false;
        memset(&sum, 0, sizeof(sum));
        rsl_error_clear(err);
    } else if (rc != RSL_OK) {
        return rc;
    }
    int64_t pid = 0;
    bool running = spool_exists && agent_status_daemon_running(cfg->spool_dir, &pid);

    snprintf(path, sizeof(path), "%s/status", cfg->spool_dir);
    /* The daemon rewrites the file in place: a read that caught it half
     * written does not parse; read again. */
    for (int attempt = 0; attempt < 5; attempt++) {
        rsl_error_clear(&serr);
        buf = NULL;
        rc = rsl_file_read_all(path, AGENT_STATUS_FILE_MAX, &buf, &len, &serr);
        if (rc == RSL_OK)
            rc = agent_status_parse((const char *)buf, len, path, &st, &serr);
        free(buf);
        if (rc != RSL_EPARSE)
            break;
        usleep(20000);
    }
    if (rc == RSL_OK)
        have_status = true;
    else if (rc != RSL_ENOENT)
        snprintf(status_problem, sizeof(status_problem), "%s", serr.text);

    snprintf(path, sizeof(path), "%s/sequence", cfg->spool_dir);
    struct agent_seq *seq = NULL;
    if (agent_seq_open(path, &seq, NULL) == RSL_OK)
        next_sequence = agent_seq_peek(seq);
    agent_seq_close(&seq);

    const char *endpoint = have_status && st.endpoint[0] != '\0' ? st.endpoint : cfg->endpoints[0];
    bool connected = running && have_status && st.connected;
    uint64_t drops = sum.counters.dropped_oldest + sum.counters.expired + sum.counters.refused;
    int64_t oldest_age = sum.pending > 0 ? now_ms - sum.oldest_mtime_ms : 0;
    const char *policy =
        cfg->spool_full_policy == AGENT_SPOOL_REFUSE_NEW ? "refuse_new" : "drop_oldest";

    if (json) {
        json_t *root = json_object();
        json_object_set_new(root, "agent_id", json_string(cfg->id));
        json_object_set_new(root, "daemon_running", json_boolean(running));
        json_object_set_new(root, "pid", running && pid > 0 ? json_integer(pid) : json_null());
        json_object_set_new(root, "status_updated_at",
                            have_status ? time_or_null(st.updated_at_ms) : json_null());
        json_object_set_new(root, "endpoint", json_string(endpoint));
        json_object_set_new(root, "connected", json_boolean(connected));
        json_object_set_new(root, "spool_dir", json_string(cfg->spool_dir));
        json_object_set_new(root, "spool_depth", json_integer((json_int_t)sum.pending));
        json_object_set_new(root, "spool_bytes", json_integer((json_int_t)sum.bytes));
        json_object_set_new(root, "spool_max_bytes",
                            json_integer((json_int_t)cfg->spool_max_bytes));
        json_object_set_new(root, "spool_full_policy", json_string(policy));
        json_object_set_new(root, "oldest_unacked_sequence",
                            sum.pending > 0 ? json_integer((json_int_t)sum.oldest_sequence)
                                            : json_null());
        json_object_set_new(root, "oldest_unacked_age_s",
                            sum.pending > 0 ? json_real((double)oldest_age / 1000.0) : json_null());
        json_object_set_new(root, "last_ack_at",
                            have_status ? time_or_null(st.last_ack_at_ms) : json_null());
        json_object_set_new(root, "last_ack_age_s",
                            have_status ? age_or_null(now_ms, st.last_ack_at_ms) : json_null());
        json_object_set_new(root, "drops", json_integer((json_int_t)drops));
        json_object_set_new(root, "drops_detail",
                            json_pack("{s:I, s:I, s:I}", "dropped_oldest",
                                      (json_int_t)sum.counters.dropped_oldest, "expired",
                                      (json_int_t)sum.counters.expired, "refused",
                                      (json_int_t)sum.counters.refused));
        json_object_set_new(root, "rejected", json_integer((json_int_t)sum.rejected));
        json_object_set_new(root, "corrupt", json_integer((json_int_t)sum.corrupt));
        json_object_set_new(root, "next_sequence",
                            next_sequence > 0 ? json_integer((json_int_t)next_sequence)
                                              : json_null());
        json_object_set_new(root, "in_flight",
                            running && have_status ? json_integer((json_int_t)st.in_flight)
                                                   : json_integer(0));
        /* The congestion window (0 from a daemon that did not write it). */
        json_object_set_new(root, "window",
                            running && have_status && st.window > 0
                                ? json_integer((json_int_t)st.window)
                                : json_null());
        if (have_status)
            json_object_set_new(root, "since_start", sender_json(&st.sender));
        if (status_problem[0] != '\0')
            json_object_set_new(root, "status_file_problem", json_string(status_problem));
        if (sum.counters_problem[0] != '\0')
            json_object_set_new(root, "counters_problem", json_string(sum.counters_problem));
        int r = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        fputc('\n', out);
        return r == 0 ? RSL_OK : rsl_error_set(err, RSL_EIO, "cannot write the status");
    }

    char a[48], b[48], c[48];
    if (running)
        fprintf(out, "resilience-agent %s: running (pid %lld)\n", cfg->id, (long long)pid);
    else
        fprintf(out, "resilience-agent %s: not running%s\n", cfg->id,
                spool_exists ? "" : " (no spool yet: it has never run)");
    if (running)
        fprintf(out, "  endpoint        %s (%s)\n", endpoint,
                connected ? "connected" : "not connected");
    else
        fprintf(out, "  endpoint        %s%s\n", endpoint,
                have_status ? " (when last running)" : "");
    fmt_bytes(sum.bytes, a, sizeof(a));
    fmt_bytes(cfg->spool_max_bytes, b, sizeof(b));
    fmt_age(cfg->spool_max_age_ms, c, sizeof(c));
    fprintf(out, "  spool           %llu report%s pending, %s (limit %s, %s, max age %s)\n",
            (unsigned long long)sum.pending, sum.pending == 1 ? "" : "s", a, b, policy, c);
    if (sum.pending > 0) {
        fmt_age(oldest_age, a, sizeof(a));
        fprintf(out, "  oldest unacked  %s (sequence %llu)\n", a,
                (unsigned long long)sum.oldest_sequence);
    } else {
        fprintf(out, "  oldest unacked  - (nothing waiting)\n");
    }
    if (have_status && st.last_ack_at_ms > 0) {
        fmt_age(now_ms - st.last_ack_at_ms, a, sizeof(a));
        rsl_format_time_ms(st.last_ack_at_ms, b, sizeof(b));
        fprintf(out, "  last ack        %s ago (%s)\n", a, b);
    } else {
        fprintf(out, "  last ack        none %s\n", running ? "since start" : "recorded");
    }
    if (running && have_status && st.window > 0)
        fprintf(out, "  in flight       %llu (at most %llu now, window %zu%s)\n",
                (unsigned long long)st.in_flight, (unsigned long long)st.window, cfg->window,
                st.window < cfg->window ? ": the aggregator answered RETRY_LATER" : "");
    fprintf(out, "  drops           %llu (spool full %llu, expired %llu, refused %llu)\n",
            (unsigned long long)drops, (unsigned long long)sum.counters.dropped_oldest,
            (unsigned long long)sum.counters.expired, (unsigned long long)sum.counters.refused);
    fprintf(out, "  rejected        %llu%s%s%s\n", (unsigned long long)sum.rejected,
            sum.rejected > 0 ? " (reasons in " : "", sum.rejected > 0 ? cfg->spool_dir : "",
            sum.rejected > 0 ? "/rejected/*.reason)" : "");
    if (sum.corrupt > 0)
        fprintf(out, "  corrupt         %llu (set aside in %s/corrupt/)\n",
                (unsigned long long)sum.corrupt, cfg->spool_dir);
    if (next_sequence > 0)
        fprintf(out, "  next sequence   %llu\n", (unsigned long long)next_sequence);
    if (status_problem[0] != '\0')
        fprintf(out, "  warning         %s\n", status_problem);
    if (sum.counters_problem[0] != '\0')
        fprintf(out, "  warning         %s\n", sum.counters_problem);
    return RSL_OK;
}
