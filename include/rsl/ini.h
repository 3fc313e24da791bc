/*
 * ini.h - strict INI loading on top of inih.
 *
 * The loader reads a file with inih (';' starts a comment, also inline after
 * whitespace; '#' only at the start of a line, so Z85 keys survive) and calls
 * the program's handler for each key. The handler decides what is valid: it
 * returns RSL_OK, or an error whose message the loader prefixes with
 * "FILE:LINE: ". Unknown sections/keys must be errors in every handler.
 * Lines longer than RSL_INI_MAX_LINE, syntax errors, a missing or unreadable
 * file are errors too. The first error stops loading.
 */
#ifndef RSL_INI_H
#define RSL_INI_H

#include <stddef.h>

#include "rsl/error.h"

/* inih as shipped by Debian reads at most 199 characters a line. */
#define RSL_INI_MAX_LINE 198

/* Called for every `key = value` in order; `section` is the raw section
 * name ("agent", "collector fuel"), `line` the 1-based line number. */
typedef int (*rsl_ini_handler)(void *ctx, const char *section, const char *key,
                               const char *value, int line, struct rsl_error *err);

/* Load `path`. On failure returns RSL_ECONFIG (RSL_ENOENT for a missing
 * file) with "PATH:LINE: message" (or "PATH: message") in err. */
int rsl_ini_load(const char *path, rsl_ini_handler handler, void *ctx, struct rsl_error *err);

/* The same for `len` bytes already in memory (need not be NUL-terminated);
 * `name` stands for the file in messages. Used by rsl_ini_load and the fuzz
 * target. */
int rsl_ini_parse_buffer(const char *buf, size_t len, const char *name, rsl_ini_handler handler,
                         void *ctx, struct rsl_error *err);

/* Split a section name "collector fuel" into kind "collector" and name
 * "fuel" (both written NUL-terminated). A name-less section gives an empty
 * name. RSL_EINVAL if a part does not fit. */
int rsl_ini_section_split(const char *section, char *kind, size_t kindlen, char *name,
                          size_t namelen);

/* Iterate a comma-separated list: copies the next trimmed, non-empty item
 * into item and advances *cursor. Returns 1 for an item, 0 at the end,
 * RSL_ETOOBIG if an item does not fit. */
int rsl_list_next(const char **cursor, char *item, size_t itemlen);

#endif
