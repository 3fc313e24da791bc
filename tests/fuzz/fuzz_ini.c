/*
 * fuzz_ini.c - INI configuration and registry files: the strict loader on
 * inih, section-name splitting and list iteration as every handler uses them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rsl/ini.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_handler(void *ctx, const char *section, const char *key, const char *value,
                        int line, struct rsl_error *err)
{
    int *calls = ctx;
    char kind[32], name[128], item[64];
    (*calls)++;
    if (line <= 0 || key[0] == '\0')
        abort(); /* the loader promised a real line and a key */
    if (rsl_ini_section_split(section, kind, sizeof(kind), name, sizeof(name)) != RSL_OK)
        return rsl_error_set(err, RSL_ECONFIG, "section name too long");
    const char *cursor = value;
    int rc;
    while ((rc = rsl_list_next(&cursor, item, sizeof(item))) == 1)
        ;
    if (rc < 0)
        return rsl_error_set(err, RSL_ECONFIG, "list item too long");
    /* Exercise the error path the way real handlers reject unknown keys. */
    if (strcmp(key, "reject") == 0)
        return rsl_error_set(err, RSL_ECONFIG, "unknown key '%s' in [%s]", key, section);
    return RSL_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int calls = 0;
    struct rsl_error err = {0};
    (void)rsl_ini_parse_buffer((const char *)data, size, "fuzz.conf", fuzz_handler, &calls, &err);
    return 0;
}
