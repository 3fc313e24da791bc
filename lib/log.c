/*
 * log.c - journald-friendly logging to stderr.
 *
 * Each line is formatted into a stack buffer and written with one write(2):
 * lines from different threads never interleave and no lock is needed.
 * Level and program name are set once before threads start (rsl_log_init).
 */
#include "rsl/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "resilience";
static int log_max_level = RSL_LOG_INFO;
static int log_journal; /* 1: "<N>" prefixes for journald */

static const char *level_names[] = {"emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"};

void rsl_log_init(const char *program, int max_level)
{
    if (program != NULL)
        log_program = program;
    if (max_level >= RSL_LOG_ERR && max_level <= RSL_LOG_DEBUG)
        log_max_level = max_level;
    const char *force = getenv("RSL_LOG_JOURNAL");
    log_journal = getenv("JOURNAL_STREAM") != NULL || (force != NULL && strcmp(force, "1") == 0);
}

int rsl_log_level_parse(const char *name)
{
    for (int i = RSL_LOG_ERR; i <= RSL_LOG_DEBUG; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "err") == 0 || strcasecmp(name, "warn") == 0)
        return strcasecmp(name, "err") == 0 ? RSL_LOG_ERR : RSL_LOG_WARNING;
    return -1;
}

void rsl_log(int level, const char *module, const char *fmt, ...)
{
    if (level > log_max_level)
        return;
    if (level < 0 || level > RSL_LOG_DEBUG)
        level = RSL_LOG_ERR;
    char line[2048];
    int off;
    if (log_journal) {
        off = snprintf(line, sizeof(line), "<%d>%s: ", level, module);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        off = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s %s: ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, ts.tv_nsec / 1000000L, log_program, (long)getpid(),
                       level_names[level], module);
    }
    if (off < 0)
        return;
    if ((size_t)off >= sizeof(line) - 2)
        off = (int)sizeof(line) - 2;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof(line) - (size_t)off - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)off + (n < 0 ? 0 : (size_t)n);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* One line per call: control characters from untrusted text are replaced. */
    for (size_t i = (size_t)off; i < len; i++)
        if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
            line[i] = '?';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
