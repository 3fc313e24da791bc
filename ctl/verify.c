/*
 * verify.c - `resilience-ctl verify --key aggregator.pub FILE`: check a
 * partner release offline (ARCHITECTURE section 7).
 *
 * A partner, an auditor or an operator holds a release (a compact JWS, as
 * pulled from GET /v1/partners/{ID}/summary or pushed to the partner) and
 * the aggregator's public signing key (its sign.pub). The command checks
 * the JWS strictly (rsl_jws_verify: structure, alg EdDSA, kid = this key,
 * the Ed25519 signature) and that the payload is a release (a JSON object
 * with the release fields), then prints one line naming the release, or
 * with --payload the verified payload itself, for jq and friends. Exit 0
 * only when all of that holds; otherwise one line "FILE: invalid: why" and
 * exit 1. Nothing unverified is ever printed to stdout.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rsl/jws.h"
#include "rsl/sign.h"
#include "rsl/util.h"

const struct ctl_option ctl_verify_options[] = {
    {"key", "FILE", true, "the aggregator's public signing key (its sign.pub, PEM)"},
    {"payload", NULL, false, "print the verified payload (JSON) instead of a summary line"},
    {NULL, NULL, false, NULL},
};

const char ctl_verify_description[] =
    "Checks a partner release (a JWS compact serialization, alg EdDSA) against the\n"
    "aggregator's public key: structure, algorithm, key id, signature, and that the\n"
    "payload is a release. FILE may be - for standard input; one trailing newline is\n"
    "ignored. Exit 0: valid; 1: invalid or unreadable (the reason on stderr).";

/* Read FILE or stdin, at most RSL_JWS_MAX_BYTES plus a line ending. */
static int read_input(const char *name, uint8_t **buf, size_t *len, struct rsl_error *err)
{
    if (strcmp(name, "-") != 0)
        return rsl_file_read_all(name, RSL_JWS_MAX_BYTES + 2, buf, len, err);
    size_t cap = 65536, used = 0;
    uint8_t *b = malloc(cap);
    if (b == NULL)
        return rsl_error_set(err, RSL_ENOMEM, "out of memory");
    for (;;) {
        if (used == cap) {
            if (cap > RSL_JWS_MAX_BYTES + 2) {
                free(b);
                return rsl_error_set(err, RSL_ETOOBIG, "over %u bytes", RSL_JWS_MAX_BYTES);
            }
            uint8_t *g = realloc(b, cap * 2);
            if (g == NULL) {
                free(b);
                return rsl_error_set(err, RSL_ENOMEM, "out of memory");
            }
            b = g;
            cap *= 2;
        }
        size_t n = fread(b + used, 1, cap - used, stdin);
        used += n;
        if (n == 0)
            break;
    }
    if (ferror(stdin)) {
        free(b);
        return rsl_error_set(err, RSL_EIO, "reading standard input failed");
    }
    *buf = b;
    *len = used;
    return RSL_OK;
}

/* The payload must be a release: these members with these JSON types. */
static const char *release_problem(const json_t *doc)
{
    static const char *const strings[] = {"partner", "release_id", "generated_at", "as_of",
                                          "marking"};
    if (!json_is_object(doc))
        return "the payload is not a JSON object";
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if (!json_is_string(json_object_get(doc, strings[i])))
            return "the payload lacks a release field (partner, release_id, generated_at, as_of "
                   "or marking)";
    if (!json_is_array(json_object_get(doc, "indicators")))
        return "the payload has no indicators array";
    return NULL;
}

int ctl_cmd_verify(struct ctl_ctx *ctx)
{
    const char *file = ctx->positional[0];
    uint8_t key[RSL_ED25519_PUBLIC_BYTES];
    uint8_t *input = NULL, *payload = NULL;
    size_t len = 0, payload_len = 0;
    json_t *doc = NULL;
    struct rsl_error err;
    int status = CTL_EXIT_FAILURE;

    rsl_error_clear(&err);
    if (rsl_public_key_load_pem(ctl_option(ctx, "key"), key, &err) != RSL_OK) {
        ctl_fail(ctx, "verify: --key: %s", err.text);
        goto out;
    }
    if (read_input(file, &input, &len, &err) != RSL_OK) {
        fprintf(ctx->err, "%s: invalid: %s\n", file, err.text);
        goto out;
    }
    /* Files end with a newline when saved by curl -o and most editors. */
    if (len > 0 && input[len - 1] == '\n')
        len--;
    if (len > 0 && input[len - 1] == '\r')
        len--;
    if (rsl_jws_verify((const char *)input, len, key, &payload, &payload_len, &err) != RSL_OK) {
        char shown[RSL_ERROR_TEXT_MAX];
        fprintf(ctx->err, "%s: invalid: %s\n", file, rsl_text_show(err.text, shown, sizeof(shown)));
        goto out;
    }
    json_error_t jerr;
    doc = json_loadb((const char *)payload, payload_len, JSON_REJECT_DUPLICATES, &jerr);
    const char *problem = doc == NULL ? "the payload is not JSON" : release_problem(doc);
    if (problem != NULL) {
        fprintf(ctx->err, "%s: invalid: signature good, but %s\n", file, problem);
        goto out;
    }
    if (ctl_option(ctx, "payload") != NULL) {
        fwrite(payload, 1, payload_len, ctx->out);
        fputc('\n', ctx->out);
    } else {
        char kid[RSL_KEY_ID_HEX_LEN + 1];
        rsl_key_id(key, kid);
        fprintf(ctx->out, "%s: ok: release %s for %s, generated %s, as of %s, marking \"%s\", "
                "signed by key %s\n", file, json_string_value(json_object_get(doc, "release_id")),
                json_string_value(json_object_get(doc, "partner")),
                json_string_value(json_object_get(doc, "generated_at")),
                json_string_value(json_object_get(doc, "as_of")),
                json_string_value(json_object_get(doc, "marking")), kid);
    }
    status = CTL_EXIT_OK;
out:
    json_decref(doc);
    free(input);
    free(payload);
    return status;
}
