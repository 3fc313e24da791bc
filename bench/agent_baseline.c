/*
 * agent_baseline.c - the floor under the agent's footprint: a program that
 * only initialises what the agent cannot do without - libzmq with a CURVE
 * DEALER socket connected to the aggregator, an OpenSSL Ed25519 signing key
 * (one signature made), libcurl (global init and one easy handle) - and
 * then idles in zmq_poll like a daemon, until SIGTERM/SIGINT.
 *
 * bench/agent_footprint.py builds it with cc and measures its private
 * memory (Private_Dirty) beside the agent's: what the agent holds above this
 * is the agent's own cost.
 *
 *   agent_baseline ENDPOINT SERVER_KEY_Z85 SIGN_KEY_PEM
 *
 * Prints "ready" on stderr once everything is initialised.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zmq.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: agent_baseline ENDPOINT SERVER_KEY_Z85 SIGN_KEY_PEM\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* libcurl, as the http collectors need it. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    CURL *curl = curl_easy_init();

    /* OpenSSL Ed25519: load the agent's key and make one signature. */
    FILE *f = fopen(argv[3], "r");
    if (f == NULL) {
        perror(argv[3]);
        return 1;
    }
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (pkey == NULL) {
        fprintf(stderr, "agent_baseline: %s: not a private key\n", argv[3]);
        return 1;
    }
    unsigned char sig[64];
    size_t siglen = sizeof(sig);
    const unsigned char msg[] = "resilience.v1.report";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, NULL, NULL, pkey) != 1 ||
        EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) != 1) {
        fprintf(stderr, "agent_baseline: Ed25519 signing failed\n");
        return 1;
    }

    /* libzmq: a CURVE DEALER connected to the aggregator. */
    char pub[41], sec[41];
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (sock == NULL || zmq_curve_keypair(pub, sec) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, argv[2], 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0 ||
        zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "agent_baseline: zmq: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    fprintf(stderr, "ready\n");

    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
    while (!stop) {
        if (zmq_poll(&item, 1, 1000) > 0) {
            char buf[256];
            (void)zmq_recv(sock, buf, sizeof(buf), ZMQ_DONTWAIT);
        }
    }

    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(sock);
    zmq_ctx_term(ctx);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    return 0;
}
