/*
 * fuzz_taxonomy.c - taxonomy and nation-list CSV. The first byte picks the
 * file kind, the rest is the file.
 */
#include <stdint.h>
#include <stdlib.h>

#include "rsl/taxonomy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct rsl_taxonomy *tax = calloc(1, sizeof(*tax));
    if (tax == NULL)
        return 0;
    struct rsl_error err = {0};
    const char *csv = (const char *)data + 1;
    if (data[0] & 1) {
        if (rsl_taxonomy_parse_nations(csv, size - 1, "fuzz", tax, &err) == RSL_OK && tax->n_nations > 0)
            (void)rsl_taxonomy_nation_index(tax, tax->nations[0].code);
    } else {
        if (rsl_taxonomy_parse_indicators(csv, size - 1, "fuzz", tax, &err) == RSL_OK) {
            for (size_t i = 0; i < tax->n_indicators; i++) {
                (void)rsl_indicator_status(&tax->indicators[i], 50.0);
                if (rsl_taxonomy_indicator(tax, tax->indicators[i].id) == NULL)
                    abort(); /* every loaded id must be found again */
            }
        }
    }
    rsl_taxonomy_free(&tax);
    return 0;
}
