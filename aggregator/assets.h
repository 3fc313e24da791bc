/*
 * assets.h - files the aggregator serves from its own binary: the
 * dashboard (index.html, app.js, app.css) and the OpenAPI document
 * (openapi.json). The sources live in aggregator/dashboard/; at build time
 * aggregator/dashboard/embed.cmake turns each into a byte array in the
 * generated file gen/agg_assets.c (no tool beyond CMake itself), so a
 * deployed aggregator needs no web root, no CDN and no network.
 */
#ifndef AGG_ASSETS_H
#define AGG_ASSETS_H

#include <stddef.h>

struct agg_asset {
    const char *name;                  /* file name: "app.js" */
    const unsigned char *data;         /* len bytes, then a NUL (not counted) */
    size_t len;
    const char *etag;                  /* quoted strong ETag from the content's SHA-256 */
};

extern const struct agg_asset agg_assets[];
extern const size_t agg_n_assets;

#endif
