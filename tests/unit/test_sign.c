/*
 * test_sign.c - report signatures: round trips, tampering, domain
 * separation, known answers, key files.
 *
 * Independent parties are used as references wherever possible: the
 * openssl command line makes and reads key files, libsodium signs with a
 * seed, and OpenSSL signs raw bytes in the test itself, so a bug shared by
 * rsl_sign_report and rsl_verify_report cannot hide.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"

/* PKCS#8 PEM of the Ed25519 key whose 32-byte seed is all zeros. */
static const char ZERO_SEED_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    "-----END PRIVATE KEY-----\n";
/* Its public key, and key_id = hex(SHA-256(public key)[0..16]), both
 * computed with the openssl CLI:
 *   openssl pkey -in zero.key -pubout -outform DER | tail -c 32 | sha256sum */
static const char ZERO_SEED_PUBLIC_HEX[] =
    "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
static const char ZERO_SEED_KEY_ID[] = "139e3940e64b5491722088d9a0d74162";
/* openssl pkeyutl -sign -rawin over "resilience.v1.report\0hello". */
static const char ZERO_SEED_HELLO_SIG_HEX[] =
    "8810f8e635048f233c29da3173f00f74c0e0e7f56942195540512491b3ddb362"
    "6dc4621f3ac9d2818e4a0950000684cbf7a465cf6c45b4195b2e410a32191e05";

struct sign_state {
    char dir[64];
    char zero_key[128];
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static int setup(void **state)
{
    struct sign_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/rsl-test-sign-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    snprintf(s->zero_key, sizeof(s->zero_key), "%s/zero.key", s->dir);
    write_file(s->zero_key, ZERO_SEED_PEM, 0600);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct sign_state *s = *state;
    rsl_test_rmtree(s->dir);
    free(s);
    return 0;
}

static void path_in(const struct sign_state *s, const char *name, char *out, size_t outlen)
{
    assert_int_equal(rsl_keys_path(s->dir, name, out, outlen), RSL_OK);
}

static int run(const char *cmd)
{
    int status = system(cmd);
    return status == -1 ? -1 : WEXITSTATUS(status);
}

static struct rsl_signer *load_signer(const char *path)
{
    struct rsl_signer *signer = NULL;
    struct rsl_error err = {0};
    int rc = rsl_signer_load(path, &signer, &err);
    if (rc != RSL_OK) {
        print_error("%s\n", err.text);
        fail();
    }
    assert_non_null(signer);
    return signer;
}

static const uint8_t REPORT[] = "\x0a\x0a" "DEU-BMI-01" "\x12\x03" "DEU pretend this is a report";

/* ------------------------------------------------------------------------ */

static void test_round_trip_and_tampering(void **state)
{
    struct sign_state *s = *state;
    struct rsl_signer *signer = load_signer(s->zero_key);
    const uint8_t *pk = rsl_signer_public_key(signer);
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(signer, REPORT, sizeof(REPORT), sig), RSL_OK);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, sizeof(sig)), RSL_OK);

    /* Every single flipped report byte and every flipped signature byte fails. */
    uint8_t copy[sizeof(REPORT)];
    for (size_t i = 0; i < sizeof(REPORT); i++) {
        memcpy(copy, REPORT, sizeof(REPORT));
        copy[i] ^= 0x01;
        assert_int_equal(rsl_verify_report(pk, copy, sizeof(copy), sig, sizeof(sig)), RSL_EVERIFY);
    }
    for (size_t i = 0; i < sizeof(sig); i++) {
        uint8_t bad[RSL_ED25519_SIGNATURE_BYTES];
        memcpy(bad, sig, sizeof(bad));
        bad[i] ^= 0x80;
        assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), bad, sizeof(bad)),
                         RSL_EVERIFY);
    }
    /* Truncated or extended report, wrong signature lengths. */
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT) - 1, sig, sizeof(sig)), RSL_EVERIFY);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, 63), RSL_EVERIFY);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, 0), RSL_EVERIFY);
    uint8_t longer[65];
    memcpy(longer, sig, 64);
    longer[64] = 0;
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), longer, 65), RSL_EVERIFY);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), NULL, 64), RSL_EVERIFY);

    /* The empty report is signable (the codec refuses it elsewhere). */
    assert_int_equal(rsl_sign_report(signer, NULL, 0, sig), RSL_OK);
    assert_int_equal(rsl_verify_report(pk, NULL, 0, sig, sizeof(sig)), RSL_OK);
    assert_int_equal(rsl_verify_report(pk, REPORT, 1, sig, sizeof(sig)), RSL_EVERIFY);

    rsl_signer_free(&signer);
    assert_null(signer);
    rsl_signer_free(&signer);
    rsl_signer_free(NULL);
}

static void test_wrong_key(void **state)
{
    struct sign_state *s = *state;
    char kdir[128];
    path_in(s, "wrongkey", kdir, sizeof(kdir));
    struct rsl_error err = {0};
    assert_int_equal(rsl_keys_generate(kdir, &err), RSL_OK);
    char path[256];
    assert_int_equal(rsl_keys_path(kdir, "sign.key", path, sizeof(path)), RSL_OK);
    struct rsl_signer *other = load_signer(path);
    struct rsl_signer *zero = load_signer(s->zero_key);

    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(other, REPORT, sizeof(REPORT), sig), RSL_OK);
    assert_int_equal(rsl_verify_report(rsl_signer_public_key(other), REPORT, sizeof(REPORT), sig,
                                       sizeof(sig)),
                     RSL_OK);
    assert_int_equal(rsl_verify_report(rsl_signer_public_key(zero), REPORT, sizeof(REPORT), sig,
                                       sizeof(sig)),
                     RSL_EVERIFY);
    assert_string_not_equal(rsl_signer_key_id(other), rsl_signer_key_id(zero));
    rsl_signer_free(&other);
    rsl_signer_free(&zero);
}

/* Sign `msg` with the zero-seed key through OpenSSL directly. */
static void openssl_sign_raw(const uint8_t *msg, size_t len, uint8_t sig[64])
{
    BIO *bio = BIO_new_mem_buf(ZERO_SEED_PEM, -1);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    assert_non_null(pkey);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t sig_len = 64;
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, msg, len), 1);
    assert_int_equal(sig_len, 64);
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
}

static void test_domain_separation(void **state)
{
    struct sign_state *s = *state;
    struct rsl_signer *signer = load_signer(s->zero_key);
    const uint8_t *pk = rsl_signer_public_key(signer);
    uint8_t sig[64];
    uint8_t msg[64 + sizeof(REPORT)];

    /* Control: prefix + NUL + report signed outside our code verifies. */
    memcpy(msg, "resilience.v1.report", 20);
    msg[20] = 0;
    memcpy(msg + 21, REPORT, sizeof(REPORT));
    openssl_sign_raw(msg, 21 + sizeof(REPORT), sig);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, sizeof(sig)), RSL_OK);

    /* The bare report bytes, signed with the same key: refused. */
    openssl_sign_raw(REPORT, sizeof(REPORT), sig);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, sizeof(sig)), RSL_EVERIFY);

    /* The prefix without its zero byte: refused. */
    memcpy(msg + 20, REPORT, sizeof(REPORT));
    openssl_sign_raw(msg, 20 + sizeof(REPORT), sig);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, sizeof(sig)), RSL_EVERIFY);

    /* Another domain: refused. */
    memcpy(msg, "resilience.v1.releas", 20);
    msg[20] = 0;
    memcpy(msg + 21, REPORT, sizeof(REPORT));
    openssl_sign_raw(msg, 21 + sizeof(REPORT), sig);
    assert_int_equal(rsl_verify_report(pk, REPORT, sizeof(REPORT), sig, sizeof(sig)), RSL_EVERIFY);

    /* And our signature is not valid over the bare bytes for libsodium. */
    assert_int_equal(rsl_sign_report(signer, REPORT, sizeof(REPORT), sig), RSL_OK);
    assert_int_equal(sodium_init() >= 0, 1);
    assert_int_not_equal(crypto_sign_verify_detached(sig, REPORT, sizeof(REPORT), pk), 0);
    rsl_signer_free(&signer);
}

static void test_known_answers(void **state)
{
    struct sign_state *s = *state;
    uint8_t expected_pk[32];
    assert_int_equal(rsl_hex_decode(ZERO_SEED_PUBLIC_HEX, expected_pk, 32), RSL_OK);

    /* libsodium's key for the zero seed is the same key. */
    uint8_t seed[32] = {0};
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    assert_true(sodium_init() >= 0);
    assert_int_equal(crypto_sign_seed_keypair(pk, sk, seed), 0);
    assert_memory_equal(pk, expected_pk, 32);

    char key_id[RSL_KEY_ID_HEX_LEN + 1];
    rsl_key_id(pk, key_id);
    assert_string_equal(key_id, ZERO_SEED_KEY_ID);

    struct rsl_signer *signer = load_signer(s->zero_key);
    assert_memory_equal(rsl_signer_public_key(signer), expected_pk, 32);
    assert_string_equal(rsl_signer_key_id(signer), ZERO_SEED_KEY_ID);

    /* Ed25519 is deterministic: our signature of "hello" equals the one the
     * openssl CLI made, and the one libsodium makes over prefix + report. */
    uint8_t sig[64], expected_sig[64], sodium_sig[64];
    assert_int_equal(rsl_sign_report(signer, (const uint8_t *)"hello", 5, sig), RSL_OK);
    assert_int_equal(rsl_hex_decode(ZERO_SEED_HELLO_SIG_HEX, expected_sig, 64), RSL_OK);
    assert_memory_equal(sig, expected_sig, 64);
    const uint8_t msg[] = "resilience.v1.report\0hello";
    crypto_sign_detached(sodium_sig, NULL, msg, sizeof(msg) - 1, sk);
    assert_memory_equal(sig, sodium_sig, 64);
    sodium_memzero(sk, sizeof(sk));
    rsl_signer_free(&signer);
}

static void test_openssl_cli_interop(void **state)
{
    struct sign_state *s = *state;
    char key[128], pub[128], cmd[512];
    path_in(s, "cli.key", key, sizeof(key));
    path_in(s, "cli.pub", pub, sizeof(pub));
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm ed25519 -out '%s' && openssl pkey -in '%s' -pubout -out '%s'",
             key, key, pub);
    assert_int_equal(run(cmd), 0);
    /* openssl genpkey writes private keys 0600; we load them as they are. */
    struct rsl_signer *signer = load_signer(key);
    uint8_t from_pem[32];
    struct rsl_error err = {0};
    assert_int_equal(rsl_public_key_load_pem(pub, from_pem, &err), RSL_OK);
    assert_memory_equal(from_pem, rsl_signer_public_key(signer), 32);

    /* A signature we make verifies with the openssl CLI. */
    char msgpath[128], sigpath[128];
    path_in(s, "msg.bin", msgpath, sizeof(msgpath));
    path_in(s, "msg.sig", sigpath, sizeof(sigpath));
    uint8_t sig[64];
    assert_int_equal(rsl_sign_report(signer, REPORT, sizeof(REPORT), sig), RSL_OK);
    FILE *f = fopen(msgpath, "wb");
    assert_non_null(f);
    fwrite("resilience.v1.report", 1, 21, f); /* with its NUL */
    fwrite(REPORT, 1, sizeof(REPORT), f);
    fclose(f);
    f = fopen(sigpath, "wb");
    assert_non_null(f);
    fwrite(sig, 1, sizeof(sig), f);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "openssl pkeyutl -verify -pubin -inkey '%s' -rawin -in '%s' -sigfile '%s' >/dev/null",
             pub, msgpath, sigpath);
    assert_int_equal(run(cmd), 0);
    rsl_signer_free(&signer);
}

static void test_private_key_permissions(void **state)
{
    struct sign_state *s = *state;
    const mode_t bad[] = {0640, 0644, 0604, 0660, 0606, 0620, 0601};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(chmod(s->zero_key, bad[i]), 0);
        struct rsl_signer *signer = NULL;
        struct rsl_error err = {0};
        assert_int_equal(rsl_signer_load(s->zero_key, &signer, &err), RSL_EPERM);
        assert_null(signer);
        assert_non_null(strstr(err.text, s->zero_key));
        assert_non_null(strstr(err.text, "chmod 600"));
        char mode[16];
        snprintf(mode, sizeof(mode), "mode %04o", (unsigned)bad[i]);
        assert_non_null(strstr(err.text, mode));
        if ((bad[i] & 044) != 0)
            assert_non_null(strstr(err.text, "is readable by group/others"));
    }
    assert_int_equal(chmod(s->zero_key, 0400), 0);
    struct rsl_signer *signer = load_signer(s->zero_key);
    rsl_signer_free(&signer);
    assert_int_equal(chmod(s->zero_key, 0600), 0);
}

static void test_bad_key_files(void **state)
{
    struct sign_state *s = *state;
    char path[128], cmd[512];
    struct rsl_signer *signer = NULL;
    struct rsl_error err = {0};
    uint8_t pk[32];

    path_in(s, "missing.key", path, sizeof(path));
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_ENOENT);
    assert_non_null(strstr(err.text, path));
    assert_int_equal(rsl_public_key_load_pem(path, pk, &err), RSL_ENOENT);

    path_in(s, "garbage.key", path, sizeof(path));
    write_file(path, "not a key\n", 0600);
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, path));
    assert_int_equal(rsl_public_key_load_pem(path, pk, &err), RSL_EPARSE);

    /* A public key where the private one belongs, and vice versa. */
    path_in(s, "zero.pub", path, sizeof(path));
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -pubout -out '%s'", s->zero_key, path);
    assert_int_equal(run(cmd), 0);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_EPARSE);
    assert_int_equal(rsl_public_key_load_pem(s->zero_key, pk, &err), RSL_EPARSE);
    assert_int_equal(rsl_public_key_load_pem(path, pk, &err), RSL_OK);

    /* An encrypted key is refused without prompting for a passphrase. */
    path_in(s, "enc.key", path, sizeof(path));
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm ed25519 -aes256 -pass pass:secret -out '%s'", path);
    assert_int_equal(run(cmd), 0);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_EPARSE);

    /* Another algorithm (P-256) is refused by name. */
    path_in(s, "ec.key", path, sizeof(path));
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '%s' 2>/dev/null",
             path);
    assert_int_equal(run(cmd), 0);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_EPARSE);
    assert_non_null(strstr(err.text, "not an Ed25519 key"));
    char pubpath[128];
    path_in(s, "ec.pub", pubpath, sizeof(pubpath));
    snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -pubout -out '%s'", path, pubpath);
    assert_int_equal(run(cmd), 0);
    assert_int_equal(rsl_public_key_load_pem(pubpath, pk, &err), RSL_EPARSE);

    /* A huge file is refused before parsing. */
    path_in(s, "huge.key", path, sizeof(path));
    char *big = malloc(64 * 1024 + 1);
    assert_non_null(big);
    memset(big, 'A', 64 * 1024);
    big[64 * 1024] = '\0';
    write_file(path, big, 0600);
    free(big);
    assert_int_equal(rsl_signer_load(path, &signer, &err), RSL_ETOOBIG);

    /* A folder is not a key file. */
    assert_int_equal(rsl_signer_load(s->dir, &signer, &err), RSL_EPERM);
    assert_null(signer);
}

static void test_public_key_base64(void **state)
{
    (void)state;
    uint8_t expected[32], pk[32];
    char b64[45];
    assert_int_equal(rsl_hex_decode(ZERO_SEED_PUBLIC_HEX, expected, 32), RSL_OK);
    rsl_base64_encode(expected, 32, b64);
    assert_string_equal(b64, "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=");
    assert_int_equal(rsl_public_key_from_base64(b64, pk), RSL_OK);
    assert_memory_equal(pk, expected, 32);
    assert_int_equal(rsl_public_key_from_base64("", pk), RSL_EPARSE);
    assert_int_equal(rsl_public_key_from_base64("O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2i==", pk),
                     RSL_EPARSE);
    assert_int_equal(rsl_public_key_from_base64("AAAA", pk), RSL_EPARSE);
    assert_int_equal(rsl_public_key_from_base64("O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=AAAA", pk),
                     RSL_EPARSE);
    assert_int_equal(rsl_public_key_from_base64("O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2i!=", pk),
                     RSL_EPARSE);
    assert_int_equal(rsl_public_key_from_base64(NULL, pk), RSL_EINVAL);
}

struct verify_job {
    const uint8_t *pk;
    const uint8_t *sig;
    int failures;
};

static void *verify_many(void *arg)
{
    struct verify_job *job = arg;
    for (int i = 0; i < 200; i++) {
        if (rsl_verify_report(job->pk, REPORT, sizeof(REPORT), job->sig, 64) != RSL_OK)
            job->failures++;
        uint8_t bad[64];
        memcpy(bad, job->sig, 64);
        bad[i % 64] ^= 1;
        if (rsl_verify_report(job->pk, REPORT, sizeof(REPORT), bad, 64) != RSL_EVERIFY)
            job->failures++;
    }
    return NULL;
}

static void test_verify_from_threads(void **state)
{
    struct sign_state *s = *state;
    struct rsl_signer *signer = load_signer(s->zero_key);
    uint8_t sig[64];
    assert_int_equal(rsl_sign_report(signer, REPORT, sizeof(REPORT), sig), RSL_OK);
    pthread_t threads[4];
    struct verify_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct verify_job){rsl_signer_public_key(signer), sig, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, verify_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
    rsl_signer_free(&signer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_tampering),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_domain_separation),
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_openssl_cli_interop),
        cmocka_unit_test(test_private_key_permissions),
        cmocka_unit_test(test_bad_key_files),
        cmocka_unit_test(test_public_key_base64),
        cmocka_unit_test(test_verify_from_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
