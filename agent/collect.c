/*
 * collect.c - collector scheduling and the static and exec collector types.
 *
 * Scheduling: every collector has a next-due time on the monotonic clock;
 * the first run is due at the first tick, later ones every `interval` after
 * the previous due time (no drift), skipping ahead after a stall rather than
 * running a burst. A collector still running when its next run is due skips
 * that run: runs of one collector never overlap.
 *
 * Exec runs: the child is forked with pipes for stdout and stderr (read
 * non-blockingly here, from the daemon's poll loop) and becomes the leader
 * of its own process group, so a timeout can kill everything the command
 * started (kill(-pgid, SIGKILL)), not just the shell. Exit is noticed
 * through a pidfd (pollable; no SIGCHLD handler, nothing global). When the
 * leader has exited we first kill what is left of its group - while the
 * leader is an unreaped zombie its pid, and so the group id, cannot be
 * reused - then drain the pipes, then reap. Without pidfd_open (old
 * kernels) the exit is polled with waitid(WNOWAIT) every EXEC_EXIT_POLL_MS.
 *
 * Between fork and execve the child only makes async-signal-safe calls:
 * the daemon has libzmq threads, so anything that may take a lock (malloc,
 * stdio, logging) is prepared before the fork.
 */
#include "collect.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rsl/log.h"
#include "rsl/util.h"

extern char **environ;

#define EXEC_EXIT_POLL_MS 50
/* A command that floods stderr is not allowed to flood the log too. */
#define EXEC_STDERR_MAX_LINES 50
#define NEVER (-1)

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
    void (*abort)(struct collector *c);
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
    char *out;            /* stdout so far */
    size_t out_len;
    bool out_overflow;    /* more than AGENT_EXEC_OUTPUT_MAX: fail the run */
    char err_line[AGENT_EXEC_STDERR_LINE_MAX + 1];
    size_t err_len;
    unsigned err_lines;   /* lines logged this run */
};

struct collector {
    const struct agent_collector_config *cc;
    const struct collector_ops *ops;
    int64_t next_due;     /* monotonic ms, NEVER when no further run */
    bool running;
    struct exec_run run;  /* valid while running (exec) */
};

/* Where each filled poll item came from, so poll_handle needs no search. */
struct poll_origin {
    size_t collector;
    int role;
    int fd;
};

struct agent_collectors {
    struct collector *c;
    size_t n;
    agent_collect_fn fn;
    void *ctx;
    bool once;
    struct poll_origin *origin; /* poll_max entries */
    size_t n_origin;
};

/* ---- common ---------------------------------------------------------------- */

static void deliver(struct agent_collectors *set, struct collector *c,
                    const struct rsl_sample *samples, size_t n)
{
    if (n == 0) {
        RSL_NOTICE("collector", "collector %s produced no measurements", c->cc->name);
        return;
    }
    RSL_DEBUG("collector", "collector %s produced %zu measurement%s", c->cc->name, n,
              n == 1 ? "" : "s");
    set->fn(set->ctx, c->cc, samples, n, rsl_now_ms());
}

/* Seconds for messages: "10s", "1.5s". */
static double seconds(int64_t ms)
{
    return (double)ms / 1000.0;
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
        if (r->out_len + (size_t)n > AGENT_EXEC_OUTPUT_MAX) {
            r->out_overflow = true;
            return;
        }
        if (r->out == NULL && (r->out = malloc(AGENT_EXEC_OUTPUT_MAX)) == NULL) {
            RSL_ERR("collector", "collector %s: out of memory", c->cc->name);
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
        RSL_WARN("collector", "collector %s: exit status lost (%s); no measurements", name,
                 strerror(errno));
    } else if (WIFSIGNALED(status)) {
        RSL_WARN("collector", "collector %s killed by signal %d; no measurements", name,
                 WTERMSIG(status));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        RSL_WARN("collector", "collector %s exited with status %d; no measurements", name,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    } else if (r->out_overflow) {
        RSL_ERR("collector", "collector %s: output larger than %d bytes; no measurements", name,
                AGENT_EXEC_OUTPUT_MAX);
    } else {
        char origin[AGENT_COLLECTOR_NAME_MAX + 16];
        struct rsl_sample *samples = NULL;
        size_t n = 0;
        struct rsl_error err;
        rsl_error_clear(&err);
        snprintf(origin, sizeof(origin), "collector %s", name);
        if (rsl_lineformat_parse(r->out != NULL ? r->out : "", r->out_len, origin,
                                 RSL_MAX_MEASUREMENTS, &samples, &n, &err) != RSL_OK) {
            RSL_ERR("collector", "%s; no measurements", err.text);
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

static void exec_start(struct agent_collectors *set, struct collector *c, int64_t now)
{
    (void)set;
    struct exec_run *r = &c->run;
    const char *name = c->cc->name;
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    int devnull = -1;
    /* Everything the child needs is built before fork (see top comment). */
    char *const argv[] = {(char *)"sh", (char *)"-c", (char *)c->cc->command, NULL};
    sigset_t empty;
    sigemptyset(&empty);

    if (pipe2(out_pipe, O_CLOEXEC | O_NONBLOCK) != 0 ||
        pipe2(err_pipe, O_CLOEXEC | O_NONBLOCK) != 0 ||
        (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        RSL_ERR("collector", "collector %s: cannot start: %s", name, strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        RSL_ERR("collector", "collector %s: fork: %s", name, strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only. dup2 clears O_CLOEXEC on
         * 0/1/2; the pipes' blocking mode is per open file, so make the
         * child's ends blocking as a normal program expects. */
        setpgid(0, 0);
        if (dup2(devnull, 0) < 0 || dup2(out_pipe[1], 1) < 0 || dup2(err_pipe[1], 2) < 0)
            _exit(127);
        fcntl(1, F_SETFL, 0);
        fcntl(2, F_SETFL, 0);
        syscall(SYS_close_range, 3U, ~0U, 0U);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        signal(SIGPIPE, SIG_DFL);
        execve("/bin/sh", argv, environ);
        _exit(127);
    }
    /* Parent. Also set the group here: whichever of the two runs first,
     * the group exists before we could ever signal it. */
    setpgid(pid, pid);
    close_fd(&out_pipe[1]);
    close_fd(&err_pipe[1]);
    close_fd(&devnull);
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
    r->out_overflow = false;
    r->err_len = 0;
    c->running = true;
    RSL_DEBUG("collector", "collector %s started (pid %d)", name, (int)pid);
    return;
fail:
    /* The write ends are the child's only: closing them here is the same
     * whether or not the fork happened. */
    close_fd(&out_pipe[0]);
    close_fd(&out_pipe[1]);
    close_fd(&err_pipe[0]);
    close_fd(&err_pipe[1]);
    close_fd(&devnull);
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
            RSL_ERR("collector", "collector %s: output larger than %d bytes; killed, no "
                    "measurements", c->cc->name, AGENT_EXEC_OUTPUT_MAX);
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
    RSL_WARN("collector", "collector %s timed out after %gs; killed", c->cc->name,
             seconds(c->cc->timeout_ms));
    exec_cleanup(c);
}

static void exec_abort(struct collector *c)
{
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

/* ---- the set --------------------------------------------------------------- */

static const struct collector_ops *ops_for(enum agent_collector_type type)
{
    switch (type) {
    case AGENT_COLLECTOR_STATIC: return &static_ops;
    case AGENT_COLLECTOR_EXEC: return &exec_ops;
    }
    return NULL;
}

int agent_collectors_new(const struct agent_config *cfg, agent_collect_fn fn, void *ctx,
                         struct agent_collectors **out, struct rsl_error *err)
{
    struct agent_collectors *set = NULL;
    *out = NULL;
    set = calloc(1, sizeof(*set));
    if (set == NULL)
        goto nomem;
    set->fn = fn;
    set->ctx = ctx;
    set->n = cfg->n_collectors;
    if (set->n > 0) {
        set->c = calloc(set->n, sizeof(*set->c));
        set->origin = calloc(set->n * 3, sizeof(*set->origin));
        if (set->c == NULL || set->origin == NULL)
            goto nomem;
    }
    for (size_t i = 0; i < set->n; i++) {
        struct collector *c = &set->c[i];
        c->cc = &cfg->collectors[i];
        c->ops = ops_for(c->cc->type);
        if (c->ops == NULL) {
            agent_collectors_free(&set);
            return rsl_error_set(err, RSL_EINVAL, "collector %s: unsupported type",
                                 c->cc->name);
        }
        c->next_due = 0; /* due at the first tick */
        c->run.out_fd = c->run.err_fd = c->run.pid_fd = -1;
    }
    *out = set;
    return RSL_OK;
nomem:
    agent_collectors_free(&set);
    return rsl_error_set(err, RSL_ENOMEM, "out of memory");
}

void agent_collectors_stop(struct agent_collectors *set)
{
    for (size_t i = 0; i < set->n; i++) {
        struct collector *c = &set->c[i];
        if (c->running && c->ops->abort != NULL) {
            RSL_INFO("collector", "collector %s stopped", c->cc->name);
            c->ops->abort(c);
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
            RSL_WARN("collector", "collector %s still running after its interval (%gs); "
                     "skipping this run", c->cc->name, seconds(c->cc->interval_ms));
            continue;
        }
        c->ops->start(set, c, now);
    }
}

int64_t agent_collectors_next_deadline(const struct agent_collectors *set)
{
    int64_t best = NEVER;
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
    return set->n * 3;
}

size_t agent_collectors_poll_fill(struct agent_collectors *set, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    int roles[3];
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
        if (items[k].revents == 0)
            continue;
        struct collector *c = &set->c[set->origin[k].collector];
        if (!c->running || set->origin[k].fd != items[k].fd)
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
