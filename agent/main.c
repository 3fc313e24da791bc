/*
 * main.c - resilience-agent: command line, config, keys, then the daemon
 * or one of the commands `submit` and `status`.
 *
 * Exit codes: 0 success (clean stop, --check-config ok, --once delivered,
 * report submitted, status shown), 1 configuration/start-up errors, --once
 * not delivered or a submit that failed, 2 usage errors. Nothing goes to
 * stdout except what is asked (--help, --version, --check-config's
 * "FILE: ok", submit's confirmation, status).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collect.h"
#include "config.h"
#include "daemon.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "status.h"
#include "submit.h"

#define PROGRAM "resilience-agent"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROGRAM " [-c FILE] [--check-config] [--once [--once-timeout DURATION]]\n"
            "       " PROGRAM " [-c FILE] submit INDICATOR=VALUE[:UNIT] ...\n"
            "       " PROGRAM " [-c FILE] status [--json]\n"
            "\n"
            "Runs the configured collectors, signs their measurements into reports and\n"
            "delivers them to the aggregator, keeping each in a crash-safe spool until\n"
            "it is acknowledged.\n"
            "\n"
            "  -c, --config FILE        configuration (default " AGENT_DEFAULT_CONFIG ")\n"
            "      --check-config       validate the configuration and keys, print\n"
            "                           \"FILE: ok\" or the problems, exit 0/1\n"
            "      --once               run each collector once, deliver, then exit:\n"
            "                           0 when every report was acknowledged, else 1\n"
            "      --once-timeout DUR   how long --once waits for acks (default 30s)\n"
            "  -h, --help               this text\n"
            "  -V, --version            print the version\n"
            "\n"
            "Commands:\n"
            "  submit INDICATOR=VALUE[:UNIT] ...\n"
            "                           spool one report with these measurements (works\n"
            "                           whether or not the agent is running; it sends it)\n"
            "  status [--json]          spool depth and bytes, oldest unacknowledged\n"
            "                           report, last ack, drops, rejected, endpoint in use\n");
}

static int load(const char *path, bool with_keys, struct agent_config **cfg,
                struct agent_keys **keys, struct rsl_error *err)
{
    if (agent_config_load(path, cfg, err) != RSL_OK)
        return 1;
    if (with_keys && agent_keys_load(*cfg, keys, err) != RSL_OK)
        return 1;
    return 0;
}

static int cmd_submit(const char *config_path, int argc, char **argv)
{
    struct agent_config *cfg = NULL;
    struct agent_keys *keys = NULL;
    struct rsl_sample *samples = NULL;
    struct rsl_error err;
    uint64_t sequence = 0;
    int code = 1;

    rsl_error_clear(&err);
    if (argc == 0) {
        fprintf(stderr, PROGRAM " submit: give at least one INDICATOR=VALUE[:UNIT]\n");
        return 2;
    }
    if (argc > RSL_MAX_MEASUREMENTS) {
        fprintf(stderr, PROGRAM " submit: at most %d measurements\n", RSL_MAX_MEASUREMENTS);
        return 2;
    }
    samples = calloc((size_t)argc, sizeof(*samples));
    if (samples == NULL) {
        fprintf(stderr, PROGRAM " submit: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        if (agent_submit_parse_arg(argv[i], &samples[i], &err) != RSL_OK) {
            fprintf(stderr, PROGRAM " submit: %s\n", err.text);
            code = 2;
            goto out;
        }
    }
    if (load(config_path, true, &cfg, &keys, &err) != 0) {
        fprintf(stderr, PROGRAM " submit: %s\n", err.text);
        goto out;
    }
    if (agent_submit(cfg, keys, samples, (size_t)argc, &sequence, &err) != RSL_OK) {
        fprintf(stderr, PROGRAM " submit: %s\n", err.text);
        goto out;
    }
    int64_t pid = 0;
    bool running = agent_status_daemon_running(cfg->spool_dir, &pid);
    printf("report %" PRIu64 " spooled (%d measurement%s); %s\n", sequence, argc,
           argc == 1 ? "" : "s",
           running ? "the running agent sends it" : "the agent sends it when it next runs");
    code = 0;
out:
    free(samples);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
    return code;
}

static int cmd_status(const char *config_path, bool json)
{
    struct agent_config *cfg = NULL;
    struct rsl_error err;
    int code = 1;
    rsl_error_clear(&err);
    if (load(config_path, false, &cfg, NULL, &err) != 0) {
        fprintf(stderr, PROGRAM " status: %s\n", err.text);
        goto out;
    }
    if (agent_status_report(cfg, json, rsl_now_ms(), stdout, &err) != RSL_OK) {
        fprintf(stderr, PROGRAM " status: %s\n", err.text);
        goto out;
    }
    code = 0;
out:
    agent_config_free(&cfg);
    return code;
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_ONCE, OPT_ONCE_TIMEOUT, OPT_JSON };
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"once", no_argument, NULL, OPT_ONCE},
        {"once-timeout", required_argument, NULL, OPT_ONCE_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = AGENT_DEFAULT_CONFIG;
    bool check = false;
    bool json = false;
    struct agent_run_options opts = {.once = false,
                                     .once_timeout_ms = AGENT_ONCE_TIMEOUT_DEFAULT_MS};
    struct agent_config *cfg = NULL;
    struct agent_keys *keys = NULL;
    struct agent_daemon *daemon = NULL;
    struct rsl_error err;
    int exit_code = 1;
    int opt;

    rsl_error_clear(&err);
    rsl_log_init(PROGRAM, RSL_LOG_INFO);
    /* GNU getopt moves options after the command forward too, so
     * `status --json` and `submit -c FILE X=1` both work. A value such as
     * "x=-5" is not an option: it does not start with '-'. */
    while ((opt = getopt_long(argc, argv, "c:hV", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_ONCE: opts.once = true; break;
        case OPT_ONCE_TIMEOUT:
            if (rsl_parse_duration_ms(optarg, &opts.once_timeout_ms) != RSL_OK ||
                opts.once_timeout_ms <= 0) {
                fprintf(stderr, PROGRAM ": invalid --once-timeout '%s' (e.g. 30s, 2m)\n", optarg);
                return 2;
            }
            break;
        case OPT_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf(PROGRAM " %s\n", RSL_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        const char *command = argv[optind];
        if (check || opts.once) {
            fprintf(stderr, PROGRAM ": --check-config and --once do not go with '%s'\n", command);
            return 2;
        }
        if (strcmp(command, "submit") == 0 && !json)
            return cmd_submit(config_path, argc - optind - 1, argv + optind + 1);
        if (strcmp(command, "status") == 0 && optind + 1 == argc)
            return cmd_status(config_path, json);
        fprintf(stderr, PROGRAM ": unexpected argument '%s'\n",
                strcmp(command, "status") == 0 ? argv[optind + 1] : command);
        usage(stderr);
        return 2;
    }
    if (json) {
        fprintf(stderr, PROGRAM ": --json goes with the status command\n");
        return 2;
    }

    if (load(config_path, true, &cfg, &keys, &err) != 0) {
        /* --check-config prints the bare "FILE:LINE: problem" like nginx -t;
         * the daemon logs it as a one-line start-up error. */
        if (check)
            fprintf(stderr, "%s\n", err.text);
        else
            RSL_ERR("agent", "%s", err.text);
        goto out;
    }
    if (check) {
        /* The http collectors' token files are checked the way the daemon
         * reads them: building the collector set reads them. */
        if (agent_collectors_check(cfg, &err) != RSL_OK) {
            fprintf(stderr, "%s\n", err.text);
            goto out;
        }
        printf("%s: ok\n", config_path);
        exit_code = 0;
        goto out;
    }

    rsl_log_init(PROGRAM, cfg->log_level);
    if (agent_daemon_new(cfg, keys, &opts, &daemon, &err) != RSL_OK) {
        RSL_ERR("agent", "%s", err.text);
        goto out;
    }
    exit_code = agent_daemon_run(daemon);
out:
    agent_daemon_free(&daemon);
    agent_keys_free(&keys);
    agent_config_free(&cfg);
    return exit_code;
}
