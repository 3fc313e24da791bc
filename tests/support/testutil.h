/*
 * testutil.h - helpers every unit test needs: a private temporary folder per
 * test and its removal. Linked into every tests/unit/test_*.c executable.
 */
#ifndef RSL_TESTUTIL_H
#define RSL_TESTUTIL_H

#include <stddef.h>

/* Create "/tmp/rsl-test-<tag>-XXXXXX" (mode 0700) and write its path into
 * out. Returns 0, or -1 if it could not be made or does not fit. */
int rsl_test_mkdtemp(char *out, size_t outlen, const char *tag);

/* Remove a folder and everything below it (symlinks are not followed). */
void rsl_test_rmtree(const char *dir);

/* Write `text` to `path` (created or truncated); 0 or -1. */
int rsl_test_write_file(const char *path, const char *text);

#endif
