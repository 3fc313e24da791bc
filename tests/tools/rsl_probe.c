/*
 * rsl_probe.c - a hand-built ZeroMQ client for the integration tests.
 *
 * The real agent only ever sends well-formed reports it signed itself, so it
 * cannot exercise the aggregator's defences. This probe can: it builds a
 * Report from command-line options, signs it with any PEM key (or signs it
 * wrongly on purpose), and sends it over a DEALER socket with CURVE (keys
 * from a folder, or a fresh throw-away key pair), or with no security at all.
 * It can also send raw bytes or an oversized frame.
 *
 * Output (stdout), one line per message sent, in order:
 *   ACK <agent_id> <sequence> <STATUS> <detail>
 *   NOACK
 * The detail is the rest of the line with control characters replaced, so a
 * test can split on the first four spaces. Diagnostics go to stderr.
 *
 * Exit status: 0 if every message sent got an Ack, 3 if at least one timed
 * out (NOACK), 1 on usage or local errors (bad key file, ...).
 *
 * Modes added for the ingest tests (issue 4), all opt-in:
 *   --until-acked   a reliable sender like the agent: every report is built
 *                   and signed once, then (re)sent with the very same bytes
 *                   until an ACCEPTED, DUPLICATE or REJECTED ack arrives -
 *                   again after --timeout without an answer (the aggregator
 *                   may have been killed), after --retry-delay on
 *                   RETRY_LATER. Up to --window reports are in flight. Every
 *                   ack seen is printed (several per report are possible),
 *                   NOACK never is; exit 0 once every report is settled.
 *   --wait-stdin    before each report after the first, read one line from
 *                   stdin (EOF: stop), so a test can act between two reports
 *                   sent over the same connection.
 *   --report-handshakes  print "HANDSHAKES <n>" last: how many CURVE
 *                   sessions the socket established (1 if the connection
 *                   survived everything the test did).
 *
 * Messages are sent one at a time and each waits for its Ack (or the
 * timeout) before the next is sent, so every output line belongs to exactly
 * one message even when the aggregator answers with an empty agent_id.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zmq.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"

#define PROBE_MAX_MEASURES 64
#define PROBE_ACK_MAX (64 * 1024)

struct probe_measure {
    char *indicator;  /* points into argv (modified in place) */
    double value;
    const char *unit;
};

struct probe_opts {
    const char *endpoint;
    const char *server_key;
    const char *curve_dir;
    bool plaintext;
    const char *sign_key;
    const char *agent_id;
    const char *nation;
    const char *organisation;
    const char *marking;
    const char *key_id;        /* override the key_id field */
    uint64_t seq;
    uint64_t count;
    struct probe_measure measures[PROBE_MAX_MEASURES];
    size_t n_measures;
    int64_t created_at_ms;     /* 0: now */
    int64_t observed_at_ms;    /* 0: created_at */
    bool no_prefix;
    bool corrupt_signature;
    const char *raw_hex;
    size_t oversize;
    int timeout_ms;
    bool until_acked;
    uint64_t window;
    int retry_delay_ms;
    bool wait_stdin;
    bool report_handshakes;
    char *releasable[RSL_MAX_RELEASABLE]; /* --releasable-to, split at commas */
    size_t n_releasable;
};

static void usage(FILE *out)
{
    fputs("usage: rsl_probe --endpoint tcp://HOST:PORT [options]\n"
          "  --server-key Z85       aggregator CURVE public key (required unless --plaintext)\n"
          "  --curve-dir DIR        client curve.key/curve.pub (default: a fresh key pair)\n"
          "  --plaintext            no CURVE at all (NULL mechanism)\n"
          "  --sign-key PEM         Ed25519 private key used to sign\n"
          "  --agent-id ID --nation XXX --organisation NAME --marking TEXT\n"
          "  --seq N                first sequence number (default 1)\n"
          "  --count N              send N reports: seq, seq+1, ... (default 1)\n"
          "  --measure ID=VALUE[:UNIT]   repeatable (default energy.oil_stock_days=95:days)\n"
          "  --created-at MS        report created_at_ms (default now)\n"
          "  --observed-at MS       measurement observed_at_ms (default created-at)\n"
          "  --releasable-to A,B    releasable_to of every measurement (default none)\n"
          "  --no-prefix            sign the bare report bytes (no domain prefix)\n"
          "  --corrupt-signature    flip one bit of the signature\n"
          "  --key-id HEX           put this key_id in the SignedReport\n"
          "  --raw-hex HEX          send these bytes as the frame instead of a report\n"
          "  --oversize N           send N bytes of garbage as the frame\n"
          "  --timeout MS           wait this long for each Ack (default 5000)\n"
          "  --until-acked          resend each report (same bytes) until ACCEPTED, DUPLICATE\n"
          "                         or REJECTED; prints every ack seen\n"
          "  --window N             with --until-acked: reports in flight (default 1)\n"
          "  --retry-delay MS       with --until-acked: wait after RETRY_LATER (default 200)\n"
          "  --wait-stdin           read a line from stdin before each report but the first\n"
          "  --report-handshakes    finally print 'HANDSHAKES <n>' (CURVE sessions made)\n"
          "prints one line per message: 'ACK <agent_id> <seq> <STATUS> <detail>' or 'NOACK'\n"
          "exit: 0 all acked, 3 some NOACK, 1 error\n",
          out);
}

/* "ID=VALUE[:UNIT]". strtod (not rsl_parse_double) on purpose: the probe
 * must be able to send non-finite values to test the aggregator's checks. */
static int parse_measure(char *arg, struct probe_measure *m)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg)
        return -1;
    *eq = '\0';
    char *val = eq + 1;
    char *colon = strchr(val, ':');
    m->unit = "";
    if (colon != NULL) {
        *colon = '\0';
        m->unit = colon + 1;
    }
    char *end = NULL;
    errno = 0;
    m->value = strtod(val, &end);
    if (end == val || *end != '\0' || errno == ERANGE)
        return -1;
    m->indicator = arg;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno != 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct probe_opts *o)
{
    enum {
        OPT_ENDPOINT = 256, OPT_SERVER_KEY, OPT_CURVE_DIR, OPT_PLAINTEXT, OPT_SIGN_KEY,
        OPT_AGENT_ID, OPT_NATION, OPT_ORGANISATION, OPT_MARKING, OPT_KEY_ID, OPT_SEQ,
        OPT_COUNT, OPT_MEASURE, OPT_CREATED_AT, OPT_OBSERVED_AT, OPT_NO_PREFIX,
        OPT_CORRUPT, OPT_RAW_HEX, OPT_OVERSIZE, OPT_TIMEOUT, OPT_HELP, OPT_UNTIL_ACKED,
        OPT_WINDOW, OPT_RETRY_DELAY, OPT_WAIT_STDIN, OPT_REPORT_HANDSHAKES,
        OPT_RELEASABLE_TO
    };
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, OPT_ENDPOINT},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"curve-dir", required_argument, NULL, OPT_CURVE_DIR},
        {"plaintext", no_argument, NULL, OPT_PLAINTEXT},
        {"sign-key", required_argument, NULL, OPT_SIGN_KEY},
        {"agent-id", required_argument, NULL, OPT_AGENT_ID},
        {"nation", required_argument, NULL, OPT_NATION},
        {"organisation", required_argument, NULL, OPT_ORGANISATION},
        {"marking", required_argument, NULL, OPT_MARKING},
        {"key-id", required_argument, NULL, OPT_KEY_ID},
        {"seq", required_argument, NULL, OPT_SEQ},
        {"count", required_argument, NULL, OPT_COUNT},
        {"measure", required_argument, NULL, OPT_MEASURE},
        {"created-at", required_argument, NULL, OPT_CREATED_AT},
        {"observed-at", required_argument, NULL, OPT_OBSERVED_AT},
        {"no-prefix", no_argument, NULL, OPT_NO_PREFIX},
        {"corrupt-signature", no_argument, NULL, OPT_CORRUPT},
        {"raw-hex", required_argument, NULL, OPT_RAW_HEX},
        {"oversize", required_argument, NULL, OPT_OVERSIZE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, OPT_HELP},
        {"until-acked", no_argument, NULL, OPT_UNTIL_ACKED},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},
        {"wait-stdin", no_argument, NULL, OPT_WAIT_STDIN},
        {"report-handshakes", no_argument, NULL, OPT_REPORT_HANDSHAKES},
        {"releasable-to", required_argument, NULL, OPT_RELEASABLE_TO},
        {NULL, 0, NULL, 0},
    };
    uint64_t u = 0;
    int64_t i = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_ENDPOINT: o->endpoint = optarg; break;
        case OPT_SERVER_KEY: o->server_key = optarg; break;
        case OPT_CURVE_DIR: o->curve_dir = optarg; break;
        case OPT_PLAINTEXT: o->plaintext = true; break;
        case OPT_SIGN_KEY: o->sign_key = optarg; break;
        case OPT_AGENT_ID: o->agent_id = optarg; break;
        case OPT_NATION: o->nation = optarg; break;
        case OPT_ORGANISATION: o->organisation = optarg; break;
        case OPT_MARKING: o->marking = optarg; break;
        case OPT_RELEASABLE_TO:
            /* Every measurement gets this list; "" means none. */
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save); tok != NULL;
                 tok = strtok_r(NULL, ",", &save)) {
                if (o->n_releasable >= RSL_MAX_RELEASABLE)
                    goto bad;
                o->releasable[o->n_releasable++] = tok;
            }
            break;
        case OPT_KEY_ID: o->key_id = optarg; break;
        case OPT_SEQ:
            if (parse_u64(optarg, &o->seq) != 0)
                goto bad;
            break;
        case OPT_COUNT:
            if (parse_u64(optarg, &o->count) != 0 || o->count == 0)
                goto bad;
            break;
        case OPT_MEASURE:
            if (o->n_measures >= PROBE_MAX_MEASURES ||
                parse_measure(optarg, &o->measures[o->n_measures]) != 0)
                goto bad;
            o->n_measures++;
            break;
        case OPT_CREATED_AT:
            if (parse_i64(optarg, &o->created_at_ms) != 0)
                goto bad;
            break;
        case OPT_OBSERVED_AT:
            if (parse_i64(optarg, &o->observed_at_ms) != 0)
                goto bad;
            break;
        case OPT_NO_PREFIX: o->no_prefix = true; break;
        case OPT_CORRUPT: o->corrupt_signature = true; break;
        case OPT_RAW_HEX: o->raw_hex = optarg; break;
        case OPT_OVERSIZE:
            if (parse_u64(optarg, &u) != 0 || u == 0 || u > (1u << 30))
                goto bad;
            o->oversize = (size_t)u;
            break;
        case OPT_TIMEOUT:
            if (parse_i64(optarg, &i) != 0 || i < 1 || i > 600000)
                goto bad;
            o->timeout_ms = (int)i;
            break;
        case OPT_HELP: usage(stdout); exit(0);
        case OPT_UNTIL_ACKED: o->until_acked = true; break;
        case OPT_WINDOW:
            if (parse_u64(optarg, &o->window) != 0 || o->window == 0 || o->window > 100000)
                goto bad;
            break;
        case OPT_RETRY_DELAY:
            if (parse_i64(optarg, &i) != 0 || i < 0 || i > 600000)
                goto bad;
            o->retry_delay_ms = (int)i;
            break;
        case OPT_WAIT_STDIN: o->wait_stdin = true; break;
        case OPT_REPORT_HANDSHAKES: o->report_handshakes = true; break;
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc || o->endpoint == NULL) {
        usage(stderr);
        return -1;
    }
    if (!o->plaintext && o->server_key == NULL) {
        fprintf(stderr, "rsl_probe: --server-key is required unless --plaintext\n");
        return -1;
    }
    if (o->until_acked && (o->raw_hex != NULL || o->oversize != 0)) {
        fprintf(stderr, "rsl_probe: --until-acked sends reports, not --raw-hex/--oversize\n");
        return -1;
    }
    if (o->raw_hex == NULL && o->oversize == 0 &&
        (o->sign_key == NULL || o->agent_id == NULL || o->nation == NULL)) {
        fprintf(stderr, "rsl_probe: a report needs --sign-key, --agent-id and --nation\n");
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "rsl_probe: bad value for an option: '%s'\n", optarg);
    return -1;
}

/* Pure Ed25519 over the bare report bytes: what a careless third-party agent
 * that forgot the domain prefix would send. The library deliberately offers
 * no way to do this, so the probe uses OpenSSL directly. */
static int sign_without_prefix(const char *pem_path, const uint8_t *msg, size_t len,
                               uint8_t sig[RSL_ED25519_SIGNATURE_BYTES])
{
    int rc = -1;
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *md = NULL;
    FILE *f = fopen(pem_path, "r");
    if (f == NULL) {
        fprintf(stderr, "rsl_probe: %s: %s\n", pem_path, strerror(errno));
        goto out;
    }
    pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (pkey == NULL) {
        fprintf(stderr, "rsl_probe: %s: not a PEM private key\n", pem_path);
        goto out;
    }
    md = EVP_MD_CTX_new();
    size_t siglen = RSL_ED25519_SIGNATURE_BYTES;
    if (md == NULL || EVP_DigestSignInit(md, NULL, NULL, NULL, pkey) != 1 ||
        EVP_DigestSign(md, sig, &siglen, msg, len) != 1 ||
        siglen != RSL_ED25519_SIGNATURE_BYTES) {
        fprintf(stderr, "rsl_probe: %s: Ed25519 signing failed\n", pem_path);
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* Build, sign and serialize the SignedReport for one sequence number. */
static int build_frame(const struct probe_opts *o, const struct rsl_signer *signer,
                       uint64_t seq, uint8_t **frame, size_t *frame_len)
{
    int rc = -1;
    uint8_t *report_bytes = NULL;
    size_t report_len = 0;
    rsl_measurement ms[PROBE_MAX_MEASURES];
    rsl_measurement *mptrs[PROBE_MAX_MEASURES];
    rsl_report report = RESILIENCE__V1__REPORT__INIT;
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    int64_t created = o->created_at_ms != 0 ? o->created_at_ms : rsl_now_ms();
    int64_t observed = o->observed_at_ms != 0 ? o->observed_at_ms : created;

    /* protobuf-c takes char * for strings; the report is only read. */
    report.agent_id = (char *)(uintptr_t)o->agent_id;
    report.nation = (char *)(uintptr_t)o->nation;
    report.organisation = (char *)(uintptr_t)(o->organisation ? o->organisation : "Probe");
    report.marking = (char *)(uintptr_t)(o->marking ? o->marking : "NATO UNCLASSIFIED");
    report.sequence = seq;
    report.created_at_ms = created;
    for (size_t i = 0; i < o->n_measures; i++) {
        rsl_measurement init = RESILIENCE__V1__MEASUREMENT__INIT;
        ms[i] = init;
        ms[i].indicator = o->measures[i].indicator;
        ms[i].value = o->measures[i].value;
        ms[i].unit = (char *)(uintptr_t)o->measures[i].unit;
        ms[i].observed_at_ms = observed;
        ms[i].source = (char *)(uintptr_t)"rsl_probe";
        ms[i].n_releasable_to = o->n_releasable;
        ms[i].releasable_to = (char **)(uintptr_t)o->releasable;
        mptrs[i] = &ms[i];
    }
    report.n_measurements = o->n_measures;
    report.measurements = mptrs;

    if (rsl_report_encode(&report, &report_bytes, &report_len) != RSL_OK) {
        fprintf(stderr, "rsl_probe: cannot encode the report\n");
        goto out;
    }
    if (o->no_prefix) {
        if (sign_without_prefix(o->sign_key, report_bytes, report_len, sig) != 0)
            goto out;
    } else if (rsl_sign_report(signer, report_bytes, report_len, sig) != RSL_OK) {
        fprintf(stderr, "rsl_probe: signing failed\n");
        goto out;
    }
    if (o->corrupt_signature)
        sig[7] ^= 0x01;

    sr.report.data = report_bytes;
    sr.report.len = report_len;
    sr.signature.data = sig;
    sr.signature.len = sizeof(sig);
    sr.key_id = (char *)(uintptr_t)(o->key_id ? o->key_id : rsl_signer_key_id(signer));
    if (rsl_signed_report_encode(&sr, frame, frame_len) != RSL_OK) {
        fprintf(stderr, "rsl_probe: cannot encode the signed report\n");
        goto out;
    }
    rc = 0;
out:
    free(report_bytes);
    return rc;
}

/* Print the Ack as one line; control characters in the free-text fields
 * would break the line protocol with the tests, so they become '?'. */
static void print_ack(const rsl_ack *ack)
{
    printf("ACK %s %llu %s ", ack->agent_id[0] ? ack->agent_id : "-",
           (unsigned long long)ack->sequence, rsl_ack_status_name((int)ack->status));
    for (const char *p = ack->detail; p != NULL && *p; p++)
        putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
    putchar('\n');
    fflush(stdout);
}

/* Send one frame and wait up to the timeout for one Ack. Returns 1 if an Ack
 * arrived, 0 on timeout, -1 on a local error. */
static int send_and_wait(void *sock, const uint8_t *frame, size_t len, int timeout_ms)
{
    if (zmq_send(sock, frame, len, 0) < 0) {
        /* SNDTIMEO: no peer to queue to within the timeout. */
        if (errno == EAGAIN) {
            printf("NOACK\n");
            fflush(stdout);
            return 0;
        }
        fprintf(stderr, "rsl_probe: zmq_send: %s\n", zmq_strerror(errno));
        return -1;
    }
    int64_t deadline = rsl_monotonic_ms() + timeout_ms;
    uint8_t *buf = malloc(PROBE_ACK_MAX);
    if (buf == NULL)
        return -1;
    int result = 0;
    for (;;) {
        int64_t left = deadline - rsl_monotonic_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, (long)left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "rsl_probe: zmq_poll: %s\n", zmq_strerror(errno));
            result = -1;
            break;
        }
        if (n == 0)
            continue;
        int got = zmq_recv(sock, buf, PROBE_ACK_MAX, ZMQ_DONTWAIT);
        if (got < 0)
            continue;
        if ((size_t)got > PROBE_ACK_MAX) {
            fprintf(stderr, "rsl_probe: reply of %d bytes truncated, ignored\n", got);
            continue;
        }
        rsl_ack *ack = NULL;
        struct rsl_error err = {0};
        if (rsl_ack_decode(buf, (size_t)got, PROBE_ACK_MAX, &ack, &err) != RSL_OK) {
            fprintf(stderr, "rsl_probe: undecodable reply (%d bytes): %s\n", got, err.text);
            continue;
        }
        print_ack(ack);
        rsl_ack_free(&ack);
        result = 1;
        break;
    }
    free(buf);
    if (result == 0) {
        printf("NOACK\n");
        fflush(stdout);
    }
    return result;
}

/* Configure the DEALER's security: CURVE client with keys from a folder or a
 * fresh pair (an unenrolled key), or nothing at all for --plaintext. */
static int setup_security(void *sock, const struct probe_opts *o)
{
    if (o->plaintext)
        return 0;
    char secret[RSL_Z85_KEY_LEN + 1] = {0};
    char public[RSL_Z85_KEY_LEN + 1] = {0};
    int rc = -1;
    if (o->curve_dir != NULL) {
        char path[4096];
        struct rsl_error err = {0};
        if (rsl_keys_path(o->curve_dir, "curve.key", path, sizeof(path)) != RSL_OK ||
            rsl_curve_load_secret(path, secret, &err) != RSL_OK) {
            fprintf(stderr, "rsl_probe: %s\n", err.text[0] ? err.text : "bad curve.key path");
            goto out;
        }
        if (rsl_keys_path(o->curve_dir, "curve.pub", path, sizeof(path)) != RSL_OK ||
            rsl_curve_load_public(path, public, &err) != RSL_OK) {
            fprintf(stderr, "rsl_probe: %s\n", err.text[0] ? err.text : "bad curve.pub path");
            goto out;
        }
    } else if (zmq_curve_keypair(public, secret) != 0) {
        fprintf(stderr, "rsl_probe: zmq_curve_keypair: %s\n", zmq_strerror(errno));
        goto out;
    }
    if (!rsl_z85_key_valid(o->server_key)) {
        fprintf(stderr, "rsl_probe: --server-key is not a Z85 CURVE key\n");
        goto out;
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, o->server_key, RSL_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public, RSL_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, RSL_Z85_KEY_LEN) != 0) {
        fprintf(stderr, "rsl_probe: CURVE options: %s\n", zmq_strerror(errno));
        goto out;
    }
    rc = 0;
out:
    rsl_secure_zero(secret, sizeof(secret));
    return rc;
}

/* ---- --until-acked ------------------------------------------------------ */

/* One report of the run: its bytes (built and signed once, so a resend is
 * byte-identical, as the agent's spool makes it) and where it stands. */
struct pending {
    uint8_t *frame;
    size_t len;
    bool settled;
    bool in_flight;
    int64_t resend_at;   /* monotonic ms: send (again) at or after this */
};

/* Decode one reply, print it; returns the Ack (caller frees) or NULL. */
static rsl_ack *read_ack(void *sock, uint8_t *buf)
{
    int got = zmq_recv(sock, buf, PROBE_ACK_MAX, ZMQ_DONTWAIT);
    if (got < 0)
        return NULL;
    if ((size_t)got > PROBE_ACK_MAX) {
        fprintf(stderr, "rsl_probe: reply of %d bytes truncated, ignored\n", got);
        return NULL;
    }
    rsl_ack *ack = NULL;
    struct rsl_error err = {0};
    if (rsl_ack_decode(buf, (size_t)got, PROBE_ACK_MAX, &ack, &err) != RSL_OK) {
        fprintf(stderr, "rsl_probe: undecodable reply (%d bytes): %s\n", got, err.text);
        return NULL;
    }
    print_ack(ack);
    return ack;
}

/* Send `count` reports starting at o->seq until each is settled. Returns
 * 0 when all are, -1 on a local error. */
static int run_until_acked(void *sock, const struct probe_opts *o,
                           const struct rsl_signer *signer)
{
    int rc = -1;
    uint64_t n = o->count;
    uint64_t window = o->window > 0 ? o->window : 1;
    struct pending *p = calloc(n, sizeof(*p));
    uint8_t *buf = malloc(PROBE_ACK_MAX);
    if (p == NULL || buf == NULL) {
        fprintf(stderr, "rsl_probe: out of memory\n");
        goto out;
    }
    for (uint64_t i = 0; i < n; i++)
        if (build_frame(o, signer, o->seq + i, &p[i].frame, &p[i].len) != 0)
            goto out;
    uint64_t settled = 0;
    uint64_t next = 0;      /* first report never sent */
    uint64_t in_flight = 0;
    while (settled < n) {
        int64_t now = rsl_monotonic_ms();
        /* Resend what timed out or was asked to retry; then fill the window. */
        for (uint64_t i = 0; i < next; i++) {
            if (p[i].settled || !p[i].in_flight || p[i].resend_at > now)
                continue;
            if (zmq_send(sock, p[i].frame, p[i].len, ZMQ_DONTWAIT) < 0 && errno != EAGAIN) {
                fprintf(stderr, "rsl_probe: zmq_send: %s\n", zmq_strerror(errno));
                goto out;
            }
            p[i].resend_at = now + o->timeout_ms;
        }
        while (next < n && in_flight < window) {
            if (zmq_send(sock, p[next].frame, p[next].len, ZMQ_DONTWAIT) < 0 && errno != EAGAIN) {
                fprintf(stderr, "rsl_probe: zmq_send: %s\n", zmq_strerror(errno));
                goto out;
            }
            /* EAGAIN (nowhere to queue yet) is a send that timed out. */
            p[next].in_flight = true;
            p[next].resend_at = now + o->timeout_ms;
            in_flight++;
            next++;
        }
        /* Sleep until an ack or the earliest resend. */
        int64_t wake = now + o->timeout_ms;
        for (uint64_t i = 0; i < next; i++)
            if (!p[i].settled && p[i].in_flight && p[i].resend_at < wake)
                wake = p[i].resend_at;
        long wait = wake > now ? (long)(wake - now) : 0;
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, wait) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "rsl_probe: zmq_poll: %s\n", zmq_strerror(errno));
            goto out;
        }
        rsl_ack *ack;
        while ((ack = read_ack(sock, buf)) != NULL) {
            uint64_t i = ack->sequence - o->seq;
            bool ours = ack->sequence >= o->seq && i < n && p[i].in_flight && !p[i].settled &&
                        strcmp(ack->agent_id, o->agent_id) == 0;
            if (ours) {
                if (ack->status == RESILIENCE__V1__ACK__STATUS__RETRY_LATER) {
                    p[i].resend_at = rsl_monotonic_ms() + o->retry_delay_ms;
                } else {
                    p[i].settled = true;
                    p[i].in_flight = false;
                    in_flight--;
                    settled++;
                }
            }
            rsl_ack_free(&ack);
        }
    }
    rc = 0;
out:
    for (uint64_t i = 0; p != NULL && i < n; i++)
        free(p[i].frame);
    free(p);
    free(buf);
    return rc;
}

/* CURVE sessions established so far, from the socket's monitor. */
static uint64_t count_handshakes(void *monitor)
{
    uint64_t n = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return n;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&m) >= 2)
            memcpy(&event, zmq_msg_data(&m), sizeof(event));
        bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            n++;
        while (more) {
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, monitor, 0) < 0)
                more = false;
            else
                more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
    }
}

int main(int argc, char **argv)
{
    int status = 1;
    struct probe_opts o = {0};
    struct rsl_signer *signer = NULL;
    void *ctx = NULL;
    void *sock = NULL;
    uint8_t *frame = NULL;
    size_t frame_len = 0;
    bool all_acked = true;

    void *monitor = NULL;
    uint64_t handshakes = 0;
    o.seq = 1;
    o.count = 1;
    o.timeout_ms = 5000;
    o.window = 1;
    o.retry_delay_ms = 200;
    if (parse_args(argc, argv, &o) != 0)
        goto out;
    if (o.n_measures == 0) {
        static char default_indicator[] = "energy.oil_stock_days";
        o.measures[0].indicator = default_indicator;
        o.measures[0].value = 95;
        o.measures[0].unit = "days";
        o.n_measures = 1;
    }
    if (o.sign_key != NULL && o.raw_hex == NULL && o.oversize == 0) {
        struct rsl_error err = {0};
        if (rsl_signer_load(o.sign_key, &signer, &err) != RSL_OK) {
            fprintf(stderr, "rsl_probe: %s\n", err.text);
            goto out;
        }
    }

    ctx = zmq_ctx_new();
    if (ctx == NULL)
        goto out;
    sock = zmq_socket(ctx, ZMQ_DEALER);
    if (sock == NULL)
        goto out;
    int linger = 0;
    /* A DEALER whose peer never completes the handshake still queues the
     * message; the send timeout only matters if queueing is impossible. */
    int sndtimeo = o.timeout_ms;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof(sndtimeo));
    if (setup_security(sock, &o) != 0)
        goto out;
    if (o.report_handshakes) {
        char mon[64];
        snprintf(mon, sizeof(mon), "inproc://probe-monitor-%p", (void *)sock);
        if (zmq_socket_monitor(sock, mon, ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0 ||
            (monitor = zmq_socket(ctx, ZMQ_PAIR)) == NULL || zmq_connect(monitor, mon) != 0) {
            fprintf(stderr, "rsl_probe: socket monitor: %s\n", zmq_strerror(errno));
            goto out;
        }
        zmq_setsockopt(monitor, ZMQ_LINGER, &linger, sizeof(linger));
    }
    if (zmq_connect(sock, o.endpoint) != 0) {
        fprintf(stderr, "rsl_probe: connect %s: %s\n", o.endpoint, zmq_strerror(errno));
        goto out;
    }

    if (o.raw_hex != NULL || o.oversize != 0) {
        if (o.raw_hex != NULL) {
            size_t hexlen = strlen(o.raw_hex);
            if (hexlen % 2 != 0 || hexlen == 0) {
                fprintf(stderr, "rsl_probe: --raw-hex needs an even, non-zero number of digits\n");
                goto out;
            }
            frame_len = hexlen / 2;
            frame = malloc(frame_len);
            if (frame == NULL || rsl_hex_decode(o.raw_hex, frame, frame_len) != RSL_OK) {
                fprintf(stderr, "rsl_probe: --raw-hex is not hex\n");
                goto out;
            }
        } else {
            frame_len = o.oversize;
            frame = malloc(frame_len);
            if (frame == NULL)
                goto out;
            /* 0xff bytes: protobuf-invalid garbage in case it were read. */
            memset(frame, 0xff, frame_len);
        }
        int r = send_and_wait(sock, frame, frame_len, o.timeout_ms);
        if (r < 0)
            goto out;
        all_acked = r == 1;
    } else if (o.until_acked) {
        if (run_until_acked(sock, &o, signer) != 0)
            goto out;
    } else {
        for (uint64_t i = 0; i < o.count; i++) {
            if (o.wait_stdin && i > 0) {
                char line[256];
                if (fgets(line, sizeof(line), stdin) == NULL)
                    break; /* EOF: the test wants no more */
            }
            if (build_frame(&o, signer, o.seq + i, &frame, &frame_len) != 0)
                goto out;
            int r = send_and_wait(sock, frame, frame_len, o.timeout_ms);
            free(frame);
            frame = NULL;
            if (r < 0)
                goto out;
            if (r == 0)
                all_acked = false;
        }
    }
    if (monitor != NULL) {
        handshakes = count_handshakes(monitor);
        printf("HANDSHAKES %llu\n", (unsigned long long)handshakes);
        fflush(stdout);
    }
    status = all_acked ? 0 : 3;
out:
    /* Stop the monitor before closing either end: an event still queued
     * for a closed PAIR is never freed (libzmq 4.3). */
    if (monitor != NULL && sock != NULL)
        zmq_socket_monitor(sock, NULL, 0);
    if (monitor != NULL)
        zmq_close(monitor);
    free(frame);
    if (sock != NULL)
        zmq_close(sock);
    if (ctx != NULL)
        zmq_ctx_term(ctx);
    rsl_signer_free(&signer);
    return status;
}
