/*
 * ctl.c - resilience-ctl: the command table, the argument parser every
 * command shares, and the key/enrolment/token commands.
 *
 * Output discipline: what a command produces (a registry entry, a token, a
 * hash) goes to stdout and nothing else does, so it can be redirected or
 * appended to a file (`resilience-ctl enroll ... >> agents.conf`). Errors go
 * to stderr as one line naming the file or argument at fault.
 *
 * Commands that print INI for the operator to paste (enroll, token) refuse
 * values that would not read back identically through the INI loader
 * (newlines, control characters, inline "; comments", leading/trailing
 * blanks, over-long lines): an entry that silently means something else at
 * the aggregator is worse than an error here.
 */
#include "ctl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "rsl/codec.h"
#include "rsl/error.h"
#include "rsl/ini.h"
#include "rsl/keys.h"
#include "rsl/sign.h"
#include "rsl/taxonomy.h"
#include "rsl/util.h"

#define TOKEN_RANDOM_BYTES 32
#define TOKEN_NAME_MAX 64

/* ------------------------------------------------------------------------ */
/* The command table                                                        */
/* ------------------------------------------------------------------------ */

static const struct ctl_option keygen_options[] = {
    {"out", "DIR", true, "folder to write sign.key, sign.pub, curve.key, curve.pub into"},
    {NULL, NULL, false, NULL},
};

static const struct ctl_option enroll_options[] = {
    {"agent-id", "ID", true, "agent id (letters, digits, '.', '_', '-'), e.g. DEU-BMI-01"},
    {"nation", "CODE", true, "ISO 3166-1 alpha-3 nation code, e.g. DEU"},
    {"organisation", "NAME", true, "organisation running the agent"},
    {"keys", "DIR", true, "the agent's key folder (reads sign.pub and curve.pub)"},
    {"taxonomy-nations", "FILE", false, "also require CODE to be listed in this nations.csv"},
    {NULL, NULL, false, NULL},
};

static const struct ctl_option token_options[] = {
    {"name", "NAME", false, "also print a [token NAME] section header"},
    {"role", "ROLE", false, "also print role = ROLE (staff | nation:XXX | partner:ID)"},
    {NULL, NULL, false, NULL},
};

static const struct ctl_option no_options[] = {
    {NULL, NULL, false, NULL},
};

static const struct ctl_command commands[] = {
    {"keygen", "generate an Ed25519 signing key and a CURVE key pair", "", 0, 0, keygen_options,
     "Writes sign.key (0600) and sign.pub (Ed25519 PEM, as `openssl genpkey -algorithm\n"
     "ed25519` makes them) and curve.key (0600) and curve.pub (Z85, one line each).\n"
     "The folder is created (0700) if missing. Existing keys are never overwritten.",
     ctl_cmd_keygen},
    {"enroll", "print the registry entry for an agent", "", 0, 0, enroll_options,
     "Prints the [agent ID] section to append to the aggregator's registry, with\n"
     "the agent's public keys from its key folder. Example:\n"
     "  resilience-ctl enroll --agent-id DEU-BMI-01 --nation DEU \\\n"
     "      --organisation 'Federal Ministry of the Interior' --keys keys/ >> agents.conf",
     ctl_cmd_enroll},
    {"token", "generate a bearer token for the HTTPS API", "", 0, 0, token_options,
     "Prints a new random token (32 bytes, base64url) on the first line, then the\n"
     "`sha256 = HEX` line for a [token NAME] section of aggregator.conf. Only the\n"
     "hash is stored at the aggregator: give the token to its holder now.",
     ctl_cmd_token},
    {"hash-token", "print the SHA-256 of a bearer token", "TOKEN", 1, 1, no_options,
     "Prints the lowercase hex SHA-256 of TOKEN as sent in `Authorization: Bearer`.\n"
     "TOKEN '-' reads the token from the first line of standard input (keeps it\n"
     "out of the shell history and the process list).",
     ctl_cmd_hash_token},
    {"audit", "re-verify every stored report against the registry", "", 0, 0,
     ctl_audit_options, ctl_audit_description, ctl_cmd_audit},
    {"summary", "print the alliance summary from the HTTPS API", "", 0, 0,
     ctl_summary_options, ctl_query_description, ctl_cmd_summary},
    {"nation", "print one nation's values from the HTTPS API", "CODE", 1, 1,
     ctl_nation_options, ctl_query_description, ctl_cmd_nation},
    {"history", "print an indicator's alliance value over time", "ID", 1, 1,
     ctl_history_options, ctl_query_description, ctl_cmd_history},
    {"verify", "check a partner release (JWS) against the aggregator's public key", "FILE", 1, 1,
     ctl_verify_options, ctl_verify_description, ctl_cmd_verify},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* ------------------------------------------------------------------------ */
/* Help and errors                                                          */
/* ------------------------------------------------------------------------ */

static void print_overall_help(FILE *f)
{
    fprintf(f, "Usage: %s COMMAND [OPTIONS]\n", CTL_PROGRAM);
    fprintf(f, "       %s COMMAND --help\n", CTL_PROGRAM);
    fprintf(f, "       %s --help | --version\n\n", CTL_PROGRAM);
    fprintf(f, "Operator tool for Resilience Reporting.\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nExit status: 0 success, 1 failure, 2 usage error.\n");
}

static void print_command_help(FILE *f, const struct ctl_command *cmd)
{
    fprintf(f, "Usage: %s %s", CTL_PROGRAM, cmd->name);
    for (const struct ctl_option *o = cmd->options; o->name != NULL; o++) {
        const char *open = o->required ? "" : "[";
        const char *close = o->required ? "" : "]";
        if (o->metavar != NULL)
            fprintf(f, " %s--%s %s%s", open, o->name, o->metavar, close);
        else
            fprintf(f, " %s--%s%s", open, o->name, close);
    }
    if (cmd->positional_usage[0] != '\0')
        fprintf(f, " %s", cmd->positional_usage);
    /* The summary reads as a sentence here: capitalised, with a full stop. */
    fprintf(f, "\n\n%c%s.\n", toupper((unsigned char)cmd->summary[0]), cmd->summary + 1);
    if (cmd->description != NULL)
        fprintf(f, "\n%s\n", cmd->description);
    fprintf(f, "\nOptions:\n");
    for (const struct ctl_option *o = cmd->options; o->name != NULL; o++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->metavar != NULL ? " " : "",
                 o->metavar != NULL ? o->metavar : "");
        fprintf(f, "  %-26s %s\n", left, o->help);
    }
    fprintf(f, "  %-26s %s\n", "--help", "show this help");
}

/* Format an error message into one line: values given by the user are
 * echoed in messages, and a newline in them must not split the line. */
__attribute__((format(printf, 3, 0)))
static void ctl_vline(char *line, size_t len, const char *fmt, va_list ap)
{
    char raw[1024];
    vsnprintf(raw, sizeof(raw), fmt, ap);
    rsl_text_show(raw, line, len);
}

int ctl_fail(const struct ctl_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    char line[1024];
    va_start(ap, fmt);
    ctl_vline(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(ctx->err, "%s: %s\n", CTL_PROGRAM, line);
    return CTL_EXIT_FAILURE;
}

int ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    const char *name = ctx->command != NULL ? ctx->command->name : NULL;
    char line[1024];
    va_start(ap, fmt);
    ctl_vline(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(ctx->err, "%s%s%s: %s", CTL_PROGRAM, name != NULL ? " " : "", name != NULL ? name : "",
            line);
    fprintf(ctx->err, " (see %s%s%s --help)\n", CTL_PROGRAM, name != NULL ? " " : "",
            name != NULL ? name : "");
    return CTL_EXIT_USAGE;
}

const char *ctl_option(const struct ctl_ctx *ctx, const char *name)
{
    const struct ctl_option *opts = ctx->command->options;
    for (size_t i = 0; i < CTL_MAX_OPTIONS && opts[i].name != NULL; i++)
        if (strcmp(opts[i].name, name) == 0)
            return ctx->values[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

static bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* Parse argv[first..] for ctx->command: "--name VALUE", "--name=VALUE",
 * flags, positionals, "--" ending options. Returns CTL_EXIT_OK or the
 * usage exit code after printing the problem. */
static int parse_arguments(struct ctl_ctx *ctx, int argc, char **argv, int first)
{
    const struct ctl_command *cmd = ctx->command;
    bool options_done = false;
    for (int i = first; i < argc; i++) {
        char *arg = argv[i];
        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            ctx->positional[ctx->n_positional++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return ctl_usage_error(ctx, "unknown option '%s'", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        size_t index = 0;
        const struct ctl_option *opt = NULL;
        for (; index < CTL_MAX_OPTIONS && cmd->options[index].name != NULL; index++) {
            if (strlen(cmd->options[index].name) == name_len &&
                strncmp(cmd->options[index].name, name, name_len) == 0) {
                opt = &cmd->options[index];
                break;
            }
        }
        if (opt == NULL)
            return ctl_usage_error(ctx, "unknown option '--%.*s'", (int)name_len, name);
        if (ctx->values[index] != NULL)
            return ctl_usage_error(ctx, "--%s given twice", opt->name);
        if (opt->metavar == NULL) {
            if (eq != NULL)
                return ctl_usage_error(ctx, "--%s takes no value", opt->name);
            ctx->values[index] = "1";
        } else if (eq != NULL) {
            ctx->values[index] = eq + 1;
        } else if (i + 1 < argc) {
            ctx->values[index] = argv[++i];
        } else {
            return ctl_usage_error(ctx, "--%s needs a value (%s)", opt->name, opt->metavar);
        }
    }
    for (size_t index = 0; index < CTL_MAX_OPTIONS && cmd->options[index].name != NULL; index++) {
        const struct ctl_option *opt = &cmd->options[index];
        if (opt->required && ctx->values[index] == NULL)
            return ctl_usage_error(ctx, "missing --%s %s", opt->name,
                                   opt->metavar != NULL ? opt->metavar : "");
        if (ctx->values[index] != NULL && ctx->values[index][0] == '\0')
            return ctl_usage_error(ctx, "--%s: empty value", opt->name);
    }
    if (ctx->n_positional < cmd->min_positional)
        return ctl_usage_error(ctx, "missing %s", cmd->positional_usage);
    if (ctx->n_positional > cmd->max_positional)
        return ctl_usage_error(ctx, "unexpected argument '%s'",
                               ctx->positional[cmd->max_positional]);
    return CTL_EXIT_OK;
}

int ctl_main(int argc, char **argv, FILE *out, FILE *err)
{
    struct ctl_ctx ctx = {.out = out, .err = err};
    int rc;

    if (argc < 2) {
        print_overall_help(err);
        return CTL_EXIT_USAGE;
    }
    if (is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        /* "resilience-ctl help keygen" works too. */
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++) {
                if (strcmp(commands[i].name, argv[2]) == 0) {
                    print_command_help(out, &commands[i]);
                    return CTL_EXIT_OK;
                }
            }
            return ctl_usage_error(&ctx, "unknown command '%s'", argv[2]);
        }
        print_overall_help(out);
        return CTL_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        fprintf(out, "%s %s\n", CTL_PROGRAM, RSL_VERSION);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, argv[1]) == 0)
            ctx.command = &commands[i];
    if (ctx.command == NULL)
        return ctl_usage_error(&ctx, "unknown command '%s'", argv[1]);

    /* --help wins over everything else on the line, even missing options. */
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (is_help(argv[i])) {
            print_command_help(out, ctx.command);
            return CTL_EXIT_OK;
        }
    }
    /* At most argc positionals: sized so parse_arguments never checks. */
    ctx.positional = calloc((size_t)argc, sizeof(char *));
    if (ctx.positional == NULL)
        return ctl_fail(&ctx, "out of memory");
    rc = parse_arguments(&ctx, argc, argv, 2);
    if (rc == CTL_EXIT_OK)
        rc = ctx.command->run(&ctx);
    free(ctx.positional);
    if (fflush(out) != 0 && rc == CTL_EXIT_OK)
        rc = ctl_fail(&ctx, "writing the output failed");
    return rc;
}

/* ------------------------------------------------------------------------ */
/* keygen                                                                   */
/* ------------------------------------------------------------------------ */

int ctl_cmd_keygen(struct ctl_ctx *ctx)
{
    struct rsl_error err = {0};
    const char *dir = ctl_option(ctx, "out");
    char pub_path[4096];
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    char key_id[RSL_KEY_ID_HEX_LEN + 1];

    /* rsl_keys_generate refuses to overwrite and cleans up after itself, so
     * a failed keygen can simply be rerun. */
    if (rsl_keys_generate(dir, &err) != RSL_OK)
        return ctl_fail(ctx, "%s", err.text);
    /* Read the public key back from disk: this also proves the files load. */
    if (rsl_keys_path(dir, "sign.pub", pub_path, sizeof(pub_path)) != RSL_OK ||
        rsl_public_key_load_pem(pub_path, pub, &err) != RSL_OK)
        return ctl_fail(ctx, "%s", err.text[0] != '\0' ? err.text : "path too long");
    rsl_key_id(pub, key_id);
    fprintf(ctx->out, "wrote sign.key sign.pub curve.key curve.pub in %s\nkey_id = %s\n", dir,
            key_id);
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* enroll                                                                   */
/* ------------------------------------------------------------------------ */

/* Can `value` be written as "key = value" and read back unchanged by the
 * INI loader (inih: trims blanks, ';' after a blank starts a comment)? */
static const char *ini_value_problem(const char *value)
{
    size_t n = strlen(value);
    if (n == 0)
        return "is empty";
    if (value[0] == ' ' || value[0] == '\t' || value[n - 1] == ' ' || value[n - 1] == '\t')
        return "has leading or trailing blanks";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return "contains a control character (newline, tab, ...)";
        if (c == ';' && i > 0 && (value[i - 1] == ' ' || value[i - 1] == '\t'))
            return "contains ' ;', which the INI loader reads as a comment";
    }
    return NULL;
}

/* With --taxonomy-nations: is `code` in that nations.csv? */
static int check_nation_listed(struct ctl_ctx *ctx, const char *file, const char *code)
{
    struct rsl_error err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    struct rsl_taxonomy *tax = NULL;
    int rc = CTL_EXIT_FAILURE;

    if (rsl_file_read_all(file, RSL_TAXONOMY_MAX_BYTES, &buf, &len, &err) != RSL_OK) {
        ctl_fail(ctx, "%s", err.text);
        goto out;
    }
    tax = calloc(1, sizeof(*tax));
    if (tax == NULL) {
        ctl_fail(ctx, "out of memory");
        goto out;
    }
    if (rsl_taxonomy_parse_nations((const char *)buf, len, file, tax, &err) != RSL_OK) {
        ctl_fail(ctx, "%s", err.text);
        goto out;
    }
    if (rsl_taxonomy_nation_index(tax, code) < 0) {
        ctl_fail(ctx, "%s: nation %s is not in the list", file, code);
        goto out;
    }
    rc = CTL_EXIT_OK;
out:
    rsl_taxonomy_free(&tax);
    free(buf);
    return rc;
}

int ctl_cmd_enroll(struct ctl_ctx *ctx)
{
    struct rsl_error err = {0};
    const char *agent_id = ctl_option(ctx, "agent-id");
    const char *nation = ctl_option(ctx, "nation");
    const char *organisation = ctl_option(ctx, "organisation");
    const char *keys = ctl_option(ctx, "keys");
    const char *nations_file = ctl_option(ctx, "taxonomy-nations");
    char path[4096];
    uint8_t pub[RSL_ED25519_PUBLIC_BYTES];
    char pub_b64[((RSL_ED25519_PUBLIC_BYTES + 2) / 3) * 4 + 1];
    char key_id[RSL_KEY_ID_HEX_LEN + 1];
    char curve[RSL_Z85_KEY_LEN + 1];
    char now[40];
    const char *problem;

    if (!rsl_valid_agent_id(agent_id))
        return ctl_usage_error(ctx,
                               "--agent-id '%s': 1-%d letters, digits, '.', '_' or '-', "
                               "starting with a letter or digit",
                               agent_id, RSL_AGENT_ID_MAX);
    if (!rsl_valid_nation_code(nation))
        return ctl_usage_error(ctx, "--nation '%s': must be 3 uppercase letters (ISO 3166-1 alpha-3)",
                               nation);
    if ((problem = ini_value_problem(organisation)) != NULL)
        return ctl_usage_error(ctx, "--organisation %s", problem);
    /* The line "organisation = NAME" must fit the INI loader's line limit. */
    if (strlen(organisation) > RSL_ORGANISATION_MAX ||
        strlen(organisation) + strlen("organisation = ") > RSL_INI_MAX_LINE)
        return ctl_usage_error(ctx, "--organisation: longer than %zu characters",
                               (size_t)RSL_INI_MAX_LINE - strlen("organisation = "));
    if (nations_file != NULL && check_nation_listed(ctx, nations_file, nation) != CTL_EXIT_OK)
        return CTL_EXIT_FAILURE;

    if (rsl_keys_path(keys, "sign.pub", path, sizeof(path)) != RSL_OK)
        return ctl_fail(ctx, "%s: path too long", keys);
    if (rsl_public_key_load_pem(path, pub, &err) != RSL_OK)
        return ctl_fail(ctx, "%s", err.text);
    if (rsl_keys_path(keys, "curve.pub", path, sizeof(path)) != RSL_OK)
        return ctl_fail(ctx, "%s: path too long", keys);
    if (rsl_curve_load_public(path, curve, &err) != RSL_OK)
        return ctl_fail(ctx, "%s", err.text);

    /* The comment line records what was enrolled and when, so an operator
     * reading agents.conf later can match the key_id in logs and audits. */
    rsl_base64_encode(pub, sizeof(pub), pub_b64);
    rsl_key_id(pub, key_id);
    rsl_format_time_ms(rsl_now_ms(), now, sizeof(now));
    fprintf(ctx->out,
            "; %s enrolled %s, sign key_id %s\n"
            "[agent %s]\n"
            "nation = %s\n"
            "organisation = %s\n"
            "sign_key = %s\n"
            "curve_key = %s\n",
            agent_id, now, key_id, agent_id, nation, organisation, pub_b64, curve);
    return CTL_EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* token, hash-token                                                        */
/* ------------------------------------------------------------------------ */

/* The aggregator stores SHA-256 of the token text exactly as a client sends
 * it after "Bearer ", so the hash is over the characters, not the random
 * bytes behind them. */
static void print_sha256_hex(FILE *f, const char *text)
{
    uint8_t digest[32];
    char hex[65];
    rsl_sha256(text, strlen(text), digest);
    rsl_hex_encode(digest, sizeof(digest), hex);
    fprintf(f, "%s", hex);
}

/* staff | nation:XXX | partner:ID, as aggregator.conf accepts them. */
static bool valid_role(const char *role)
{
    if (strcmp(role, "staff") == 0)
        return true;
    if (strncmp(role, "nation:", 7) == 0)
        return rsl_valid_nation_code(role + 7);
    if (strncmp(role, "partner:", 8) == 0)
        return rsl_valid_partner_id(role + 8);
    return false;
}

static bool valid_token_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

int ctl_cmd_token(struct ctl_ctx *ctx)
{
    const char *name = ctl_option(ctx, "name");
    const char *role = ctl_option(ctx, "role");
    uint8_t random[TOKEN_RANDOM_BYTES];
    char token[((TOKEN_RANDOM_BYTES + 2) / 3) * 4 + 1];

    if (name != NULL && !valid_token_name(name))
        return ctl_usage_error(ctx, "--name '%s': 1-%d letters, digits, '.', '_' or '-'", name,
                               TOKEN_NAME_MAX);
    if (role != NULL && !valid_role(role))
        return ctl_usage_error(ctx, "--role '%s': must be staff, nation:XXX or partner:ID", role);
    /* 256 bits from the OS-seeded CSPRNG: guessing is hopeless, so the
     * aggregator may compare plain SHA-256 hashes (no slow KDF needed). */
    /* base64url without padding: safe in headers, URLs and shells. A token
     * starting with '-' would read as an option on every command line it is
     * pasted into (`hash-token`, `curl -H`), so such draws are repeated: the
     * first character loses 1 of 64 values, the token keeps > 255 bits. */
    do {
        if (RAND_bytes(random, sizeof(random)) != 1)
            return ctl_fail(ctx, "no random bytes from OpenSSL RAND_bytes");
        rsl_base64_encode(random, sizeof(random), token);
    } while (token[0] == '+');
    rsl_secure_zero(random, sizeof(random));
    for (char *p = token; *p != '\0'; p++) {
        if (*p == '+')
            *p = '-';
        else if (*p == '/')
            *p = '_';
        else if (*p == '=')
            *p = '\0';
    }
    fprintf(ctx->out, "%s\n", token);
    if (name != NULL)
        fprintf(ctx->out, "[token %s]\n", name);
    if (role != NULL)
        fprintf(ctx->out, "role = %s\n", role);
    fprintf(ctx->out, "sha256 = ");
    print_sha256_hex(ctx->out, token);
    fprintf(ctx->out, "\n");
    rsl_secure_zero(token, sizeof(token));
    return CTL_EXIT_OK;
}

int ctl_cmd_hash_token(struct ctl_ctx *ctx)
{
    char line[1024];
    const char *token = ctx->positional[0];
    int rc = CTL_EXIT_OK;

    /* Tokens on the command line end up in shell history and /proc; "-"
     * offers a way around both. */
    if (strcmp(token, "-") == 0) {
        if (fgets(line, sizeof(line), stdin) == NULL) {
            rc = ctl_fail(ctx, "standard input: no token");
            goto out;
        }
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] != '\n' && !feof(stdin)) {
            rc = ctl_fail(ctx, "standard input: token longer than %zu bytes", sizeof(line) - 2);
            goto out;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        token = line;
    }
    if (token[0] == '\0') {
        rc = ctl_usage_error(ctx, "empty token");
        goto out;
    }
    print_sha256_hex(ctx->out, token);
    fprintf(ctx->out, "\n");
out:
    rsl_secure_zero(line, sizeof(line));
    return rc;
}
