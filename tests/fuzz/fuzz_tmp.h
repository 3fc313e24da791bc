/*
 * fuzz_tmp.h - a private temp folder for fuzz targets whose code under test
 * reads files by path only (the config and registry loaders).
 *
 * Each process makes one folder under $TMPDIR (scripts/fuzz.sh points it at
 * a per-target folder it empties afterwards; default /tmp) and removes it
 * with every file it wrote at exit, so a fuzz run or a ctest replay leaves
 * nothing behind even when the loader under test is given the same
 * relative names over and over. Header-only (static functions) because
 * every fuzz_<target>.c is its own executable; the file name does not match
 * the fuzz_*.c glob, so it is no target itself.
 *
 * The loaders accept paths from their input (taxonomy = ..., includes), so
 * setup also points stdin at /dev/null: an input naming /dev/stdin must not
 * make a run wait for a terminal.
 */
#ifndef FUZZ_TMP_H
#define FUZZ_TMP_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_TMP_MAX_FILES 8

static char fuzz_tmp_folder[512];
static char fuzz_tmp_files[FUZZ_TMP_MAX_FILES][64];
static size_t fuzz_tmp_n_files;

static inline void fuzz_tmp_cleanup(void)
{
    char path[1100]; /* generous: gcc -O2 bounds each %s by its array, not by its use */
    for (size_t i = 0; i < fuzz_tmp_n_files; i++) {
        snprintf(path, sizeof(path), "%s/%s", fuzz_tmp_folder, fuzz_tmp_files[i]);
        unlink(path);
    }
    /* A loader that fails half-way may leave nothing else: if it did,
     * rmdir fails and the folder shows up in the caller's TMPDIR. */
    if (fuzz_tmp_folder[0] != '\0')
        rmdir(fuzz_tmp_folder);
}

/* The folder, made on first use; aborts if it cannot be (a broken machine,
 * not a finding). */
static inline const char *fuzz_tmp_dir(void)
{
    if (fuzz_tmp_folder[0] != '\0')
        return fuzz_tmp_folder;
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    int n = snprintf(fuzz_tmp_folder, sizeof(fuzz_tmp_folder), "%s/rsl-fuzz.XXXXXX", base);
    if (n < 0 || (size_t)n >= sizeof(fuzz_tmp_folder) - 64 || mkdtemp(fuzz_tmp_folder) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0)
        abort();
    close(devnull);
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp_folder;
}

/* Put the path of `name` in the folder into `path` and remove the file at
 * exit, for files the code under test creates itself (a SQLite store and
 * its -wal, -shm, -journal companions). */
static inline void fuzz_tmp_path(const char *name, char *path, size_t pathlen)
{
    const char *dir = fuzz_tmp_dir();
    size_t i;
    for (i = 0; i < fuzz_tmp_n_files; i++)
        if (strcmp(fuzz_tmp_files[i], name) == 0)
            break;
    if (i == fuzz_tmp_n_files) {
        if (fuzz_tmp_n_files == FUZZ_TMP_MAX_FILES || strlen(name) >= sizeof(fuzz_tmp_files[0]))
            abort();
        snprintf(fuzz_tmp_files[fuzz_tmp_n_files++], sizeof(fuzz_tmp_files[0]), "%s", name);
    }
    int n = snprintf(path, pathlen, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= pathlen)
        abort();
}

/* Write `len` bytes to the file `name` in the folder (replacing it) and put
 * its path in `path`. */
static inline void fuzz_tmp_write(const char *name, const void *data, size_t len, char *path,
                                  size_t pathlen)
{
    fuzz_tmp_path(name, path, pathlen);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w <= 0)
            abort();
        p += w;
        len -= (size_t)w;
    }
    close(fd);
}

/* A small but real taxonomy beside the inputs, so `[taxonomy] path =
 * indicators.csv` in a config under test resolves to it (and nations.csv
 * "beside path" too). */
static const char fuzz_indicators_csv[] =
    "id,requirement,unit,direction,amber,red,method,max_age_hours,description\n"
    "energy.oil_stock_days,BR2,days,higher_is_better,90,60,median,72,Oil stocks\n"
    "energy.gas_storage_fill_pct,BR2,pct,higher_is_better,80,50,mean,,Gas storage\n"
    "health.icu_beds_free_pct,BR5,pct,higher_is_better,20,10,min,24,Free ICU beds\n"
    "comms.public_warning_reach_pct,BR7,pct,higher_is_better,95,80,min,24,Warning reach\n";
static const char fuzz_nations_csv[] =
    "code,name,eu_member\nDEU,Germany,yes\nFRA,France,yes\nNOR,Norway,no\n";

static inline void fuzz_tmp_write_taxonomy(void)
{
    char path[640];
    fuzz_tmp_write("indicators.csv", fuzz_indicators_csv, sizeof(fuzz_indicators_csv) - 1, path,
                   sizeof(path));
    fuzz_tmp_write("nations.csv", fuzz_nations_csv, sizeof(fuzz_nations_csv) - 1, path,
                   sizeof(path));
}

/* Errors from a loader are one non-empty line. (Most start with the
 * config's path, but a taxonomy file named in it is named itself.) */
static inline void fuzz_check_error(const char *text)
{
    /* RSL_FUZZ_VERBOSE=1 shows each verdict when replaying a corpus. */
    if (getenv("RSL_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "fuzz: refused: %s\n", text);
    if (text[0] == '\0' || strchr(text, '\n') != NULL) {
        fprintf(stderr, "fuzz: error message empty or not one line: '%s'\n", text);
        abort();
    }
}

static inline void fuzz_note_ok(void)
{
    if (getenv("RSL_FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "fuzz: loaded\n");
}

#endif
