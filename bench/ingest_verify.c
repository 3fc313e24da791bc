/*
 * ingest_verify.c - the raw Ed25519 verification rate of this machine: the
 * ceiling the aggregator's ingest is measured against (bench/ingest.sh).
 *
 * Verifies realistic messages - the signing domain prefix and 600 bytes
 * standing for a serialized 10-measurement Report, as the aggregator does
 * for every report - for SECONDS seconds per run, with:
 *   - libsodium's crypto_sign_verify_detached (what the aggregator uses,
 *     lib/sign.c: rsl_verify_report), and
 *   - OpenSSL 3.0's EVP_DigestVerify on EVP_PKEYs made from the raw keys
 *     once (a fresh EVP_MD_CTX per verification, as a server must),
 * each on one thread and on THREADS threads at once (default: online
 * cores). The messages are N_MESSAGES distinct ones signed by N_KEYS keys
 * (each thread starts at its own place in the ring): what an aggregator
 * meets. Verification is variable-time on public data, so verifying one
 * signature again and again lets the branch predictor learn its one path
 * and reads 3-5% faster on this machine; that figure is printed as well
 * (libsodium-one), for comparison with earlier runs, but it is not the
 * ceiling. Output, one line per run:
 *   verify <impl> threads=<n> <verifications/s>
 *
 *   ingest_verify [SECONDS [THREADS]]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sodium.h>

#define MESSAGE_BYTES 600 /* prefix + a 10-measurement report, about */
#define N_MESSAGES 4096   /* 2.5 MiB of messages: beyond L2, like a live queue */
#define N_KEYS 16         /* the agents of bench/ingest.sh */

enum impl { IMPL_SODIUM, IMPL_SODIUM_ONE, IMPL_OPENSSL };
static const char *const impl_name[] = {"libsodium", "libsodium-one", "openssl"};

static uint8_t messages[N_MESSAGES][MESSAGE_BYTES];
static uint8_t signatures[N_MESSAGES][crypto_sign_BYTES];
static uint8_t public_keys[N_KEYS][crypto_sign_PUBLICKEYBYTES];
static EVP_PKEY *openssl_keys[N_KEYS];
static atomic_bool stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct run {
    enum impl impl;
    size_t first; /* where in the ring of messages this thread starts */
    unsigned long count;
    bool failed;
};

static bool verify_one(enum impl impl, size_t i)
{
    size_t k = i % N_KEYS;
    if (impl == IMPL_OPENSSL) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        bool ok = md != NULL &&
                  EVP_DigestVerifyInit(md, NULL, NULL, NULL, openssl_keys[k]) == 1 &&
                  EVP_DigestVerify(md, signatures[i], crypto_sign_BYTES, messages[i],
                                   MESSAGE_BYTES) == 1;
        EVP_MD_CTX_free(md);
        return ok;
    }
    return crypto_sign_verify_detached(signatures[i], messages[i], MESSAGE_BYTES,
                                       public_keys[k]) == 0;
}

static void *verify_loop(void *arg)
{
    struct run *r = arg;
    size_t i = r->first;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (!verify_one(r->impl, i)) {
            r->failed = true;
            break;
        }
        r->count++;
        if (r->impl != IMPL_SODIUM_ONE)
            i = (i + 1) % N_MESSAGES;
    }
    return NULL;
}

/* Run `threads` verifiers for `seconds`; returns verifications/s. */
static double measure(enum impl impl, int threads, double seconds)
{
    pthread_t tid[256];
    struct run runs[256];
    atomic_store(&stop, false);
    for (int i = 0; i < threads; i++) {
        runs[i] = (struct run){impl, (size_t)i * N_MESSAGES / (size_t)threads, 0, false};
        if (pthread_create(&tid[i], NULL, verify_loop, &runs[i]) != 0) {
            fprintf(stderr, "ingest_verify: pthread_create failed\n");
            exit(2);
        }
    }
    double start = now_s();
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, true);
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        if (runs[i].failed) {
            fprintf(stderr, "ingest_verify: a signature did not verify\n");
            exit(2);
        }
        total += runs[i].count;
    }
    return (double)total / (now_s() - start);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = argc > 2 ? atoi(argv[2]) : (int)(cores > 0 ? cores : 1);
    if (seconds <= 0 || threads < 1 || threads > 256) {
        fprintf(stderr, "usage: ingest_verify [SECONDS [THREADS]]\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 2;
    static uint8_t secrets[N_KEYS][crypto_sign_SECRETKEYBYTES];
    for (size_t k = 0; k < N_KEYS; k++) {
        crypto_sign_keypair(public_keys[k], secrets[k]);
        openssl_keys[k] = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, public_keys[k],
                                                      crypto_sign_PUBLICKEYBYTES);
        if (openssl_keys[k] == NULL)
            return 2;
    }
    /* The prefix as lib/sign.c builds it, then report-like bytes. */
    static const char prefix[] = "resilience.v1.report";
    for (size_t i = 0; i < N_MESSAGES; i++) {
        memcpy(messages[i], prefix, sizeof(prefix)); /* includes the zero byte */
        randombytes_buf(messages[i] + sizeof(prefix), MESSAGE_BYTES - sizeof(prefix));
        crypto_sign_detached(signatures[i], NULL, messages[i], MESSAGE_BYTES,
                             secrets[i % N_KEYS]);
    }
    sodium_memzero(secrets, sizeof(secrets));

    printf("# %d-byte messages, %d of them from %d keys, %.1f s per run, %ld online cores\n",
           MESSAGE_BYTES, N_MESSAGES, N_KEYS, seconds, cores);
    const int counts[2] = {1, threads};
    const enum impl order[] = {IMPL_SODIUM, IMPL_SODIUM_ONE, IMPL_OPENSSL};
    for (size_t m = 0; m < sizeof(order) / sizeof(order[0]); m++) {
        for (int k = 0; k < 2; k++) {
            if (k == 1 && threads == 1)
                continue;
            double rate = measure(order[m], counts[k], seconds);
            printf("verify %s threads=%d %.0f\n", impl_name[order[m]], counts[k], rate);
            fflush(stdout);
        }
    }
    for (size_t k = 0; k < N_KEYS; k++)
        EVP_PKEY_free(openssl_keys[k]);
    return 0;
}
