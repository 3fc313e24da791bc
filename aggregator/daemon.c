/*
 * daemon.c - resilience-aggregator: options, start-up, signals, shutdown.
 *
 * Start-up order (each step needs the ones before it):
 *   config (+ taxonomy) -> registry -> private key files (mode, format) ->
 *   store open (quick_check) ->
 *   ZAP handler + ingest ROUTER (agg_ingest_start) -> partner releases
 *   (agg_releaser_start: first releases made) -> HTTPS ->
 *   log "ready" + sd_notify READY=1.
 * Any failure logs one line and exits 1, stopping what already runs.
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked before any thread starts
 * (threads inherit the mask), so only the main thread receives them, with
 * sigwait: no async-signal-safety puzzles, no handler racing the threads.
 * SIGHUP reloads the registry (swapped atomically in its holder).
 * SIGPIPE is ignored: a peer hanging up must never kill the daemon.
 *
 * Shutdown: HTTPS first (stop reading the store), then the partner
 * releases (a push in flight is aborted and stays in the outbox), then ingest (reads no new
 * reports, answers every one already admitted - committed and acked, or
 * rejected - then closes the store), then the registry and config. Exit 0.
 */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "ingest.h"
#include "registry.h"
#include "releaser.h"
#include "rsl/keys.h"
#include "rsl/log.h"
#include "rsl/util.h"
#include "store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--check-config]\n"
            "\n"
            "Central daemon of Resilience Reporting: authenticates agents, verifies and\n"
            "stores their signed reports, serves alliance summaries over HTTPS.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   configuration file (default %s)\n"
            "      --check-config  validate the configuration, registry and key files,\n"
            "                      print problems with FILE:LINE, then exit 0 (ok) or 1\n"
            "  -f, --foreground    run in the foreground (always; for systemd)\n"
            "  -h, --help          show this help and exit\n"
            "  -V, --version       show the version and exit\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop cleanly; SIGHUP reloads the agent registry.\n",
            AGG_PROGRAM, AGG_DEFAULT_CONFIG);
}

/* Load the registry named by the config, against its taxonomy. */
static int load_registry(const struct agg_config *cfg, struct agg_registry_holder **out,
                         struct rsl_error *err)
{
    struct agg_registry *reg = NULL;
    int rc = agg_registry_load(cfg->registry_path, cfg->taxonomy, &reg, err);
    if (rc != RSL_OK)
        return rc;
    rc = agg_registry_holder_new(&reg, out);
    agg_registry_release(&reg); /* NULL if transferred */
    if (rc != RSL_OK)
        return rsl_error_set(err, rc, "registry: out of memory");
    return RSL_OK;
}

/* The private key files the daemon will read, in the order it reads them:
 * its CURVE secret (ingest), its signing key (partner releases: required
 * when a [partner] is configured, else checked if present) and the TLS key
 * (HTTPS). */
enum { KEY_CURVE, KEY_SIGN, KEY_TLS, KEY_COUNT };

/* Check one of them: present (sign.key: if present), a regular file, mode
 * without group/other bits, and for curve.key a valid Z85 secret. The
 * message names the file. run() calls this for every key before it
 * creates the store or binds anything, so a group-readable key stops
 * start-up with nothing started; --check-config reports each problem. */
static int check_private_key(const struct agg_config *cfg, int which, struct rsl_error *err)
{
    char path[AGG_PATH_MAX + 16];
    char secret[RSL_Z85_KEY_LEN + 1];
    int rc;
    switch (which) {
    case KEY_CURVE:
        if (rsl_keys_path(cfg->keys_dir, "curve.key", path, sizeof(path)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "%s: [ingest] keys: path too long", cfg->path);
        rc = rsl_curve_load_secret(path, secret, err);
        rsl_secure_zero(secret, sizeof(secret));
        if (rc != RSL_OK)
            rsl_error_prefix(err, "%s: [ingest] keys", cfg->path);
        return rc;
    case KEY_SIGN:
        if (rsl_keys_path(cfg->keys_dir, "sign.key", path, sizeof(path)) != RSL_OK)
            return rsl_error_set(err, RSL_ECONFIG, "%s: [ingest] keys: path too long", cfg->path);
        rc = rsl_key_file_check_private(path, err);
        /* Needed only to sign partner releases. */
        if (rc == RSL_ENOENT && cfg->n_partners == 0) {
            rsl_error_clear(err);
            return RSL_OK;
        }
        if (rc != RSL_OK)
            rsl_error_prefix(err, "%s: [ingest] keys", cfg->path);
        return rc;
    case KEY_TLS:
        rc = rsl_key_file_check_private(cfg->https_key, err);
        if (rc != RSL_OK)
            rsl_error_prefix(err, "%s: [https] key", cfg->path);
        return rc;
    default:
        return rsl_error_set(err, RSL_EINVAL, "check_private_key: %d", which);
    }
}

int agg_daemon_check_config(const char *path)
{
    struct rsl_error err;
    struct agg_config *cfg = NULL;
    struct agg_registry_holder *registry = NULL;
    int problems = 0;

    rsl_error_clear(&err);
    if (agg_config_load(path, &cfg, &err) != RSL_OK) {
        /* Without a config nothing else can be checked. */
        fprintf(stderr, "%s\n", err.text);
        return 1;
    }
    /* Each of the following is independent: report them all. */
    rsl_error_clear(&err);
    if (load_registry(cfg, &registry, &err) != RSL_OK) {
        fprintf(stderr, "%s\n", err.text);
        problems++;
    }
    for (int which = 0; which < KEY_COUNT; which++) {
        rsl_error_clear(&err);
        if (check_private_key(cfg, which, &err) != RSL_OK) {
            fprintf(stderr, "%s\n", err.text);
            problems++;
        }
    }
    if (access(cfg->https_cert, R_OK) != 0) {
        fprintf(stderr, "%s: [https] cert: %s: %s\n", path, cfg->https_cert, strerror(errno));
        problems++;
    }
    /* Partner push credentials: secrets private, certificates readable. */
    for (size_t i = 0; i < cfg->n_partners; i++) {
        const struct agg_partner *p = &cfg->partners[i];
        const char *secrets[] = {p->token_file, p->client_key};
        const char *secret_keys[] = {"token_file", "client_key"};
        for (size_t k = 0; k < 2; k++) {
            rsl_error_clear(&err);
            if (secrets[k][0] != '\0' && rsl_key_file_check_private(secrets[k], &err) != RSL_OK) {
                fprintf(stderr, "%s: [partner %s] %s: %s\n", path, p->id, secret_keys[k],
                        err.text);
                problems++;
            }
        }
        const char *files[] = {p->ca_file, p->client_cert};
        const char *file_keys[] = {"ca_file", "client_cert"};
        for (size_t k = 0; k < 2; k++) {
            if (files[k][0] != '\0' && access(files[k], R_OK) != 0) {
                fprintf(stderr, "%s: [partner %s] %s: %s: %s\n", path, p->id, file_keys[k],
                        files[k], strerror(errno));
                problems++;
            }
        }
    }

    agg_registry_holder_free(&registry);
    agg_config_free(&cfg);
    if (problems > 0)
        return 1;
    printf("%s: ok\n", path);
    return 0;
}

/* SIGHUP (ARCHITECTURE section 3): load the registry file again and, only
 * if it is valid as a whole, make it current. The ZAP handler and the
 * ingest thread take a reference per handshake / per batch, so the swap
 * needs no pause and drops no connection; a broken file keeps the running
 * registry and says why. Connections admitted earlier keep their ZAP user
 * id, but every report is checked against the new registry (a removed
 * agent or a revoked key is refused from each verify worker's next burst
 * on). Reloads are counted (resilience_registry_reloads_total). */
static void reload_registry(const struct agg_config *cfg, struct agg_registry_holder *holder)
{
    struct rsl_error err;
    struct agg_registry *reg = NULL;
    rsl_error_clear(&err);
    if (agg_registry_load(cfg->registry_path, cfg->taxonomy, &reg, &err) != RSL_OK) {
        agg_ingest_counter_add(AGG_COUNT_REGISTRY_RELOAD_FAILURES, 1);
        RSL_ERR("main", "SIGHUP: registry not reloaded, keeping the current one: %s", err.text);
        return;
    }
    size_t n = agg_registry_count(reg);
    agg_registry_holder_swap(holder, &reg);
    agg_ingest_counter_add(AGG_COUNT_REGISTRY_RELOADS, 1);
    RSL_NOTICE("main", "SIGHUP: registry %s reloaded: %zu agents", cfg->registry_path, n);
}

/* Wait for a stop signal, reloading the registry on each SIGHUP. Under a
 * systemd watchdog (WatchdogSec= in the unit, WATCHDOG_USEC in the
 * environment) the wait wakes at half the interval to send WATCHDOG=1. */
static void wait_for_stop(const sigset_t *set, const struct agg_config *cfg,
                          struct agg_registry_holder *registry, const struct agg_ingest *ingest)
{
    uint64_t watchdog_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
    for (;;) {
        int sig = 0;
        if (watchdog) {
            struct timespec wait = {.tv_sec = (time_t)(watchdog_usec / 2 / 1000000),
                                    .tv_nsec = (long)(watchdog_usec / 2 % 1000000) * 1000};
            sd_notify(0, "WATCHDOG=1");
            sig = sigtimedwait(set, NULL, &wait);
            if (sig < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (sig < 0) {
                RSL_ERR("main", "sigtimedwait: %s", strerror(errno));
                return;
            }
        } else {
            int rc = sigwait(set, &sig);
            if (rc != 0) {
                RSL_ERR("main", "sigwait: %s", strerror(rc));
                return;
            }
        }
        if (sig == SIGHUP) {
            reload_registry(cfg, registry);
            continue;
        }
        if (agg_ingest_failed(ingest)) {
            /* The SIGTERM came from a pipeline thread that ended (logged
             * above), not from the operator. */
            RSL_ERR("main", "stopping after an internal failure (exit status %d)",
                    AGG_EXIT_INTERNAL);
            return;
        }
        RSL_NOTICE("main", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

static int run(const char *path)
{
    struct rsl_error err;
    struct agg_config *cfg = NULL;
    struct agg_registry_holder *registry = NULL;
    struct agg_store *store = NULL;
    struct agg_ingest *ingest = NULL;
    struct agg_http *http = NULL;
    struct agg_releaser *releaser = NULL;
    sigset_t set;
    int status = 1;

    rsl_error_clear(&err);
    /* Block before any thread exists so all of them inherit the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (agg_config_load(path, &cfg, &err) != RSL_OK)
        goto fail;
    /* The level from the config applies from here on. */
    rsl_log_init(AGG_PROGRAM, cfg->log_level);
    RSL_INFO("main", "%s %s starting with %s (%zu indicators, %zu nations)", AGG_PROGRAM,
             RSL_VERSION, path, cfg->taxonomy->n_indicators, cfg->taxonomy->n_nations);

    if (load_registry(cfg, &registry, &err) != RSL_OK)
        goto fail;
    {
        struct agg_registry *reg = agg_registry_holder_get(registry);
        RSL_INFO("main", "registry %s: %zu agents", cfg->registry_path,
                 agg_registry_count(reg));
        agg_registry_release(&reg);
    }
    /* Key files before the store: a refusal must leave no file behind. */
    for (int which = 0; which < KEY_COUNT; which++)
        if (check_private_key(cfg, which, &err) != RSL_OK)
            goto fail;
    if (agg_store_open(cfg->store_path, false, &store, &err) != RSL_OK)
        goto fail;
    if (agg_ingest_start(cfg, registry, &store, &ingest, &err) != RSL_OK)
        goto fail;
    if (agg_releaser_start(cfg, &releaser, &err) != RSL_OK)
        goto fail;
    if (agg_http_start(cfg, &http, &err) != RSL_OK)
        goto fail;

    RSL_NOTICE("main", "ready: ingest on %s%s, https on %s:%d", cfg->bind[0],
               cfg->n_bind > 1 ? " (and more)" : "", cfg->https_host, agg_http_port(http));
    sd_notify(0, "READY=1");

    wait_for_stop(&set, cfg, registry, ingest);
    sd_notify(0, "STOPPING=1");
    status = agg_ingest_failed(ingest) ? AGG_EXIT_INTERNAL : 0;
    goto out;

fail:
    RSL_ERR("main", "%s", err.text[0] ? err.text : "start-up failed");
out:
    agg_http_stop(&http);
    agg_releaser_stop(&releaser);
    agg_ingest_stop(&ingest);
    agg_store_close(&store);
    agg_registry_holder_free(&registry);
    agg_config_free(&cfg);
    if (status == 0)
        RSL_INFO("main", "stopped");
    return status;
}

int agg_daemon_main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"foreground", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = AGG_DEFAULT_CONFIG;
    int check = 0;
    int opt;

    rsl_log_init(AGG_PROGRAM, RSL_LOG_INFO);
    optind = 1; /* callable more than once (tests) */
    while ((opt = getopt_long(argc, argv, "c:fhV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'C':
            check = 1;
            break;
        case 'f':
            break; /* always in the foreground; systemd supervises */
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("%s %s\n", AGG_PROGRAM, RSL_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", AGG_PROGRAM, argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check)
        return agg_daemon_check_config(path);
    return run(path);
}
