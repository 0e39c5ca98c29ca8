/*
 * backup_int.h - what `somaagent backup` (backup_cmd.c) and `somaagent restore` (restore_cmd.c)
 * share: the layout of a backup directory and the file operations both need (backup_files.c), and
 * the blob half of restore (restore_blobs.c).
 *
 * A backup directory holds somaagent.db (a consistent SQLite snapshot, rollback-journal mode: one
 * self-contained file), blobs/<aa>/<sha256> (the upload files that snapshot names, and only
 * those) and manifest.json, written last: a directory without it is an unfinished backup.
 */
#ifndef SOMA_CLI_BACKUP_INT_H
#define SOMA_CLI_BACKUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BACKUP_MANIFEST	       "manifest.json"
#define BACKUP_DB	       "somaagent.db"
#define BACKUP_MANIFEST_FORMAT 1 /* manifest.json's "format"; restore refuses another */

/* How a file reached its destination. */
enum backup_put { BACKUP_LINKED, BACKUP_COPIED };

/* True when dir has no entry (or does not exist and could be created, when create is set). On a
 * non-empty directory returns false with errno 0; on another failure, false with errno set. */
bool backup_dir_empty(const char *dir, bool create);
/* Puts src at dst: a hard link when link_ok and the filesystem allows it, else a copy written to
 * a temp name, fsync'd and renamed. *how says which. false with errno set on failure (ENOENT: src
 * is missing). The parent of dst must exist. */
bool backup_put_file(const char *src, const char *dst, bool link_ok, enum backup_put *how);
/* Creates dir/blobs/<aa> for sha256 (mode 0700) and writes the blob's path into out. */
bool backup_blob_dir(const char *dir, const char *sha256, char *out, size_t cap);
/* fsyncs a file or a directory by path; false when it cannot be opened or synced. */
bool backup_fsync_path(const char *path);
/* Whether s is 64 lowercase hex digits (a blob's name). */
bool backup_sha_valid(const char *s);
/* Puts the open regular file fd at dst: a hard link to that very file (through /proc/self/fd)
 * where the filesystem allows it, else a copy of its bytes written as backup_put_file does. The
 * caller keeps fd. false with errno set on failure (EEXIST: dst exists). */
bool backup_put_fd(int fd, const char *dst, enum backup_put *how);
/* SHA-256 of the open file fd (read from its start), as 64 lowercase hex digits into hex (65 bytes). */
bool backup_fd_sha256(int fd, char hex[65], uint64_t *bytes);

/* The upload files of a restore (restore_blobs.c): SRC/blobs checked whole, then put into
 * data.dir/blobs, and taken out again when the restore fails. */
struct restore_blobs {
	const char *src;	    /* SRC_DIR (borrowed) */
	const char *data;	    /* data.dir (borrowed) */
	int files;		    /* regular files in SRC/blobs whose bytes match their names */
	int bad;		    /* entries refused (each listed on stderr) */
	int put;		    /* files put into data.dir/blobs */
	bool made_root;		    /* data.dir/blobs was created by this run */
	unsigned char made_sub[32]; /* bit aa: data.dir/blobs/<aa> was created by this run */
};
/* Checks every entry of SRC/blobs (a directory of regular files named by their SHA-256, no
 * symlink anywhere) and that each blob SRC's database names is there, listing on stderr what is
 * missing or damaged; writes nothing. True when the restore may go on. */
bool restore_blobs_check(struct restore_blobs *rb, long long manifest_count);
/* Puts every checked blob into data.dir/blobs (each hashed again from the descriptor it is
 * installed from); false (said on stderr) on failure: restore_blobs_undo then. */
bool restore_blobs_put(struct restore_blobs *rb);
/* Removes the files and directories restore_blobs_put created (data.dir/blobs held no file). */
void restore_blobs_undo(const struct restore_blobs *rb);

#endif
