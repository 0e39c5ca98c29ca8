/*
 * backup_cmd.c - `somaagent backup DEST_DIR`: a consistent copy of the embedded store, taken while
 * a server runs on data.dir or while none does.
 *
 * DESIGN: the database is copied with SQLite's online backup API (sqlite3_backup_step(-1)) from
 * a read-only connection: one read transaction over the whole copy, so the copy is the database
 * as of one commit, and in WAL mode a reader never blocks the server's writer (while it runs, a
 * checkpoint cannot move past its snapshot, so the WAL grows for the duration). Smaller steps
 * would restart the copy after every commit of the server (another process's write), never
 * finishing under load; VACUUM INTO would also work from one read transaction but rebuilds every
 * table and index (CPU) to get a compacted file. The snapshot is read through the default VFS:
 * wal_vfs.c (the server's write path) puts a commit's frames in the kernel before it publishes
 * them in the wal-index, so a reader of another process sees whole commits only.
 * The data.dir lock (data_lock.c) is the server's: backup never takes it and opens nothing for
 * writing under data.dir. The upload files to copy are those the snapshot's attachment rows name,
 * read from the copy itself (so they match it exactly): an upload's file is complete (renamed
 * from its temp name) before its row commits, so spool and temp files are never among them. Each
 * is hard-linked when DEST is on the same filesystem (blobs are never rewritten in place), else
 * copied. A named file that is missing or of the wrong size fails the backup (exit 1, the list),
 * and manifest.json (binary and schema versions, time, counts, sizes) is written last, so a
 * directory without it is an unfinished backup that restore refuses.
 * PostgreSQL (store.url set) is refused with the procedure (pg_dump, then the blobs): a dump of
 * the rows is PostgreSQL's own tool's job. Exit codes: 0 done, 1 failure, 2 refused.
 */
#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/backup_int.h"
#include "cli/cli.h"
#include "core/clock.h"
#include "core/config.h"
#include "store/store.h"

struct backup {
	const char *dest;    /* DEST_DIR (borrowed) */
	sqlite3 *snap;	     /* the copy, DEST/somaagent.db */
	json_t *manifest;    /* what manifest.json will hold (owned) */
	uint64_t blob_bytes; /* sizes of the blobs put in DEST */
	int linked, copied;  /* how they got there */
	int missing;	     /* named but absent or of the wrong size */
};

/* The snapshot: src (read-only) into DEST/somaagent.db in one step. */
static bool snapshot(struct backup *b, const char *src_path)
{
	char dst_path[4200];
	snprintf(dst_path, sizeof(dst_path), "%s/%s", b->dest, BACKUP_DB);
	sqlite3 *src = NULL;
	int rc = sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_open_v2(dst_path, &b->snap, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK) {
		(void)chmod(dst_path, 0600); /* the rows hold key hashes and conversations */
		sqlite3_busy_timeout(src, 10000);
		sqlite3_backup *bk = sqlite3_backup_init(b->snap, "main", src, "main");
		rc = SQLITE_NOMEM;
		for (int tries = 0; bk && tries < 100; tries++) { /* BUSY: e.g. the server recovering the WAL */
			rc = sqlite3_backup_step(bk, -1);
			if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
				break;
			sqlite3_sleep(100);
		}
		int fin = bk ? sqlite3_backup_finish(bk) : rc;
		rc = rc == SQLITE_DONE ? fin : rc;
	}
	if (rc != SQLITE_OK)
		fprintf(stderr, "somaagent: cannot copy %s: %s\n", src_path,
			src ? sqlite3_errmsg(src) : "out of memory");
	sqlite3_close(src);
	/* one self-contained file (no -wal beside it); the server switches it back to WAL on start */
	return rc == SQLITE_OK && sqlite3_exec(b->snap, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) == SQLITE_OK;
}

static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	long long v = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Schema version and row counts of the copy; its integrity checked. */
static bool describe_snapshot(struct backup *b)
{
	sqlite3_stmt *s;
	bool ok = sqlite3_prepare_v2(b->snap, "PRAGMA quick_check", -1, &s, NULL) == SQLITE_OK &&
		  sqlite3_step(s) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
	sqlite3_finalize(s);
	if (!ok) {
		fprintf(stderr, "somaagent: the copied database fails its integrity check; try again\n");
		return false;
	}
	json_t *counts = json_object();
	static const char *const tables[] = {"sessions", "events", "attachments", "tasks", "api_keys"};
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		char sql[96];
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", tables[i]);
		json_object_set_new(counts, tables[i], json_integer(query_int(b->snap, sql)));
	}
	json_object_set_new(
		b->manifest, "schema_version",
		json_integer(query_int(b->snap, "SELECT coalesce(max(version), 0) FROM schema_migrations")));
	json_object_set_new(b->manifest, "counts", counts);
	return true;
}

/* One blob the snapshot names: into DEST/blobs, checked against its recorded size. */
static bool put_blob(struct backup *b, const char *sha, long long size)
{
	char src[4300], dst[4300];
	store_blob_path(src, sizeof(src), sha);
	enum backup_put how = BACKUP_COPIED;
	struct stat st;
	if (!backup_blob_dir(b->dest, sha, dst, sizeof(dst)))
		return false;
	if (!backup_put_file(src, dst, true, &how)) {
		if (errno != ENOENT)
			return false;
		fprintf(stderr, "missing: %s (named by an attachment, not in %s/blobs)\n", sha, cfg_str(CFG_DATA_DIR));
		b->missing++;
		return true;
	}
	if (stat(dst, &st) != 0 || st.st_size != size) {
		fprintf(stderr, "damaged: %s (%lld bytes, the attachment says %lld)\n", sha,
			(long long)(stat(dst, &st) == 0 ? st.st_size : -1), size);
		b->missing++;
		return true;
	}
	b->blob_bytes += (uint64_t)st.st_size;
	if (how == BACKUP_LINKED)
		b->linked++;
	else
		b->copied++;
	return true;
}

static bool copy_blobs(struct backup *b)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(b->snap, "SELECT sha256, max(size) FROM attachments GROUP BY sha256", -1, &s, NULL) !=
	    SQLITE_OK)
		return false;
	bool ok = true;
	int rc;
	while (ok && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *sha = (const char *)sqlite3_column_text(s, 0);
		if (!sha || !backup_sha_valid(sha)) {
			fprintf(stderr, "damaged: an attachment row names \"%s\", not a SHA-256\n", sha ? sha : "");
			b->missing++;
			continue;
		}
		ok = put_blob(b, sha, sqlite3_column_int64(s, 1));
		if (!ok)
			fprintf(stderr, "somaagent: cannot put blob %s into %s/blobs: %s\n", sha, b->dest,
				strerror(errno));
	}
	sqlite3_finalize(s);
	return ok;
}

static bool write_manifest(struct backup *b)
{
	char path[4200], tmp[4300];
	snprintf(path, sizeof(path), "%s/%s", b->dest, BACKUP_MANIFEST);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(b->manifest, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || !backup_fsync_path(tmp) ||
	    rename(tmp, path) != 0 || !backup_fsync_path(b->dest))
		return false;
	return true;
}

static int backup_sqlite(struct backup *b)
{
	char src_path[4200], db_path[4200];
	snprintf(src_path, sizeof(src_path), "%s/somaagent.db", cfg_str(CFG_DATA_DIR));
	snprintf(db_path, sizeof(db_path), "%s/%s", b->dest, BACKUP_DB);
	if (access(src_path, R_OK) != 0) {
		fprintf(stderr, "somaagent: no database at %s (%s): nothing to back up; check data.dir\n", src_path,
			strerror(errno));
		return EXIT_RUNTIME;
	}
	if (!snapshot(b, src_path) || !describe_snapshot(b) || !copy_blobs(b))
		return EXIT_RUNTIME;
	sqlite3_close(b->snap);
	b->snap = NULL;
	char blobs[4200];
	snprintf(blobs, sizeof(blobs), "%s/blobs", b->dest);
	if (!backup_fsync_path(db_path) || (access(blobs, F_OK) == 0 && !backup_fsync_path(blobs))) {
		fprintf(stderr, "somaagent: cannot sync %s: %s\n", b->dest, strerror(errno));
		return EXIT_RUNTIME;
	}
	if (b->missing) {
		fprintf(stderr,
			"somaagent: %d upload file(s) named by the database are missing or damaged (listed above); "
			"the backup in %s is incomplete (no %s)\n",
			b->missing, b->dest, BACKUP_MANIFEST);
		return EXIT_RUNTIME;
	}
	struct stat st;
	json_t *db = json_pack("{s:s, s:I}", "file", BACKUP_DB, "bytes",
			       (json_int_t)(stat(db_path, &st) == 0 ? st.st_size : 0));
	json_t *bl = json_pack("{s:i, s:I, s:i, s:i}", "count", b->linked + b->copied, "bytes",
			       (json_int_t)b->blob_bytes, "linked", b->linked, "copied", b->copied);
	json_object_set_new(b->manifest, "database", db);
	json_object_set_new(b->manifest, "blobs", bl);
	if (!write_manifest(b)) {
		fprintf(stderr, "somaagent: cannot write %s/%s: %s\n", b->dest, BACKUP_MANIFEST, strerror(errno));
		return EXIT_RUNTIME;
	}
	printf("backed up %s to %s: schema %lld, %lld session(s), %lld event(s), %d upload file(s) (%d linked, %d "
	       "copied)\n",
	       cfg_str(CFG_DATA_DIR), b->dest, json_integer_value(json_object_get(b->manifest, "schema_version")),
	       json_integer_value(json_object_get(json_object_get(b->manifest, "counts"), "sessions")),
	       json_integer_value(json_object_get(json_object_get(b->manifest, "counts"), "events")),
	       b->linked + b->copied, b->linked, b->copied);
	return EXIT_OK;
}

int cmd_backup(const struct cli *cli)
{
	if (cli->nargs != 1) {
		fprintf(stderr, "somaagent: expected: somaagent backup DEST_DIR\n");
		return EXIT_USAGE;
	}
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	if (cfg_str(CFG_STORE_URL)[0]) {
		fprintf(stderr,
			"somaagent: store.url is PostgreSQL: back its database up with pg_dump (pg_dump -Fc "
			"\"$URL\" > soma.dump), then copy data.dir/blobs (e.g. cp -a or rsync -a) after the dump "
			"finished; see docs/operations.md, \"Backup, restore, upgrade\"\n");
		return EXIT_USAGE;
	}
	struct backup b = {.dest = cli->args[0], .manifest = json_object()};
	if (!backup_dir_empty(b.dest, true)) {
		fprintf(stderr, "somaagent: %s %s; give an empty or new directory\n", b.dest,
			errno ? strerror(errno) : "is not empty");
		json_decref(b.manifest);
		return EXIT_USAGE;
	}
	char when[32];
	time_t now = (time_t)(clock_wall_ms() / 1000);
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	json_object_set_new(b.manifest, "format", json_integer(BACKUP_MANIFEST_FORMAT));
	json_object_set_new(b.manifest, "driver", json_string("sqlite"));
	json_object_set_new(b.manifest, "binary_version", json_string(SOMA_VERSION));
	json_object_set_new(b.manifest, "created_at", json_string(when));
	int rc = backup_sqlite(&b);
	sqlite3_close(b.snap);
	json_decref(b.manifest);
	return rc;
}
