/*
 * test_ingest.c - the aggregator's ingest decisions (aggregator/ingest.h).
 *
 * Per frame, without sockets: agg_ingest_check_frame with hand-built
 * SignedReports covering every rejection reason, signatures without the
 * domain prefix, excluded measurements, and agg_ingest_store_batch on a
 * real SQLite store for duplicates, equivocation and a commit that fails.
 * Then with sockets: the ROUTER as agg_ingest_router_new makes it, with no
 * ZAP handler and with a slow one (both must admit nothing), and the whole
 * agg_ingest_start over ipc:// with enrolled, unenrolled and plaintext
 * peers.
 *
 * Everything is real: keys from rsl_keys_generate (and one libsodium seed
 * key, as a third-party agent would have), the shipped taxonomy, SQLite in
 * a fresh mkdtemp folder, libzmq with CURVE. Socket waits are for events
 * (handshake results from socket monitors, the ZAP request arriving), never
 * for time passing; receive timeouts only stop a broken build from hanging.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "aggregator/config.h"
#include "aggregator/ingest.h"
#include "aggregator/registry.h"
#include "aggregator/store.h"
#include "rsl/codec.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/util.h"
#include "testutil.h"

#define NOW_MS INT64_C(1800000000000)
#define SKEW_MS (5 * 60 * 1000)
/* Guards against a hang if a broken build never answers; not a timing
 * assertion: every wait below ends on an event long before this. */
#define HANG_GUARD_MS 30000

#define DEU "DEU-BMI-01"
#define FRA "FRA-SGDSN-01"
#define RAW "DEU-RAW-01"

struct fixture {
    char dir[64];
    char store_path[128];
    char endpoint[128];
    struct agg_config *cfg;
    struct agg_registry *reg;
    struct agg_store *store;
    struct rsl_signer *deu;     /* DEU's current key */
    struct rsl_signer *deu2;    /* DEU's second (rotation) key, also valid */
    struct rsl_signer *deu_old; /* DEU's revoked key */
    struct rsl_signer *fra;
    uint8_t raw_pk[32]; /* a libsodium key of agent RAW */
    uint8_t raw_sk[64];
    char raw_key_id[RSL_KEY_ID_HEX_LEN + 1];
    char agg_curve_pub[RSL_Z85_KEY_LEN + 1];
    char deu_curve_pub[RSL_Z85_KEY_LEN + 1];
    char deu_curve_sec[RSL_Z85_KEY_LEN + 1];
    char fra_curve_pub[RSL_Z85_KEY_LEN + 1];
    char fra_curve_sec[RSL_Z85_KEY_LEN + 1];
};

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

/* Generate a key folder `name` and load what the tests need from it. */
static void keys_make(struct fixture *f, const char *name, struct rsl_signer **signer,
                      char *curve_pub, char *curve_sec)
{
    char dir[128];
    char path[192];
    struct rsl_error err;
    snprintf(dir, sizeof(dir), "%s/%s", f->dir, name);
    if (rsl_keys_generate(dir, &err) != RSL_OK)
        fail_msg("keygen %s: %s", dir, err.text);
    if (signer != NULL) {
        snprintf(path, sizeof(path), "%s/sign.key", dir);
        if (rsl_signer_load(path, signer, &err) != RSL_OK)
            fail_msg("%s", err.text);
    }
    if (curve_pub != NULL) {
        snprintf(path, sizeof(path), "%s/curve.pub", dir);
        assert_int_equal(rsl_curve_load_public(path, curve_pub, &err), RSL_OK);
    }
    if (curve_sec != NULL) {
        snprintf(path, sizeof(path), "%s/curve.key", dir);
        assert_int_equal(rsl_curve_load_secret(path, curve_sec, &err), RSL_OK);
    }
}

static void b64_of(const uint8_t pub[32], char out[64])
{
    rsl_base64_encode(pub, 32, out);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct rsl_error err;
    if (f == NULL)
        return -1;
    if (rsl_test_mkdtemp(f->dir, sizeof(f->dir), "ingest") != 0) {
        free(f);
        return -1;
    }
    *state = f;
    snprintf(f->store_path, sizeof(f->store_path), "%s/store.db", f->dir);
    snprintf(f->endpoint, sizeof(f->endpoint), "ipc://%s/ingest.ipc", f->dir);

    keys_make(f, "agg", NULL, f->agg_curve_pub, NULL);
    keys_make(f, "deu", &f->deu, f->deu_curve_pub, f->deu_curve_sec);
    keys_make(f, "deu2", &f->deu2, NULL, NULL);
    keys_make(f, "deu-old", &f->deu_old, NULL, NULL);
    keys_make(f, "fra", &f->fra, f->fra_curve_pub, f->fra_curve_sec);
    uint8_t seed[32];
    for (size_t i = 0; i < sizeof(seed); i++)
        seed[i] = (uint8_t)(0xa0 + i);
    if (sodium_init() < 0)
        return -1;
    crypto_sign_seed_keypair(f->raw_pk, f->raw_sk, seed);
    rsl_key_id(f->raw_pk, f->raw_key_id);
    char raw_curve_pub[RSL_Z85_KEY_LEN + 1];
    char raw_curve_sec[RSL_Z85_KEY_LEN + 1];
    if (zmq_curve_keypair(raw_curve_pub, raw_curve_sec) != 0)
        return -1;

    char deu_b64[64], deu2_b64[64], old_b64[64], fra_b64[64], raw_b64[64];
    b64_of(rsl_signer_public_key(f->deu), deu_b64);
    b64_of(rsl_signer_public_key(f->deu2), deu2_b64);
    b64_of(rsl_signer_public_key(f->deu_old), old_b64);
    b64_of(rsl_signer_public_key(f->fra), fra_b64);
    b64_of(f->raw_pk, raw_b64);

    char text[4096];
    char path[192];
    snprintf(text, sizeof(text),
             "[agent " DEU "]\nnation = DEU\norganisation = Federal Ministry of the Interior\n"
             "sign_key = %s, %s, %s\nrevoked_keys = %s\ncurve_key = %s\n\n"
             "[agent " FRA "]\nnation = FRA\norganisation = SGDSN\n"
             "sign_key = %s\ncurve_key = %s\n\n"
             "[agent " RAW "]\nnation = DEU\norganisation = Third-party agent\n"
             "sign_key = %s\ncurve_key = %s\n",
             deu_b64, deu2_b64, old_b64, old_b64, f->deu_curve_pub, fra_b64, f->fra_curve_pub,
             raw_b64, raw_curve_pub);
    snprintf(path, sizeof(path), "%s/agents.conf", f->dir);
    write_file(path, text);

    snprintf(text, sizeof(text),
             "[ingest]\nbind = %s\nkeys = agg\nregistry = agents.conf\n"
             "max_future_skew = 5m\n"
             "[store]\npath = store.db\n"
             "[https]\ncert = tls/server.crt\nkey = tls/server.key\n"
             "[taxonomy]\npath = " RSL_SHARE_DIR "/indicators.csv\n",
             f->endpoint);
    snprintf(path, sizeof(path), "%s/aggregator.conf", f->dir);
    write_file(path, text);
    rsl_error_clear(&err);
    if (agg_config_load(path, &f->cfg, &err) != RSL_OK)
        fail_msg("%s", err.text);
    if (agg_registry_load(f->cfg->registry_path, f->cfg->taxonomy, &f->reg, &err) != RSL_OK)
        fail_msg("%s", err.text);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    agg_store_close(&f->store);
    agg_registry_release(&f->reg);
    agg_config_free(&f->cfg);
    rsl_signer_free(&f->deu);
    rsl_signer_free(&f->deu2);
    rsl_signer_free(&f->deu_old);
    rsl_signer_free(&f->fra);
    rsl_secure_zero(f->raw_sk, sizeof(f->raw_sk));
    rsl_test_rmtree(f->dir);
    free(f);
    return 0;
}

static void open_store(struct fixture *f)
{
    struct rsl_error err;
    if (f->store == NULL && agg_store_open(f->store_path, false, &f->store, &err) != RSL_OK)
        fail_msg("%s", err.text);
}

/* ---- building messages --------------------------------------------------- */

struct spec {
    const char *indicator;
    double value;
    const char *unit;
    int64_t observed_at_ms;
};

static const struct spec oil = {"energy.oil_stock_days", 95.0, "days", NOW_MS - 60000};

/* A Report and its bytes; owns its arrays. */
struct test_report {
    rsl_report r;
    rsl_measurement *m;
    rsl_measurement **mp;
    char agent_id[RSL_AGENT_ID_MAX + 1];
    char nation[8];
    uint8_t *bytes;
    size_t len;
};

static void report_make(struct test_report *t, const char *agent, const char *nation,
                        uint64_t sequence, int64_t created_at_ms, const struct spec *ms, size_t n)
{
    memset(t, 0, sizeof(*t));
    resilience__v1__report__init(&t->r);
    snprintf(t->agent_id, sizeof(t->agent_id), "%s", agent);
    snprintf(t->nation, sizeof(t->nation), "%s", nation);
    t->r.agent_id = t->agent_id;
    t->r.nation = t->nation;
    t->r.organisation = (char *)"Test";
    t->r.sequence = sequence;
    t->r.created_at_ms = created_at_ms;
    t->r.marking = (char *)"NATO UNCLASSIFIED";
    t->m = calloc(n > 0 ? n : 1, sizeof(*t->m));
    t->mp = calloc(n > 0 ? n : 1, sizeof(*t->mp));
    assert_non_null(t->m);
    assert_non_null(t->mp);
    for (size_t i = 0; i < n; i++) {
        resilience__v1__measurement__init(&t->m[i]);
        t->m[i].indicator = (char *)ms[i].indicator;
        t->m[i].value = ms[i].value;
        t->m[i].unit = (char *)ms[i].unit;
        t->m[i].observed_at_ms = ms[i].observed_at_ms;
        t->m[i].source = (char *)"test";
        t->mp[i] = &t->m[i];
    }
    t->r.n_measurements = n;
    t->r.measurements = t->mp;
    assert_int_equal(rsl_report_encode(&t->r, &t->bytes, &t->len), RSL_OK);
}

static void report_free(struct test_report *t)
{
    free(t->bytes);
    free(t->m);
    free(t->mp);
    memset(t, 0, sizeof(*t));
}

/* A SignedReport frame around arbitrary report bytes. */
static uint8_t *frame_of(const uint8_t *report, size_t report_len, const uint8_t *sig,
                         size_t sig_len, const char *key_id, size_t *len)
{
    rsl_signed_report sr = RESILIENCE__V1__SIGNED_REPORT__INIT;
    uint8_t *out = NULL;
    sr.report.data = (uint8_t *)report;
    sr.report.len = report_len;
    sr.signature.data = (uint8_t *)sig;
    sr.signature.len = sig_len;
    sr.key_id = (char *)key_id;
    assert_int_equal(rsl_signed_report_encode(&sr, &out, len), RSL_OK);
    return out;
}

/* Report bytes signed by `signer` the way an agent does it. */
static uint8_t *signed_frame(const struct rsl_signer *signer, const uint8_t *report,
                             size_t report_len, size_t *len)
{
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(signer, report, report_len, sig), RSL_OK);
    return frame_of(report, report_len, sig, sizeof(sig), rsl_signer_key_id(signer), len);
}

/* Signed with libsodium, independently of rsl_sign_report: over the domain
 * prefix and the bytes, or (with_prefix false) over the bytes alone. */
static uint8_t *sodium_frame(const struct fixture *f, const uint8_t *report, size_t report_len,
                             bool with_prefix, size_t *len)
{
    static const char prefix[] = RSL_SIGN_DOMAIN; /* sizeof counts the NUL byte */
    size_t plen = with_prefix ? sizeof(prefix) : 0;
    uint8_t *msg = malloc(plen + report_len);
    uint8_t sig[crypto_sign_BYTES];
    assert_non_null(msg);
    memcpy(msg, prefix, plen);
    memcpy(msg + plen, report, report_len);
    crypto_sign_detached(sig, NULL, msg, plen + report_len, f->raw_sk);
    free(msg);
    return frame_of(report, report_len, sig, sizeof(sig), f->raw_key_id, len);
}

/* ---- checking ----------------------------------------------------------- */

static void check(const struct fixture *f, const uint8_t *frame, size_t len, const char *user,
                  int64_t now_ms, struct agg_verdict *v)
{
    assert_int_equal(
        agg_ingest_check_frame(frame, len, user, now_ms, f->reg, f->cfg->taxonomy, f->cfg, v),
        RSL_OK);
    /* The invariant: nothing is ever ACCEPTED (or DUPLICATE) before its
     * transaction committed, i.e. never by the per-frame check. */
    assert_int_not_equal(v->status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    assert_int_not_equal(v->status, RESILIENCE__V1__ACK__STATUS__DUPLICATE);
}

static void expect_pass(const struct fixture *f, const uint8_t *frame, size_t len, const char *user,
                        struct agg_verdict *v)
{
    check(f, frame, len, user, NOW_MS, v);
    if (!v->store)
        fail_msg("expected to pass, got %s: %s", rsl_ack_status_name(v->status), v->detail);
    assert_int_equal(v->status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
    assert_int_equal(v->reason, AGG_COUNT_N);
    assert_non_null(v->report);
}

/* Rejected for `reason`; the detail starts with the reason's name and
 * contains `substring`. The rejection is counted once by agg_ingest_record. */
static void expect_reject_at(const struct fixture *f, const uint8_t *frame, size_t len,
                             const char *user, int64_t now_ms, enum agg_ingest_counter reason,
                             const char *substring)
{
    struct agg_verdict v;
    check(f, frame, len, user, now_ms, &v);
    if (v.status != RESILIENCE__V1__ACK__STATUS__REJECTED || v.reason != reason)
        fail_msg("expected REJECTED %s, got %s (%s): %s", agg_ingest_counter_name(reason),
                 rsl_ack_status_name(v.status), agg_ingest_counter_name(v.reason), v.detail);
    assert_false(v.store);
    const char *name = agg_ingest_counter_name(reason);
    if (strncmp(v.detail, name, strlen(name)) != 0 || strstr(v.detail, substring) == NULL)
        fail_msg("detail '%s' lacks '%s...%s'", v.detail, name, substring);
    uint64_t before = agg_ingest_counter(reason);
    agg_ingest_record(&v);
    assert_int_equal(agg_ingest_counter(reason), before + 1);
    agg_verdict_clear(&v);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
}

static void expect_reject(const struct fixture *f, const uint8_t *frame, size_t len,
                          const char *user, enum agg_ingest_counter reason, const char *substring)
{
    expect_reject_at(f, frame, len, user, NOW_MS, reason, substring);
}

/* ---- per-frame tests ----------------------------------------------------- */

/* The happy path end to end: passes the checks as "store me" (still
 * RETRY_LATER), becomes ACCEPTED only through the batch, and the store
 * holds the frame's exact bytes. */
static void test_valid_report_accepted_after_commit(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_pass(f, frame, len, DEU, &v);
    assert_string_equal(v.agent_id, DEU);
    assert_int_equal(v.sequence, 1);
    assert_string_equal(v.user_id, DEU);
    assert_int_equal(v.n_excluded, 0);
    assert_string_equal(v.detail, "");

    open_store(f);
    struct agg_verdict *list[] = {&v};
    struct rsl_error err;
    uint64_t accepted = agg_ingest_counter(AGG_COUNT_ACCEPTED);
    assert_int_equal(agg_ingest_store_batch(f->store, list, 1, &err), RSL_OK);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    agg_ingest_record(&v);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_ACCEPTED), accepted + 1);
    agg_verdict_clear(&v);
    agg_store_close(&f->store);

    /* The original signed bytes, byte for byte. */
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_open_v2(f->store_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT signed, sequence FROM reports WHERE agent_id = ?",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, DEU, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_bytes(s, 0), (int)len);
    assert_memory_equal(sqlite3_column_blob(s, 0), frame, len);
    assert_int_equal(sqlite3_column_int64(s, 1), 1);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(frame);
    report_free(&t);
}

static void test_malformed_frames(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    size_t len;
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(f->deu, t.bytes, t.len, sig), RSL_OK);
    const char *key_id = rsl_signer_key_id(f->deu);

    static const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef};
    expect_reject(f, garbage, sizeof(garbage), DEU, AGG_COUNT_MALFORMED, "SignedReport");
    expect_reject(f, (const uint8_t *)"", 0, DEU, AGG_COUNT_MALFORMED, "report: missing");
    static const uint8_t truncated[] = {0x0a, 0x20, 0x41};
    expect_reject(f, truncated, sizeof(truncated), DEU, AGG_COUNT_MALFORMED, "runs past the end");

    /* A signature one byte short. */
    uint8_t *frame = frame_of(t.bytes, t.len, sig, 63, key_id, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_MALFORMED, "signature: 63 bytes");
    free(frame);
    /* key_id in upper case is not a key_id. */
    char upper[RSL_KEY_ID_HEX_LEN + 1];
    for (size_t i = 0; i <= RSL_KEY_ID_HEX_LEN; i++)
        upper[i] = (char)(key_id[i] >= 'a' && key_id[i] <= 'f' ? key_id[i] - 32 : key_id[i]);
    frame = frame_of(t.bytes, t.len, sig, sizeof(sig), upper, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_MALFORMED, "key_id");
    free(frame);
    /* Trailing garbage after a valid frame (a truncated extra field). */
    frame = frame_of(t.bytes, t.len, sig, sizeof(sig), key_id, &len);
    uint8_t *longer = malloc(len + 2);
    assert_non_null(longer);
    memcpy(longer, frame, len);
    longer[len] = 0x12;     /* field 2, length-delimited ... */
    longer[len + 1] = 0x05; /* ... of 5 bytes that are not there */
    expect_reject(f, longer, len + 2, DEU, AGG_COUNT_MALFORMED, "runs past the end");
    free(longer);
    free(frame);
    report_free(&t);
}

/* The inner Report fails validation: rejected as malformed, and the ack
 * still names agent and sequence when the top level can be read. */
static void test_invalid_report_names_identity(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    const struct spec nan_value = {"energy.oil_stock_days", (double)NAN, "days", NOW_MS - 1};
    report_make(&t, DEU, "DEU", 42, NOW_MS - 1000, &nan_value, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    check(f, frame, len, DEU, NOW_MS, &v);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    assert_int_equal(v.reason, AGG_COUNT_MALFORMED);
    assert_non_null(strstr(v.detail, "measurements[0].value: not finite"));
    assert_string_equal(v.agent_id, DEU);
    assert_int_equal(v.sequence, 42);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);

    /* Lower-case nation: invalid, identity still readable. */
    report_make(&t, DEU, "deu", 43, NOW_MS - 1000, &oil, 1);
    frame = signed_frame(f->deu, t.bytes, t.len, &len);
    check(f, frame, len, DEU, NOW_MS, &v);
    assert_int_equal(v.reason, AGG_COUNT_MALFORMED);
    assert_non_null(strstr(v.detail, "nation"));
    assert_string_equal(v.agent_id, DEU);
    assert_int_equal(v.sequence, 43);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);

    /* More measurements than allowed: refused before protobuf-c allocates
     * them; the identity comes from the allocation-free peek. */
    size_t n = RSL_MAX_MEASUREMENTS + 1;
    struct spec *many = calloc(n, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < n; i++)
        many[i] = oil;
    report_make(&t, DEU, "DEU", 44, NOW_MS - 1000, many, n);
    free(many);
    frame = signed_frame(f->deu, t.bytes, t.len, &len);
    check(f, frame, len, DEU, NOW_MS, &v);
    assert_int_equal(v.reason, AGG_COUNT_MALFORMED);
    assert_non_null(strstr(v.detail, "more than 4096"));
    assert_string_equal(v.agent_id, DEU);
    assert_int_equal(v.sequence, 44);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);

    /* A top level that is not protobuf: no identity, not a crash. */
    static const uint8_t junk[] = {0x0a, 0x03, 'D', 'E', 'U', 0x20, 0xff};
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES] = {0};
    frame = frame_of(junk, sizeof(junk), sig, sizeof(sig), rsl_signer_key_id(f->deu), &len);
    check(f, frame, len, DEU, NOW_MS, &v);
    assert_int_equal(v.reason, AGG_COUNT_MALFORMED);
    assert_string_equal(v.agent_id, "");
    assert_int_equal(v.sequence, 0);
    agg_verdict_clear(&v);
    free(frame);

    /* An agent id with an embedded NUL is not an identity. */
    static const uint8_t nul_id[] = {0x0a, 0x05, 'D', 'E', 0x00, 'U', 'X', 0x20, 0x07};
    frame = frame_of(nul_id, sizeof(nul_id), sig, sizeof(sig), rsl_signer_key_id(f->deu), &len);
    check(f, frame, len, DEU, NOW_MS, &v);
    assert_int_equal(v.reason, AGG_COUNT_MALFORMED);
    assert_string_equal(v.agent_id, "");
    agg_verdict_clear(&v);
    free(frame);
}

static void test_oversized(void **state)
{
    struct fixture *f = *state;
    size_t max = f->cfg->max_message_bytes;
    uint8_t *big = calloc(1, max + 1);
    assert_non_null(big);
    expect_reject(f, big, max + 1, DEU, AGG_COUNT_OVERSIZED, "over max_message_bytes");
    free(big);
}

static void test_unknown_agent_and_key(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    size_t len;
    /* Not enrolled at all (signed with a real key, even DEU's). */
    report_make(&t, "NOR-DSB-01", "NOR", 1, NOW_MS - 1000, &oil, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_reject(f, frame, len, "NOR-DSB-01", AGG_COUNT_UNKNOWN_AGENT,
                  "'NOR-DSB-01' is not enrolled");
    free(frame);
    report_free(&t);

    /* DEU's report signed with FRA's (enrolled, valid) key under its own
     * key_id: that key is not one of DEU's. */
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);
    frame = signed_frame(f->fra, t.bytes, t.len, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_UNKNOWN_KEY, rsl_signer_key_id(f->fra));
    free(frame);
    /* A key_id that names nothing. */
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(f->deu, t.bytes, t.len, sig), RSL_OK);
    frame = frame_of(t.bytes, t.len, sig, sizeof(sig), "00000000000000000000000000000000", &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_UNKNOWN_KEY, "is not enrolled for agent " DEU);
    free(frame);
    report_free(&t);
}

/* A revoked key is refused although it also stays listed in sign_key and
 * its signature is genuine. */
static void test_revoked_key(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    size_t len;
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);
    uint8_t *frame = signed_frame(f->deu_old, t.bytes, t.len, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_REVOKED_KEY, "revoked");
    free(frame);
    /* The rotation key is fine. */
    struct agg_verdict v;
    frame = signed_frame(f->deu2, t.bytes, t.len, &len);
    expect_pass(f, frame, len, DEU, &v);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);
}

static void test_bad_signatures(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);

    /* FRA's signature presented under DEU's key_id. */
    uint8_t sig[RSL_ED25519_SIGNATURE_BYTES];
    assert_int_equal(rsl_sign_report(f->fra, t.bytes, t.len, sig), RSL_OK);
    uint8_t *frame = frame_of(t.bytes, t.len, sig, sizeof(sig), rsl_signer_key_id(f->deu), &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_BAD_SIGNATURE, "does not verify");
    free(frame);

    /* DEU's own signature with one bit flipped, in R and in S. */
    for (size_t at = 0; at < RSL_ED25519_SIGNATURE_BYTES; at += 63) {
        assert_int_equal(rsl_sign_report(f->deu, t.bytes, t.len, sig), RSL_OK);
        sig[at] ^= 0x01;
        frame = frame_of(t.bytes, t.len, sig, sizeof(sig), rsl_signer_key_id(f->deu), &len);
        expect_reject(f, frame, len, DEU, AGG_COUNT_BAD_SIGNATURE, "does not verify");
        free(frame);
    }

    /* Report bytes changed after signing (value 95 -> 96). */
    assert_int_equal(rsl_sign_report(f->deu, t.bytes, t.len, sig), RSL_OK);
    struct test_report other;
    struct spec changed = oil;
    changed.value = 96.0;
    report_make(&other, DEU, "DEU", 1, NOW_MS - 1000, &changed, 1);
    frame = frame_of(other.bytes, other.len, sig, sizeof(sig), rsl_signer_key_id(f->deu), &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_BAD_SIGNATURE, "does not verify");
    free(frame);
    report_free(&other);
    report_free(&t);

    /* A third-party agent signing with libsodium: over prefix + bytes it
     * verifies (so the next case can fail for the right reason only) ... */
    report_make(&t, RAW, "DEU", 1, NOW_MS - 1000, &oil, 1);
    frame = sodium_frame(f, t.bytes, t.len, true, &len);
    expect_pass(f, frame, len, RAW, &v);
    agg_verdict_clear(&v);
    free(frame);
    /* ... over the same bytes WITHOUT the domain prefix it must not. */
    frame = sodium_frame(f, t.bytes, t.len, false, &len);
    expect_reject(f, frame, len, RAW, AGG_COUNT_BAD_SIGNATURE, f->raw_key_id);
    free(frame);
    report_free(&t);
}

/* The CURVE identity must be the report's agent: a valid signature alone
 * does not let FRA's connection deliver DEU's report. */
static void test_wrong_sender(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    size_t len;
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, &oil, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_reject(f, frame, len, FRA, AGG_COUNT_WRONG_SENDER, "authenticated as '" FRA "'");
    /* No ZAP identity at all: nobody. */
    expect_reject(f, frame, len, "", AGG_COUNT_WRONG_SENDER, "(nobody)");
    expect_reject(f, frame, len, NULL, AGG_COUNT_WRONG_SENDER, "(nobody)");
    /* A user id longer than any agent id whose prefix is DEU's id. */
    char longer[RSL_AGENT_ID_MAX * 2];
    snprintf(longer, sizeof(longer), "%s%0*d", DEU, RSL_AGENT_ID_MAX, 0);
    expect_reject(f, frame, len, longer, AGG_COUNT_WRONG_SENDER, "(nobody)");
    free(frame);
    report_free(&t);
}

static void test_nation_mismatch(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    size_t len;
    report_make(&t, DEU, "FRA", 1, NOW_MS - 1000, &oil, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_NATION_MISMATCH,
                  "nation 'FRA' is not the enrolled nation 'DEU'");
    free(frame);
    report_free(&t);
}

static void test_future_timestamp(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    /* Exactly at the limit: accepted. */
    report_make(&t, DEU, "DEU", 1, NOW_MS + SKEW_MS, &oil, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_pass(f, frame, len, DEU, &v);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);
    /* One millisecond more: rejected. */
    report_make(&t, DEU, "DEU", 1, NOW_MS + SKEW_MS + 1, &oil, 1);
    frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_reject(f, frame, len, DEU, AGG_COUNT_FUTURE_TIMESTAMP, "300001 ms ahead");
    free(frame);
    report_free(&t);
    /* The far end of int64 against a clock near its other end: no
     * overflow (UBSan would abort), still rejected. */
    report_make(&t, DEU, "DEU", 1, INT64_MAX, &oil, 1);
    frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_reject_at(f, frame, len, DEU, INT64_MIN + 1, AGG_COUNT_FUTURE_TIMESTAMP, "ms ahead");
    expect_reject_at(f, frame, len, DEU, NOW_MS, AGG_COUNT_FUTURE_TIMESTAMP, "ms ahead");
    free(frame);
    report_free(&t);
}

/* Measurements outside the taxonomy, with the wrong unit or observed in
 * the future are stored but not aggregated, and the ack names each. */
static void test_excluded_measurements_named(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    const struct spec ms[] = {
        oil,
        {"bogus.made_up_indicator", 1.0, "pct", NOW_MS - 1000},
        {"energy.gas_storage_fill_pct", 85.0, "days", NOW_MS - 1000},
        {"energy.gas_storage_fill_pct", 80.0, "", NOW_MS - 1000}, /* "" = taxonomy unit */
        {"energy.oil_stock_consumption_days", 50.0, "days", NOW_MS + SKEW_MS + 1},
    };
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, ms, 5);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_pass(f, frame, len, DEU, &v);
    assert_int_equal(v.n_excluded, 3);
    assert_int_equal(v.n_excluded_unknown_indicator, 1);
    assert_int_equal(v.n_excluded_unit, 1);
    assert_int_equal(v.n_excluded_future, 1);
    assert_false(v.excluded[0]);
    assert_true(v.excluded[1]);
    assert_true(v.excluded[2]);
    assert_false(v.excluded[3]);
    assert_true(v.excluded[4]);
    assert_non_null(strstr(v.detail, "measurements[1] bogus.made_up_indicator: unknown indicator"));
    assert_non_null(strstr(v.detail, "measurements[2] energy.gas_storage_fill_pct: unit 'days' is "
                                     "not the taxonomy unit 'pct'"));
    assert_non_null(strstr(v.detail, "measurements[4] energy.oil_stock_consumption_days: "
                                     "observed_at_ms is in the future"));
    assert_null(strstr(v.detail, "measurements[0]"));
    assert_null(strstr(v.detail, "measurements[3]"));

    /* The detail survives the commit; `current` holds only the two that count. */
    open_store(f);
    struct agg_verdict *list[] = {&v};
    struct rsl_error err;
    uint64_t excluded = agg_ingest_counter(AGG_COUNT_EXCLUDED_MEASUREMENTS);
    uint64_t by_reason[3] = {agg_ingest_counter(AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR),
                             agg_ingest_counter(AGG_COUNT_EXCLUDED_UNIT),
                             agg_ingest_counter(AGG_COUNT_EXCLUDED_FUTURE)};
    assert_int_equal(agg_ingest_store_batch(f->store, list, 1, &err), RSL_OK);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    assert_non_null(strstr(v.detail, "bogus.made_up_indicator"));
    agg_ingest_record(&v);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_EXCLUDED_MEASUREMENTS), excluded + 3);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_EXCLUDED_UNKNOWN_INDICATOR), by_reason[0] + 1);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_EXCLUDED_UNIT), by_reason[1] + 1);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_EXCLUDED_FUTURE), by_reason[2] + 1);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, &err), RSL_OK);
    assert_int_equal(stats.measurements, 5); /* history keeps all of them */
}

/* The exclusion detail is bounded however many measurements are left out,
 * and still ends with a count of the ones it could not name. */
static void test_excluded_detail_truncated(void **state)
{
    struct fixture *f = *state;
    struct test_report t;
    struct agg_verdict v;
    size_t len;
    size_t n = 200;
    struct spec *ms = calloc(n, sizeof(*ms));
    assert_non_null(ms);
    for (size_t i = 0; i < n; i++)
        ms[i] = (struct spec){"bogus.indicator_with_a_long_name", 1.0, "x", NOW_MS - 1};
    report_make(&t, DEU, "DEU", 1, NOW_MS - 1000, ms, n);
    free(ms);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
    expect_pass(f, frame, len, DEU, &v);
    assert_int_equal(v.n_excluded, n);
    assert_true(strlen(v.detail) <= RSL_ACK_DETAIL_MAX);
    assert_non_null(strstr(v.detail, " more"));
    /* And the ack carrying it decodes on the agent's side. */
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    ack.agent_id = v.agent_id;
    ack.sequence = v.sequence;
    ack.status = RESILIENCE__V1__ACK__STATUS__ACCEPTED;
    ack.detail = v.detail;
    uint8_t *buf = NULL;
    size_t blen = 0;
    rsl_ack *back = NULL;
    assert_int_equal(rsl_ack_encode(&ack, &buf, &blen), RSL_OK);
    assert_int_equal(rsl_ack_decode(buf, blen, 4096, &back, NULL), RSL_OK);
    rsl_ack_free(&back);
    free(buf);
    agg_verdict_clear(&v);
    free(frame);
    report_free(&t);
}

/* Checked and stored as one batch; returns the batch result. */
static int store_frames(struct fixture *f, uint8_t **frames, const size_t *lens, size_t n,
                        struct agg_verdict *v)
{
    struct agg_verdict *list[8];
    struct rsl_error err;
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        check(f, frames[i], lens[i], DEU, NOW_MS, &v[i]);
        list[i] = &v[i];
    }
    open_store(f);
    rsl_error_clear(&err);
    return agg_ingest_store_batch(f->store, list, n, &err);
}

/* Duplicate versus equivocation compares the signed Report bytes: not the
 * frame (a resend with another valid key or an extra unknown SignedReport
 * field is the same report), not the decoded content (an extra unknown
 * field inside the Report is other signed bytes). */
static void test_duplicate_and_equivocation(void **state)
{
    struct fixture *f = *state;
    struct test_report t, other;
    struct agg_verdict v[4];
    uint8_t *frames[4];
    size_t lens[4];

    report_make(&t, DEU, "DEU", 5, NOW_MS - 1000, &oil, 1);
    frames[0] = signed_frame(f->deu, t.bytes, t.len, &lens[0]);
    assert_int_equal(store_frames(f, frames, lens, 1, v), RSL_OK);
    assert_int_equal(v[0].status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    agg_verdict_clear(&v[0]);

    /* The same frame again; the same report signed with the rotation key;
     * the same frame with an unknown field appended to the SignedReport. */
    frames[1] = signed_frame(f->deu2, t.bytes, t.len, &lens[1]);
    frames[2] = malloc(lens[0] + 2);
    assert_non_null(frames[2]);
    memcpy(frames[2], frames[0], lens[0]);
    frames[2][lens[0]] = 0x78; /* field 15, varint */
    frames[2][lens[0] + 1] = 0x01;
    lens[2] = lens[0] + 2;
    uint64_t duplicates = agg_ingest_counter(AGG_COUNT_DUPLICATE);
    assert_int_equal(store_frames(f, frames, lens, 3, v), RSL_OK);
    for (size_t i = 0; i < 3; i++) {
        if (v[i].status != RESILIENCE__V1__ACK__STATUS__DUPLICATE)
            fail_msg("copy %zu: %s %s", i, rsl_ack_status_name(v[i].status), v[i].detail);
        agg_ingest_record(&v[i]);
        agg_verdict_clear(&v[i]);
    }
    assert_int_equal(agg_ingest_counter(AGG_COUNT_DUPLICATE), duplicates + 3);
    free(frames[1]);
    free(frames[2]);

    /* Other content, same sequence: equivocation, permanent. */
    struct spec changed = oil;
    changed.value = 1.0;
    report_make(&other, DEU, "DEU", 5, NOW_MS - 1000, &changed, 1);
    frames[1] = signed_frame(f->deu, other.bytes, other.len, &lens[1]);
    /* The same content with an unknown field inside the signed Report. */
    uint8_t *extended = malloc(t.len + 2);
    assert_non_null(extended);
    memcpy(extended, t.bytes, t.len);
    extended[t.len] = 0x78;
    extended[t.len + 1] = 0x01;
    frames[2] = signed_frame(f->deu, extended, t.len + 2, &lens[2]);
    free(extended);
    uint64_t equivocations = agg_ingest_counter(AGG_COUNT_EQUIVOCATION);
    assert_int_equal(store_frames(f, frames + 1, lens + 1, 2, v), RSL_OK);
    for (size_t i = 0; i < 2; i++) {
        if (v[i].status != RESILIENCE__V1__ACK__STATUS__REJECTED ||
            v[i].reason != AGG_COUNT_EQUIVOCATION)
            fail_msg("variant %zu: %s %s", i, rsl_ack_status_name(v[i].status), v[i].detail);
        assert_non_null(strstr(v[i].detail, "equivocation: sequence 5 is already stored"));
        agg_ingest_record(&v[i]);
        agg_verdict_clear(&v[i]);
    }
    assert_int_equal(agg_ingest_counter(AGG_COUNT_EQUIVOCATION), equivocations + 2);
    free(frames[1]);
    free(frames[2]);

    /* Within one batch: the first of two versions wins, the second is
     * equivocation against it. */
    report_free(&other);
    report_make(&other, DEU, "DEU", 6, NOW_MS - 1000, &changed, 1);
    struct test_report third;
    report_make(&third, DEU, "DEU", 6, NOW_MS - 1000, &oil, 1);
    frames[1] = signed_frame(f->deu, other.bytes, other.len, &lens[1]);
    frames[2] = signed_frame(f->deu, third.bytes, third.len, &lens[2]);
    assert_int_equal(store_frames(f, frames + 1, lens + 1, 2, v), RSL_OK);
    assert_int_equal(v[0].status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    assert_int_equal(v[1].status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    assert_int_equal(v[1].reason, AGG_COUNT_EQUIVOCATION);
    agg_verdict_clear(&v[0]);
    agg_verdict_clear(&v[1]);
    free(frames[0]);
    free(frames[1]);
    free(frames[2]);
    report_free(&third);
    report_free(&other);
    report_free(&t);

    /* The store appends a batch grouped by agent; the earlier of two
     * versions still wins wherever the others land: here version "changed"
     * of 9 arrives second, version "oil" fifth, among 10, 8, 11 and 7. */
    static const uint64_t seqs[6] = {10, 9, 8, 11, 9, 7};
    struct test_report rs[6];
    uint8_t *fr[6];
    size_t fl[6];
    struct agg_verdict vs[6];
    for (size_t i = 0; i < 6; i++) {
        report_make(&rs[i], DEU, "DEU", seqs[i], NOW_MS - 1000, i == 1 ? &changed : &oil, 1);
        fr[i] = signed_frame(f->deu, rs[i].bytes, rs[i].len, &fl[i]);
    }
    assert_int_equal(store_frames(f, fr, fl, 6, vs), RSL_OK);
    for (size_t i = 0; i < 6; i++) {
        if (i == 4) {
            assert_int_equal(vs[i].status, RESILIENCE__V1__ACK__STATUS__REJECTED);
            assert_int_equal(vs[i].reason, AGG_COUNT_EQUIVOCATION);
        } else if (vs[i].status != RESILIENCE__V1__ACK__STATUS__ACCEPTED) {
            fail_msg("sequence %" PRIu64 " (%zu): %s %s", seqs[i], i,
                     rsl_ack_status_name(vs[i].status), vs[i].detail);
        }
        agg_verdict_clear(&vs[i]);
        free(fr[i]);
    }
    /* What is stored for 9 is the version that came first. */
    uint8_t want[32], stored[32];
    bool found = false;
    rsl_sha256(rs[1].bytes, rs[1].len, want);
    assert_int_equal(agg_store_lookup(f->store, DEU, 9, &found, stored, NULL), RSL_OK);
    assert_true(found);
    assert_memory_equal(stored, want, sizeof(want));
    for (size_t i = 0; i < 6; i++)
        report_free(&rs[i]);

    /* Reports stored: 5 (original), 6 (first), then 7 to 11. */
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(f->store, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 7);
}

/* The store appends a batch grouped by agent, in arrival order within each
 * agent: reports of two agents arriving interleaved are stored DEU's first,
 * then FRA's, each in the order they came. */
struct stored_order {
    char agent[8][32];
    uint64_t sequence[8];
    size_t n;
};

static int collect_order(void *ctx, const struct agg_stored_report *r)
{
    struct stored_order *o = ctx;
    assert_true(o->n < 8);
    snprintf(o->agent[o->n], sizeof(o->agent[o->n]), "%s", r->agent_id);
    o->sequence[o->n] = r->sequence;
    o->n++;
    return 0;
}

static void test_batch_grouped_by_agent(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *agent;
        const char *nation;
        uint64_t sequence;
    } in[5] = {{FRA, "FRA", 2}, {DEU, "DEU", 7}, {FRA, "FRA", 1}, {DEU, "DEU", 3},
               {FRA, "FRA", 5}};
    struct test_report t[5];
    uint8_t *frames[5];
    size_t lens[5];
    struct agg_verdict v[5];
    struct agg_verdict *list[5];
    for (size_t i = 0; i < 5; i++) {
        report_make(&t[i], in[i].agent, in[i].nation, in[i].sequence, NOW_MS - 1000, &oil, 1);
        frames[i] = signed_frame(strcmp(in[i].agent, DEU) == 0 ? f->deu : f->fra, t[i].bytes,
                                 t[i].len, &lens[i]);
        check(f, frames[i], lens[i], in[i].agent, NOW_MS, &v[i]);
        list[i] = &v[i];
    }
    open_store(f);
    struct rsl_error err;
    rsl_error_clear(&err);
    assert_int_equal(agg_ingest_store_batch(f->store, list, 5, &err), RSL_OK);
    for (size_t i = 0; i < 5; i++) {
        if (v[i].status != RESILIENCE__V1__ACK__STATUS__ACCEPTED)
            fail_msg("%s/%" PRIu64 ": %s %s", in[i].agent, in[i].sequence,
                     rsl_ack_status_name(v[i].status), v[i].detail);
        agg_verdict_clear(&v[i]);
        free(frames[i]);
        report_free(&t[i]);
    }
    struct stored_order o = {0};
    assert_int_equal(agg_store_reports(f->store, collect_order, &o, &err), RSL_OK);
    static const size_t want[5] = {1, 3, 0, 2, 4}; /* indexes into in[] */
    assert_int_equal(o.n, 5);
    for (size_t k = 0; k < 5; k++) {
        if (strcmp(o.agent[k], in[want[k]].agent) != 0 || o.sequence[k] != in[want[k]].sequence)
            fail_msg("stored #%zu: %s/%" PRIu64 ", wanted %s/%" PRIu64, k, o.agent[k],
                     o.sequence[k], in[want[k]].agent, in[want[k]].sequence);
    }
}

/* A commit that fails acknowledges nothing: every candidate becomes
 * RETRY_LATER - including an "equivocation" found against a row of the
 * same, rolled-back batch - rejections stay rejections, and the next
 * batch on the same handle works (no transaction left half open). */
static void test_commit_failure_acks_nothing(void **state)
{
    struct fixture *f = *state;
    struct test_report a, b;
    struct agg_verdict v[3];
    struct agg_verdict *list[3] = {&v[0], &v[1], &v[2]};
    size_t la, lb, lc;
    struct rsl_error err;

    report_make(&a, DEU, "DEU", 7, NOW_MS - 1000, &oil, 1);
    struct spec changed = oil;
    changed.value = 2.0;
    report_make(&b, DEU, "DEU", 7, NOW_MS - 1000, &changed, 1);
    uint8_t *fa = signed_frame(f->deu, a.bytes, a.len, &la);
    uint8_t *fb = signed_frame(f->deu, b.bytes, b.len, &lb);
    uint8_t *fc = signed_frame(f->fra, a.bytes, a.len, &lc); /* unknown key */
    open_store(f);

    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit tiny = old;
    tiny.rlim_cur = 1; /* every write to the WAL fails, as on a full disk */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tiny), 0);

    check(f, fa, la, DEU, NOW_MS, &v[0]);
    check(f, fb, lb, DEU, NOW_MS, &v[1]);
    check(f, fc, lc, DEU, NOW_MS, &v[2]);
    assert_int_equal(v[2].reason, AGG_COUNT_UNKNOWN_KEY);
    rsl_error_clear(&err);
    int rc = agg_ingest_store_batch(f->store, list, 3, &err);

    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);

    assert_int_not_equal(rc, RSL_OK);
    assert_non_null(strstr(err.text, f->store_path));
    assert_int_equal(v[0].status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
    assert_int_equal(v[1].status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
    assert_non_null(strstr(v[0].detail, "aggregator storage"));
    assert_int_equal(v[0].reason, AGG_COUNT_RETRY_STORE_ERROR);
    assert_int_equal(v[2].status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    uint64_t retries = agg_ingest_counter(AGG_COUNT_RETRY_LATER);
    uint64_t store_errors = agg_ingest_counter(AGG_COUNT_RETRY_STORE_ERROR);
    agg_ingest_record(&v[0]);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_RETRY_LATER), retries + 1);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_RETRY_STORE_ERROR), store_errors + 1);
    bool found = true;
    assert_int_equal(agg_store_lookup(f->store, DEU, 7, &found, NULL, NULL), RSL_OK);
    assert_false(found);

    /* Space is back: the same verdicts go through on the same handle. */
    assert_int_equal(agg_ingest_store_batch(f->store, list, 3, &err), RSL_OK);
    assert_int_equal(v[0].status, RESILIENCE__V1__ACK__STATUS__ACCEPTED);
    assert_int_equal(v[1].status, RESILIENCE__V1__ACK__STATUS__REJECTED);
    assert_int_equal(v[1].reason, AGG_COUNT_EQUIVOCATION);
    assert_int_equal(v[2].reason, AGG_COUNT_UNKNOWN_KEY);
    assert_int_equal(agg_store_lookup(f->store, DEU, 7, &found, NULL, NULL), RSL_OK);
    assert_true(found);
    for (size_t i = 0; i < 3; i++)
        agg_verdict_clear(&v[i]);
    free(fa);
    free(fb);
    free(fc);
    report_free(&a);
    report_free(&b);
}

static void test_bad_arguments(void **state)
{
    struct fixture *f = *state;
    struct agg_verdict v;
    memset(&v, 0, sizeof(v)); /* status 0 would be ACCEPTED */
    assert_int_equal(
        agg_ingest_check_frame(NULL, 5, DEU, NOW_MS, f->reg, f->cfg->taxonomy, f->cfg, &v),
        RSL_EINVAL);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
    assert_false(v.store);
    assert_int_equal(agg_ingest_check_frame((const uint8_t *)"x", 1, DEU, NOW_MS, NULL,
                                            f->cfg->taxonomy, f->cfg, &v),
                     RSL_EINVAL);
    assert_int_equal(agg_ingest_check_frame((const uint8_t *)"x", 1, DEU, NOW_MS, f->reg,
                                            f->cfg->taxonomy, f->cfg, NULL),
                     RSL_EINVAL);
    agg_verdict_clear(NULL);
    agg_ingest_record(NULL);
    /* A verdict that never went through the checks cannot be stored. */
    open_store(f);
    v.store = true;
    struct agg_verdict *list[] = {&v};
    assert_int_not_equal(agg_ingest_store_batch(f->store, list, 1, NULL), RSL_OK);
    assert_int_equal(v.status, RESILIENCE__V1__ACK__STATUS__RETRY_LATER);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_N), 0);
    assert_string_equal(agg_ingest_counter_name(AGG_COUNT_N), "unknown");
    assert_string_equal(agg_ingest_counter_name(AGG_COUNT_WRONG_SENDER), "wrong_sender");
}

/* ---- sockets ------------------------------------------------------------ */

/* A socket monitor as a PAIR we read events from. */
static void *monitor_of(void *ctx, void *sock, const char *name)
{
    char endpoint[64];
    int guard = HANG_GUARD_MS;
    snprintf(endpoint, sizeof(endpoint), "inproc://monitor-%s", name);
    assert_int_equal(zmq_socket_monitor(
                         sock, endpoint,
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH),
                     0);
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    assert_non_null(mon);
    assert_int_equal(zmq_setsockopt(mon, ZMQ_RCVTIMEO, &guard, sizeof(guard)), 0);
    assert_int_equal(zmq_connect(mon, endpoint), 0);
    return mon;
}

/* The next handshake event (ZMQ_EVENT_*). */
static int next_handshake_event(void *mon)
{
    uint8_t head[6];
    char endpoint[256];
    int n = zmq_recv(mon, head, sizeof(head), 0);
    if (n != 6)
        fail_msg("no handshake event: %s", zmq_strerror(errno));
    assert_true(zmq_recv(mon, endpoint, sizeof(endpoint), 0) >= 0);
    return head[0] | (head[1] << 8);
}

/* Stop monitoring a socket before closing it or its monitor: libzmq 4.3
 * never frees an event still queued towards a closed PAIR (LeakSanitizer
 * caught the 84-byte event of a refused handshake). */
static void monitor_stop(void *sock)
{
    assert_int_equal(zmq_socket_monitor(sock, NULL, 0), 0);
}

/* Send to a peer whose handshake is about to fail: once it has failed (the
 * ZAP thread may be faster than this one), the DEALER has no pipe left
 * and a blocking send would wait for ever. Either outcome is fine. */
static void send_to_refused(void *sock, const void *buf, size_t len)
{
    int n = zmq_send(sock, buf, len, ZMQ_DONTWAIT);
    if (n != (int)len && zmq_errno() != EAGAIN)
        fail_msg("send: %s", zmq_strerror(zmq_errno()));
}

static void close_all(void **socks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (socks[i] != NULL)
            zmq_close(socks[i]);
}

/* A DEALER client: CURVE with the given key pair, or plaintext (NULL). */
static void *client_new(void *ctx, const struct fixture *f, const char *pub, const char *sec)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    int guard = HANG_GUARD_MS;
    assert_non_null(s);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &guard, sizeof(guard));
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &guard, sizeof(guard));
    /* One connection attempt only: a refused client that came back would
     * send a second ZAP request the tests do not expect. */
    int never = -1;
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &never, sizeof(never));
    if (pub != NULL) {
        assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, f->agg_curve_pub, 40), 0);
        assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40), 0);
        assert_int_equal(zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40), 0);
    }
    return s;
}

/* With no ZAP handler in the context, the ROUTER admits nobody - not even
 * an enrolled key - because the domain is enforced. */
static void test_router_without_zap_handler_fails_closed(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    void *ctx = zmq_ctx_new();
    void *router = NULL;
    assert_non_null(ctx);
    if (agg_ingest_router_new(ctx, f->cfg, &router, &err) != RSL_OK)
        fail_msg("%s", err.text);
    int enforce = 0;
    int mechanism = 0;
    size_t optlen = sizeof(int);
    assert_int_equal(zmq_getsockopt(router, 93 /* ZMQ_ZAP_ENFORCE_DOMAIN */, &enforce, &optlen), 0);
    assert_int_equal(enforce, 1);
    optlen = sizeof(int);
    assert_int_equal(zmq_getsockopt(router, ZMQ_MECHANISM, &mechanism, &optlen), 0);
    assert_int_equal(mechanism, ZMQ_CURVE);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof(zero));
    void *mon = monitor_of(ctx, router, "nozap");
    void *client = client_new(ctx, f, f->deu_curve_pub, f->deu_curve_sec);
    assert_int_equal(zmq_connect(client, f->endpoint), 0);
    send_to_refused(client, "hello", 5);

    int event = next_handshake_event(mon);
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        fail_msg("a CURVE handshake succeeded with no ZAP handler");
    zmq_pollitem_t item = {router, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 0), 0); /* nothing was let through */
    monitor_stop(router);
    void *socks[] = {client, mon, router};
    close_all(socks, 3);
    zmq_ctx_term(ctx);
}

/* A ZAP handler that has not answered yet holds the handshake: nothing is
 * delivered until it says 200, and a 400 delivers nothing at all. The
 * User-Id it names is what the ROUTER reports with the message. */
static void test_router_waits_for_slow_zap_handler(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    void *ctx = zmq_ctx_new();
    void *router = NULL;
    int zero = 0;
    int guard = HANG_GUARD_MS;
    assert_non_null(ctx);
    void *zap = zmq_socket(ctx, ZMQ_REP);
    zmq_setsockopt(zap, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(zap, ZMQ_RCVTIMEO, &guard, sizeof(guard));
    assert_int_equal(zmq_bind(zap, "inproc://zeromq.zap.01"), 0);
    if (agg_ingest_router_new(ctx, f->cfg, &router, &err) != RSL_OK)
        fail_msg("%s", err.text);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &guard, sizeof(guard));

    for (int round = 0; round < 2; round++) {
        bool admit = round == 1;
        char name[16];
        snprintf(name, sizeof(name), "client%d", round);
        void *client = client_new(ctx, f, f->deu_curve_pub, f->deu_curve_sec);
        void *mon = monitor_of(ctx, client, name);
        assert_int_equal(zmq_connect(client, f->endpoint), 0);
        assert_int_equal(zmq_send(client, "report", 6, 0), 6);

        /* The request arrives: domain, mechanism, the client's key. */
        char frames[8][64];
        int sizes[8];
        int n = 0;
        int more = 1;
        while (more && n < 8) {
            sizes[n] = zmq_recv(zap, frames[n], sizeof(frames[n]), 0);
            assert_true(sizes[n] >= 0);
            size_t ml = sizeof(more);
            zmq_getsockopt(zap, ZMQ_RCVMORE, &more, &ml);
            n++;
        }
        assert_int_equal(n, 7);
        assert_int_equal(sizes[2], 10);
        assert_memory_equal(frames[2], "resilience", 10);
        assert_memory_equal(frames[5], "CURVE", 5);
        assert_int_equal(sizes[6], 32);

        /* Still waiting on us: nothing may have reached the ROUTER. */
        zmq_pollitem_t item = {router, 0, ZMQ_POLLIN, 0};
        assert_int_equal(zmq_poll(&item, 1, 0), 0);

        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, frames[1], (size_t)sizes[1], ZMQ_SNDMORE);
        zmq_send(zap, admit ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(zap, admit ? "OK" : "no", 2, ZMQ_SNDMORE);
        zmq_send(zap, admit ? DEU : "", admit ? strlen(DEU) : 0, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);

        int event = next_handshake_event(mon);
        if (!admit) {
            assert_int_equal(event, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
            assert_int_equal(zmq_poll(&item, 1, 0), 0);
        } else {
            assert_int_equal(event, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            zmq_msg_init(&body);
            assert_true(zmq_msg_recv(&id, router, 0) >= 0);
            assert_true(zmq_msg_recv(&body, router, 0) >= 0);
            assert_int_equal(zmq_msg_size(&body), 6);
            const char *uid = zmq_msg_gets(&body, "User-Id");
            assert_non_null(uid);
            assert_string_equal(uid, DEU);
            zmq_msg_close(&id);
            zmq_msg_close(&body);
        }
        monitor_stop(client);
        void *socks[] = {client, mon};
        close_all(socks, 2);
    }
    void *socks[] = {router, zap};
    close_all(socks, 2);
    zmq_ctx_term(ctx);
}

/* Send one frame, wait for the ack. */
static void send_and_ack(void *client, const uint8_t *frame, size_t len, int status,
                         const char *detail_substring)
{
    uint8_t buf[4096];
    rsl_ack *ack = NULL;
    assert_int_equal(zmq_send(client, frame, len, 0), (int)len);
    int n = zmq_recv(client, buf, sizeof(buf), 0);
    if (n < 0)
        fail_msg("no ack: %s", zmq_strerror(errno));
    assert_int_equal(rsl_ack_decode(buf, (size_t)n, sizeof(buf), &ack, NULL), RSL_OK);
    if ((int)ack->status != status || strstr(ack->detail, detail_substring) == NULL)
        fail_msg("ack %s '%s', expected %s '%s'", rsl_ack_status_name(ack->status), ack->detail,
                 rsl_ack_status_name(status), detail_substring);
    rsl_ack_free(&ack);
}

/* The whole ingest with its own ZAP handler and ROUTER thread. */
static void test_ingest_end_to_end(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    struct agg_registry *reg = agg_registry_ref(f->reg);
    struct agg_registry_holder *holder = NULL;
    struct agg_ingest *ingest = NULL;
    assert_int_equal(agg_registry_holder_new(&reg, &holder), RSL_OK);
    open_store(f);
    if (agg_ingest_start(f->cfg, holder, &f->store, &ingest, &err) != RSL_OK)
        fail_msg("%s", err.text);
    assert_null(f->store); /* moved into the ingest thread */

    /* Our own context for the clients, as a remote agent would have. */
    void *ctx = zmq_ctx_new();
    struct test_report t;
    size_t len;
    int64_t now = rsl_now_ms();
    const struct spec m = {"energy.oil_stock_days", 95.0, "days", now - 1000};
    report_make(&t, DEU, "DEU", 1, now - 500, &m, 1);
    uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);

    /* An enrolled agent: ACCEPTED, then DUPLICATE. */
    void *deu = client_new(ctx, f, f->deu_curve_pub, f->deu_curve_sec);
    assert_int_equal(zmq_connect(deu, f->endpoint), 0);
    send_and_ack(deu, frame, len, RESILIENCE__V1__ACK__STATUS__ACCEPTED, "");
    send_and_ack(deu, frame, len, RESILIENCE__V1__ACK__STATUS__DUPLICATE, "already stored");
    /* Garbage and a two-frame message: REJECTED, and still serving. */
    send_and_ack(deu, (const uint8_t *)"\xff\xff", 2, RESILIENCE__V1__ACK__STATUS__REJECTED,
                 "malformed");
    assert_int_equal(zmq_send(deu, "a", 1, ZMQ_SNDMORE), 1);
    send_and_ack(deu, (const uint8_t *)"b", 1, RESILIENCE__V1__ACK__STATUS__REJECTED,
                 "one frame per message");

    /* FRA's connection carrying DEU's genuine report. */
    struct test_report t2;
    size_t len2;
    report_make(&t2, DEU, "DEU", 2, now - 500, &m, 1);
    uint8_t *frame2 = signed_frame(f->deu, t2.bytes, t2.len, &len2);
    void *fra = client_new(ctx, f, f->fra_curve_pub, f->fra_curve_sec);
    assert_int_equal(zmq_connect(fra, f->endpoint), 0);
    send_and_ack(fra, frame2, len2, RESILIENCE__V1__ACK__STATUS__REJECTED, "wrong_sender");

    /* A CURVE key nobody enrolled: refused by ZAP (400). */
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    void *stranger = client_new(ctx, f, pub, sec);
    void *mon1 = monitor_of(ctx, stranger, "stranger");
    assert_int_equal(zmq_connect(stranger, f->endpoint), 0);
    send_to_refused(stranger, frame2, len2);
    assert_int_equal(next_handshake_event(mon1), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);

    /* A plaintext peer: no CURVE, no handshake. */
    void *plain = client_new(ctx, f, NULL, NULL);
    void *mon2 = monitor_of(ctx, plain, "plain");
    assert_int_equal(zmq_connect(plain, f->endpoint), 0);
    send_to_refused(plain, frame2, len2);
    int event = next_handshake_event(mon2);
    assert_int_not_equal(event, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);

    monitor_stop(stranger);
    monitor_stop(plain);
    void *socks[] = {deu, fra, stranger, mon1, plain, mon2};
    close_all(socks, 6);
    zmq_ctx_term(ctx);
    agg_ingest_stop(&ingest);
    assert_null(ingest);
    agg_ingest_stop(&ingest); /* NULL-safe */
    agg_registry_holder_free(&holder);

    /* Only DEU's own report is stored. */
    struct agg_store *ro = NULL;
    bool found = false;
    assert_int_equal(agg_store_open(f->store_path, true, &ro, &err), RSL_OK);
    assert_int_equal(agg_store_lookup(ro, DEU, 1, &found, NULL, NULL), RSL_OK);
    assert_true(found);
    assert_int_equal(agg_store_lookup(ro, DEU, 2, &found, NULL, NULL), RSL_OK);
    assert_false(found);
    struct agg_store_stats stats;
    assert_int_equal(agg_store_stats(ro, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, 1);
    agg_store_close(&ro);
    free(frame);
    free(frame2);
    report_free(&t);
    report_free(&t2);
}

/* A bind that fails leaves nothing running and the store with the caller. */
static void test_start_failure_keeps_store(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    struct agg_registry *reg = agg_registry_ref(f->reg);
    struct agg_registry_holder *holder = NULL;
    struct agg_ingest *ingest = NULL;
    assert_int_equal(agg_registry_holder_new(&reg, &holder), RSL_OK);
    open_store(f);
    snprintf(f->cfg->bind[0], sizeof(f->cfg->bind[0]), "ipc://%s/no/such/folder/x.ipc", f->dir);
    rsl_error_clear(&err);
    assert_int_not_equal(agg_ingest_start(f->cfg, holder, &f->store, &ingest, &err), RSL_OK);
    assert_null(ingest);
    assert_non_null(f->store);
    assert_non_null(strstr(err.text, "bind"));
    agg_registry_holder_free(&holder);
}

/* ---- issue 4: the pipeline, its metrics, its configuration --------------- */

/* Many reports in flight at once from one DEALER, through 2 verify workers
 * and batches of at most 4: every one ACCEPTED (after its commit), the
 * metrics move consistently, the clock offset is measured, and after stop
 * nothing is left in flight. */
static void test_pipeline_metrics_and_clock(void **state)
{
    struct fixture *f = *state;
    struct rsl_error err;
    struct agg_registry *reg = agg_registry_ref(f->reg);
    struct agg_registry_holder *holder = NULL;
    struct agg_ingest *ingest = NULL;
    enum { N = 40 };
    assert_int_equal(agg_registry_holder_new(&reg, &holder), RSL_OK);
    open_store(f);
    f->cfg->ingest_workers = 2;
    f->cfg->ingest_batch_max = 4;
    f->cfg->ingest_max_queue = 1000;
    struct agg_histogram_snapshot lat0, batch0;
    agg_ingest_histogram(AGG_HIST_ACK_LATENCY, &lat0);
    agg_ingest_histogram(AGG_HIST_BATCH_REPORTS, &batch0);
    uint64_t accepted0 = agg_ingest_counter(AGG_COUNT_ACCEPTED);
    uint64_t commits0 = agg_ingest_counter(AGG_COUNT_COMMITS);
    if (agg_ingest_start(f->cfg, holder, &f->store, &ingest, &err) != RSL_OK)
        fail_msg("%s", err.text);
    struct agg_ingest_gauges g;
    agg_ingest_gauges(&g);
    assert_int_equal(g.workers, 2);
    assert_int_equal(g.max_queue, 1000);

    void *ctx = zmq_ctx_new();
    void *deu = client_new(ctx, f, f->deu_curve_pub, f->deu_curve_sec);
    assert_int_equal(zmq_connect(deu, f->endpoint), 0);
    int64_t now = rsl_now_ms();
    const struct spec m = {"energy.oil_stock_days", 95.0, "days", now - 1000};
    for (int i = 0; i < N; i++) {
        struct test_report t;
        size_t len;
        report_make(&t, DEU, "DEU", (uint64_t)i + 1, now - 500, &m, 1);
        uint8_t *frame = signed_frame(f->deu, t.bytes, t.len, &len);
        assert_int_equal(zmq_send(deu, frame, len, 0), (int)len);
        free(frame);
        report_free(&t);
    }
    bool seen[N + 1] = {false};
    for (int i = 0; i < N; i++) {
        uint8_t buf[4096];
        rsl_ack *ack = NULL;
        int n = zmq_recv(deu, buf, sizeof(buf), 0);
        if (n < 0)
            fail_msg("ack %d of %d missing: %s", i + 1, N, zmq_strerror(errno));
        assert_int_equal(rsl_ack_decode(buf, (size_t)n, sizeof(buf), &ack, NULL), RSL_OK);
        if (ack->status != RESILIENCE__V1__ACK__STATUS__ACCEPTED)
            fail_msg("report %llu: %s %s", (unsigned long long)ack->sequence,
                     rsl_ack_status_name(ack->status), ack->detail);
        assert_true(ack->sequence >= 1 && ack->sequence <= N && !seen[ack->sequence]);
        seen[ack->sequence] = true;
        rsl_ack_free(&ack);
    }

    /* Metrics, while it still runs. */
    struct agg_histogram_snapshot lat, batch;
    agg_ingest_histogram(AGG_HIST_ACK_LATENCY, &lat);
    agg_ingest_histogram(AGG_HIST_BATCH_REPORTS, &batch);
    assert_int_equal(agg_ingest_counter(AGG_COUNT_ACCEPTED), accepted0 + N);
    assert_true(lat.count >= lat0.count + N);
    uint64_t commits = agg_ingest_counter(AGG_COUNT_COMMITS) - commits0;
    assert_true(commits >= N / 4); /* batch_max 4 */
    assert_int_equal(batch.count - batch0.count, commits);
    /* No batch above batch_max: the "<= 4" bucket holds them all. */
    assert_true(batch.upper_bounds[2] == 4.0);
    assert_int_equal(batch.cumulative[2] - batch0.cumulative[2], commits);
    for (size_t i = 1; i < lat.n_buckets; i++)
        assert_true(lat.cumulative[i] >= lat.cumulative[i - 1]);
    assert_true(lat.count >= lat.cumulative[lat.n_buckets - 1]);

    struct agg_agent_clock *clocks = NULL;
    size_t n_clocks = 0;
    assert_int_equal(agg_ingest_clock_offsets(&clocks, &n_clocks), RSL_OK);
    const struct agg_agent_clock *mine = NULL;
    for (size_t i = 0; i < n_clocks; i++)
        if (strcmp(clocks[i].agent_id, DEU) == 0)
            mine = &clocks[i];
    assert_non_null(mine);
    assert_string_equal(mine->nation, "DEU");
    /* created 500 ms before "now", received a little after it. */
    assert_true(mine->offset_ms <= -500 && mine->offset_ms > -500 - HANG_GUARD_MS);
    free(clocks);

    char *text = NULL;
    size_t text_len = 0;
    assert_int_equal(agg_ingest_metrics_text(&text, &text_len), RSL_OK);
    assert_int_equal(strlen(text), text_len);
    static const char *const wanted[] = {
        "# TYPE resilience_reports_accepted_total counter\n",
        "resilience_reports_rejected_total{reason=\"bad_signature\"} ",
        "resilience_reports_rejected_total{reason=\"equivocation\"} ",
        "resilience_reports_retry_later_total{reason=\"queue_full\"} ",
        "resilience_measurements_excluded_total{reason=\"unit_mismatch\"} ",
        "resilience_ingest_queue_depth{stage=\"verify\"} ",
        "resilience_ingest_queue_limit 1000\n",
        "resilience_ingest_workers 2\n",
        "# TYPE resilience_ingest_ack_latency_seconds histogram\n",
        "resilience_ingest_ack_latency_seconds_bucket{le=\"+Inf\"} ",
        "resilience_ingest_batch_reports_bucket{le=\"4\"} ",
        "resilience_registry_reloads_total{result=\"failed\"} ",
        "resilience_agent_clock_offset_seconds{agent=\"" DEU "\",nation=\"DEU\"} -",
    };
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
        if (strstr(text, wanted[i]) == NULL)
            fail_msg("metrics lack '%s':\n%s", wanted[i], text);
    /* Every sample line belongs to a family announced by a TYPE line. */
    for (char *line = text; *line != '\0';) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] != '#') {
            char name[128];
            size_t k = 0;
            while (line[k] != '{' && line[k] != ' ' && k < sizeof(name) - 1) {
                name[k] = line[k];
                k++;
            }
            name[k] = '\0';
            char *suffix = strstr(name, "_bucket");
            if (suffix == NULL)
                suffix = strstr(name, "_count");
            if (suffix == NULL && strstr(name, "_sum") == name + strlen(name) - 4)
                suffix = name + strlen(name) - 4;
            if (suffix != NULL && strstr(name, "_seconds") != NULL && suffix > name)
                *suffix = '\0';
            if (suffix != NULL && strstr(name, "batch_reports") != NULL)
                *suffix = '\0';
            char type[160];
            snprintf(type, sizeof(type), "# TYPE %s ", name);
            if (strstr(text, type) == NULL)
                fail_msg("sample without TYPE: %.*s", (int)(end - line), line);
        }
        line = end + 1;
    }
    free(text);

    void *socks[] = {deu};
    close_all(socks, 1);
    zmq_ctx_term(ctx);
    agg_ingest_stop(&ingest);
    agg_registry_holder_free(&holder);
    agg_ingest_gauges(&g);
    assert_int_equal(g.in_flight, 0);
    assert_int_equal(g.verify_queue, 0);
    assert_int_equal(g.store_queue, 0);
    assert_int_equal(g.workers, 0);

    struct agg_store *ro = NULL;
    struct agg_store_stats stats;
    assert_int_equal(agg_store_open(f->store_path, true, &ro, &err), RSL_OK);
    assert_int_equal(agg_store_stats(ro, &stats, NULL), RSL_OK);
    assert_int_equal(stats.reports, N);
    agg_store_close(&ro);
}

static int load_config_text(struct fixture *f, const char *ingest_keys, struct agg_config **cfg,
                            struct rsl_error *err)
{
    char text[2048];
    char path[192];
    snprintf(text, sizeof(text),
             "[ingest]\nkeys = agg\nregistry = agents.conf\n%s\n"
             "[store]\npath = store.db\n"
             "[https]\ncert = tls/server.crt\nkey = tls/server.key\n"
             "[taxonomy]\npath = " RSL_SHARE_DIR "/indicators.csv\n",
             ingest_keys);
    snprintf(path, sizeof(path), "%s/pipeline.conf", f->dir);
    write_file(path, text);
    rsl_error_clear(err);
    return agg_config_load(path, cfg, err);
}

/* [ingest] workers, max_queue, batch_max: defaults, values, bad values
 * named with their line. */
static void test_config_pipeline_keys(void **state)
{
    struct fixture *f = *state;
    struct agg_config *cfg = NULL;
    struct rsl_error err;
    assert_int_equal(load_config_text(f, "", &cfg, &err), RSL_OK);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cfg->ingest_workers, cores < 1 ? 1 : cores > 64 ? 64 : (int)cores);
    assert_int_equal(cfg->ingest_max_queue, 10000);
    assert_int_equal(cfg->ingest_batch_max, 2048);
    agg_config_free(&cfg);

    assert_int_equal(load_config_text(f, "workers = 3\nmax_queue = 5\nbatch_max = 7", &cfg, &err),
                     RSL_OK);
    assert_int_equal(cfg->ingest_workers, 3);
    assert_int_equal(cfg->ingest_max_queue, 5);
    assert_int_equal(cfg->ingest_batch_max, 7);
    agg_config_free(&cfg);

    static const struct {
        const char *keys;
        const char *message;
    } bad[] = {
        {"workers = 0", "pipeline.conf:4: workers: '0' is not a number 1..64"},
        {"workers = 65", "workers: '65' is not a number 1..64"},
        {"workers = two", "workers: 'two' is not a number"},
        {"max_queue = 0", "max_queue: '0' is not a number 1..1000000"},
        {"max_queue = 1000001", "max_queue"},
        {"batch_max = 10001", "batch_max: '10001' is not a number 1..10000"},
        {"batch_max = -1", "batch_max"},
        {"workers = 2\nworkers = 3", "pipeline.conf:5: duplicate key 'workers'"},
        {"worker = 2", "unknown key 'worker' in [ingest]"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(load_config_text(f, bad[i].keys, &cfg, &err), RSL_ECONFIG);
        assert_null(cfg);
        if (strstr(err.text, bad[i].message) == NULL)
            fail_msg("'%s': got '%s', want '%s'", bad[i].keys, err.text, bad[i].message);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_report_accepted_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_report_names_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_agent_and_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_signatures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nation_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_future_timestamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_excluded_measurements_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_excluded_detail_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_and_equivocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_grouped_by_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure_acks_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_router_without_zap_handler_fails_closed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_router_waits_for_slow_zap_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_end_to_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_failure_keeps_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_metrics_and_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_pipeline_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
