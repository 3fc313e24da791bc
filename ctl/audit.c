/*
 * audit.c - `resilience-ctl audit --db FILE --registry FILE`: re-verify every
 * stored report from its stored signed bytes (ARCHITECTURE section 8).
 *
 * The aggregator keeps each accepted report's original SignedReport, so any
 * number it serves can be traced back to a signature. The audit walks the
 * store through the store interface (aggregator/store.h; it never opens
 * SQLite itself), read-only, in one snapshot, and for every report checks:
 *   1. the signed bytes decode (SignedReport, then a valid Report);
 *   2. the columns the API and de-duplication rely on (agent_id, sequence,
 *      nation, key_id, created_at_ms, digest) are those of the signed bytes;
 *   3. the agent is in the registry and key_id is one of its keys;
 *   4. the Ed25519 signature verifies (domain prefix included) - with a key
 *      that is now revoked it still verifies, but that is reported as
 *      "revoked_key" and counts as a failure unless --accept-revoked;
 *   5. the measurement rows (what summaries are computed from) are exactly
 *      the signed measurements: count, indicator, value, unit, time,
 *      nation, agent, releasable_to, source.
 * Then the incrementally kept present (`current`) is checked against those
 * rows (agg_store_check_current).
 *
 * Output (stdout): one line per failure, "FAIL <agent>/<sequence> (report
 * <id>): <reason>: <detail>" (at most MAX_PRINTED, then a count), and a
 * summary line. Exit 0: everything verified; 1: any failure or an error
 * (cannot open, store corrupt); 2: usage. The store may be in use by a
 * running aggregator: WAL readers do not disturb it.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator/registry.h"
#include "aggregator/store.h"
#include "ctl.h"
#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/sign.h"
#include "rsl/util.h"

/* Failure lines printed in full; the rest are counted. */
#define MAX_PRINTED 1000
/* The largest SignedReport the aggregator can have stored (its
 * max_message_bytes ceiling). */
#define AUDIT_MAX_FRAME (64u * 1024u * 1024u)
/* Room for the comma-joined releasable_to list of one measurement. */
#define RELEASABLE_TEXT_MAX (RSL_MAX_RELEASABLE * (RSL_PARTNER_ID_MAX + 1) + 1)

const struct ctl_option ctl_audit_options[] = {
    {"db", "FILE", true, "the aggregator's store (opened read-only)"},
    {"registry", "FILE", true, "the agent registry to verify against"},
    {"accept-revoked", NULL, false,
     "count reports whose key is now revoked as good (they are still listed)"},
    {NULL, NULL, false, NULL},
};

const char ctl_audit_description[] =
    "Re-verifies every stored report from its original signed bytes: decodes it,\n"
    "checks the stored columns and measurement rows against what was signed,\n"
    "verifies the Ed25519 signature with the agent's key from the registry, and\n"
    "checks the current values against history. Prints one FAIL line per problem\n"
    "and a summary. Exit 0 if everything verifies, 1 otherwise.";

enum audit_reason {
    AR_MALFORMED = 0,
    AR_MISMATCH,
    AR_UNKNOWN_AGENT,
    AR_UNKNOWN_KEY,
    AR_REVOKED_KEY,
    AR_BAD_SIGNATURE,
    AR_MEASUREMENTS,
    AR_N
};

static const char *const reason_names[AR_N] = {
    [AR_MALFORMED] = "malformed",
    [AR_MISMATCH] = "mismatch",
    [AR_UNKNOWN_AGENT] = "unknown_agent",
    [AR_UNKNOWN_KEY] = "unknown_key",
    [AR_REVOKED_KEY] = "revoked_key",
    [AR_BAD_SIGNATURE] = "bad_signature",
    [AR_MEASUREMENTS] = "measurements",
};

struct audit {
    const struct ctl_ctx *ctl;
    const struct agg_registry *reg;
    bool accept_revoked;
    uint64_t reports;
    uint64_t measurements;
    uint64_t ok;
    uint64_t ok_revoked;               /* verified with a revoked key, accepted by flag */
    uint64_t failed[AR_N];
    uint64_t current_problems;
    uint64_t printed;
    uint64_t not_printed;
};

static void audit_line(struct audit *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void audit_line(struct audit *a, const char *fmt, ...)
{
    if (a->printed >= MAX_PRINTED) {
        a->not_printed++;
        return;
    }
    a->printed++;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(a->ctl->out, fmt, ap);
    va_end(ap);
    fputc('\n', a->ctl->out);
}

/* Quote stored text for a one-line message: the store is what is being
 * distrusted here, so its strings may hold anything. */
static const char *shown(const char *s, char *buf, size_t len)
{
    return rsl_text_show(s != NULL ? s : "", buf, len);
}

static void report_fail(struct audit *a, const struct agg_stored_report *r,
                        enum audit_reason reason, const char *detail)
{
    char agent[RSL_AGENT_ID_MAX + 8];
    a->failed[reason]++;
    audit_line(a, "FAIL %s/%" PRIu64 " (report %" PRId64 "): %s: %s",
               shown(r->agent_id, agent, sizeof(agent)), r->sequence, r->id,
               reason_names[reason], detail);
}

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

/* The measurement rows against the signed measurements. Writes the first
 * difference into `why`; returns false if there is one. */
static bool rows_match(const struct agg_stored_report *r, const rsl_report *rep, char *why,
                       size_t whylen)
{
    if (r->measurements_truncated || r->n_measurements != rep->n_measurements) {
        snprintf(why, whylen, "%s%zu measurement rows for %zu signed measurements",
                 r->measurements_truncated ? "more than " : "", r->n_measurements,
                 rep->n_measurements);
        return false;
    }
    char releasable[RELEASABLE_TEXT_MAX];
    for (size_t i = 0; i < rep->n_measurements; i++) {
        const rsl_measurement *m = rep->measurements[i];
        const struct agg_stored_measurement *row = &r->measurements[i];
        const char *field = NULL;
        agg_store_join_releasable(m, releasable, sizeof(releasable));
        if (row->idx != (int64_t)i)
            field = "idx";
        else if (strcmp(row->indicator, or_empty(m->indicator)) != 0)
            field = "indicator";
        /* Exact: the row must hold the very number that was signed. */
        else if (!(row->value == m->value))
            field = "value";
        else if (strcmp(row->unit, or_empty(m->unit)) != 0)
            field = "unit";
        else if (row->observed_at_ms != m->observed_at_ms)
            field = "observed_at_ms";
        else if (strcmp(row->nation, or_empty(rep->nation)) != 0)
            field = "nation";
        else if (strcmp(row->agent_id, or_empty(rep->agent_id)) != 0)
            field = "agent_id";
        else if (row->received_at_ms != r->received_at_ms)
            field = "received_at_ms";
        else if (strcmp(row->releasable_to, releasable) != 0)
            field = "releasable_to";
        else if (strcmp(row->source, or_empty(m->source)) != 0)
            field = "source";
        if (field != NULL) {
            char ind[RSL_INDICATOR_ID_MAX + 8];
            snprintf(why, whylen, "measurement %zu (%s): stored %s differs from the signed one",
                     i, shown(m->indicator, ind, sizeof(ind)), field);
            return false;
        }
    }
    return true;
}

/* The stored columns against the signed content. */
static bool columns_match(const struct agg_stored_report *r, const rsl_signed_report *sr,
                          const rsl_report *rep, char *why, size_t whylen)
{
    uint8_t digest[32];
    rsl_sha256(sr->report.data, sr->report.len, digest);
    const char *field = NULL;
    if (strcmp(r->agent_id, or_empty(rep->agent_id)) != 0)
        field = "agent_id";
    else if (r->sequence != rep->sequence)
        field = "sequence";
    else if (strcmp(r->nation, or_empty(rep->nation)) != 0)
        field = "nation";
    else if (strcmp(r->key_id, or_empty(sr->key_id)) != 0)
        field = "key_id";
    else if (r->created_at_ms != rep->created_at_ms)
        field = "created_at_ms";
    else if (r->digest == NULL || r->digest_len != 32 || memcmp(r->digest, digest, 32) != 0)
        field = "digest";
    if (field == NULL)
        return true;
    snprintf(why, whylen, "stored %s differs from the signed report", field);
    return false;
}

static int audit_report(void *ctx, const struct agg_stored_report *r)
{
    struct audit *a = ctx;
    rsl_signed_report *sr = NULL;
    rsl_report *rep = NULL;
    struct rsl_error err;
    char why[RSL_ERROR_TEXT_MAX + 64];

    a->reports++;
    a->measurements += r->n_measurements;
    rsl_error_clear(&err);
    if (r->signed_bytes == NULL ||
        rsl_signed_report_decode(r->signed_bytes, r->signed_len, AUDIT_MAX_FRAME, &sr, &err) !=
            RSL_OK) {
        snprintf(why, sizeof(why), "SignedReport: %s", err.text[0] ? err.text : "no bytes");
        report_fail(a, r, AR_MALFORMED, why);
        goto out;
    }
    if (rsl_report_decode(sr->report.data, sr->report.len, &rep, &err) != RSL_OK) {
        snprintf(why, sizeof(why), "Report: %s", err.text);
        report_fail(a, r, AR_MALFORMED, why);
        goto out;
    }
    if (!columns_match(r, sr, rep, why, sizeof(why))) {
        report_fail(a, r, AR_MISMATCH, why);
        goto out;
    }
    const struct agg_agent *agent = agg_registry_find_agent(a->reg, rep->agent_id);
    if (agent == NULL) {
        report_fail(a, r, AR_UNKNOWN_AGENT, "agent is not in the registry");
        goto out;
    }
    const uint8_t *pub = NULL;
    bool revoked = false;
    switch (agg_agent_key_state(agent, sr->key_id, &pub)) {
    case AGG_KEY_VALID:
        break;
    case AGG_KEY_REVOKED:
        revoked = true;
        pub = agg_agent_revoked_key(agent, sr->key_id);
        break;
    case AGG_KEY_UNKNOWN:
    default:
        snprintf(why, sizeof(why), "key %s is not a key of this agent in the registry",
                 sr->key_id);
        report_fail(a, r, AR_UNKNOWN_KEY, why);
        goto out;
    }
    if (pub == NULL || rsl_verify_report(pub, sr->report.data, sr->report.len,
                                         sr->signature.data, sr->signature.len) != RSL_OK) {
        snprintf(why, sizeof(why), "signature does not verify with key %s", sr->key_id);
        report_fail(a, r, AR_BAD_SIGNATURE, why);
        goto out;
    }
    if (!rows_match(r, rep, why, sizeof(why))) {
        report_fail(a, r, AR_MEASUREMENTS, why);
        goto out;
    }
    if (revoked && !a->accept_revoked) {
        snprintf(why, sizeof(why), "signed with key %s, which is now revoked", sr->key_id);
        report_fail(a, r, AR_REVOKED_KEY, why);
        goto out;
    }
    if (revoked)
        a->ok_revoked++;
    a->ok++;
out:
    rsl_report_free(&rep);
    rsl_signed_report_free(&sr);
    return 0;
}

static int audit_current(void *ctx, const char *nation, const char *indicator,
                         const char *problem)
{
    struct audit *a = ctx;
    char n[16];
    char ind[RSL_INDICATOR_ID_MAX + 8];
    a->current_problems++;
    audit_line(a, "FAIL current %s/%s: %s", shown(nation, n, sizeof(n)),
               shown(indicator, ind, sizeof(ind)), problem);
    return 0;
}

int ctl_cmd_audit(struct ctl_ctx *ctx)
{
    struct rsl_error err;
    struct agg_registry *reg = NULL;
    struct agg_store *store = NULL;
    struct audit a;
    int status = CTL_EXIT_FAILURE;
    const char *db = ctl_option(ctx, "db");
    const char *registry = ctl_option(ctx, "registry");

    memset(&a, 0, sizeof(a));
    rsl_error_clear(&err);
    /* No taxonomy: the registry's syntax and keys are what matter here. */
    if (agg_registry_load(registry, NULL, &reg, &err) != RSL_OK) {
        status = ctl_fail(ctx, "%s", err.text);
        goto out;
    }
    if (agg_store_open(db, true, &store, &err) != RSL_OK) {
        status = ctl_fail(ctx, "%s", err.text);
        goto out;
    }
    a.ctl = ctx;
    a.reg = reg;
    a.accept_revoked = ctl_option(ctx, "accept-revoked") != NULL;
    int rc = agg_store_reports(store, audit_report, &a, &err);
    if (rc == RSL_OK)
        rc = agg_store_check_current(store, audit_current, &a, &err);
    if (rc != RSL_OK) {
        status = ctl_fail(ctx, "%s", err.text[0] ? err.text : rsl_strerror(rc));
        goto out;
    }
    if (a.not_printed > 0)
        fprintf(ctx->out, "... and %" PRIu64 " more failures not listed\n", a.not_printed);

    uint64_t failures = a.current_problems;
    for (int i = 0; i < AR_N; i++)
        failures += a.failed[i];
    fprintf(ctx->out, "audit %s: %" PRIu64 " reports, %" PRIu64 " measurements: %" PRIu64
            " verified", db, a.reports, a.measurements, a.ok);
    if (a.ok_revoked > 0)
        fprintf(ctx->out, " (%" PRIu64 " with a revoked key)", a.ok_revoked);
    fprintf(ctx->out, ", %" PRIu64 " failed", failures - a.current_problems);
    for (int i = 0; i < AR_N; i++)
        fprintf(ctx->out, ", %s %" PRIu64, reason_names[i], a.failed[i]);
    fprintf(ctx->out, "; current values: %" PRIu64 " problems\n", a.current_problems);
    status = failures == 0 ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
out:
    agg_store_close(&store);
    agg_registry_release(&reg);
    return status;
}
