/*
 * collect.c - collector scheduling and the static, exec, file and http
 * collector types.
 *
 * Scheduling: every collector has a next-due time on the monotonic clock;
 * the first run is due at the first tick, later ones every `interval` after
 * the previous due time (no drift), skipping ahead after a stall rather than
 * running a burst. A collector still running when its next run is due skips
 * that run: runs of one collector never overlap.
 *
 * Exec runs: the child is started with posix_spawn (no copy of our
 * memory), with pipes for stdout and stderr (read non-blockingly here, from
 * the daemon's poll loop), as the leader of its own process group, so a
 * timeout can kill everything the command started (kill(-pgid, SIGKILL)),
 * not just the shell. Exit is noticed
 * through a pidfd (pollable; no SIGCHLD handler, nothing global). When the
 * leader has exited we first kill what is left of its group - while the
 * leader is an unreaped zombie its pid, and so the group id, cannot be
 * reused - then drain the pipes, then reap. Without pidfd_open (old
 * kernels) the exit is polled with waitid(WNOWAIT) every EXEC_EXIT_POLL_MS.
 * posix_spawn also spares us the fork-in-a-threaded-process rules: no code
 * of ours runs in the child.
 *
 * File runs are synchronous: a drop folder is local and its files small
 * (bounded), and reading them is cheaper than any hand-off.
 *
 * Http runs go through one libcurl multi handle per set, created only if
 * an http collector exists. libcurl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION) and when to call it back (TIMERFUNCTION); we
 * keep that in `struct http_engine` and hand it to zmq_poll with the other
 * descriptors. Name resolution uses libcurl's threaded resolver, so nothing
 * here blocks. An easy handle per collector is kept between runs so its
 * connection and TLS session can be reused.
 *
 * Memory: buffers grow with what a run actually produces (exec output,
 * HTTP bodies, samples) and are freed when the run ends; an idle set holds
 * a few hundred bytes per collector.
 */
#include "collect.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "jsonbody.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/util.h"

extern char **environ;

#define EXEC_EXIT_POLL_MS 50
/* A command that floods stderr is not allowed to flood the log too. */
#define EXEC_STDERR_MAX_LINES 50
#define NEVER (-1)
/* Problems remembered per collector for log rate limiting (see collect.h). */
#define PROBLEMS_REMEMBERED 16
/* A bearer token file is small. */
#define TOKEN_MAX 4096
/* Poll-item origin of libcurl's sockets (not a collector index). */
#define ORIGIN_HTTP ((size_t)-1)

struct agent_collectors;
struct collector;

/* One collector type: how a run starts and, for asynchronous types, which
 * descriptors it watches, what happens at its deadline and how it is
 * aborted. A synchronous type sets only `start`. */
struct collector_ops {
    void (*start)(struct agent_collectors *set, struct collector *c, int64_t now);
    size_t (*poll_fill)(struct collector *c, zmq_pollitem_t *items, size_t max, int *roles);
    void (*poll_handle)(struct agent_collectors *set, struct collector *c, int role, int fd,
                        short revents);
    int64_t (*deadline)(const struct collector *c);
    void (*on_deadline)(struct agent_collectors *set, struct collector *c, int64_t now);
    void (*abort)(struct agent_collectors *set, struct collector *c);
};

/* What the exec runner watches; roles of its poll items. */
enum { ROLE_STDOUT, ROLE_STDERR, ROLE_EXIT };

struct exec_run {
    pid_t pid;            /* also the process group id */
    int out_fd;           /* -1 after EOF */
    int err_fd;           /* -1 after EOF */
    int pid_fd;           /* -1 without pidfd support */
    int64_t deadline;     /* monotonic ms: timeout */
    int64_t next_check;   /* monotonic ms: exit poll when pid_fd < 0 */
    char *out;            /* stdout so far (grows up to AGENT_EXEC_OUTPUT_MAX) */
    size_t out_len, out_cap;
    bool out_overflow;    /* more than AGENT_EXEC_OUTPUT_MAX: fail the run */
    char err_line[AGENT_EXEC_STDERR_LINE_MAX + 1];
    size_t err_len;
    unsigned err_lines;   /* lines logged this run */
};

/* An http collector's transfer; allocated for http collectors only. */
struct http_run {
    CURL *easy;                 /* kept between runs: connection reuse */
    struct curl_slist *headers; /* Accept, Authorization (zeroed on free) */
    char *body;
    size_t body_len, body_cap;
    bool overflow;              /* body over AGENT_HTTP_BODY_MAX */
    char errbuf[CURL_ERROR_SIZE];
};

/* Log rate limiting: hashes of this run's problems and the last run's. */
struct problems {
    uint64_t prev[PROBLEMS_REMEMBERED];
    uint64_t cur[PROBLEMS_REMEMBERED];
    uint8_t n_prev, n_cur;
};

struct collector {
    const struct agent_collector_config *cc;
    const struct collector_ops *ops;
    int64_t next_due;     /* monotonic ms, NEVER when no further run */
    bool running;
    bool was_empty;       /* the last run produced nothing (logged once) */
    struct exec_run run;  /* valid while running (exec) */
    struct http_run *http;
    struct problems problems;
};

/* Where each filled poll item came from, so poll_handle needs no search. */
struct poll_origin {
    size_t collector;     /* or ORIGIN_HTTP */
    int role;
    int fd;
};

/* libcurl's view of what to watch. */
struct http_socket {
    curl_socket_t fd;
    int what;             /* CURL_POLL_IN / OUT / INOUT */
};

struct http_engine {
    CURLM *multi;
    struct http_socket *socks;
    size_t n_socks, cap_socks;
    int64_t timer_due;    /* monotonic ms, NEVER when none */
};

struct agent_collectors {
    struct collector *c;
    size_t n;
    agent_collect_fn fn;
    void *ctx;
    bool once;
    struct poll_origin *origin; /* poll_max entries */
    size_t n_origin;
    size_t max_origin;
    struct http_engine *http;   /* NULL without http collectors */
};

/* ---- common ---------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Log a problem of a run: at its level (warning, error) the first time, at
 * info while the same problem repeats run after run - still one line per
 * run, but `journalctl -p warning` shows each problem once. */
static void problem(struct collector *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct collector *c, int level, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct problems *p = &c->problems;
    uint64_t h = fnv1a(text);
    bool repeat = false;
    for (uint8_t i = 0; i < p->n_prev; i++)
        repeat = repeat || p->prev[i] == h;
    if (p->n_cur < PROBLEMS_REMEMBERED)
        p->cur[p->n_cur++] = h;
    rsl_log(repeat ? RSL_LOG_INFO : level, "collector", "%s%s", text,
            repeat ? " (again)" : "");
}

/* A run ended: its problems become the ones to compare the next run with. */
static void problems_end_run(struct collector *c)
{
    struct problems *p = &c->problems;
    memcpy(p->prev, p->cur, sizeof(p->cur));
    p->n_prev = p->n_cur;
    p->n_cur = 0;
}

static void deliver(struct agent_collectors *set, struct collector *c,
                    const struct rsl_sample *samples, size_t n)
{
    problems_end_run(c);
    if (n == 0) {
        /* Once per change: a silent collector every second is one line. */
        rsl_log(c->was_empty ? RSL_LOG_DEBUG : RSL_LOG_NOTICE, "collector",
                "collector %s produced no measurements", c->cc->name);
        c->was_empty = true;
        return;
    }
    c->was_empty = false;
    RSL_DEBUG("collector", "collector %s produced %zu measurement%s", c->cc->name, n,
              n == 1 ? "" : "s");
    set->fn(set->ctx, c->cc, samples, n, rsl_now_ms());
}

/* A run failed (already logged): nothing is delivered. */
static void run_failed(struct collector *c)
{
    problems_end_run(c);
}

/* Seconds for messages: "10s", "1.5s". */
static double seconds(int64_t ms)
{
    return (double)ms / 1000.0;
}

/* Grow *buf to hold `need` bytes, doubling from 4 KiB, never above `max`. */
static int grow(char **buf, size_t *cap, size_t need, size_t max)
{
    if (need <= *cap)
        return RSL_OK;
    if (need > max)
        return RSL_ETOOBIG;
    size_t ncap = *cap == 0 ? 4096 : *cap;
    while (ncap < need)
        ncap *= 2;
    if (ncap > max)
        ncap = max;
    char *p = realloc(*buf, ncap);
    if (p == NULL)
        return RSL_ENOMEM;
    *buf = p;
    *cap = ncap;
    return RSL_OK;
}

/* ---- libcurl, loaded on demand ------------------------------------------------ */

/* libcurl and the two dozen libraries it pulls in (GnuTLS, Kerberos, LDAP,
 * SSH, ...) cost about 450 KiB of private memory just by being mapped and
 * relocated. Most agents have no http collector, so the agent does not link
 * libcurl: it dlopen()s it the first time a set with an http collector is
 * made, and keeps it for the process's life (unloading a library that
 * initialised OpenSSL is asking for trouble). */
struct curl_api {
    bool loaded;
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *easy);
    CURLcode (*easy_setopt)(CURL *easy, CURLoption option, ...);
    CURLcode (*easy_getinfo)(CURL *easy, CURLINFO info, ...);
    const char *(*easy_strerror)(CURLcode code);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_cleanup)(CURLM *multi);
    CURLMcode (*multi_setopt)(CURLM *multi, CURLMoption option, ...);
    CURLMcode (*multi_add_handle)(CURLM *multi, CURL *easy);
    CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *easy);
    CURLMcode (*multi_socket_action)(CURLM *multi, curl_socket_t fd, int ev, int *running);
    CURLMsg *(*multi_info_read)(CURLM *multi, int *left);
    const char *(*multi_strerror)(CURLMcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *text);
    void (*slist_free_all)(struct curl_slist *list);
};

/* Written once, by the loop thread, before any use. */
static struct curl_api curl;

#define CURL_LIBRARY "libcurl.so.4"

static int curl_load(struct rsl_error *err)
{
    if (curl.loaded)
        return RSL_OK;
    void *h = dlopen(CURL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL)
        return rsl_error_set(err, RSL_ECONFIG, "http collectors need %s: %s", CURL_LIBRARY,
                             dlerror());
    struct {
        const char *name;
        void **slot;
    } syms[] = {
#define SYM(field, name) {name, (void **)&curl.field}
        SYM(global_init, "curl_global_init"),
        SYM(global_cleanup, "curl_global_cleanup"),
        SYM(easy_init, "curl_easy_init"),
        SYM(easy_cleanup, "curl_easy_cleanup"),
        SYM(easy_setopt, "curl_easy_setopt"),
        SYM(easy_getinfo, "curl_easy_getinfo"),
        SYM(easy_strerror, "curl_easy_strerror"),
        SYM(multi_init, "curl_multi_init"),
        SYM(multi_cleanup, "curl_multi_cleanup"),
        SYM(multi_setopt, "curl_multi_setopt"),
        SYM(multi_add_handle, "curl_multi_add_handle"),
        SYM(multi_remove_handle, "curl_multi_remove_handle"),
        SYM(multi_socket_action, "curl_multi_socket_action"),
        SYM(multi_info_read, "curl_multi_info_read"),
        SYM(multi_strerror, "curl_multi_strerror"),
        SYM(slist_append, "curl_slist_append"),
        SYM(slist_free_all, "curl_slist_free_all"),
#undef SYM
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        void *f = dlsym(h, syms[i].name);
        if (f == NULL)
            return rsl_error_set(err, RSL_ECONFIG, "%s lacks %s: too old?", CURL_LIBRARY,
                                 syms[i].name);
        /* POSIX guarantees object and function pointers convert. */
        memcpy(syms[i].slot, &f, sizeof(f));
    }
    curl.loaded = true;
    return RSL_OK;
}

/* ---- static ---------------------------------------------------------------- */

static void static_start(struct agent_collectors *set, struct collector *c, int64_t now)
{
    (void)now;
    struct rsl_sample sample;
    memset(&sample, 0, sizeof(sample));
    memcpy(sample.indicator, c->cc->indicator, sizeof(sample.indicator));
    sample.value = c->cc->value;
    memcpy(sample.unit, c->cc->unit, sizeof(sample.unit));
    deliver(set, c, &sample, 1);
}

static const struct collector_ops static_ops = {
    .start = static_start,
};

/* ---- exec ------------------------------------------------------------------ */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* End a run: descriptors closed, buffer freed, ready for the next run. */
static void exec_cleanup(struct collector *c)
{
    struct exec_run *r = &c->run;
    close_fd(&r->out_fd);
    close_fd(&r->err_fd);
    close_fd(&r->pid_fd);
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
    r->out_cap = 0;
    r->out_overflow = false;
    r->err_len = 0;
    r->err_lines = 0;
    r->pid = 0;
    c->running = false;
}

static void flush_stderr_line(struct collector *c)
{
    struct exec_run *r = &c->run;
    if (r->err_len == 0)
        return;
    r->err_line[r->err_len] = '\0';
    r->err_lines++;
    if (r->err_lines <= EXEC_STDERR_MAX_LINES)
        RSL_WARN("collector", "collector %s: stderr: %s", c->cc->name, r->err_line);
    else if (r->err_lines == EXEC_STDERR_MAX_LINES + 1)
        RSL_WARN("collector", "collector %s: more stderr output not logged", c->cc->name);
    r->err_len = 0;
}

/* Read what stdout has; EOF closes it. Stops at the first byte over the
 * cap and sets out_overflow: the caller ends the run. */
static void read_stdout(struct collector *c)
{
    struct exec_run *r = &c->run;
    char chunk[4096];
    while (r->out_fd >= 0 && !r->out_overflow) {
        ssize_t n = read(r->out_fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                RSL_WARN("collector", "collector %s: reading stdout: %s", c->cc->name,
                         strerror(errno));
                close_fd(&r->out_fd);
            }
            return;
        }
        if (n == 0) {
            close_fd(&r->out_fd);
            return;
        }
        int g = grow(&r->out, &r->out_cap, r->out_len + (size_t)n, AGENT_EXEC_OUTPUT_MAX);
        if (g == RSL_ENOMEM)
            RSL_ERR("collector", "collector %s: out of memory", c->cc->name);
        if (g != RSL_OK) {
            r->out_overflow = true;
            return;
        }
        memcpy(r->out + r->out_len, chunk, (size_t)n);
        r->out_len += (size_t)n;
    }
}

/* Read what stderr has and log it line by line. */
static void read_stderr(struct collector *c)
{
    struct exec_run *r = &c->run;
    char chunk[4096];
    while (r->err_fd >= 0) {
        ssize_t n = read(r->err_fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                close_fd(&r->err_fd);
            return;
        }
        if (n == 0) {
            flush_stderr_line(c);
            close_fd(&r->err_fd);
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] == '\n') {
                flush_stderr_line(c);
                continue;
            }
            if (r->err_len == AGENT_EXEC_STDERR_LINE_MAX)
                flush_stderr_line(c);
            r->err_line[r->err_len++] = chunk[i];
        }
    }
}

/* Kill the whole group and reap the leader (it dies at once: SIGKILL). */
static void exec_kill(struct collector *c, int *status)
{
    struct exec_run *r = &c->run;
    if (r->pid <= 0)
        return;
    kill(-r->pid, SIGKILL);
    int st = 0;
    while (waitpid(r->pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (status != NULL)
        *status = st;
}

/* The leader has exited (a zombie until reaped below): clear out the rest
 * of its group, take the last output, reap, and judge the result. */
static void exec_finish(struct agent_collectors *set, struct collector *c)
{
    struct exec_run *r = &c->run;
    const char *name = c->cc->name;
    int status = 0;

    kill(-r->pid, SIGKILL); /* leftovers (background jobs) of this run */
    read_stdout(c);
    read_stderr(c);
    flush_stderr_line(c);
    pid_t reaped;
    while ((reaped = waitpid(r->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (reaped != r->pid) {
        /* Someone else reaped it (SIGCHLD ignored by an embedding
         * program): without a status there is no telling success. */
        problem(c, RSL_LOG_WARNING, "collector %s: exit status lost (%s); no measurements", name,
                strerror(errno));
        run_failed(c);
    } else if (WIFSIGNALED(status)) {
        problem(c, RSL_LOG_WARNING, "collector %s killed by signal %d; no measurements", name,
                WTERMSIG(status));
        run_failed(c);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        problem(c, RSL_LOG_WARNING, "collector %s exited with status %d; no measurements", name,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        run_failed(c);
    } else if (r->out_overflow) {
        problem(c, RSL_LOG_ERR, "collector %s: output larger than %d bytes; no measurements",
                name, AGENT_EXEC_OUTPUT_MAX);
        run_failed(c);
    } else {
        char origin[AGENT_COLLECTOR_NAME_MAX + 16];
        struct rsl_sample *samples = NULL;
        size_t n = 0;
        struct rsl_error err;
        rsl_error_clear(&err);
        snprintf(origin, sizeof(origin), "collector %s", name);
        if (rsl_lineformat_parse(r->out != NULL ? r->out : "", r->out_len, origin,
                                 RSL_MAX_MEASUREMENTS, &samples, &n, &err) != RSL_OK) {
            problem(c, RSL_LOG_ERR, "%s; no measurements", err.text);
            run_failed(c);
        } else {
            deliver(set, c, samples, n);
        }
        free(samples);
    }
    exec_cleanup(c);
}

/* Has the leader exited? Asks without reaping (WNOWAIT) so the pid stays
 * reserved until exec_finish has killed the rest of the group. */
static bool exec_exited(const struct collector *c)
{
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    if (waitid(P_PID, (id_t)c->run.pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
        return errno == ECHILD; /* already gone somehow: treat as exited */
    return info.si_pid == c->run.pid;
}

/* The daemon's environment minus what systemd meant for the daemon alone:
 * a collector that inherited NOTIFY_SOCKET could send READY/WATCHDOG in
 * the agent's name (a hung agent kept alive by a chatty script), and
 * LISTEN_FDS would describe descriptors the child does not have. The
 * array borrows environ's strings; the caller frees only the array. */
static char **child_environ(void)
{
    static const char *const drop[] = {"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=",
                                       "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="};
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **env = calloc(n + 1, sizeof(*env));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool keep = true;
        for (size_t d = 0; d < sizeof(drop) / sizeof(drop[0]) && keep; d++)
            keep = strncmp(environ[i], drop[d], strlen(drop[d])) != 0;
        if (keep)
            env[k++] = environ[i];
    }
    return env;
}

static void exec_start(struct agent_collectors *set, struct collector *c, int64_t now)
{
    (void)set;
    struct exec_run *r = &c->run;
    const char *name = c->cc->name;
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    char *const argv[] = {(char *)"sh", (char *)"-c", (char *)c->cc->command, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_init = false, attr_init = false;
    sigset_t none, all;
    pid_t pid = -1;
    int e;

    /* The read ends are ours and non-blocking; the write ends become the
     * child's stdout/stderr, blocking as a normal program expects (the
     * blocking mode belongs to each end's own open file). */
    if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 ||
        fcntl(out_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(err_pipe[0], F_SETFL, O_NONBLOCK) != 0) {
        e = errno;
        goto fail;
    }
    sigemptyset(&none);
    sigfillset(&all);
    if ((e = posix_spawn_file_actions_init(&fa)) != 0)
        goto fail;
    fa_init = true;
    if ((e = posix_spawnattr_init(&attr)) != 0)
        goto fail;
    attr_init = true;
    /* posix_spawn (vfork-style in glibc) instead of fork: nothing of this
     * process's memory is copied or marked copy-on-write, which makes
     * running a collector every second cheap. Its own process group, so a
     * timeout kills all it started; empty signal mask and default
     * dispositions whatever the daemon blocked or ignored; stdin from
     * /dev/null; no descriptor but 0, 1 and 2. */
    if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, err_pipe[1], 2)) != 0 ||
        (e = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
        (e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) != 0 ||
        (e = posix_spawnattr_setpgroup(&attr, 0)) != 0 ||
        (e = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
        (e = posix_spawnattr_setsigdefault(&attr, &all)) != 0)
        goto fail;
    char **env = child_environ();
    if (env == NULL) {
        e = ENOMEM;
        goto fail;
    }
    e = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, env);
    free(env);
    if (e != 0) {
        pid = -1;
        goto fail;
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close_fd(&out_pipe[1]);
    close_fd(&err_pipe[1]);
    r->pid = pid;
    r->out_fd = out_pipe[0];
    r->err_fd = err_pipe[0];
    r->pid_fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (r->pid_fd >= 0)
        fcntl(r->pid_fd, F_SETFD, FD_CLOEXEC);
    r->deadline = now + c->cc->timeout_ms;
    r->next_check = now + EXEC_EXIT_POLL_MS;
    r->out = NULL;
    r->out_len = 0;
    r->out_cap = 0;
    r->out_overflow = false;
    r->err_len = 0;
    c->running = true;
    RSL_DEBUG("collector", "collector %s started (pid %d)", name, (int)pid);
    return;
fail:
    problem(c, RSL_LOG_ERR, "collector %s: cannot start /bin/sh: %s", name, strerror(e));
    run_failed(c);
    if (fa_init)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_init)
        posix_spawnattr_destroy(&attr);
    close_fd(&out_pipe[0]);
    close_fd(&out_pipe[1]);
    close_fd(&err_pipe[0]);
    close_fd(&err_pipe[1]);
}

static size_t exec_poll_fill(struct collector *c, zmq_pollitem_t *items, size_t max, int *roles)
{
    struct exec_run *r = &c->run;
    const int fds[3] = {r->out_fd, r->err_fd, r->pid_fd};
    const int role[3] = {ROLE_STDOUT, ROLE_STDERR, ROLE_EXIT};
    size_t n = 0;
    for (int i = 0; i < 3 && n < max; i++) {
        if (fds[i] < 0)
            continue;
        items[n].socket = NULL;
        items[n].fd = fds[i];
        items[n].events = ZMQ_POLLIN;
        items[n].revents = 0;
        roles[n] = role[i];
        n++;
    }
    return n;
}

static void exec_poll_handle(struct agent_collectors *set, struct collector *c, int role, int fd,
                             short revents)
{
    struct exec_run *r = &c->run;
    (void)revents; /* POLLIN, POLLHUP and POLLERR all mean: read and see */
    /* An earlier item of this poll round may have closed this descriptor
     * (exit drains and closes the pipes, ending the run). */
    if (fd < 0 || (fd != r->out_fd && fd != r->err_fd && fd != r->pid_fd))
        return;
    if (role == ROLE_STDOUT) {
        read_stdout(c);
        if (r->out_overflow) {
            /* No point letting it run on: the result is discarded anyway. */
            exec_kill(c, NULL);
            read_stderr(c);
            flush_stderr_line(c);
            problem(c, RSL_LOG_ERR, "collector %s: output larger than %d bytes; killed, no "
                    "measurements", c->cc->name, AGENT_EXEC_OUTPUT_MAX);
            run_failed(c);
            exec_cleanup(c);
        }
    } else if (role == ROLE_STDERR) {
        read_stderr(c);
    } else if (exec_exited(c)) {
        exec_finish(set, c);
    }
}

static int64_t exec_deadline(const struct collector *c)
{
    const struct exec_run *r = &c->run;
    if (r->pid_fd < 0 && r->next_check < r->deadline)
        return r->next_check;
    return r->deadline;
}

static void exec_on_deadline(struct agent_collectors *set, struct collector *c, int64_t now)
{
    struct exec_run *r = &c->run;
    if (exec_exited(c)) {
        exec_finish(set, c);
        return;
    }
    if (now < r->deadline) {
        r->next_check = now + EXEC_EXIT_POLL_MS;
        return;
    }
    exec_kill(c, NULL);
    read_stderr(c);
    flush_stderr_line(c);
    problem(c, RSL_LOG_WARNING, "collector %s timed out after %gs; killed", c->cc->name,
            seconds(c->cc->timeout_ms));
    run_failed(c);
    exec_cleanup(c);
}

static void exec_abort(struct agent_collectors *set, struct collector *c)
{
    (void)set;
    exec_kill(c, NULL);
    exec_cleanup(c);
}

static const struct collector_ops exec_ops = {
    .start = exec_start,
    .poll_fill = exec_poll_fill,
    .poll_handle = exec_poll_handle,
    .deadline = exec_deadline,
    .on_deadline = exec_on_deadline,
    .abort = exec_abort,
};

/* ---- file ------------------------------------------------------------------ */

static bool drop_file_name(const char *name)
{
    /* Writers create ".name.prom.tmp" or "name.prom.$$" and rename it into
     * place: only the final names count, hidden files never. */
    if (name[0] == '.')
        return false;
    size_t n = strlen(name);
    static const char *const suffixes[] = {".prom", ".txt", ".rsl"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(name + n - k, suffixes[i]) == 0)
            return true;
    }
    return false;
}

/* Read one drop file (regular, at most AGENT_FILE_MAX_BYTES) into a new
 * buffer; *mtime_ms is its modification time. RSL_ENOENT when it vanished
 * (renamed over or removed meanwhile: not a problem). */
static int read_drop_file(int dirfd, const char *name, char **out, size_t *len,
                          int64_t *mtime_ms, const char **why)
{
    struct stat st;
    char *buf = NULL;
    int rc = RSL_OK;
    *out = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO given a drop-file name must not hang the loop. */
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        *why = strerror(errno);
        return errno == ENOENT ? RSL_ENOENT : RSL_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        rc = RSL_EINVAL;
        goto out;
    }
    *mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    if (st.st_size > AGENT_FILE_MAX_BYTES) {
        *why = "larger than 1 MiB";
        rc = RSL_ETOOBIG;
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        *why = "out of memory";
        rc = RSL_ENOMEM;
        goto out;
    }
    size_t got = 0;
    if (rsl_read_full(fd, buf, (size_t)st.st_size + 1, &got) != 0) {
        *why = strerror(errno);
        rc = RSL_EIO;
        goto out;
    }
    if (got > (size_t)st.st_size) {
        /* Written in place instead of renamed: it is changing under us. */
        *why = "grew while being read (write drop files by atomic rename)";
        rc = RSL_EAGAIN;
        goto out;
    }
    *out = buf;
    *len = got;
    buf = NULL; /* transferred */
out:
    free(buf);
    close(fd);
    return rc;
}

static void file_start(struct agent_collectors *set, struct collector *c, int64_t now)
{
    (void)now;
    const struct agent_collector_config *cc = c->cc;
    struct rsl_sample *all = NULL;
    size_t n_all = 0;
    int64_t wall = rsl_now_ms();
    DIR *d = opendir(cc->path);
    if (d == NULL) {
        problem(c, RSL_LOG_ERR, "collector %s: %s: %s; no measurements", cc->name, cc->path,
                strerror(errno));
        run_failed(c);
        return;
    }
    int dirfd_ = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (!drop_file_name(name))
            continue;
        char *text = NULL;
        size_t len = 0;
        int64_t mtime = 0;
        const char *why = NULL;
        int rc = read_drop_file(dirfd_, name, &text, &len, &mtime, &why);
        if (rc == RSL_ENOENT)
            continue;
        if (rc != RSL_OK) {
            problem(c, RSL_LOG_WARNING, "collector %s: %s/%s: %s; skipped", cc->name, cc->path,
                    name, why);
            continue;
        }
        if (wall - mtime > cc->max_age_ms) {
            char when[40];
            rsl_format_time_ms(mtime, when, sizeof(when));
            problem(c, RSL_LOG_WARNING,
                    "collector %s: %s/%s is stale (written %s, older than max_age %gs); skipped",
                    cc->name, cc->path, name, when, seconds(cc->max_age_ms));
            free(text);
            continue;
        }
        char origin[AGENT_PATH_MAX + 300];
        struct rsl_sample *samples = NULL;
        size_t n = 0;
        struct rsl_error err;
        rsl_error_clear(&err);
        snprintf(origin, sizeof(origin), "%s/%s", cc->path, name);
        rc = rsl_lineformat_parse(text, len, origin, RSL_MAX_MEASUREMENTS - n_all, &samples, &n,
                                  &err);
        free(text);
        if (rc != RSL_OK) {
            problem(c, RSL_LOG_ERR, "collector %s: %s; file skipped", cc->name, err.text);
            continue;
        }
        if (n > 0) {
            struct rsl_sample *grown = realloc(all, (n_all + n) * sizeof(*all));
            if (grown == NULL) {
                RSL_ERR("collector", "collector %s: out of memory", cc->name);
                free(samples);
                continue;
            }
            all = grown;
            /* node_exporter semantics: the file's time is the samples'
             * time, unless a line carries its own. */
            for (size_t i = 0; i < n; i++)
                if (samples[i].observed_at_ms == 0)
                    samples[i].observed_at_ms = mtime;
            memcpy(all + n_all, samples, n * sizeof(*samples));
            n_all += n;
        }
        free(samples);
    }
    closedir(d);
    deliver(set, c, all, n_all);
    free(all);
}

static const struct collector_ops file_ops = {
    .start = file_start,
};

/* ---- http ------------------------------------------------------------------ */

static int http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct http_engine *e = userp;
    for (size_t i = 0; i < e->n_socks; i++) {
        if (e->socks[i].fd != fd)
            continue;
        if (what == CURL_POLL_REMOVE)
            e->socks[i] = e->socks[--e->n_socks];
        else
            e->socks[i].what = what;
        return 0;
    }
    if (what == CURL_POLL_REMOVE)
        return 0;
    if (e->n_socks == e->cap_socks) {
        size_t cap = e->cap_socks == 0 ? 4 : e->cap_socks * 2;
        struct http_socket *p = realloc(e->socks, cap * sizeof(*p));
        if (p == NULL)
            return -1; /* libcurl fails the transfer */
        e->socks = p;
        e->cap_socks = cap;
    }
    e->socks[e->n_socks].fd = fd;
    e->socks[e->n_socks].what = what;
    e->n_socks++;
    return 0;
}

static int http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct http_engine *e = userp;
    e->timer_due = timeout_ms < 0 ? NEVER : rsl_monotonic_ms() + timeout_ms;
    return 0;
}

static size_t http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_run *h = userp;
    size_t n = size * nmemb;
    if (grow(&h->body, &h->body_cap, h->body_len + n, AGENT_HTTP_BODY_MAX) != RSL_OK) {
        h->overflow = true;
        return 0; /* libcurl aborts the transfer (CURLE_WRITE_ERROR) */
    }
    memcpy(h->body + h->body_len, data, n);
    h->body_len += n;
    return n;
}

static void http_body_free(struct http_run *h)
{
    free(h->body);
    h->body = NULL;
    h->body_len = h->body_cap = 0;
    h->overflow = false;
}

static void http_run_free(struct http_run **hp)
{
    struct http_run *h = *hp;
    if (h == NULL)
        return;
    if (h->easy != NULL)
        curl.easy_cleanup(h->easy);
    /* The Authorization header holds the token: zero before freeing. */
    for (struct curl_slist *l = h->headers; l != NULL; l = l->next)
        rsl_secure_zero(l->data, strlen(l->data));
    curl.slist_free_all(h->headers);
    http_body_free(h);
    free(h);
    *hp = NULL;
}

/* Read and check a bearer token file: private, one line, printable. */
static int read_token(const struct agent_collector_config *cc, char *out, size_t outlen,
                      struct rsl_error *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    if ((rc = rsl_key_file_check_private(cc->bearer_token_file, err)) != RSL_OK ||
        (rc = rsl_file_read_all(cc->bearer_token_file, TOKEN_MAX, &buf, &len, err)) != RSL_OK)
        goto out;
    char *t = memchr(buf, '\0', len) == NULL ? rsl_trim((char *)buf) : NULL;
    bool ok = t != NULL && t[0] != '\0' && strlen(t) < outlen;
    for (const char *p = t; ok && *p != '\0'; p++)
        ok = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f;
    if (!ok) {
        rc = rsl_error_set(err, RSL_ECONFIG,
                           "%s: not a token (one line of printable characters, no spaces)",
                           cc->bearer_token_file);
        goto out;
    }
    memcpy(out, t, strlen(t) + 1);
out:
    if (buf != NULL) {
        rsl_secure_zero(buf, len);
        free(buf);
    }
    return rc;
}

/* The easy handle of an http collector, set up once. */
static int http_setup(struct collector *c, struct rsl_error *err)
{
    const struct agent_collector_config *cc = c->cc;
    char token[TOKEN_MAX + 32];
    int rc = RSL_OK;
    struct http_run *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    c->http = h;
    h->easy = curl.easy_init();
    if (h->easy == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "collector %s: curl_easy_init failed", cc->name);
    h->headers = curl.slist_append(NULL, "Accept: application/json, text/plain;q=0.9");
    if (h->headers == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    if (cc->bearer_token_file != NULL) {
        memcpy(token, "Authorization: Bearer ", 22);
        if ((rc = read_token(cc, token + 22, sizeof(token) - 22, err)) != RSL_OK) {
            rsl_error_prefix(err, "collector %s: bearer_token_file", cc->name);
            return rc;
        }
        struct curl_slist *l = curl.slist_append(h->headers, token);
        rsl_secure_zero(token, sizeof(token));
        if (l == NULL)
            return rsl_error_set(err, RSL_ENOMEM, "out of memory");
        h->headers = l;
    }
    CURL *e = h->easy;
    CURLcode cr = CURLE_OK;
    /* Each option can only fail for lack of memory or support; check all. */
#define SETOPT(opt, val)                                                                      \
    do {                                                                                      \
        if (cr == CURLE_OK)                                                                   \
            cr = curl.easy_setopt(e, opt, val);                                               \
    } while (0)
    SETOPT(CURLOPT_URL, cc->url);
    SETOPT(CURLOPT_PRIVATE, (void *)c);
    SETOPT(CURLOPT_WRITEFUNCTION, http_write_cb);
    SETOPT(CURLOPT_WRITEDATA, (void *)h);
    SETOPT(CURLOPT_ERRORBUFFER, h->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_TIMEOUT_MS, (long)cc->timeout_ms);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_HTTPHEADER, h->headers);
    SETOPT(CURLOPT_USERAGENT, "resilience-agent/" RSL_VERSION);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)AGENT_HTTP_BODY_MAX);
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    if (cc->ca_file != NULL)
        SETOPT(CURLOPT_CAINFO, cc->ca_file);
    if (cc->pinned_public_key != NULL)
        SETOPT(CURLOPT_PINNEDPUBLICKEY, cc->pinned_public_key);
#undef SETOPT
    if (cr != CURLE_OK)
        return rsl_error_set(err, RSL_ECONFIG, "collector %s: libcurl: %s", cc->name,
                             curl.easy_strerror(cr));
    return RSL_OK;
}

static void http_start(struct agent_collectors *set, struct collector *c, int64_t now)
{
    (void)now;
    struct http_run *h = c->http;
    http_body_free(h);
    h->errbuf[0] = '\0';
    CURLMcode mc = curl.multi_add_handle(set->http->multi, h->easy);
    if (mc != CURLM_OK) {
        problem(c, RSL_LOG_ERR, "collector %s: cannot start: %s", c->cc->name,
                curl.multi_strerror(mc));
        run_failed(c);
        return;
    }
    c->running = true;
    RSL_DEBUG("collector", "collector %s: GET %s", c->cc->name, c->cc->url);
}

/* "application/json; charset=utf-8" and the like. */
static bool is_json_type(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* A transfer ended: judge it, parse the body, deliver. */
static void http_finish(struct agent_collectors *set, struct collector *c, CURLcode result)
{
    const struct agent_collector_config *cc = c->cc;
    struct http_run *h = c->http;
    long status = 0;
    char *ctype = NULL;
    c->running = false;
    if (h->overflow || result == CURLE_FILESIZE_EXCEEDED) {
        problem(c, RSL_LOG_ERR, "collector %s: GET %s: body larger than %d bytes; no "
                "measurements", cc->name, cc->url, AGENT_HTTP_BODY_MAX);
        goto failed;
    }
    if (result != CURLE_OK) {
        problem(c, RSL_LOG_ERR, "collector %s: GET %s: %s; no measurements", cc->name, cc->url,
                h->errbuf[0] != '\0' ? h->errbuf : curl.easy_strerror(result));
        goto failed;
    }
    curl.easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        problem(c, RSL_LOG_ERR, "collector %s: GET %s: HTTP status %ld; no measurements",
                cc->name, cc->url, status);
        goto failed;
    }
    curl.easy_getinfo(h->easy, CURLINFO_CONTENT_TYPE, &ctype);
    bool json = cc->format == AGENT_HTTP_JSON || (cc->format == AGENT_HTTP_AUTO && is_json_type(ctype));
    struct rsl_sample *samples = NULL;
    size_t n = 0;
    struct rsl_error err;
    char origin[AGENT_URL_MAX + 16];
    rsl_error_clear(&err);
    snprintf(origin, sizeof(origin), "%s", cc->url);
    const char *body = h->body != NULL ? h->body : "";
    int rc = json ? agent_json_parse(body, h->body_len, origin, RSL_MAX_MEASUREMENTS, &samples,
                                     &n, &err)
                  : rsl_lineformat_parse(body, h->body_len, origin, RSL_MAX_MEASUREMENTS,
                                         &samples, &n, &err);
    if (rc != RSL_OK) {
        problem(c, RSL_LOG_ERR, "collector %s: %s; no measurements", cc->name, err.text);
        free(samples);
        goto failed;
    }
    http_body_free(h);
    deliver(set, c, samples, n);
    free(samples);
    return;
failed:
    run_failed(c);
    http_body_free(h);
}

static void http_abort(struct agent_collectors *set, struct collector *c)
{
    if (set->http != NULL && c->http != NULL && c->http->easy != NULL)
        curl.multi_remove_handle(set->http->multi, c->http->easy);
    if (c->http != NULL)
        http_body_free(c->http);
    c->running = false;
}

static const struct collector_ops http_ops = {
    .start = http_start,
    .abort = http_abort,
};

/* Finished transfers: hand each to its collector. */
static void http_check_done(struct agent_collectors *set)
{
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl.multi_info_read(set->http->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        struct collector *c = NULL;
        curl.easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
        curl.multi_remove_handle(set->http->multi, easy);
        if (c != NULL)
            http_finish(set, c, result);
    }
}

static void http_socket_action(struct agent_collectors *set, curl_socket_t fd, int ev)
{
    int running = 0;
    CURLMcode mc = curl.multi_socket_action(set->http->multi, fd, ev, &running);
    if (mc != CURLM_OK)
        RSL_ERR("collector", "libcurl: %s", curl.multi_strerror(mc));
    http_check_done(set);
}

static int http_engine_new(struct agent_collectors *set, struct rsl_error *err)
{
    /* Only now: an agent without http collectors never loads or
     * initialises libcurl (memory, and OpenSSL state it would set up). */
    int rc = curl_load(err);
    if (rc != RSL_OK)
        return rc;
    if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return rsl_error_set(err, RSL_ECRYPTO, "curl_global_init failed");
    struct http_engine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        curl.global_cleanup();
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    }
    set->http = e;
    e->timer_due = NEVER;
    e->multi = curl.multi_init();
    if (e->multi == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "curl_multi_init failed");
    curl.multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
    curl.multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e);
    curl.multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
    curl.multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e);
    return RSL_OK;
}

static void http_engine_free(struct agent_collectors *set)
{
    struct http_engine *e = set->http;
    if (e == NULL)
        return;
    for (size_t i = 0; set->c != NULL && i < set->n; i++) {
        if (set->c[i].http != NULL && set->c[i].running)
            curl.multi_remove_handle(e->multi, set->c[i].http->easy);
        http_run_free(&set->c[i].http);
    }
    if (e->multi != NULL)
        curl.multi_cleanup(e->multi);
    free(e->socks);
    free(e);
    set->http = NULL;
    curl.global_cleanup();
}

/* ---- the set --------------------------------------------------------------- */

static const struct collector_ops *ops_for(enum agent_collector_type type)
{
    switch (type) {
    case AGENT_COLLECTOR_STATIC: return &static_ops;
    case AGENT_COLLECTOR_EXEC: return &exec_ops;
    case AGENT_COLLECTOR_FILE: return &file_ops;
    case AGENT_COLLECTOR_HTTP: return &http_ops;
    }
    return NULL;
}

int agent_collectors_new(const struct agent_config *cfg, agent_collect_fn fn, void *ctx,
                         struct agent_collectors **out, struct rsl_error *err)
{
    struct agent_collectors *set = NULL;
    int rc = RSL_OK;
    *out = NULL;
    set = calloc(1, sizeof(*set));
    if (set == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    set->fn = fn;
    set->ctx = ctx;
    set->n = cfg->n_collectors;
    size_t n_http = 0;
    for (size_t i = 0; i < set->n; i++)
        n_http += cfg->collectors[i].type == AGENT_COLLECTOR_HTTP ? 1 : 0;
    /* exec: three descriptors each; http: libcurl's sockets, usually one
     * per transfer, a few more while connecting (happy eyeballs). */
    set->max_origin = set->n * 3 + n_http * 4;
    if (set->n > 0) {
        set->c = calloc(set->n, sizeof(*set->c));
        set->origin = calloc(set->max_origin, sizeof(*set->origin));
        if (set->c == NULL || set->origin == NULL) {
            rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
            goto fail;
        }
    }
    for (size_t i = 0; i < set->n; i++) {
        struct collector *c = &set->c[i];
        c->cc = &cfg->collectors[i];
        c->ops = ops_for(c->cc->type);
        c->next_due = 0; /* due at the first tick */
        c->run.out_fd = c->run.err_fd = c->run.pid_fd = -1;
        if (c->ops == NULL) {
            rc = rsl_error_set(err, RSL_EINVAL, "collector %s: unsupported type", c->cc->name);
            goto fail;
        }
    }
    if (n_http > 0) {
        if ((rc = http_engine_new(set, err)) != RSL_OK)
            goto fail;
        for (size_t i = 0; i < set->n; i++)
            if (set->c[i].cc->type == AGENT_COLLECTOR_HTTP &&
                (rc = http_setup(&set->c[i], err)) != RSL_OK)
                goto fail;
    }
    *out = set;
    return RSL_OK;
fail:
    agent_collectors_free(&set);
    return rc;
}

static void check_sink(void *ctx, const struct agent_collector_config *cc,
                       const struct rsl_sample *samples, size_t n, int64_t collected_at_ms)
{
    (void)ctx;
    (void)cc;
    (void)samples;
    (void)n;
    (void)collected_at_ms;
}

int agent_collectors_check(const struct agent_config *cfg, struct rsl_error *err)
{
    struct agent_collectors *set = NULL;
    int rc = agent_collectors_new(cfg, check_sink, NULL, &set, err);
    agent_collectors_free(&set);
    return rc;
}

void agent_collectors_stop(struct agent_collectors *set)
{
    for (size_t i = 0; i < set->n; i++) {
        struct collector *c = &set->c[i];
        if (c->running && c->ops->abort != NULL) {
            RSL_INFO("collector", "collector %s stopped", c->cc->name);
            c->ops->abort(set, c);
        }
        c->running = false;
        c->next_due = NEVER;
    }
}

void agent_collectors_free(struct agent_collectors **set)
{
    if (set == NULL || *set == NULL)
        return;
    if ((*set)->c != NULL)
        agent_collectors_stop(*set);
    http_engine_free(*set);
    free((*set)->c);
    free((*set)->origin);
    free(*set);
    *set = NULL;
}

void agent_collectors_set_once(struct agent_collectors *set)
{
    set->once = true;
}

void agent_collectors_tick(struct agent_collectors *set, int64_t now)
{
    if (set->http != NULL && set->http->timer_due != NEVER && now >= set->http->timer_due) {
        set->http->timer_due = NEVER;
        http_socket_action(set, CURL_SOCKET_TIMEOUT, 0);
    }
    for (size_t i = 0; i < set->n; i++) {
        struct collector *c = &set->c[i];
        if (c->running && c->ops->deadline != NULL && now >= c->ops->deadline(c))
            c->ops->on_deadline(set, c, now);
        if (c->next_due == NEVER || now < c->next_due)
            continue;
        /* Schedule the next run first: the interval is measured from due
         * time to due time, and a stall (suspend, slow disk) skips ahead
         * instead of catching up with a burst. */
        int64_t due = c->next_due;
        if (set->once) {
            c->next_due = NEVER;
        } else {
            c->next_due = due + c->cc->interval_ms;
            if (c->next_due <= now)
                c->next_due = now + c->cc->interval_ms;
        }
        if (c->running) {
            problem(c, RSL_LOG_WARNING,
                    "collector %s still running after its interval (%gs); skipping this run",
                    c->cc->name, seconds(c->cc->interval_ms));
            continue;
        }
        c->ops->start(set, c, now);
    }
}

int64_t agent_collectors_next_deadline(const struct agent_collectors *set)
{
    int64_t best = NEVER;
    if (set->http != NULL)
        best = set->http->timer_due;
    for (size_t i = 0; i < set->n; i++) {
        const struct collector *c = &set->c[i];
        int64_t t = c->next_due;
        if (c->running && c->ops->deadline != NULL) {
            int64_t d = c->ops->deadline(c);
            if (t == NEVER || d < t)
                t = d;
        }
        if (t != NEVER && (best == NEVER || t < best))
            best = t;
    }
    return best;
}

size_t agent_collectors_poll_max(const struct agent_collectors *set)
{
    return set->max_origin;
}

size_t agent_collectors_poll_fill(struct agent_collectors *set, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    int roles[3];
    if (max > set->max_origin)
        max = set->max_origin;
    for (size_t i = 0; i < set->n && n < max; i++) {
        struct collector *c = &set->c[i];
        if (!c->running || c->ops->poll_fill == NULL)
            continue;
        size_t room = max - n < 3 ? max - n : 3;
        size_t got = c->ops->poll_fill(c, items + n, room, roles);
        for (size_t k = 0; k < got; k++) {
            set->origin[n + k].collector = i;
            set->origin[n + k].role = roles[k];
            set->origin[n + k].fd = items[n + k].fd;
        }
        n += got;
    }
    if (set->http != NULL) {
        const struct http_engine *e = set->http;
        /* More sockets than room (not expected) are polled next round:
         * libcurl's timer still drives them meanwhile. */
        for (size_t k = 0; k < e->n_socks && n < max; k++) {
            int what = e->socks[k].what;
            items[n].socket = NULL;
            items[n].fd = e->socks[k].fd;
            items[n].events = (short)(((what & CURL_POLL_IN) ? ZMQ_POLLIN : 0) |
                                      ((what & CURL_POLL_OUT) ? ZMQ_POLLOUT : 0));
            items[n].revents = 0;
            set->origin[n].collector = ORIGIN_HTTP;
            set->origin[n].role = 0;
            set->origin[n].fd = e->socks[k].fd;
            n++;
        }
    }
    set->n_origin = n;
    return n;
}

void agent_collectors_poll_handle(struct agent_collectors *set, const zmq_pollitem_t *items,
                                  size_t n, int64_t now)
{
    (void)now;
    if (n > set->n_origin)
        n = set->n_origin;
    for (size_t k = 0; k < n; k++) {
        if (items[k].revents == 0 || set->origin[k].fd != items[k].fd)
            continue;
        if (set->origin[k].collector == ORIGIN_HTTP) {
            if (set->http == NULL)
                continue;
            int ev = ((items[k].revents & ZMQ_POLLIN) ? CURL_CSELECT_IN : 0) |
                     ((items[k].revents & ZMQ_POLLOUT) ? CURL_CSELECT_OUT : 0) |
                     ((items[k].revents & ZMQ_POLLERR) ? CURL_CSELECT_ERR : 0);
            http_socket_action(set, items[k].fd, ev);
            continue;
        }
        struct collector *c = &set->c[set->origin[k].collector];
        if (!c->running)
            continue;
        c->ops->poll_handle(set, c, set->origin[k].role, items[k].fd, items[k].revents);
    }
}

bool agent_collectors_idle(const struct agent_collectors *set)
{
    for (size_t i = 0; i < set->n; i++)
        if (set->c[i].running || set->c[i].next_due != NEVER)
            return false;
    return true;
}

size_t agent_collectors_running(const struct agent_collectors *set)
{
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++)
        n += set->c[i].running ? 1 : 0;
    return n;
}
