/*
 * test_ini.c - strict INI loading (lib/ini.c): line numbers, comments,
 * Z85 values, continuation lines, hostile files, section/list helpers.
 *
 * Each test writes real files into a fresh temporary folder and loads them
 * with the real inih underneath; a small handler plays the program's part
 * (known keys per section, unknown ones rejected) and records what it saw.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rsl/ini.h"

#define MAX_CALLS 32

/* Every Z85 character that is not a letter or digit. */
#define Z85_PUNCT ".-:+=^!/*?&<>()[]{}@%$#"

struct call {
    char section[256];
    char key[256];
    char value[1024];
    int line;
};

struct recorder {
    struct call calls[MAX_CALLS];
    size_t n;
    int fail_on_line; /* make the handler fail on this line (0: never) */
};

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rsl-test-ini-XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write `len` bytes to <tmpdir>/<name>; the path goes to out. */
static void write_file(const char *name, const void *data, size_t len, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", tmpdir, name);
    FILE *f = fopen(out, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *name, const char *text, char *out, size_t outlen)
{
    write_file(name, text, strlen(text), out, outlen);
}

/* The program's handler: a small schema like agent.conf's. */
static int record(void *ctx, const char *section, const char *key, const char *value, int line,
                  struct rsl_error *err)
{
    struct recorder *r = ctx;
    static const char *agent_keys[] = {"id", "nation", "organisation", "server_key",
                                       "releasable_to", "endpoints", "marking", NULL};
    static const char *collector_keys[] = {"type", "interval", "value", "unit", NULL};
    char kind[64], name[128];

    if (r->fail_on_line == line)
        return RSL_EINVAL; /* no message: the loader must supply one */
    assert_int_equal(rsl_ini_section_split(section, kind, sizeof(kind), name, sizeof(name)), RSL_OK);
    const char **keys = NULL;
    if (strcmp(kind, "agent") == 0 || strcmp(kind, "x") == 0 || strlen(kind) > 40)
        keys = agent_keys;
    else if (strcmp(kind, "collector") == 0)
        keys = collector_keys;
    else
        return rsl_error_set(err, RSL_ECONFIG, "unknown section [%s]", section);
    size_t i = 0;
    while (keys[i] != NULL && strcmp(keys[i], key) != 0)
        i++;
    if (keys[i] == NULL)
        return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [%s]", key, section);

    assert_true(r->n < MAX_CALLS);
    struct call *c = &r->calls[r->n++];
    snprintf(c->section, sizeof(c->section), "%s", section);
    snprintf(c->key, sizeof(c->key), "%s", key);
    snprintf(c->value, sizeof(c->value), "%s", value);
    c->line = line;
    return RSL_OK;
}

static void assert_call(const struct recorder *r, size_t i, const char *section, const char *key,
                        const char *value, int line)
{
    assert_true(i < r->n);
    assert_string_equal(r->calls[i].section, section);
    assert_string_equal(r->calls[i].key, key);
    assert_string_equal(r->calls[i].value, value);
    assert_int_equal(r->calls[i].line, line);
}

/* Load `text` from a file and expect failure with "PATH:<suffix>". */
static void expect_error(const char *text, size_t len, int code, const char *suffix,
                         struct recorder *r)
{
    char path[PATH_MAX], want[PATH_MAX + 256];
    struct rsl_error err;
    write_file("bad.conf", text, len, path, sizeof(path));
    memset(r, 0, sizeof(*r));
    rsl_error_clear(&err);
    assert_int_equal(rsl_ini_load(path, record, r, &err), code);
    snprintf(want, sizeof(want), "%s:%s", path, suffix);
    assert_string_equal(err.text, want);
    assert_int_equal(err.code, code);
}

static void test_values_lines_and_comments(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct recorder r;
    struct rsl_error err;
    const char *text = "\xEF\xBB\xBF; agent.conf\n"              /* 1: BOM + comment */
                       "# a comment\n"                           /* 2 */
                       "\n"                                      /* 3 */
                       "[agent]\n"                               /* 4 */
                       "id = DEU-BMI-01 ; the ministry agent\n"  /* 5: inline comment */
                       "nation=DEU\r\n"                          /* 6: CRLF, no blanks */
                       "organisation = Federal Ministry #1\n"    /* 7: '#' is data */
                       "marking = A;B\n"                         /* 8: ';' without blank */
                       "[collector fuel]   ; comment\n"          /* 9 */
                       "type = static\n"                         /* 10 */
                       "value:42\n"                              /* 11: ':' separator */
                       "unit =\n";                               /* 12: empty value */
    write_text("ok.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    rsl_error_clear(&err);
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 7);
    assert_call(&r, 0, "agent", "id", "DEU-BMI-01", 5);
    assert_call(&r, 1, "agent", "nation", "DEU", 6);
    assert_call(&r, 2, "agent", "organisation", "Federal Ministry #1", 7);
    assert_call(&r, 3, "agent", "marking", "A;B", 8);
    assert_call(&r, 4, "collector fuel", "type", "static", 10);
    assert_call(&r, 5, "collector fuel", "value", "42", 11);
    assert_call(&r, 6, "collector fuel", "unit", "", 12);
}

static void test_unknown_key_has_its_line(void **state)
{
    (void)state;
    struct recorder r;
    const char *text = "[agent]\n"
                       "id = DEU-BMI-01\n"
                       "; comment\n"
                       "\n"
                       "[collector fuel]\n"
                       "type = static\n"
                       "intervall = 30\n"  /* line 7 */
                       "value = 1\n";
    expect_error(text, strlen(text), RSL_ECONFIG, "7: unknown key 'intervall' in [collector fuel]",
                 &r);
    /* Loading stopped at the error: line 8 never reached the handler. */
    assert_int_equal(r.n, 2);
    assert_call(&r, 1, "collector fuel", "type", "static", 6);

    /* Same for a key after the last line has a continuation. */
    const char *text2 = "[agent]\nendpoints = a,\n  b\nbogus = 1\n";
    expect_error(text2, strlen(text2), RSL_ECONFIG, "4: unknown key 'bogus' in [agent]", &r);
    expect_error("[nope]\nk = v\n", 13, RSL_ECONFIG, "2: unknown section [nope]", &r);
}

static void test_z85_key_survives(void **state)
{
    (void)state;
    char path[PATH_MAX], text[512];
    struct recorder r;
    struct rsl_error err;
    /* 40 characters: all 23 punctuation characters of Z85 plus 17 alnum. */
    const char *key = Z85_PUNCT "abcdefghij0123456";
    assert_int_equal(strlen(key), 40);
    const char *key2 = "#%&()[]{}:=" "rq*HxU>q@Lb$9o-u!wWn.G^?/+<z";
    snprintf(text, sizeof(text),
             "[agent]\nserver_key = %s\nid=%s\nnation =%s   ; trailing comment\n", key, key2, key);
    write_text("z85.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 3);
    assert_call(&r, 0, "agent", "server_key", key, 2);
    assert_call(&r, 1, "agent", "id", key2, 3);
    assert_call(&r, 2, "agent", "nation", key, 4);
}

static void test_long_line_rejected(void **state)
{
    (void)state;
    char path[PATH_MAX], text[1024];
    struct recorder r;
    struct rsl_error err;

    /* Exactly RSL_INI_MAX_LINE characters: fine, also with CRLF. */
    int prefix = snprintf(text, sizeof(text), "[agent]\r\norganisation = ");
    int fill = RSL_INI_MAX_LINE - (prefix - 9);
    memset(text + prefix, 'a', (size_t)fill);
    snprintf(text + prefix + fill, sizeof(text) - (size_t)(prefix + fill), "\r\nid = x\r\n");
    write_text("max.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(strlen(r.calls[0].value), (size_t)fill);
    assert_call(&r, 1, "agent", "id", "x", 3);

    /* One more character: rejected with the line, nothing after it seen. */
    prefix = snprintf(text, sizeof(text), "[agent]\nid = x\norganisation = ");
    fill = RSL_INI_MAX_LINE + 1 - (int)strlen("organisation = ");
    memset(text + prefix, 'b', (size_t)fill);
    snprintf(text + prefix + fill, sizeof(text) - (size_t)(prefix + fill), "\nnation = DEU\n");
    expect_error(text, strlen(text), RSL_ECONFIG, "3: line longer than 198 characters", &r);
    assert_int_equal(r.n, 1);

    /* A very long line (inih would split it into several) on the last line,
     * without a final newline. */
    memset(text, 'c', 900);
    memcpy(text, "[agent]\nid = ", 13);
    text[900] = '\0';
    expect_error(text, strlen(text), RSL_ECONFIG, "2: line longer than 198 characters", &r);
    assert_int_equal(r.n, 0);
}

static void test_missing_and_unreadable(void **state)
{
    (void)state;
    char path[PATH_MAX], want[PATH_MAX + 64];
    struct recorder r;
    struct rsl_error err;

    snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_ENOENT);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err.text, want);

    /* A folder is not a config file. */
    assert_int_equal(rsl_ini_load(tmpdir, record, &r, &err), RSL_ECONFIG);
    assert_non_null(strstr(err.text, tmpdir));

    /* Over the size bound (1 MiB): refused before parsing. */
    size_t big = 1024 * 1024 + 1;
    char *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (i % 64 == 63) ? '\n' : ';';
    write_file("big.conf", data, big, path, sizeof(path));
    free(data);
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_ECONFIG);
    assert_non_null(strstr(err.text, "larger than"));
    assert_int_equal(r.n, 0);

    /* Empty file: nothing to do, fine. */
    write_file("empty.conf", "", 0, path, sizeof(path));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 0);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    struct recorder r;
    const char *expect_kv = "syntax error: expected 'key = value' or '[section]'";
    char suffix[128];

    const char *t1 = "[agent]\nid = x\njust some words\nnation = DEU\n";
    snprintf(suffix, sizeof(suffix), "3: %s", expect_kv);
    expect_error(t1, strlen(t1), RSL_ECONFIG, suffix, &r);
    assert_int_equal(r.n, 1); /* the key after the error never reached the handler */

    const char *t2 = "[agent\nid = x\n";
    snprintf(suffix, sizeof(suffix), "1: %s", expect_kv);
    expect_error(t2, strlen(t2), RSL_ECONFIG, suffix, &r);
    assert_int_equal(r.n, 0);

    /* A tcp:// endpoint alone on a line is a key "tcp": the handler says so. */
    const char *t3 = "[agent]\ntcp://127.0.0.1:7450\n";
    expect_error(t3, strlen(t3), RSL_ECONFIG, "2: unknown key 'tcp' in [agent]", &r);

    const char *t4 = "[agent]\n= value\n";
    expect_error(t4, strlen(t4), RSL_ECONFIG, "2: syntax error: empty key before '='", &r);
    const char *t5 = "[agent] id = x\n";
    expect_error(t5, strlen(t5), RSL_ECONFIG, "1: syntax error: unexpected text after ']'", &r);
    const char *t6 = "[ ]\nid = x\n";
    expect_error(t6, strlen(t6), RSL_ECONFIG, "1: syntax error: empty section name", &r);
    const char *t7 = "[agent] ; fine\nid = x\n[agent]# not fine\n";
    expect_error(t7, strlen(t7), RSL_ECONFIG, "3: syntax error: unexpected text after ']'", &r);
    assert_int_equal(r.n, 1);
    /* ';' needs a blank before it to start a comment. */
    const char *t8 = "[agent;x]\nid = x\n";
    expect_error(t8, strlen(t8), RSL_ECONFIG, "2: unknown section [agent;x]", &r);
}

static void test_first_error_wins(void **state)
{
    (void)state;
    struct recorder r;
    char path[PATH_MAX], want[PATH_MAX + 128];
    struct rsl_error err;

    /* A handler error before a syntax error and before a long line. */
    char text[600];
    snprintf(text, sizeof(text), "[agent]\nid = x\nnation = DEU\nwords\norganisation = %0300d\n", 0);
    write_text("order.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    r.fail_on_line = 3;
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_ECONFIG);
    snprintf(want, sizeof(want), "%s:3: invalid argument or value", path);
    assert_string_equal(err.text, want);

    /* Without it, the syntax error on line 4 comes before the long line 5. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_ECONFIG);
    snprintf(want, sizeof(want), "%s:4: syntax error: expected 'key = value' or '[section]'", path);
    assert_string_equal(err.text, want);
    assert_int_equal(r.n, 2);

    /* A long line before a syntax error wins. */
    snprintf(text, sizeof(text), "[agent]\nid = %0300d\nwords\n", 0);
    expect_error(text, strlen(text), RSL_ECONFIG, "2: line longer than 198 characters", &r);
    assert_int_equal(r.n, 0);

    /* The handler error of a key is reported even when the very next line
     * is broken (keys are delivered one line late). */
    const char *t = "[agent]\nbogus = 1\nwords\n";
    expect_error(t, strlen(t), RSL_ECONFIG, "2: unknown key 'bogus' in [agent]", &r);
}

static void test_hostile_bytes(void **state)
{
    (void)state;
    struct recorder r;
    const char nul[] = "[agent]\nid = a\0b\nnation = DEU\n";
    expect_error(nul, sizeof(nul) - 1, RSL_ECONFIG, "2: NUL byte", &r);
    assert_int_equal(r.n, 0);
    const char ctl[] = "[agent]\nid = x\nnation = D\x1b[2JEU\n";
    expect_error(ctl, sizeof(ctl) - 1, RSL_ECONFIG, "3: control character 0x1b", &r);
    const char cr[] = "[agent]\rid = x\n";
    expect_error(cr, sizeof(cr) - 1, RSL_ECONFIG, "1: control character 0x0d", &r);
    /* Binary junk: rejected at the first bad byte, not crashed on. */
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)((i * 7919u) >> 3);
    junk[0] = 'k';
    junk[1] = 0x01;
    expect_error((const char *)junk, sizeof(junk), RSL_ECONFIG, "1: control character 0x01", &r);
}

static void test_continuation_lines(void **state)
{
    (void)state;
    char path[PATH_MAX];
    struct recorder r;
    struct rsl_error err;
    const char *text = "[agent]\n"
                       "endpoints = tcp://a.example:7450,\n"  /* 2 */
                       "    tcp://b.example:7450, ; backup\n" /* 3: comment stripped */
                       "\ttcp://c.example:7450\n"             /* 4 */
                       "releasable_to = EU\n"                 /* 5 */
                       "[collector fuel]\n"                   /* 6 */
                       "  type = static\n"                    /* 7: first key, indented */
                       "value = 1\n"                          /* 8 */
                       "; comment\n"                          /* 9 */
                       "  2\n";                               /* 10: continues value */
    write_text("cont.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 4);
    assert_call(&r, 0, "agent", "endpoints",
                "tcp://a.example:7450, tcp://b.example:7450, tcp://c.example:7450", 2);
    assert_call(&r, 1, "agent", "releasable_to", "EU", 5);
    assert_call(&r, 2, "collector fuel", "type", "static", 7);
    assert_call(&r, 3, "collector fuel", "value", "1 2", 8);

    /* A list longer than one line allows, item by item. */
    const char *cursor = r.calls[0].value;
    char item[64];
    int count = 0;
    while (rsl_list_next(&cursor, item, sizeof(item)) == 1)
        count++;
    assert_int_equal(count, 3);
}

static void test_long_section_name(void **state)
{
    (void)state;
    char path[PATH_MAX], text[512], section[128];
    struct recorder r;
    struct rsl_error err;
    /* inih itself cuts section names at 49 bytes: two agents with a long
     * common prefix would merge. Ours are whole. */
    snprintf(section, sizeof(section), "%s", "agent-with-a-very-long-identifier-of-sixty-chars-AAAAAAAAAAAA");
    snprintf(text, sizeof(text), "[ %s ]\nid = 1\n[%.*sBBBB]\nid = 2\n", section,
             (int)strlen(section) - 4, section);
    write_text("sect.conf", text, path, sizeof(path));
    memset(&r, 0, sizeof(r));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_OK);
    assert_int_equal(r.n, 2);
    assert_call(&r, 0, section, "id", "1", 2);
    assert_int_equal(strlen(r.calls[1].section), strlen(section));
    assert_string_not_equal(r.calls[1].section, r.calls[0].section);

    /* Keys before any section have section "". */
    memset(&r, 0, sizeof(r));
    write_text("nosect.conf", "id = 1\n", path, sizeof(path));
    assert_int_equal(rsl_ini_load(path, record, &r, &err), RSL_ECONFIG);
    assert_non_null(strstr(err.text, ":1: unknown section []"));
}

static void test_section_split(void **state)
{
    (void)state;
    char kind[16], name[16];
    assert_int_equal(rsl_ini_section_split("collector fuel", kind, sizeof(kind), name, sizeof(name)),
                     RSL_OK);
    assert_string_equal(kind, "collector");
    assert_string_equal(name, "fuel");
    assert_int_equal(rsl_ini_section_split("agent", kind, sizeof(kind), name, sizeof(name)), RSL_OK);
    assert_string_equal(kind, "agent");
    assert_string_equal(name, "");
    assert_int_equal(rsl_ini_section_split("token  central staff ", kind, sizeof(kind), name,
                                           sizeof(name)),
                     RSL_OK);
    assert_string_equal(kind, "token");
    assert_string_equal(name, "central staff");
    assert_int_equal(rsl_ini_section_split("", kind, sizeof(kind), name, sizeof(name)), RSL_OK);
    assert_string_equal(kind, "");
    assert_string_equal(name, "");
    /* Parts that do not fit: an error, and nothing half-written. */
    assert_int_equal(rsl_ini_section_split("collectorcollector x", kind, sizeof(kind), name,
                                           sizeof(name)),
                     RSL_EINVAL);
    assert_string_equal(kind, "");
    assert_int_equal(rsl_ini_section_split("agent 0123456789abcdef", kind, sizeof(kind), name,
                                           sizeof(name)),
                     RSL_EINVAL);
    assert_string_equal(kind, "");
    assert_string_equal(name, "");
    assert_int_equal(rsl_ini_section_split("agent 0123456789abcde", kind, sizeof(kind), name,
                                           sizeof(name)),
                     RSL_OK);
}

static void test_list_next(void **state)
{
    (void)state;
    char item[8];
    const char *cursor = " EU , NATO,,\tX ,";
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 1);
    assert_string_equal(item, "EU");
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 1);
    assert_string_equal(item, "NATO");
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 1);
    assert_string_equal(item, "X");
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 0);
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 0);

    cursor = "";
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 0);
    cursor = " , ,";
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 0);
    cursor = NULL;
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 0);

    /* 7 characters fit in 8 bytes, 8 do not; the cursor stays put. */
    cursor = "1234567,12345678";
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), 1);
    assert_string_equal(item, "1234567");
    const char *before = cursor;
    assert_int_equal(rsl_list_next(&cursor, item, sizeof(item)), RSL_ETOOBIG);
    assert_ptr_equal(cursor, before);
    assert_string_equal(item, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_lines_and_comments),
        cmocka_unit_test(test_unknown_key_has_its_line),
        cmocka_unit_test(test_z85_key_survives),
        cmocka_unit_test(test_long_line_rejected),
        cmocka_unit_test(test_missing_and_unreadable),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_continuation_lines),
        cmocka_unit_test(test_long_section_name),
        cmocka_unit_test(test_section_split),
        cmocka_unit_test(test_list_next),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
