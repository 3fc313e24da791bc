/*
 * replay_main.c - runs a fuzz target's LLVMFuzzerTestOneInput over files
 * (or every file in folders) given as arguments, so corpora replay as plain
 * tests under gcc, with or without sanitizers. Prints one line per file
 * count and exits non-zero if nothing was replayed.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rsl/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    struct rsl_error err = {0};
    if (rsl_file_read_all(path, 16 * 1024 * 1024, &buf, &len, &err) != RSL_OK) {
        fprintf(stderr, "replay: %s\n", err.text);
        return -1;
    }
    /* Copy to an exact-size heap block so ASan catches reads past the end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, failures = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: not found\n", argv[i]);
            failures++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failures += replay_file(argv[i]) != 0;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
            failures += replay_file(path) != 0;
            files++;
        }
        if (d != NULL)
            closedir(d);
    }
    printf("replayed %d inputs, %d unreadable\n", files, failures);
    return (files == 0 || failures != 0) ? 1 : 0;
}
