/*
 * backup_files.c - the file operations of backup and restore (backup_int.h): emptiness of a
 * destination, hard link or durable copy, fsync by path, a file's SHA-256.
 *
 * DESIGN: upload files are content-addressed and never rewritten in place (uploads.c writes a
 * temp name and renames; the sweep only unlinks), so a hard link shares nothing that can change:
 * the backup keeps its bytes whatever the server does next, at no cost in time or space. Across
 * filesystems (EXDEV) or where links are refused, the bytes are copied to a temp name, fsync'd
 * and renamed, so a half-written file never carries a blob's name. Restore hashes and installs
 * an open descriptor (backup_fd_sha256, backup_put_fd), never a path twice: what is checked is
 * what is installed. Runs on the CLI's thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/backup_int.h"
#include "store/store_int.h"

bool backup_dir_empty(const char *dir, bool create)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT || !create)
			return false;
		return store_mkdir_p(dir) == SOMA_OK;
	}
	bool empty = true;
	struct dirent *e;
	while (empty && (e = readdir(d)))
		empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
	closedir(d);
	errno = 0;
	return empty;
}

bool backup_fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool ok = fsync(fd) == 0;
	close(fd);
	return ok;
}

static bool copy_fd(int in, int out)
{
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return false;
			off += w;
		}
	}
}

/* The bytes of in (read from where it stands) to dst through a temp name, fsync'd, renamed. */
static bool copy_to(int in, const char *dst)
{
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp-copy", dst);
	int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		return false;
	bool ok = copy_fd(in, out) && fsync(out) == 0;
	int e = errno;
	ok = close(out) == 0 && ok;
	ok = ok && rename(tmp, dst) == 0;
	if (!ok) {
		e = errno ? errno : e;
		unlink(tmp);
		errno = e;
	}
	return ok;
}

static bool copy_file(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return false;
	bool ok = copy_to(in, dst);
	int e = errno;
	close(in);
	errno = e;
	return ok;
}

bool backup_put_file(const char *src, const char *dst, bool link_ok, enum backup_put *how)
{
	if (link_ok && link(src, dst) == 0) {
		*how = BACKUP_LINKED;
		return true;
	}
	if (link_ok && (errno == ENOENT || errno == EEXIST))
		return false;
	if (access(src, F_OK) != 0)
		return false; /* errno ENOENT: missing */
	*how = BACKUP_COPIED;
	return copy_file(src, dst);
}

bool backup_put_fd(int fd, const char *dst, enum backup_put *how)
{
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	/* AT_SYMLINK_FOLLOW on the magic link links the open file itself (open(2), O_TMPFILE) */
	if (linkat(AT_FDCWD, self, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) == 0) {
		*how = BACKUP_LINKED;
		return true;
	}
	if (errno == EEXIST)
		return false;
	*how = BACKUP_COPIED; /* EXDEV, no /proc, or protected_hardlinks: the bytes themselves */
	return lseek(fd, 0, SEEK_SET) == 0 && copy_to(fd, dst);
}

bool backup_sha_valid(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++) {
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	}
	return n == 64;
}

bool backup_blob_dir(const char *dir, const char *sha256, char *out, size_t cap)
{
	char sub[4200];
	snprintf(sub, sizeof(sub), "%s/blobs/%.2s", dir, sha256);
	if (store_mkdir_p(sub) != SOMA_OK)
		return false;
	return snprintf(out, cap, "%s/%s", sub, sha256) < (int)cap;
}

bool backup_fd_sha256(int fd, char hex[65], uint64_t *bytes)
{
	if (lseek(fd, 0, SEEK_SET) != 0)
		return false;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
	unsigned char buf[1 << 16], md[32];
	*bytes = 0;
	ssize_t n;
	while (ok && (n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0 && EVP_DigestUpdate(ctx, buf, (size_t)n) == 1;
		*bytes += n > 0 ? (uint64_t)n : 0;
	}
	unsigned len = 0;
	ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == sizeof(md);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; ok && i < sizeof(md); i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return ok;
}
