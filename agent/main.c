/*
 * main.c - resilience-agent: command line, config, keys, then the daemon.
 *
 * Exit codes: 0 success (clean stop, --check-config ok, --once delivered),
 * 1 configuration/start-up errors or --once not delivered, 2 usage errors.
 * Nothing goes to stdout except what is asked (--help, --version,
 * --check-config's "FILE: ok").
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "rsl/log.h"
#include "rsl/util.h"

#define PROGRAM "resilience-agent"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROGRAM " [-c FILE] [--check-config] [--once [--once-timeout DURATION]]\n"
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
            "  -V, --version            print the version\n");
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_ONCE, OPT_ONCE_TIMEOUT };
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"once", no_argument, NULL, OPT_ONCE},
        {"once-timeout", required_argument, NULL, OPT_ONCE_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = AGENT_DEFAULT_CONFIG;
    bool check = false;
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
        case 'h': usage(stdout); return 0;
        case 'V': printf(PROGRAM " %s\n", RSL_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROGRAM ": unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    if (agent_config_load(config_path, &cfg, &err) != RSL_OK ||
        agent_keys_load(cfg, &keys, &err) != RSL_OK) {
        /* --check-config prints the bare "FILE:LINE: problem" like nginx -t;
         * the daemon logs it as a one-line start-up error. */
        if (check)
            fprintf(stderr, "%s\n", err.text);
        else
            RSL_ERR("agent", "%s", err.text);
        goto out;
    }
    if (check) {
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
