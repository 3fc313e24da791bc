/*
 * keys.c - key folders: generating the four key files, checking private-key
 * permissions, loading CURVE keys.
 *
 * Files written here are the operator's long-term identity, so:
 *  - they are never overwritten: each is created with O_EXCL, and a failed
 *    generation removes what it created, so a retry starts clean;
 *  - they are durable before we report success: each file is fsync'ed, then
 *    the folder (so the new directory entries survive a power loss);
 *  - the modes are exact (0600 private, 0644 public) whatever the umask: we
 *    fchmod after creating;
 *  - the Ed25519 files are exactly what `openssl genpkey -algorithm ed25519`
 *    and `openssl pkey -pubout` write (PKCS#8 "PRIVATE KEY", SPKI "PUBLIC
 *    KEY" PEM), so operators can use their usual tools on them.
 *
 * Permission checks open the file and fstat the descriptor rather than
 * stat'ing the path, so what is checked is what is read. Symbolic links are
 * followed (Kubernetes secrets and some configuration managers install keys
 * as links); the target must be a regular file with no group/other bits.
 *
 * Secrets (PEM text, Z85 secret keys) live only in buffers that are zeroed
 * before they are released.
 */
#include "rsl/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zmq.h>

#include "rsl/util.h"

static const char *const key_file_names[] = {"sign.key", "sign.pub", "curve.key", "curve.pub"};
#define KEY_FILE_COUNT (sizeof(key_file_names) / sizeof(key_file_names[0]))

/* A CURVE key file is one line: 40 characters and an optional newline. We
 * read a little more so that an over-long file is seen as such. */
#define CURVE_FILE_READ_MAX 128

int rsl_keys_path(const char *dir, const char *name, char *out, size_t outlen)
{
    if (dir == NULL || dir[0] == '\0' || name == NULL || out == NULL || outlen == 0)
        return RSL_EINVAL;
    size_t dlen = strlen(dir);
    /* "keys/" + "sign.key" reads better as "keys/sign.key" than "keys//sign.key". */
    while (dlen > 0 && dir[dlen - 1] == '/')
        dlen--;
    /* dlen 0 with a non-empty dir: the root folder, giving "/sign.key". */
    int n = snprintf(out, outlen, "%.*s/%s", (int)dlen, dir, name);
    if (n < 0 || (size_t)n >= outlen)
        return RSL_ETOOBIG;
    return RSL_OK;
}

/* Open `path` read-only and check it: a regular file, and when `private_key`
 * is set, no permission bits for group or others. Returns the descriptor
 * (>= 0) or a negative RSL_E* code with the message in err. O_NONBLOCK keeps
 * a FIFO planted in place of a key from hanging us before the S_ISREG check. */
static int key_file_open(const char *path, bool private_key, struct rsl_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int code = errno == ENOENT ? RSL_ENOENT : (errno == EACCES ? RSL_EPERM : RSL_EIO);
        return rsl_error_set(err, code, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return rsl_error_set(err, RSL_EPERM, "%s: not a regular file", path);
    }
    unsigned mode = (unsigned)(st.st_mode & 07777);
    if (private_key && (mode & 077) != 0) {
        close(fd);
        if ((mode & 044) != 0)
            return rsl_error_set(err, RSL_EPERM,
                                 "%s: mode %04o is readable by group/others; chmod 600 %s", path,
                                 mode, path);
        return rsl_error_set(err, RSL_EPERM,
                             "%s: mode %04o gives group/others access; chmod 600 %s", path, mode,
                             path);
    }
    return fd;
}

int rsl_key_file_check_private(const char *path, struct rsl_error *err)
{
    if (path == NULL)
        return rsl_error_set(err, RSL_EINVAL, "key file: no path");
    int fd = key_file_open(path, true, err);
    if (fd < 0)
        return fd;
    close(fd);
    return RSL_OK;
}

int rsl_z85_key_valid(const char *s)
{
    static const char alphabet[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < RSL_Z85_KEY_LEN; i++) {
        if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
            return 0;
    }
    if (s[RSL_Z85_KEY_LEN] != '\0')
        return 0;
    /* Alphabet alone is not enough: a 5-character group can denote a value
     * above 2^32 ("#####"), which zmq_z85_decode rejects. */
    uint8_t raw[32];
    int ok = zmq_z85_decode(raw, s) != NULL;
    rsl_secure_zero(raw, sizeof(raw));
    return ok;
}

/* Read a CURVE key file into out: exactly 40 Z85 characters, then at most
 * one "\n" (or "\r\n", for files edited on Windows). */
static int curve_load(const char *path, bool secret, char out[RSL_Z85_KEY_LEN + 1],
                      struct rsl_error *err)
{
    char buf[CURVE_FILE_READ_MAX + 1];
    size_t len = 0;
    int rc;
    if (path == NULL || out == NULL)
        return rsl_error_set(err, RSL_EINVAL, "CURVE key: no path");
    out[0] = '\0';
    int fd = key_file_open(path, secret, err);
    if (fd < 0)
        return fd;
    if (rsl_read_full(fd, buf, CURVE_FILE_READ_MAX, &len) != 0) {
        rc = rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    buf[len] = '\0';
    if (len > 0 && buf[len - 1] == '\n')
        buf[--len] = '\0';
    if (len > 0 && buf[len - 1] == '\r')
        buf[--len] = '\0';
    if (len != RSL_Z85_KEY_LEN || !rsl_z85_key_valid(buf)) {
        rc = rsl_error_set(err, RSL_EPARSE, "%s: not a CURVE key (one line of 40 Z85 characters)",
                           path);
        goto out;
    }
    memcpy(out, buf, RSL_Z85_KEY_LEN + 1);
    rc = RSL_OK;
out:
    rsl_secure_zero(buf, sizeof(buf));
    close(fd);
    return rc;
}

int rsl_curve_load_secret(const char *path, char out[RSL_Z85_KEY_LEN + 1], struct rsl_error *err)
{
    return curve_load(path, true, out, err);
}

int rsl_curve_load_public(const char *path, char out[RSL_Z85_KEY_LEN + 1], struct rsl_error *err)
{
    return curve_load(path, false, out, err);
}

/* ------------------------------------------------------------------------ */
/* Generation                                                               */
/* ------------------------------------------------------------------------ */

/* Create `path` (must not exist), write all of data, set the exact mode,
 * fsync. On failure the partly written file is removed. */
static int write_new_file(const char *path, const void *data, size_t len, mode_t mode,
                          struct rsl_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == EEXIST)
            return rsl_error_set(err, RSL_EEXIST, "%s: already exists; refusing to overwrite a key",
                                 path);
        return rsl_error_set(err, RSL_EIO, "%s: %s", path, strerror(errno));
    }
    int rc = RSL_OK;
    const uint8_t *p = data;
    size_t left = len;
    /* The umask may have removed bits from 0644; for 0600 it can only have
     * removed nothing we wanted. Set the exact mode either way. */
    if (fchmod(fd, mode) != 0)
        goto fail;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto fail;
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    return RSL_OK;
fail:
    rc = rsl_error_set(err, errno == ENOSPC ? RSL_ENOSPC : RSL_EIO, "%s: %s", path,
                       strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(path);
    return rc;
}

/* fsync the folder holding `dir`, so that a key folder rsl_mkdir_p just
 * created survives a power loss too. Best effort: the parent may be one we
 * cannot open for reading (a drop box), and the keys themselves are already
 * durable inside `dir`. */
static void fsync_parent(const char *dir)
{
    char parent[4096];
    if (rsl_strlcpy(parent, dir, sizeof(parent)) != RSL_OK)
        return;
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/')
        parent[--n] = '\0';
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        rsl_strlcpy(parent, ".", sizeof(parent));
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    (void)rsl_fsync_dir(parent, NULL);
}

/* PEM text of a key, written by `write_pem` into a memory BIO. The BIO's
 * buffer is cleared when freed (OpenSSL's BUF_MEM uses clear_free), which
 * matters for the private key. Returns a malloc'd NUL-terminated copy in
 * *out: the caller zeroes and frees it. */
static int pem_to_buffer(EVP_PKEY *pkey, bool private_key, char **out, size_t *out_len)
{
    int rc = RSL_ECRYPTO;
    BIO *bio = BIO_new(BIO_s_secmem());
    char *copy = NULL;
    if (bio == NULL)
        goto out;
    int ok = private_key ? PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_bio_PUBKEY(bio, pkey);
    if (ok != 1)
        goto out;
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || data == NULL)
        goto out;
    copy = malloc((size_t)n + 1);
    if (copy == NULL) {
        rc = RSL_ENOMEM;
        goto out;
    }
    memcpy(copy, data, (size_t)n);
    copy[n] = '\0';
    *out = copy;
    *out_len = (size_t)n;
    copy = NULL; /* transferred */
    rc = RSL_OK;
out:
    BIO_free(bio);
    free(copy);
    return rc;
}

int rsl_keys_generate(const char *dir, struct rsl_error *err)
{
    int rc;
    char paths[KEY_FILE_COUNT][4096];
    bool created[KEY_FILE_COUNT] = {false};
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    char *priv_pem = NULL, *pub_pem = NULL;
    size_t priv_len = 0, pub_len = 0;
    char curve_pub[RSL_Z85_KEY_LEN + 2] = {0};
    char curve_sec[RSL_Z85_KEY_LEN + 2] = {0};

    if (dir == NULL || dir[0] == '\0')
        return rsl_error_set(err, RSL_EINVAL, "keygen: no folder given");
    for (size_t i = 0; i < KEY_FILE_COUNT; i++) {
        if (rsl_keys_path(dir, key_file_names[i], paths[i], sizeof(paths[i])) != RSL_OK)
            return rsl_error_set(err, RSL_ETOOBIG, "%s: path too long", dir);
    }
    /* Refuse before generating anything if any file is there (a dangling
     * symlink counts too: O_EXCL would refuse it later anyway). The O_EXCL
     * opens below close the race with another keygen. */
    for (size_t i = 0; i < KEY_FILE_COUNT; i++) {
        struct stat st;
        if (lstat(paths[i], &st) == 0)
            return rsl_error_set(err, RSL_EEXIST,
                                 "%s: already exists; refusing to overwrite a key", paths[i]);
    }
    if ((rc = rsl_mkdir_p(dir, 0700, err)) != RSL_OK)
        return rc;

    /* Ed25519 signing key. */
    rc = RSL_ECRYPTO;
    ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &pkey) != 1) {
        rsl_error_set(err, rc, "keygen: Ed25519 key generation failed");
        goto out;
    }
    if ((rc = pem_to_buffer(pkey, true, &priv_pem, &priv_len)) != RSL_OK ||
        (rc = pem_to_buffer(pkey, false, &pub_pem, &pub_len)) != RSL_OK) {
        /* Our own copy failing is RSL_ENOMEM, not a cryptographic failure. */
        if (rc == RSL_ENOMEM)
            rsl_error_set(err, rc, "keygen: out of memory");
        else
            rsl_error_set(err, rc, "keygen: PEM encoding failed");
        goto out;
    }
    rc = RSL_ECRYPTO;

    /* CURVE transport key pair, one line each. */
    if (zmq_curve_keypair(curve_pub, curve_sec) != 0) {
        rsl_error_set(err, rc, "keygen: zmq_curve_keypair: %s (libzmq without CURVE?)",
                      zmq_strerror(zmq_errno()));
        goto out;
    }
    curve_pub[RSL_Z85_KEY_LEN] = '\n';
    curve_sec[RSL_Z85_KEY_LEN] = '\n';

    const void *data[KEY_FILE_COUNT] = {priv_pem, pub_pem, curve_sec, curve_pub};
    const size_t lens[KEY_FILE_COUNT] = {priv_len, pub_len, RSL_Z85_KEY_LEN + 1,
                                         RSL_Z85_KEY_LEN + 1};
    const mode_t modes[KEY_FILE_COUNT] = {0600, 0644, 0600, 0644};
    for (size_t i = 0; i < KEY_FILE_COUNT; i++) {
        if ((rc = write_new_file(paths[i], data[i], lens[i], modes[i], err)) != RSL_OK)
            goto out;
        created[i] = true;
    }
    if ((rc = rsl_fsync_dir(dir, err)) != RSL_OK)
        goto out;
    fsync_parent(dir);
    rc = RSL_OK;
out:
    if (rc != RSL_OK) {
        /* Leave no half key folder behind: a retry would refuse it. */
        for (size_t i = 0; i < KEY_FILE_COUNT; i++)
            if (created[i])
                unlink(paths[i]);
    }
    if (priv_pem != NULL) {
        rsl_secure_zero(priv_pem, priv_len);
        free(priv_pem);
    }
    free(pub_pem);
    rsl_secure_zero(curve_sec, sizeof(curve_sec));
    EVP_PKEY_free(pkey); /* OpenSSL clears the private key material */
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}
