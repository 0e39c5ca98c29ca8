/*
 * restore_blobs.c - the upload files of `somaagent restore` (restore_cmd.c, backup_int.h): SRC/blobs
 * checked whole before anything is written, then put into data.dir/blobs, and taken out again
 * when the restore fails after all.
 *
 * DESIGN: a backup holds blobs/<aa>/<sha256>: real directories of regular files (backup writes
 * nothing else). Anything else there - a symlink (to a host file named by its hash, or a relative
 * one that resolves elsewhere once moved), a FIFO, a misnamed file - was put there by hand and is
 * refused: installed as it is, the server would serve a host file as an upload, or bytes that
 * are not the blob's. Directories are opened relative to their parent with O_NOFOLLOW, files with
 * O_NOFOLLOW (and O_NONBLOCK: a FIFO does not block the open) and checked on the descriptor
 * (fstat S_ISREG, the SHA-256 of its bytes), so no path is resolved twice. The check covers
 * everything first - every entry, then every distinct sha256 of SRC's attachments rows (a partial
 * copy fails here, listed, as it fails a backup), then the manifest's count - and writes nothing.
 * The install walks again and hashes each file once more from the descriptor it then links
 * (linkat through /proc/self/fd) or copies: what is checked is what is installed, at the price of
 * reading the blobs twice. data.dir/blobs held no file (restore_cmd.c, under the data.dir lock),
 * so on failure every file in data.dir/blobs/<aa> is this run's, and the directories it created
 * are known (made_sub). Runs on the CLI's thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/backup_int.h"

static int hex_digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte a blobs/<aa> name stands for, or -1. */
static int sub_index(const char *aa)
{
	if (!aa[0] || !aa[1] || aa[2] || hex_digit(aa[0]) < 0 || hex_digit(aa[1]) < 0)
		return -1;
	return hex_digit(aa[0]) * 16 + hex_digit(aa[1]);
}

/* SRC/blobs/<aa>/<name> open as a regular file whose bytes match its name, or -1 (listed). */
static int open_blob(struct restore_blobs *rb, int dir, const char *aa, const char *name)
{
	char why[160] = "";
	char hex[65];
	uint64_t bytes;
	struct stat st;
	int fd = -1;
	if (!backup_sha_valid(name) || strncmp(name, aa, 2) != 0)
		snprintf(why, sizeof(why), "not a blob's name: 64 lowercase hex digits, the first two its directory's");
	else if ((fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		snprintf(why, sizeof(why), "%s", errno == ELOOP ? "a symlink, not a file" : strerror(errno));
	else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		snprintf(why, sizeof(why), "not a regular file");
	else if (!backup_fd_sha256(fd, hex, &bytes))
		snprintf(why, sizeof(why), "cannot be read: %s", strerror(errno));
	else if (strcmp(hex, name) != 0)
		snprintf(why, sizeof(why), "its bytes are not its name's SHA-256");
	if (!why[0])
		return fd;
	fprintf(stderr, "damaged: %s (%s: %s/blobs/%s/%s)\n", name, why, rb->src, aa, name);
	rb->bad++;
	if (fd >= 0)
		close(fd);
	return -1;
}

/* data.dir/blobs/<aa>/<sha>: the blob open as fd, linked or copied. */
static bool put_one(struct restore_blobs *rb, int fd, const char *sha)
{
	char sub[4200], to[4300];
	enum backup_put how;
	int i = hex_digit(sha[0]) * 16 + hex_digit(sha[1]); /* sha is checked: 64 hex digits */
	snprintf(sub, sizeof(sub), "%s/blobs", rb->data);
	if (mkdir(sub, 0700) == 0)
		rb->made_root = true;
	else if (errno != EEXIST)
		goto fail;
	snprintf(sub, sizeof(sub), "%s/blobs/%.2s", rb->data, sha);
	if (mkdir(sub, 0700) == 0)
		rb->made_sub[i / 8] |= (unsigned char)(1u << (i % 8));
	else if (errno != EEXIST)
		goto fail;
	if (snprintf(to, sizeof(to), "%s/%.64s", sub, sha) >= (int)sizeof(to)) {
		errno = ENAMETOOLONG;
		goto fail;
	}
	if (!backup_put_fd(fd, to, &how))
		goto fail;
	rb->put++;
	return true;
fail:
	fprintf(stderr, "somaagent: cannot put %s into %s/blobs: %s\n", sha, rb->data, strerror(errno));
	return false;
}

/* One SRC/blobs/<aa>: checked (every entry, even after a bad one) or put (up to the first failure). */
static bool walk_sub(struct restore_blobs *rb, int root, const char *aa, bool put)
{
	struct stat st;
	const char *why = NULL;
	int sfd = -1;
	if (sub_index(aa) < 0)
		why = "not a blobs/<aa> directory: two lowercase hex digits";
	else if (fstatat(root, aa, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
		why = "a symlink, not a directory";
	else if ((sfd = openat(root, aa, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		why = errno == ENOTDIR || errno == ELOOP ? "not a directory" : strerror(errno);
	DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
	if (!sd) {
		fprintf(stderr, "damaged: %s/blobs/%s (%s)\n", rb->src, aa, why ? why : strerror(errno));
		rb->bad++;
		if (sfd >= 0)
			close(sfd);
		return false;
	}
	bool ok = true;
	struct dirent *f;
	while ((ok || !put) && (f = readdir(sd))) {
		if (f->d_name[0] == '.')
			continue;
		int fd = open_blob(rb, dirfd(sd), aa, f->d_name);
		if (fd < 0) {
			ok = false;
			continue;
		}
		if (put)
			ok = put_one(rb, fd, f->d_name);
		else
			rb->files++;
		close(fd);
	}
	closedir(sd);
	return ok;
}

static bool walk(struct restore_blobs *rb, bool put)
{
	char root[4200];
	snprintf(root, sizeof(root), "%s/blobs", rb->src);
	int rfd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rfd < 0 && errno == ENOENT)
		return true; /* a backup of a store without uploads */
	DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
	if (!d) {
		fprintf(stderr, "damaged: %s (%s)\n", root,
			errno == ELOOP || errno == ENOTDIR ? "a symlink or not a directory" : strerror(errno));
		rb->bad++;
		if (rfd >= 0)
			close(rfd);
		return false;
	}
	bool ok = true;
	struct dirent *e;
	while ((ok || !put) && (e = readdir(d))) {
		if (e->d_name[0] != '.')
			ok = walk_sub(rb, dirfd(d), e->d_name, put) && ok;
	}
	closedir(d);
	return ok;
}

/* Every distinct sha256 of SRC's attachments rows has its file in SRC/blobs (checked by walk). */
static void check_named(struct restore_blobs *rb)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", rb->src, BACKUP_DB);
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "SELECT DISTINCT sha256 FROM attachments", -1, &s, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		rc = SQLITE_OK;
		const char *sha = (const char *)sqlite3_column_text(s, 0);
		char file[4400];
		struct stat st;
		if (!sha || !backup_sha_valid(sha)) {
			fprintf(stderr, "damaged: an attachment row names \"%s\", not a SHA-256\n", sha ? sha : "");
			rb->bad++;
			continue;
		}
		snprintf(file, sizeof(file), "%s/blobs/%.2s/%s", rb->src, sha, sha);
		if (lstat(file, &st) != 0 && errno == ENOENT) {
			fprintf(stderr, "missing: %s (named by an attachment, not in %s/blobs)\n", sha, rb->src);
			rb->bad++;
		}
	}
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "somaagent: cannot read the attachments of %s: %s\n", path,
			db ? sqlite3_errmsg(db) : "out of memory");
		rb->bad++;
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
}

bool restore_blobs_check(struct restore_blobs *rb, long long manifest_count)
{
	(void)walk(rb, false);
	check_named(rb);
	if (rb->bad == 0 && rb->files < manifest_count) { /* else what is listed says why */
		fprintf(stderr, "missing: %s/%s counts %lld upload file(s), %s/blobs holds %d good one(s)\n", rb->src,
			BACKUP_MANIFEST, manifest_count, rb->src, rb->files);
		rb->bad++;
	}
	return rb->bad == 0;
}

bool restore_blobs_put(struct restore_blobs *rb)
{
	return walk(rb, true);
}

void restore_blobs_undo(const struct restore_blobs *rb)
{
	char sub[4200];
	for (int i = 0; i < 256; i++) {
		snprintf(sub, sizeof(sub), "%s/blobs/%02x", rb->data, i);
		DIR *d = opendir(sub);
		if (!d)
			continue;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				(void)unlinkat(dirfd(d), e->d_name, 0);
		}
		closedir(d);
		if (rb->made_sub[i / 8] & (1u << (i % 8)))
			(void)rmdir(sub);
	}
	snprintf(sub, sizeof(sub), "%s/blobs", rb->data);
	if (rb->made_root)
		(void)rmdir(sub);
}
