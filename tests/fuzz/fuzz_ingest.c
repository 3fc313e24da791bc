/*
 * fuzz_ingest.c - the aggregator's whole per-frame decision
 * (agg_ingest_check_frame) over bytes from the network, with a fixed
 * registry and taxonomy built once.
 *
 * Input: one selector byte, then the SignedReport frame. The selector picks
 * the ZAP user id the frame "arrived" with (low two bits: DEU-BMI-01,
 * FRA-SGDSN-01, none, a 70-character id) and the aggregator's clock (bit 2:
 * a fixed 2027 time, or a clock near INT64_MIN to stress the skew
 * arithmetic), so inputs whose signature verifies (the seeds, signed with
 * the fixed keys below) reach the sender, nation, clock and exclusion
 * checks too.
 *
 * Beyond "no crash, no leak, no UB", every verdict must keep the ingest's
 * invariants: never ACCEPTED or DUPLICATE before a commit; a stored
 * candidate has a report and exclusion flags; a rejection has a reason and
 * a detail; and the Ack built from any verdict decodes on the agent's side
 * (UTF-8, within the detail limit), so no input can make us send an ack
 * the agent would throw away and resend against forever.
 *
 * Keys: Ed25519 from fixed libsodium seeds (bytes all 0x01 for DEU's
 * valid key, 0x02 for its revoked key, 0x03 for FRA); seeds in
 * corpus/ingest/ were signed with them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "aggregator/config.h"
#include "aggregator/ingest.h"
#include "aggregator/registry.h"
#include "rsl/codec.h"
#include "rsl/log.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW_MS INT64_C(1800000000000)

static const char indicators_csv[] =
    "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
    "energy.oil_stock_days,BR2,days,higher_is_better,90,60,median,72,Oil stocks\n"
    "energy.gas_storage_fill_pct,BR2,pct,higher_is_better,80,50,mean,,Gas storage\n"
    "comms.public_warning_reach_pct,BR7,pct,higher_is_better,95,80,min,24,Warning reach\n";
static const char nations_csv[] =
    "code,name,eu_member\nDEU,Germany,yes\nFRA,France,yes\nNOR,Norway,no\n";

static struct agg_registry *registry;
static struct rsl_taxonomy *taxonomy;
static struct agg_config *config;

static void public_from_seed(uint8_t seed_byte, char b64[64])
{
    uint8_t seed[32], pk[32], sk[64];
    memset(seed, seed_byte, sizeof(seed));
    crypto_sign_seed_keypair(pk, sk, seed);
    rsl_base64_encode(pk, sizeof(pk), b64);
    sodium_memzero(sk, sizeof(sk));
}

static void curve_from_byte(uint8_t b, char z85[RSL_Z85_KEY_LEN + 1])
{
    uint8_t raw[32];
    memset(raw, b, sizeof(raw));
    if (zmq_z85_encode(z85, raw, sizeof(raw)) == NULL)
        abort();
}

/* The registry loader reads files only: write one, load it, remove it. */
static void setup_once(void)
{
    struct rsl_error err = {0};
    char deu[64], deu_old[64], fra[64];
    char curve_deu[RSL_Z85_KEY_LEN + 1], curve_fra[RSL_Z85_KEY_LEN + 1];
    char text[2048];
    char path[] = "/tmp/fuzz-ingest-registry-XXXXXX";

    rsl_log_init("fuzz_ingest", RSL_LOG_ERR); /* rejections are the normal case here */
    if (sodium_init() < 0)
        abort();
    taxonomy = calloc(1, sizeof(*taxonomy));
    config = calloc(1, sizeof(*config));
    if (taxonomy == NULL || config == NULL ||
        rsl_taxonomy_parse_indicators(indicators_csv, sizeof(indicators_csv) - 1, "fuzz", taxonomy,
                                      &err) != RSL_OK ||
        rsl_taxonomy_parse_nations(nations_csv, sizeof(nations_csv) - 1, "fuzz", taxonomy, &err) !=
            RSL_OK) {
        fprintf(stderr, "fuzz_ingest: taxonomy: %s\n", err.text);
        abort();
    }
    public_from_seed(0x01, deu);
    public_from_seed(0x02, deu_old);
    public_from_seed(0x03, fra);
    curve_from_byte(0x11, curve_deu);
    curve_from_byte(0x13, curve_fra);
    int n = snprintf(text, sizeof(text),
                     "[agent DEU-BMI-01]\nnation = DEU\norganisation = Interior\n"
                     "sign_key = %s, %s\nrevoked_keys = %s\ncurve_key = %s\n"
                     "[agent FRA-SGDSN-01]\nnation = FRA\norganisation = SGDSN\n"
                     "sign_key = %s\ncurve_key = %s\n",
                     deu, deu_old, deu_old, curve_deu, fra, curve_fra);
    int fd = mkstemp(path);
    if (n < 0 || (size_t)n >= sizeof(text) || fd < 0 || write(fd, text, (size_t)n) != n)
        abort();
    close(fd);
    int rc = agg_registry_load(path, taxonomy, &registry, &err);
    unlink(path);
    if (rc != RSL_OK) {
        fprintf(stderr, "fuzz_ingest: registry: %s\n", err.text);
        abort();
    }
    config->max_message_bytes = RSL_MAX_MESSAGE_BYTES_DEFAULT;
    config->max_future_skew_ms = 5 * 60 * 1000;
    config->taxonomy = taxonomy;
}

/* The ack the ingest thread would send for this verdict must be one the
 * agent accepts. */
static void check_ack(const struct agg_verdict *v)
{
    rsl_ack ack = RESILIENCE__V1__ACK__INIT;
    rsl_ack *back = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct rsl_error err = {0};
    ack.agent_id = (char *)v->agent_id;
    ack.sequence = v->sequence;
    ack.status = (Resilience__V1__Ack__Status)v->status;
    ack.detail = (char *)v->detail;
    if (rsl_ack_encode(&ack, &buf, &len) != RSL_OK)
        abort();
    if (rsl_ack_decode(buf, len, 64 * 1024, &back, &err) != RSL_OK) {
        fprintf(stderr, "fuzz_ingest: our own ack does not decode: %s\n", err.text);
        abort();
    }
    rsl_ack_free(&back);
    free(buf);
    for (const char *c = v->detail; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            abort(); /* details are ASCII, one line */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char long_id[] =
        "DEU-BMI-01-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    static const char *const users[4] = {"DEU-BMI-01", "FRA-SGDSN-01", NULL, long_id};
    if (registry == NULL)
        setup_once();
    if (size < 1)
        return 0;
    const char *user = users[data[0] & 3];
    int64_t now = (data[0] & 4) ? INT64_MIN + 1 : FUZZ_NOW_MS;

    struct agg_verdict v;
    if (agg_ingest_check_frame(data + 1, size - 1, user, now, registry, taxonomy, config, &v) !=
        RSL_OK)
        abort();
    if (v.status == RESILIENCE__V1__ACK__STATUS__ACCEPTED ||
        v.status == RESILIENCE__V1__ACK__STATUS__DUPLICATE)
        abort(); /* only a commit may say that */
    if (v.store) {
        if (v.report == NULL || v.signed_report == NULL || v.excluded == NULL ||
            v.reason != AGG_COUNT_N || v.status != RESILIENCE__V1__ACK__STATUS__RETRY_LATER)
            abort();
        size_t excluded = 0;
        for (size_t i = 0; i < v.report->n_measurements; i++)
            excluded += v.excluded[i];
        if (excluded != v.n_excluded || strcmp(v.agent_id, user != NULL ? user : "") != 0)
            abort();
    } else if (v.status == RESILIENCE__V1__ACK__STATUS__REJECTED) {
        if (v.reason < AGG_COUNT_FIRST_REJECTION || v.reason >= AGG_COUNT_N ||
            v.reason == AGG_COUNT_EQUIVOCATION || v.detail[0] == '\0')
            abort(); /* equivocation needs the store */
    }
    check_ack(&v);
    agg_ingest_record(&v);
    agg_verdict_clear(&v);
    return 0;
}
