/*
 * backup_int.h - what `somaagent backup` (backup_cmd.c) and `somaagent restore` (restore_cmd.c)
 * share: the layout of a backup directory and the file operations both need (backup_files.c).
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
/* SHA-256 of the file at path, as 64 lowercase hex digits into hex (65 bytes). */
bool backup_file_sha256(const char *path, char hex[65], uint64_t *bytes);

#endif
