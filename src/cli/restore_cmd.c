/*
 * restore_cmd.c - `somaagent restore SRC_DIR`: a backup made by `somaagent backup` into an empty
 * data.dir (the embedded store).
 *
 * DESIGN: checks before it writes: SRC has a manifest.json (a backup that finished), its format
 * and driver are ours, and its schema - read from the database file itself, which must match the
 * manifest and pass an integrity check - is not newer than this binary's (a newer one is refused
 * with exit 2: its tables may mean what this binary does not know; run the version that made
 * it). data.dir must hold no database and no upload files; the data.dir lock (data_lock.c) is
 * held throughout, so no server starts on it half-restored. The upload files are checked whole
 * before anything is written (restore_blobs.c: regular files, no symlink, each SHA-256 its name,
 * every blob the database names present; a problem lists them all and exits 1), then each is
 * hard-linked (same filesystem; blobs are never rewritten) or copied; the database is always
 * copied (the server will write to it), under a temp name renamed to somaagent.db last: a data.dir
 * with a database is a complete restore. A failure past the check removes what the run wrote, so
 * the same restore can be run again once the cause is fixed. An older schema is left
 * as it is: `somaagent run` (or `migrate`) migrates it on start, as after any upgrade.
 * PostgreSQL (store.url set) is refused with the procedure (pg_restore, then the blobs).
 * Exit codes: 0 done, 1 failure, 2 refused.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/backup_int.h"
#include "cli/cli.h"
#include "core/config.h"
#include "orchestrator/app.h"

/* Reads SRC/manifest.json and checks it against SRC's database; the schema version and the number
 * of upload files it counts on success. */
static int check_source(const char *src, long long *schema, long long *blobs)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", src, BACKUP_MANIFEST);
	json_error_t jerr;
	json_t *m = json_load_file(path, 0, &jerr);
	if (!m) {
		fprintf(stderr, "somaagent: %s is not a finished somaagent backup (%s: %s)\n", src, path, jerr.text);
		return EXIT_USAGE;
	}
	long long format = json_integer_value(json_object_get(m, "format"));
	const char *driver = json_string_value(json_object_get(m, "driver"));
	*schema = json_integer_value(json_object_get(m, "schema_version"));
	*blobs = json_integer_value(json_object_get(json_object_get(m, "blobs"), "count"));
	bool ours = format == BACKUP_MANIFEST_FORMAT && driver && strcmp(driver, "sqlite") == 0;
	json_decref(m);
	if (!ours) {
		fprintf(stderr, "somaagent: %s: format %lld of driver %s; this binary restores format %d of sqlite\n",
			path, format, driver ? driver : "(none)", BACKUP_MANIFEST_FORMAT);
		return EXIT_USAGE;
	}
	int latest = store_sqlite_schema_latest();
	if (*schema > latest) {
		fprintf(stderr,
			"somaagent: the backup in %s has schema %lld, newer than this binary knows (%d): restore it "
			"with the somaagent that made it (or a later one)\n",
			src, *schema, latest);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%s", src, BACKUP_DB);
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	long long in_file = -1;
	bool intact = false;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		intact = strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
	sqlite3_finalize(s);
	s = NULL;
	if (intact && sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_migrations", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		in_file = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	if (!intact || in_file != *schema) {
		fprintf(stderr, "somaagent: %s is damaged (%s); restore another backup\n", path,
			intact ? "its schema is not the manifest's" : "it fails its integrity check");
		return EXIT_RUNTIME;
	}
	return EXIT_OK;
}

/* data.dir holds no database and no upload file. */
static bool target_empty(const char *data)
{
	static const char *const names[] = {"somaagent.db", "somaagent.db-wal", "somaagent.db-journal"};
	char path[4200];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", data, names[i]);
		if (access(path, F_OK) == 0)
			return false;
	}
	snprintf(path, sizeof(path), "%s/blobs", data);
	DIR *d = opendir(path);
	if (!d)
		return true;
	struct dirent *e;
	bool empty = true;
	char sub[4500];
	while (empty && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		empty = backup_dir_empty(sub, false);
	}
	closedir(d);
	return empty;
}

/* SRC's database to data.dir/somaagent.db through a temp name; false (said on stderr) on failure,
 * with nothing left at either name. */
static bool put_db(const char *src, const char *data)
{
	char from[4200], tmp[4200], to[4200];
	snprintf(from, sizeof(from), "%s/%s", src, BACKUP_DB);
	snprintf(tmp, sizeof(tmp), "%s/somaagent.db.restoring", data);
	snprintf(to, sizeof(to), "%s/somaagent.db", data);
	enum backup_put how;
	(void)unlink(tmp); /* left by a restore that stopped half-way */
	const char *step = "copy the database to", *what = tmp;
	bool ok = backup_put_file(from, tmp, false, &how);
	if (ok) {
		step = "rename the database to";
		what = to;
		ok = rename(tmp, to) == 0;
	}
	if (ok) {
		step = "sync";
		what = data;
		ok = backup_fsync_path(data);
	}
	if (!ok) {
		fprintf(stderr, "somaagent: cannot %s %s: %s\n", step, what, strerror(errno));
		(void)unlink(tmp);
		(void)unlink(to); /* this run's: data.dir held no database */
	}
	return ok;
}

static int restore_sqlite(const char *src, const char *data)
{
	long long schema = 0, counted = 0;
	int rc = check_source(src, &schema, &counted);
	if (rc != EXIT_OK)
		return rc;
	if (!target_empty(data)) {
		fprintf(stderr,
			"somaagent: data.dir %s already holds a database or upload files; restore into an "
			"empty data.dir (move the current one aside first)\n",
			data);
		return EXIT_USAGE;
	}
	struct restore_blobs rb = {.src = src, .data = data};
	if (!restore_blobs_check(&rb, counted)) {
		fprintf(stderr,
			"somaagent: the backup in %s is incomplete or altered: %d problem(s), see above; nothing was "
			"written into %s: copy the backup again whole, or restore another\n",
			src, rb.bad, data);
		return EXIT_RUNTIME;
	}
	if (!restore_blobs_put(&rb) || !put_db(src, data)) {
		restore_blobs_undo(&rb);
		fprintf(stderr, "somaagent: restore into %s failed (see above); what it had written is removed\n",
			data);
		return EXIT_RUNTIME;
	}
	printf("restored %s into %s: schema %lld (this binary: %d; `somaagent run` migrates an older one), %d upload "
	       "file(s)\n",
	       src, data, schema, store_sqlite_schema_latest(), rb.put);
	return EXIT_OK;
}

int cmd_restore(const struct cli *cli)
{
	if (cli->nargs != 1) {
		fprintf(stderr, "somaagent: expected: somaagent restore SRC_DIR\n");
		return EXIT_USAGE;
	}
	if (!cli_load_config(cli))
		return EXIT_USAGE;
	if (cfg_str(CFG_STORE_URL)[0]) {
		fprintf(stderr,
			"somaagent: store.url is PostgreSQL: restore its database with pg_restore (pg_restore "
			"-d \"$URL\" soma.dump) into an empty database, copy the blobs back into data.dir/blobs, "
			"then start somaagent; see docs/operations.md, \"Backup, restore, upgrade\"\n");
		return EXIT_USAGE;
	}
	const char *data = cfg_str(CFG_DATA_DIR);
	char why[512];
	if (!backup_dir_empty(data, true) && errno != 0) {
		fprintf(stderr, "somaagent: cannot use data.dir %s: %s\n", data, strerror(errno));
		return EXIT_RUNTIME;
	}
	enum soma_err err = data_dir_lock(data, why, sizeof(why)); /* no server starts on it meanwhile */
	if (err != SOMA_OK) {
		fprintf(stderr, "somaagent: %s\n", why);
		return err == SOMA_ERR_CONFLICT ? EXIT_USAGE : EXIT_RUNTIME;
	}
	int rc = restore_sqlite(cli->args[0], data);
	data_dir_unlock();
	return rc;
}
