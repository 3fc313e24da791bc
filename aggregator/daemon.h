/*
 * daemon.h - the resilience-aggregator program: options, start-up order,
 * signal handling, shutdown. main.c only calls agg_daemon_main, so tests
 * link the same code the binary runs.
 */
#ifndef AGG_DAEMON_H
#define AGG_DAEMON_H

#define AGG_PROGRAM "resilience-aggregator"
#define AGG_DEFAULT_CONFIG "/etc/resilience/aggregator.conf"

/* Run the program with its command line; returns the process exit status
 * (0 success or clean stop, 1 configuration or start-up error, 2 usage). */
int agg_daemon_main(int argc, char **argv);

/* Validate a configuration as --check-config does: the config file, the
 * taxonomy, the registry, the CURVE secret key and the TLS files. Prints
 * each problem to stderr, "PATH: ok" to stdout; returns 0 if all is well,
 * else 1. */
int agg_daemon_check_config(const char *path);

#endif
