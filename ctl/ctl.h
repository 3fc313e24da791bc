/*
 * ctl.h - resilience-ctl, the operator CLI, as a library (ctl_core) so that
 * tests drive exactly the code that ships; main.c only calls ctl_main.
 *
 * Commands are rows of one table (ctl.c): a name, a one-line summary, the
 * options it takes, how many positional arguments, and a function. The
 * dispatcher parses and checks the options for every command the same way
 * (`--name VALUE` or `--name=VALUE`, `--help` everywhere) and prints the
 * per-command help from the table, so adding a command (summary, nation,
 * history, verify, audit, check-config) is: write one ctl_cmd_* function in
 * its own file, declare it here, add a row.
 *
 * Exit codes (the contract for scripts): 0 success, 1 failure (one line on
 * stderr naming the file or path), 2 usage error.
 */
#ifndef RSL_CTL_H
#define RSL_CTL_H

#include <stdbool.h>
#include <stdio.h>

#define CTL_PROGRAM "resilience-ctl"

enum { CTL_EXIT_OK = 0, CTL_EXIT_FAILURE = 1, CTL_EXIT_USAGE = 2 };

#define CTL_MAX_OPTIONS 16

/* One option of a command. metavar NULL: a flag without a value. */
struct ctl_option {
    const char *name;     /* without the leading "--" */
    const char *metavar;  /* "DIR", "FILE"; NULL for a flag */
    bool required;
    const char *help;     /* one line */
};

struct ctl_ctx;

struct ctl_command {
    const char *name;
    const char *summary;           /* one line for the overall --help */
    const char *positional_usage;  /* e.g. "TOKEN", or "" */
    int min_positional;
    int max_positional;
    const struct ctl_option *options; /* terminated by a {NULL} row */
    const char *description;       /* extra help text, may be NULL */
    int (*run)(struct ctl_ctx *ctx);
};

/* What a command function gets: its parsed arguments and where to print. */
struct ctl_ctx {
    const struct ctl_command *command;
    const char *values[CTL_MAX_OPTIONS]; /* by index into command->options; NULL if absent */
    char **positional;
    int n_positional;
    FILE *out;
    FILE *err;
};

/* Run the CLI with argv as main receives it; prints to `out` / `err`.
 * Returns the process exit code. */
int ctl_main(int argc, char **argv, FILE *out, FILE *err);

/* Value of option `name` of the running command, or NULL when not given.
 * Flags read as "1". */
const char *ctl_option(const struct ctl_ctx *ctx, const char *name);

/* Print "resilience-ctl: <message>" to ctx->err; returns CTL_EXIT_FAILURE. */
int ctl_fail(const struct ctl_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "resilience-ctl CMD: <message>" and a hint to see --help to
 * ctx->err; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The commands. */
int ctl_cmd_keygen(struct ctl_ctx *ctx);
int ctl_cmd_enroll(struct ctl_ctx *ctx);
int ctl_cmd_token(struct ctl_ctx *ctx);
int ctl_cmd_hash_token(struct ctl_ctx *ctx);
/* audit (ctl/audit.c): its options and help text live beside its code. */
int ctl_cmd_audit(struct ctl_ctx *ctx);
extern const struct ctl_option ctl_audit_options[];
extern const char ctl_audit_description[];
/* summary, nation CODE, history ID (ctl/query.c): read the HTTPS API. */
int ctl_cmd_summary(struct ctl_ctx *ctx);
int ctl_cmd_nation(struct ctl_ctx *ctx);
int ctl_cmd_history(struct ctl_ctx *ctx);
extern const struct ctl_option ctl_summary_options[];
extern const struct ctl_option ctl_nation_options[];
extern const struct ctl_option ctl_history_options[];
extern const char ctl_query_description[];
/* verify FILE (ctl/verify.c): check a partner release offline. */
int ctl_cmd_verify(struct ctl_ctx *ctx);
extern const struct ctl_option ctl_verify_options[];
extern const char ctl_verify_description[];

#endif
