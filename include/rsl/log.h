/*
 * log.h - one logging macro family for all programs.
 *
 * Lines go to stderr. Under systemd (JOURNAL_STREAM set, or forced) each line
 * starts with a "<N>" syslog priority so journald keeps the level; otherwise a
 * UTC timestamp and the level name. Each line is formatted whole and written
 * with one write(2), so lines from several threads never interleave.
 */
#ifndef RSL_LOG_H
#define RSL_LOG_H

enum rsl_log_level {
    RSL_LOG_ERR = 3,
    RSL_LOG_WARNING = 4,
    RSL_LOG_NOTICE = 5,
    RSL_LOG_INFO = 6,
    RSL_LOG_DEBUG = 7,
};

/* Set the program name shown in lines and the most verbose level printed
 * (default RSL_LOG_INFO). Call once at start-up before threads start. */
void rsl_log_init(const char *program, int max_level);

/* Parse "error|warning|notice|info|debug"; returns the level or -1. */
int rsl_log_level_parse(const char *name);

/* Log one line: `module` is a short subsystem name ("spool", "ingest"). */
void rsl_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define RSL_ERR(mod, ...) rsl_log(RSL_LOG_ERR, (mod), __VA_ARGS__)
#define RSL_WARN(mod, ...) rsl_log(RSL_LOG_WARNING, (mod), __VA_ARGS__)
#define RSL_NOTICE(mod, ...) rsl_log(RSL_LOG_NOTICE, (mod), __VA_ARGS__)
#define RSL_INFO(mod, ...) rsl_log(RSL_LOG_INFO, (mod), __VA_ARGS__)
#define RSL_DEBUG(mod, ...) rsl_log(RSL_LOG_DEBUG, (mod), __VA_ARGS__)

#endif
