/*
 * taxonomy.h - the indicator taxonomy and the nation list (shipped as
 * share/indicators.csv and share/nations.csv; operators edit their copies).
 *
 * Both files are CSV with a header row (RFC 4180 quoting allowed). Columns
 * are found by header name, so operators may reorder them or add columns.
 * indicators.csv: id, requirement (BR1..BR7 or X), unit, direction
 * (higher_is_better | lower_is_better), amber, red, method (sum | mean |
 * median | min | max), max_age_hours (empty: 72), description.
 * nations.csv: code (3 uppercase letters), name, eu_member (yes|no).
 * Bad rows are errors naming file:line and column; duplicate ids too;
 * thresholds must be ordered for their direction (higher_is_better: red <=
 * amber; lower_is_better: amber <= red).
 */
#ifndef RSL_TAXONOMY_H
#define RSL_TAXONOMY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rsl/error.h"

enum rsl_direction { RSL_HIGHER_IS_BETTER = 0, RSL_LOWER_IS_BETTER = 1 };
enum rsl_method { RSL_METHOD_SUM = 0, RSL_METHOD_MEAN, RSL_METHOD_MEDIAN, RSL_METHOD_MIN, RSL_METHOD_MAX };
enum rsl_status { RSL_STATUS_GREEN = 0, RSL_STATUS_AMBER = 1, RSL_STATUS_RED = 2 };

#define RSL_TAXONOMY_MAX_BYTES (4 * 1024 * 1024)
#define RSL_REQUIREMENT_MAX 8

struct rsl_indicator {
    char *id;
    char requirement[RSL_REQUIREMENT_MAX];  /* "BR1".."BR7" or "X" */
    char *unit;
    enum rsl_direction direction;
    double amber;
    double red;
    enum rsl_method method;
    int64_t max_age_ms;
    char *description;
};

struct rsl_nation {
    char code[4];
    char *name;
    bool eu_member;
};

struct rsl_taxonomy {
    struct rsl_indicator *indicators; /* sorted by id */
    size_t n_indicators;
    struct rsl_nation *nations;       /* sorted by code */
    size_t n_nations;
};

/* Load both files. Free with rsl_taxonomy_free. */
int rsl_taxonomy_load(const char *indicators_csv, const char *nations_csv,
                      struct rsl_taxonomy **out, struct rsl_error *err);
/* Same from memory buffers (used by the fuzz targets); `name` is used in messages. */
int rsl_taxonomy_parse_indicators(const char *buf, size_t len, const char *name,
                                  struct rsl_taxonomy *tax, struct rsl_error *err);
int rsl_taxonomy_parse_nations(const char *buf, size_t len, const char *name,
                               struct rsl_taxonomy *tax, struct rsl_error *err);
void rsl_taxonomy_free(struct rsl_taxonomy **tax);

/* Look-ups (binary search); index -1 / NULL when absent. */
int rsl_taxonomy_indicator_index(const struct rsl_taxonomy *tax, const char *id);
const struct rsl_indicator *rsl_taxonomy_indicator(const struct rsl_taxonomy *tax, const char *id);
int rsl_taxonomy_nation_index(const struct rsl_taxonomy *tax, const char *code);

/* Status of a value by the indicator's thresholds and direction:
 * higher_is_better: red if value < red, amber if value < amber, else green;
 * lower_is_better: red if value > red, amber if value > amber, else green. */
enum rsl_status rsl_indicator_status(const struct rsl_indicator *ind, double value);

const char *rsl_status_name(enum rsl_status s);      /* "green" "amber" "red" */
const char *rsl_method_name(enum rsl_method m);      /* "sum" ... */
const char *rsl_direction_name(enum rsl_direction d);

#endif
