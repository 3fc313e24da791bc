/*
 * codec.c - the wire messages: bounded decoding, content validation, encoding.
 *
 * Every frame that reaches a decoder here is untrusted (an agent on the
 * network, a file in a spool). Decoding is done in three steps, each of which
 * can only narrow what is accepted:
 *
 *  1. a size bound, checked before any parsing or allocation;
 *  2. our own walk over the protobuf wire format (wire_walk below). protobuf-c
 *     is a correct parser, but it cannot tell us three things we need:
 *       - an embedded NUL byte in a string field: protobuf-c copies the bytes
 *         and NUL-terminates them, so "energy.x\0junk" would silently become
 *         "energy.x" while the signed bytes say something else to any other
 *         language's parser. We reject NUL bytes in every string field.
 *       - how many repeated entries will be allocated: protobuf-c allocates
 *         one struct per entry, so a frame of empty measurements would cost
 *         ~40 times its size in memory. We count before unpacking.
 *       - which field was wrong: the walk names it ("report.sequence: wrong
 *         wire type 2"), protobuf-c only returns NULL.
 *  3. protobuf_c_message_unpack, then content validation on the structs
 *     (rsl_report_validate and the SignedReport / Ack checks).
 *
 * Forward compatibility: proto3 decoding (protobuf-c and the walk alike)
 * accepts fields with numbers it does not know and keeps them as unknown
 * fields. That is deliberate: a newer agent may add fields (the .proto says
 * field names may grow) and an older aggregator still accepts the report; the
 * signature covers the original bytes, unknown fields included, so nothing
 * unverified can slip in. Fields we do know must have the right wire type.
 *
 * Memory: protobuf-c allocates through the ProtobufCAllocator we give it
 * (pb_alloc below), because protobuf-c returns NULL alike for malformed
 * bytes and for a failed allocation. The allocator notes the failure, so a
 * decoder can say RSL_ENOMEM ("try again") rather than RSL_EPARSE ("this
 * is garbage", which the aggregator answers with REJECTED and the agent
 * then gives the report up for good).
 *
 * Reports and SignedReports are decoded into an arena (pb_arena below):
 * one malloc sized from the frame instead of ~60 (a struct and a string
 * or two per measurement), and one free. Measured on the aggregator's
 * verify workers, the allocator was the largest cost after the signature
 * check itself.
 */
#include "rsl/codec.h"
#include "rsl/sign.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The inner Report is already bounded by its SignedReport frame; this cap
 * only matters for reports read from elsewhere (spool files, the store). A
 * report at every content limit (4096 measurements with maximal strings and
 * 16 partners each) is about 3.5 MB. */
#define RSL_REPORT_MAX_BYTES (8u * 1024u * 1024u)

/* ------------------------------------------------------------------------ */
/* Character sets                                                           */
/* ------------------------------------------------------------------------ */

static bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alnum(char c) { return is_lower(c) || is_upper(c) || is_digit(c); }

int rsl_valid_agent_id(const char *s)
{
    if (s == NULL || !is_alnum(s[0]))
        return 0;
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
        if (n >= RSL_AGENT_ID_MAX)
            return 0;
    }
    return 1;
}

int rsl_valid_nation_code(const char *s)
{
    return s != NULL && is_upper(s[0]) && is_upper(s[1]) && is_upper(s[2]) && s[3] == '\0';
}

int rsl_valid_indicator_id(const char *s)
{
    if (s == NULL || !is_lower(s[0]))
        return 0;
    for (size_t n = 0; s[n] != '\0'; n++) {
        char c = s[n];
        if (!is_lower(c) && !is_digit(c) && c != '_' && c != '.')
            return 0;
        if (n >= RSL_INDICATOR_ID_MAX)
            return 0;
    }
    return 1;
}

/* The empty unit is valid: dimensionless indicators (counts, ratios). */
int rsl_valid_unit(const char *s)
{
    if (s == NULL)
        return 0;
    for (size_t n = 0; s[n] != '\0'; n++) {
        char c = s[n];
        if (!is_alnum(c) && strchr("_%/.-", c) == NULL)
            return 0;
        if (n >= RSL_UNIT_MAX)
            return 0;
    }
    return 1;
}

int rsl_valid_partner_id(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 0;
    for (size_t n = 0; s[n] != '\0'; n++) {
        char c = s[n];
        if (!is_alnum(c) && c != '_' && c != '-')
            return 0;
        if (n >= RSL_PARTNER_ID_MAX)
            return 0;
    }
    return 1;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF. Other languages' protobuf libraries reject such strings, so a
 * report we accepted must not carry them into the store or JSON output. */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s != 0) {
        unsigned char c = *s;
        size_t n;
        unsigned int cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false; /* continuation byte first, 0xc0/0xc1, 0xf5.. */
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0u) != 0x80u)
                return false; /* also stops at the terminating NUL */
            cp = (cp << 6) | (s[i] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false; /* overlong or out of range */
        if (cp >= 0xd800 && cp <= 0xdfff)
            return false; /* UTF-16 surrogate halves are not characters */
        s += n + 1;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* The wire walk (step 2 of the design comment)                             */
/* ------------------------------------------------------------------------ */

enum wire_type { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };
enum field_kind { FK_SCALAR, FK_STRING, FK_BYTES, FK_MESSAGE };

struct wire_message_spec;

struct wire_field_spec {
    uint32_t number;
    enum wire_type wire_type;
    enum field_kind kind;
    const char *name;
    size_t max_count;                     /* repeated: cap on entries; 0 = none */
    const struct wire_message_spec *sub;  /* FK_MESSAGE: its fields */
};

struct wire_message_spec {
    const struct wire_field_spec *fields;
    size_t n_fields;
};

static const struct wire_field_spec measurement_fields[] = {
    {1, WT_LEN, FK_STRING, "indicator", 0, NULL},
    {2, WT_I64, FK_SCALAR, "value", 0, NULL},
    {3, WT_LEN, FK_STRING, "unit", 0, NULL},
    {4, WT_VARINT, FK_SCALAR, "observed_at_ms", 0, NULL},
    {5, WT_LEN, FK_STRING, "releasable_to", RSL_MAX_RELEASABLE, NULL},
    {6, WT_LEN, FK_STRING, "source", 0, NULL},
};
static const struct wire_message_spec measurement_spec = {
    measurement_fields, sizeof(measurement_fields) / sizeof(measurement_fields[0])};

static const struct wire_field_spec report_fields[] = {
    {1, WT_LEN, FK_STRING, "agent_id", 0, NULL},
    {2, WT_LEN, FK_STRING, "nation", 0, NULL},
    {3, WT_LEN, FK_STRING, "organisation", 0, NULL},
    {4, WT_VARINT, FK_SCALAR, "sequence", 0, NULL},
    {5, WT_VARINT, FK_SCALAR, "created_at_ms", 0, NULL},
    {6, WT_LEN, FK_MESSAGE, "measurements", RSL_MAX_MEASUREMENTS, &measurement_spec},
    {7, WT_LEN, FK_STRING, "marking", 0, NULL},
};
static const struct wire_message_spec report_spec = {
    report_fields, sizeof(report_fields) / sizeof(report_fields[0])};

static const struct wire_field_spec signed_report_fields[] = {
    {1, WT_LEN, FK_BYTES, "report", 0, NULL},
    {2, WT_LEN, FK_BYTES, "signature", 0, NULL},
    {3, WT_LEN, FK_STRING, "key_id", 0, NULL},
};
static const struct wire_message_spec signed_report_spec = {
    signed_report_fields, sizeof(signed_report_fields) / sizeof(signed_report_fields[0])};

static const struct wire_field_spec ack_fields[] = {
    {1, WT_LEN, FK_STRING, "agent_id", 0, NULL},
    {2, WT_VARINT, FK_SCALAR, "sequence", 0, NULL},
    {3, WT_VARINT, FK_SCALAR, "status", 0, NULL},
    {4, WT_LEN, FK_STRING, "detail", 0, NULL},
};
static const struct wire_message_spec ack_spec = {ack_fields,
                                                  sizeof(ack_fields) / sizeof(ack_fields[0])};

#define WIRE_MAX_FIELDS 8 /* per-message entry counters; >= every n_fields above */

/* Read a base-128 varint of at most 10 bytes from [*p, end). */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1)
            return false; /* more than 64 bits */
        v |= (uint64_t)(b & 0x7fu) << shift;
        if ((b & 0x80u) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Where wire_walk is: `parent` names the message ("signed_report", or ""
 * for the Report itself, so messages read "measurements[3].unit: ..." like
 * rsl_report_validate's), `field`/`index` the repeated sub-message inside
 * it, if any. The text is composed only when there is an error to report:
 * formatting it for every measurement of every report was a visible share
 * of the aggregator's decoding time. */
struct walk_where {
    const char *parent;
    const char *field; /* NULL: the message named by parent itself */
    size_t index;
};

static int walk_error(struct rsl_error *err, const struct walk_where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int walk_error(struct rsl_error *err, const struct walk_where *w, const char *fmt, ...)
{
    char path[96];
    char tail[RSL_ERROR_TEXT_MAX];
    va_list ap;
    if (w->field != NULL)
        snprintf(path, sizeof(path), "%s%s%s[%zu]", w->parent, w->parent[0] != '\0' ? "." : "",
                 w->field, w->index);
    else
        snprintf(path, sizeof(path), "%s", w->parent);
    va_start(ap, fmt);
    vsnprintf(tail, sizeof(tail), fmt, ap);
    va_end(ap);
    return rsl_error_set(err, RSL_EPARSE, "%s%s%s", path, path[0] != '\0' ? "." : "", tail);
}

static const struct walk_where report_where = {"", NULL, 0};
static const struct walk_where signed_report_where = {"signed_report", NULL, 0};
static const struct walk_where ack_where = {"ack", NULL, 0};

/* Walk one message of `spec` in [buf, buf+len), at `where`. Recursion depth
 * is bounded by the specs (Report -> Measurement), not by the input. */
static int wire_walk(const struct wire_message_spec *spec, const uint8_t *buf, size_t len,
                     const struct walk_where *where, struct rsl_error *err)
{
    const uint8_t *p = buf;
    const uint8_t *end = buf + len;
    size_t counts[WIRE_MAX_FIELDS] = {0};

    while (p < end) {
        size_t at = (size_t)(p - buf);
        uint64_t tag;
        if (!wire_varint(&p, end, &tag))
            return walk_error(err, where, "byte %zu: truncated or overlong field tag", at);
        uint64_t number = tag >> 3;
        unsigned wt = (unsigned)(tag & 7u);
        if (number == 0 || number > 0x1fffffffu)
            return walk_error(err, where, "byte %zu: invalid field number", at);

        const struct wire_field_spec *field = NULL;
        size_t field_index = 0;
        for (size_t i = 0; i < spec->n_fields; i++) {
            if (spec->fields[i].number == number) {
                field = &spec->fields[i];
                field_index = i;
            }
        }
        if (field != NULL && field->wire_type != wt)
            return walk_error(err, where, "%s: wrong wire type %u", field->name, wt);

        const uint8_t *value = p;
        uint64_t value_len = 0;
        uint64_t ignored;
        switch (wt) {
        case WT_VARINT:
            if (!wire_varint(&p, end, &ignored))
                return walk_error(err, where, "byte %zu: truncated varint", at);
            break;
        case WT_I64:
        case WT_I32: {
            size_t width = wt == WT_I64 ? 8 : 4;
            if ((size_t)(end - p) < width)
                return walk_error(err, where, "byte %zu: truncated fixed-width field", at);
            p += width;
            break;
        }
        case WT_LEN:
            if (!wire_varint(&p, end, &value_len))
                return walk_error(err, where, "byte %zu: truncated length", at);
            /* Compare against what is left, never compute p + value_len first:
             * a huge declared length would overflow the pointer. */
            if (value_len > (uint64_t)(end - p))
                return walk_error(err, where, "byte %zu: length %llu runs past the end (%zu left)",
                                  at, (unsigned long long)value_len, (size_t)(end - p));
            value = p;
            p += value_len;
            break;
        default: /* 3/4: proto2 groups, not in proto3; 6/7: undefined */
            return walk_error(err, where, "byte %zu: unsupported wire type %u", at, wt);
        }
        if (field == NULL)
            continue; /* unknown field: kept by protobuf-c, see the top comment */

        size_t index = counts[field_index]++;
        if (field->max_count != 0 && index >= field->max_count)
            return walk_error(err, where, "%s: more than %zu entries", field->name,
                              field->max_count);
        if (field->kind == FK_STRING && memchr(value, 0, (size_t)value_len) != NULL) {
            if (field->max_count != 0)
                return walk_error(err, where, "%s[%zu]: contains a NUL byte", field->name, index);
            return walk_error(err, where, "%s: contains a NUL byte", field->name);
        }
        if (field->kind == FK_MESSAGE) {
            struct walk_where sub = {where->parent, field->name, index};
            int rc = wire_walk(field->sub, value, (size_t)value_len, &sub, err);
            if (rc != RSL_OK)
                return rc;
        }
    }
    return RSL_OK;
}

/* ------------------------------------------------------------------------ */
/* protobuf-c's allocator (the design comment, "Memory")                    */
/* ------------------------------------------------------------------------ */

/* One per unpack call, on the caller's stack: decoders run on several
 * threads at once (the aggregator's verify workers). */
struct pb_alloc_state {
    bool failed; /* an allocation returned NULL during this unpack */
};

static void *pb_alloc(void *data, size_t size)
{
    void *p = malloc(size);
    if (p == NULL && data != NULL)
        ((struct pb_alloc_state *)data)->failed = true;
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* An allocator for one unpack call that records failures in `state`. */
static ProtobufCAllocator pb_allocator(struct pb_alloc_state *state)
{
    ProtobufCAllocator a = {pb_alloc, pb_free, state};
    state->failed = false;
    return a;
}

/* The allocator for free_unpacked: the same free() as pb_alloc's malloc(). */
static ProtobufCAllocator pb_release_allocator(void)
{
    ProtobufCAllocator a = {pb_alloc, pb_free, NULL};
    return a;
}

#if defined(__SANITIZE_ADDRESS__)
#define PB_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PB_ARENA_ASAN 1
#endif
#endif
#ifdef PB_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define PB_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define PB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define PB_POISON(p, n) ((void)(p), (void)(n))
#define PB_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* An arena for one decoded message: a first block sized from the frame,
 * then blocks of twice the size as needed. Every allocation starts with a
 * 16-byte slot holding the arena's address, so the message pointer alone
 * finds it when the message is freed. protobuf-c's free calls (its scan
 * slabs, its own error paths) are no-ops: everything goes when the arena
 * does. Under AddressSanitizer the slots, the padding after each
 * allocation and the unused rest of every block are poisoned, so ASan
 * still reports a read or write past any one allocation, and the fuzz
 * targets exercise the same allocator as production. */
struct pb_arena_block {
    struct pb_arena_block *next;
    size_t used;
    size_t cap;
};

struct pb_arena {
    struct pb_arena_block *blocks; /* the newest first; the first block is this struct's */
    bool failed;
};

#define PB_ALIGN 16u
#define PB_ROUND(n) (((n) + (PB_ALIGN - 1)) & ~(size_t)(PB_ALIGN - 1))
#define PB_SLOT PB_ROUND(sizeof(struct pb_arena *))
#define PB_BLOCK_HEAD PB_ROUND(sizeof(struct pb_arena_block))
#define PB_ARENA_HEAD PB_ROUND(sizeof(struct pb_arena))
/* Largest first block: a guess beyond this is probably wrong anyway. */
#define PB_FIRST_MAX (4u * 1024u * 1024u)

static unsigned char *block_data(struct pb_arena_block *b)
{
    return (unsigned char *)b + PB_BLOCK_HEAD;
}

static void *arena_alloc(void *data, size_t size)
{
    struct pb_arena *a = data;
    if (size > SIZE_MAX / 4) {
        a->failed = true;
        return NULL;
    }
    size_t need = PB_SLOT + PB_ROUND(size);
    struct pb_arena_block *b = a->blocks;
    if (b->cap - b->used < need) {
        size_t cap = b->cap <= SIZE_MAX / 4 ? 2 * b->cap : b->cap;
        if (cap < need)
            cap = need;
        struct pb_arena_block *nb = malloc(PB_BLOCK_HEAD + cap);
        if (nb == NULL) {
            a->failed = true;
            return NULL;
        }
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        PB_POISON(block_data(nb), cap);
        a->blocks = b = nb;
    }
    unsigned char *p = block_data(b) + b->used;
    b->used += need;
    PB_UNPOISON(p, PB_SLOT);
    memcpy(p, &a, sizeof(a));
    PB_POISON(p, PB_SLOT);
    PB_UNPOISON(p + PB_SLOT, size);
    return p + PB_SLOT;
}

static void arena_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

/* `first`: the first block's size, a guess from the frame. */
static struct pb_arena *arena_new(size_t first)
{
    if (first > PB_FIRST_MAX)
        first = PB_FIRST_MAX;
    first = PB_ROUND(first);
    struct pb_arena *a = malloc(PB_ARENA_HEAD + PB_BLOCK_HEAD + first);
    if (a == NULL)
        return NULL;
    struct pb_arena_block *b = (struct pb_arena_block *)((unsigned char *)a + PB_ARENA_HEAD);
    b->next = NULL;
    b->used = 0;
    b->cap = first;
    PB_POISON(block_data(b), first);
    a->blocks = b;
    a->failed = false;
    return a;
}

static void arena_destroy(struct pb_arena *a)
{
    if (a == NULL)
        return;
    struct pb_arena_block *b = a->blocks;
    while (b != NULL) {
        struct pb_arena_block *next = b->next;
        PB_UNPOISON(block_data(b), b->cap);
        if (next != NULL) /* the last one is part of *a */
            free(b);
        b = next;
    }
    free(a);
}

/* The arena a decoded message was allocated in. */
static void arena_release(void *msg)
{
    struct pb_arena *a;
    unsigned char *slot = (unsigned char *)msg - PB_SLOT;
    PB_UNPOISON(slot, sizeof(a));
    memcpy(&a, slot, sizeof(a));
    arena_destroy(a);
}

/* First-block guesses. A Report's structs take about three times the bytes
 * that encode them, plus protobuf-c's scan slabs (kept in the arena until
 * it goes); a SignedReport holds little more than a copy of its bytes. */
static size_t report_arena_guess(size_t len)
{
    return len <= (SIZE_MAX - 1024) / 5 ? 5 * len + 1024 : SIZE_MAX;
}

static size_t signed_report_arena_guess(size_t len)
{
    return len <= SIZE_MAX - 512 ? len + 512 : SIZE_MAX;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                   */
/* ------------------------------------------------------------------------ */

/* A string field: required or not, at most `max` bytes, valid UTF-8. NULL
 * (only possible in hand-built structs) counts as empty. */
static int check_text(const char *s, bool required, size_t max, const char *name,
                      struct rsl_error *err)
{
    if (s == NULL || s[0] == '\0') {
        if (required)
            return rsl_error_set(err, RSL_EPARSE, "%s: missing", name);
        return RSL_OK;
    }
    size_t n = strlen(s);
    if (n > max)
        return rsl_error_set(err, RSL_EPARSE, "%s: %zu bytes, at most %zu", name, n, max);
    if (!utf8_valid(s))
        return rsl_error_set(err, RSL_EPARSE, "%s: not valid UTF-8", name);
    return RSL_OK;
}

/* check_text's verdict without its message: the fast path below runs for
 * every measurement of every report, and composes a field's name only when
 * there is something wrong with it. */
static bool text_ok(const char *s, bool required, size_t max)
{
    if (s == NULL || s[0] == '\0')
        return !required;
    return strlen(s) <= max && utf8_valid(s);
}

static int validate_measurement(const rsl_measurement *m, size_t i, struct rsl_error *err)
{
    char name[64];
    if (m == NULL)
        return rsl_error_set(err, RSL_EPARSE, "measurements[%zu]: missing", i);

    if (!text_ok(m->indicator, true, RSL_INDICATOR_ID_MAX) ||
        !rsl_valid_indicator_id(m->indicator)) {
        snprintf(name, sizeof(name), "measurements[%zu].indicator", i);
        int rc = check_text(m->indicator, true, RSL_INDICATOR_ID_MAX, name, err);
        if (rc != RSL_OK)
            return rc;
        return rsl_error_set(err, RSL_EPARSE,
                             "%s: invalid id (lowercase letters, digits, '_' and '.', "
                             "starting with a letter)", name);
    }

    if (!isfinite(m->value))
        return rsl_error_set(err, RSL_EPARSE, "measurements[%zu].value: not finite", i);

    const char *unit = m->unit != NULL ? m->unit : "";
    if (!text_ok(unit, false, RSL_UNIT_MAX) || !rsl_valid_unit(unit)) {
        snprintf(name, sizeof(name), "measurements[%zu].unit", i);
        int rc = check_text(unit, false, RSL_UNIT_MAX, name, err);
        if (rc != RSL_OK)
            return rc;
        return rsl_error_set(err, RSL_EPARSE,
                             "%s: invalid unit (letters, digits and _%%/.- only)", name);
    }

    if (m->observed_at_ms <= 0)
        return rsl_error_set(err, RSL_EPARSE, "measurements[%zu].observed_at_ms: must be > 0", i);

    if (m->n_releasable_to > RSL_MAX_RELEASABLE)
        return rsl_error_set(err, RSL_EPARSE, "measurements[%zu].releasable_to: %zu entries, at most %d",
                             i, m->n_releasable_to, RSL_MAX_RELEASABLE);
    for (size_t k = 0; k < m->n_releasable_to; k++) {
        if (!rsl_valid_partner_id(m->releasable_to[k]))
            return rsl_error_set(err, RSL_EPARSE,
                                 "measurements[%zu].releasable_to[%zu]: invalid partner id "
                                 "(1-%d of A-Z a-z 0-9 _ -)", i, k, RSL_PARTNER_ID_MAX);
    }

    if (text_ok(m->source, false, RSL_SOURCE_MAX))
        return RSL_OK;
    snprintf(name, sizeof(name), "measurements[%zu].source", i);
    return check_text(m->source, false, RSL_SOURCE_MAX, name, err);
}

/* organisation and marking may be empty: the registry holds the enrolled
 * organisation, and the agent fills in the default marking. */
int rsl_report_validate(const rsl_report *r, struct rsl_error *err)
{
    int rc;
    if (r == NULL)
        return rsl_error_set(err, RSL_EINVAL, "report: missing");

    if ((rc = check_text(r->agent_id, true, RSL_AGENT_ID_MAX, "agent_id", err)) != RSL_OK)
        return rc;
    if (!rsl_valid_agent_id(r->agent_id))
        return rsl_error_set(err, RSL_EPARSE,
                             "agent_id: invalid (letters, digits, '.', '_' and '-', starting "
                             "with a letter or digit)");

    if ((rc = check_text(r->nation, true, 3, "nation", err)) != RSL_OK)
        return rc;
    if (!rsl_valid_nation_code(r->nation))
        return rsl_error_set(err, RSL_EPARSE, "nation: must be 3 uppercase letters (ISO 3166-1 alpha-3)");

    if ((rc = check_text(r->organisation, false, RSL_ORGANISATION_MAX, "organisation", err)) != RSL_OK)
        return rc;
    if ((rc = check_text(r->marking, false, RSL_MARKING_MAX, "marking", err)) != RSL_OK)
        return rc;

    /* Sequences are stored as SQLite INTEGER (signed 64-bit); 0 is the proto3
     * default, i.e. "not set". */
    if (r->sequence == 0 || r->sequence > (uint64_t)INT64_MAX)
        return rsl_error_set(err, RSL_EPARSE, "sequence: must be 1..%lld",
                             (long long)INT64_MAX);
    if (r->created_at_ms <= 0)
        return rsl_error_set(err, RSL_EPARSE, "created_at_ms: must be > 0");

    if (r->n_measurements == 0)
        return rsl_error_set(err, RSL_EPARSE, "measurements: missing (at least one required)");
    if (r->n_measurements > RSL_MAX_MEASUREMENTS)
        return rsl_error_set(err, RSL_EPARSE, "measurements: %zu entries, at most %d",
                             r->n_measurements, RSL_MAX_MEASUREMENTS);
    for (size_t i = 0; i < r->n_measurements; i++) {
        if ((rc = validate_measurement(r->measurements[i], i, err)) != RSL_OK)
            return rc;
    }
    return RSL_OK;
}

int rsl_report_decode(const uint8_t *buf, size_t len, rsl_report **out, struct rsl_error *err)
{
    int rc;
    rsl_report *msg = NULL;
    struct pb_alloc_state mem;
    ProtobufCAllocator alloc;
    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "report: no output");
    *out = NULL;
    if (buf == NULL && len > 0)
        return rsl_error_set(err, RSL_EINVAL, "report: no input");
    if (len > RSL_REPORT_MAX_BYTES)
        return rsl_error_set(err, RSL_ETOOBIG, "report: %zu bytes, at most %u", len,
                             RSL_REPORT_MAX_BYTES);
    if ((rc = wire_walk(&report_spec, buf, len, &report_where, err)) != RSL_OK) {
        rsl_error_prefix(err, "report");
        goto out;
    }
    struct pb_arena *arena = arena_new(report_arena_guess(len));
    if (arena == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "report: out of memory");
        goto out;
    }
    alloc = (ProtobufCAllocator){arena_alloc, arena_free, arena};
    msg = resilience__v1__report__unpack(&alloc, len, buf);
    mem.failed = arena->failed;
    if (msg == NULL)
        arena_destroy(arena); /* else it goes with msg */
    if (msg == NULL) {
        /* The walk accepted it, so this is out of memory or a semantic
         * rejection by protobuf-c; only our allocator tells them apart. */
        if (mem.failed)
            rc = rsl_error_set(err, RSL_ENOMEM, "report: out of memory");
        else
            rc = rsl_error_set(err, RSL_EPARSE, "report: protobuf decoding failed");
        goto out;
    }
    if ((rc = rsl_report_validate(msg, err)) != RSL_OK) {
        rsl_error_prefix(err, "report");
        goto out;
    }
    *out = msg;
    msg = NULL; /* transferred */
out:
    rsl_report_free(&msg);
    return rc;
}

void rsl_report_free(rsl_report **msg)
{
    if (msg == NULL || *msg == NULL)
        return;
    arena_release(*msg);
    *msg = NULL;
}

/* ------------------------------------------------------------------------ */
/* SignedReport                                                             */
/* ------------------------------------------------------------------------ */

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    }
    return s[n] == '\0';
}

int rsl_signed_report_decode(const uint8_t *buf, size_t len, size_t max_len,
                             rsl_signed_report **out, struct rsl_error *err)
{
    int rc;
    rsl_signed_report *msg = NULL;
    struct pb_alloc_state mem;
    ProtobufCAllocator alloc;
    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "signed_report: no output");
    *out = NULL;
    if (buf == NULL && len > 0)
        return rsl_error_set(err, RSL_EINVAL, "signed_report: no input");
    if (len > max_len)
        return rsl_error_set(err, RSL_ETOOBIG, "signed_report: %zu bytes, at most %zu", len,
                             max_len);
    if ((rc = wire_walk(&signed_report_spec, buf, len, &signed_report_where, err)) != RSL_OK)
        goto out;
    struct pb_arena *arena = arena_new(signed_report_arena_guess(len));
    if (arena == NULL) {
        rc = rsl_error_set(err, RSL_ENOMEM, "signed_report: out of memory");
        goto out;
    }
    alloc = (ProtobufCAllocator){arena_alloc, arena_free, arena};
    msg = resilience__v1__signed_report__unpack(&alloc, len, buf);
    mem.failed = arena->failed;
    if (msg == NULL)
        arena_destroy(arena); /* else it goes with msg */
    if (msg == NULL) {
        if (mem.failed)
            rc = rsl_error_set(err, RSL_ENOMEM, "signed_report: out of memory");
        else
            rc = rsl_error_set(err, RSL_EPARSE, "signed_report: protobuf decoding failed");
        goto out;
    }
    if (msg->report.len == 0 || msg->report.data == NULL) {
        rc = rsl_error_set(err, RSL_EPARSE, "signed_report.report: missing");
        goto out;
    }
    if (msg->signature.len != RSL_ED25519_SIGNATURE_BYTES) {
        rc = rsl_error_set(err, RSL_EPARSE, "signed_report.signature: %zu bytes, must be %d",
                           msg->signature.len, RSL_ED25519_SIGNATURE_BYTES);
        goto out;
    }
    if (msg->key_id == NULL || strlen(msg->key_id) != RSL_KEY_ID_HEX_LEN ||
        !lower_hex(msg->key_id, RSL_KEY_ID_HEX_LEN)) {
        rc = rsl_error_set(err, RSL_EPARSE,
                           "signed_report.key_id: must be %d lowercase hex characters",
                           RSL_KEY_ID_HEX_LEN);
        goto out;
    }
    *out = msg;
    msg = NULL; /* transferred */
    rc = RSL_OK;
out:
    rsl_signed_report_free(&msg);
    return rc;
}

void rsl_signed_report_free(rsl_signed_report **msg)
{
    if (msg == NULL || *msg == NULL)
        return;
    arena_release(*msg);
    *msg = NULL;
}

/* ------------------------------------------------------------------------ */
/* Ack                                                                      */
/* ------------------------------------------------------------------------ */

int rsl_ack_decode(const uint8_t *buf, size_t len, size_t max_len, rsl_ack **out,
                   struct rsl_error *err)
{
    int rc;
    rsl_ack *msg = NULL;
    struct pb_alloc_state mem;
    ProtobufCAllocator alloc;
    if (out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "ack: no output");
    *out = NULL;
    if (buf == NULL && len > 0)
        return rsl_error_set(err, RSL_EINVAL, "ack: no input");
    if (len > max_len)
        return rsl_error_set(err, RSL_ETOOBIG, "ack: %zu bytes, at most %zu", len, max_len);
    if ((rc = wire_walk(&ack_spec, buf, len, &ack_where, err)) != RSL_OK)
        goto out;
    alloc = pb_allocator(&mem);
    msg = resilience__v1__ack__unpack(&alloc, len, buf);
    if (msg == NULL) {
        if (mem.failed)
            rc = rsl_error_set(err, RSL_ENOMEM, "ack: out of memory");
        else
            rc = rsl_error_set(err, RSL_EPARSE, "ack: protobuf decoding failed");
        goto out;
    }
    /* An unknown status must not be mistaken for one we know: the agent
     * deletes or moves spool entries by it. proto3 keeps unknown enum values. */
    if ((int)msg->status < RESILIENCE__V1__ACK__STATUS__ACCEPTED ||
        (int)msg->status > RESILIENCE__V1__ACK__STATUS__RETRY_LATER) {
        rc = rsl_error_set(err, RSL_EPARSE, "ack.status: unknown value %d", (int)msg->status);
        goto out;
    }
    /* agent_id may be empty: the aggregator cannot name the agent of a frame
     * it could not decode. */
    if ((rc = check_text(msg->agent_id, false, RSL_AGENT_ID_MAX, "ack.agent_id", err)) != RSL_OK)
        goto out;
    if ((rc = check_text(msg->detail, false, RSL_ACK_DETAIL_MAX, "ack.detail", err)) != RSL_OK)
        goto out;
    *out = msg;
    msg = NULL; /* transferred */
out:
    rsl_ack_free(&msg);
    return rc;
}

void rsl_ack_free(rsl_ack **msg)
{
    if (msg == NULL || *msg == NULL)
        return;
    ProtobufCAllocator alloc = pb_release_allocator();
    resilience__v1__ack__free_unpacked(*msg, &alloc);
    *msg = NULL;
}

const char *rsl_ack_status_name(int status)
{
    switch (status) {
    case RESILIENCE__V1__ACK__STATUS__ACCEPTED: return "ACCEPTED";
    case RESILIENCE__V1__ACK__STATUS__DUPLICATE: return "DUPLICATE";
    case RESILIENCE__V1__ACK__STATUS__REJECTED: return "REJECTED";
    case RESILIENCE__V1__ACK__STATUS__RETRY_LATER: return "RETRY_LATER";
    default: return "UNKNOWN";
    }
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

/* Pack any message into a new buffer. An all-default proto3 message packs to
 * zero bytes; we still return a non-NULL buffer so callers can free it. */
static int pack_message(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
    if (msg == NULL || out == NULL || len == NULL)
        return RSL_EINVAL;
    *out = NULL;
    *len = 0;
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        return RSL_ENOMEM;
    size_t packed = protobuf_c_message_pack(msg, buf);
    if (packed != size) {
        free(buf);
        return RSL_EINVAL;
    }
    *out = buf;
    *len = size;
    return RSL_OK;
}

int rsl_report_encode(const rsl_report *report, uint8_t **out, size_t *len)
{
    return pack_message(report != NULL ? &report->base : NULL, out, len);
}

int rsl_signed_report_encode(const rsl_signed_report *msg, uint8_t **out, size_t *len)
{
    return pack_message(msg != NULL ? &msg->base : NULL, out, len);
}

int rsl_ack_encode(const rsl_ack *ack, uint8_t **out, size_t *len)
{
    return pack_message(ack != NULL ? &ack->base : NULL, out, len);
}
