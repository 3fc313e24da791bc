/*
 * ingest_verify.c - the raw Ed25519 verification rate of this machine: the
 * ceiling the aggregator's ingest is measured against (bench/ingest.sh).
 *
 * Verifies one signature over a realistic message - the signing domain
 * prefix and a serialized 10-measurement Report, as the aggregator does
 * for every report - again and again for SECONDS seconds, with:
 *   - libsodium's crypto_sign_verify_detached (what the aggregator uses,
 *     lib/sign.c: rsl_verify_report), and
 *   - OpenSSL 3.0's EVP_DigestVerify on an EVP_PKEY made from the raw key
 *     once (a fresh EVP_MD_CTX per verification, as a server must),
 * each on one thread and on THREADS threads at once (default: online
 * cores). Output, one line per run:
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

static uint8_t message[MESSAGE_BYTES];
static uint8_t public_key[crypto_sign_PUBLICKEYBYTES];
static uint8_t signature[crypto_sign_BYTES];
static EVP_PKEY *openssl_key;
static atomic_bool stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct run {
    bool openssl;
    unsigned long count;
    bool failed;
};

static void *verify_loop(void *arg)
{
    struct run *r = arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        bool ok;
        if (r->openssl) {
            EVP_MD_CTX *md = EVP_MD_CTX_new();
            ok = md != NULL && EVP_DigestVerifyInit(md, NULL, NULL, NULL, openssl_key) == 1 &&
                 EVP_DigestVerify(md, signature, sizeof(signature), message, sizeof(message)) == 1;
            EVP_MD_CTX_free(md);
        } else {
            ok = crypto_sign_verify_detached(signature, message, sizeof(message), public_key) == 0;
        }
        if (!ok) {
            r->failed = true;
            break;
        }
        r->count++;
    }
    return NULL;
}

/* Run `threads` verifiers for `seconds`; returns verifications/s. */
static double measure(bool use_openssl, int threads, double seconds)
{
    pthread_t tid[256];
    struct run runs[256];
    atomic_store(&stop, false);
    for (int i = 0; i < threads; i++) {
        runs[i] = (struct run){use_openssl, 0, false};
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
    uint8_t secret[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(public_key, secret);
    /* The prefix as lib/sign.c builds it, then report-like bytes. */
    static const char prefix[] = "resilience.v1.report";
    memcpy(message, prefix, sizeof(prefix)); /* includes the zero byte */
    randombytes_buf(message + sizeof(prefix), sizeof(message) - sizeof(prefix));
    crypto_sign_detached(signature, NULL, message, sizeof(message), secret);
    sodium_memzero(secret, sizeof(secret));
    openssl_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, public_key,
                                              sizeof(public_key));
    if (openssl_key == NULL)
        return 2;

    printf("# %d-byte message, %.1f s per run, %ld online cores\n", MESSAGE_BYTES, seconds,
           cores);
    const int counts[2] = {1, threads};
    for (int impl = 0; impl < 2; impl++) {
        for (int k = 0; k < 2; k++) {
            if (k == 1 && threads == 1)
                continue;
            double rate = measure(impl == 1, counts[k], seconds);
            printf("verify %s threads=%d %.0f\n", impl == 1 ? "openssl" : "libsodium", counts[k],
                   rate);
            fflush(stdout);
        }
    }
    EVP_PKEY_free(openssl_key);
    return 0;
}
