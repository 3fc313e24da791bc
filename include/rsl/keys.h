/*
 * keys.h - key files on disk: generation, permission checks, CURVE keys.
 *
 * A key folder holds sign.key / sign.pub (Ed25519 PEM) and curve.key /
 * curve.pub (one line each: the 40-character Z85 CURVE secret / public key,
 * as zmq_curve_keypair makes). Private files are created 0600 and refused
 * when group- or world-readable.
 */
#ifndef RSL_KEYS_H
#define RSL_KEYS_H

#include "rsl/error.h"

#define RSL_Z85_KEY_LEN 40

/* Write the four key files into `dir` (created 0700 if missing). Refuses
 * (RSL_EEXIST) if any of them already exists: keys are never overwritten. */
int rsl_keys_generate(const char *dir, struct rsl_error *err);

/* RSL_OK if `path` is a regular file whose mode grants nothing to group or
 * others; RSL_EPERM with "PATH: mode 0640 is readable by group/others; chmod 600" */
int rsl_key_file_check_private(const char *path, struct rsl_error *err);

/* Read a Z85 CURVE key file (one line, 40 characters, trailing newline
 * allowed). Secret files get the private-permission check. */
int rsl_curve_load_secret(const char *path, char out[RSL_Z85_KEY_LEN + 1], struct rsl_error *err);
int rsl_curve_load_public(const char *path, char out[RSL_Z85_KEY_LEN + 1], struct rsl_error *err);

/* True if s is exactly 40 characters of the Z85 alphabet that decode. */
int rsl_z85_key_valid(const char *s);

/* Paths of the four files in a key folder: writes "<dir>/<name>". */
int rsl_keys_path(const char *dir, const char *name, char *out, size_t outlen);

#endif
