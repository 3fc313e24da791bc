/*
 * jsonbody.c - flat JSON objects from http collectors (see jsonbody.h).
 *
 * jansson does the syntax (with its own nesting limit, so hostile depth
 * cannot exhaust the stack) and rejects duplicate keys and "\u0000" in
 * strings for us; this file adds the content rules. Integers are decoded
 * as doubles (JSON_DECODE_INT_AS_REAL) so 12345678901234567890 is a large
 * number rather than an error, while 1e400 still fails as an overflow.
 */
#include "jsonbody.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rsl/codec.h"
#include "rsl/util.h"

#define SHOW_MAX 48 /* characters of a bad key quoted in a message */

int agent_json_parse(const char *buf, size_t len, const char *origin, size_t max_samples,
                     struct rsl_sample **out, size_t *n, struct rsl_error *err)
{
    json_t *root = NULL;
    json_error_t jerr;
    struct rsl_sample *samples = NULL;
    char shown[SHOW_MAX + 4];
    size_t count = 0;
    int rc = RSL_OK;

    *out = NULL;
    *n = 0;
    if (len > AGENT_JSON_MAX_BYTES)
        return rsl_error_set(err, RSL_ETOOBIG, "%s: JSON body of %zu bytes is over %d", origin, len,
                             AGENT_JSON_MAX_BYTES);
    /* A raw NUL would end jansson's view of a string early in some paths;
     * JSON text never contains one. */
    if (memchr(buf, '\0', len) != NULL)
        return rsl_error_set(err, RSL_EPARSE, "%s: JSON body contains a NUL byte", origin);
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (root == NULL)
        return rsl_error_set(err, RSL_EPARSE, "%s:%d:%d: %s", origin, jerr.line, jerr.column,
                             rsl_text_show(jerr.text, shown, sizeof(shown)));
    if (!json_is_object(root)) {
        rc = rsl_error_set(err, RSL_EPARSE,
                           "%s: JSON body is not an object {\"indicator\": number, ...}", origin);
        goto out;
    }
    count = json_object_size(root);
    if (count > max_samples) {
        rc = rsl_error_set(err, RSL_ETOOBIG, "%s: %zu members, more than %zu measurements", origin,
                           count, max_samples);
        goto out;
    }
    if (count > 0 && (samples = calloc(count, sizeof(*samples))) == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "out of memory");
        goto out;
    }
    size_t i = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (!rsl_valid_indicator_id(key) || strlen(key) > RSL_INDICATOR_ID_MAX) {
            rc = rsl_error_set(err, RSL_EPARSE,
                               "%s: '%s' is not an indicator id (a-z 0-9 _ ., starting with a "
                               "letter, at most %d)",
                               origin, rsl_text_show(key, shown, sizeof(shown)),
                               RSL_INDICATOR_ID_MAX);
            goto out;
        }
        if (!json_is_number(value)) {
            static const char *const kinds[] = {"an object", "an array", "a string", "a number",
                                                "a number",  "true",     "false",    "null"};
            int t = (int)json_typeof(value);
            rc = rsl_error_set(err, RSL_EPARSE, "%s: '%s': value is %s, not a number", origin, key,
                               t >= 0 && t < 8 ? kinds[t] : "not a number");
            goto out;
        }
        double v = json_number_value(value);
        if (!isfinite(v)) {
            rc = rsl_error_set(err, RSL_EPARSE, "%s: '%s': value is not finite", origin, key);
            goto out;
        }
        memcpy(samples[i].indicator, key, strlen(key) + 1);
        samples[i].value = v;
        i++;
    }
    *out = samples;
    *n = i;
    samples = NULL; /* transferred */
out:
    free(samples);
    json_decref(root);
    return rc;
}
