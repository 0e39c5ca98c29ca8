/*
 * sqlite.c - the SQLite driver of the store (see store.h).
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/store_int.h"

struct embedded_file {
	const char *name;
	const char *text;
};
extern const struct embedded_file store_migrations[];

enum soma_err store_mkdir_p(const char *dir)
{
	char path[4096];
	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return SOMA_ERR_INVALID;
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return SOMA_ERR_IO;
		*p = '/';
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return SOMA_ERR_IO;
	return SOMA_OK;
}

/* SQLite keeps memory statistics by default, which takes one process-wide mutex around every
 * sqlite3_malloc and sqlite3_free (about 1,100 lock/unlock pairs per chat message, shared by the
 * writer and the readers). Nothing here reads those statistics. sqlite3_config only works before
 * SQLite initializes, i.e. before the first open: a later call fails harmlessly. */
static void sqlite_global_config(void)
{
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	(void)sqlite3_config(SQLITE_CONFIG_LOG, store_sqlite_log, NULL); /* sqlite_wal_check.c */
	(void)store_sqlite_mem_install(); /* malloc with per-thread caches of freed blocks (sqlite_mem.c) */
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

enum soma_err dbconn_open(struct dbconn *c, const char *path, int flags)
{
	pthread_once(&global_once, sqlite_global_config);
	memset(c, 0, sizeof(*c));
	int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | flags, store_vfs());
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(c->db,
				  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA "
				  "temp_store=MEMORY; PRAGMA "
				  "wal_autocheckpoint=10000;",
				  NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return SOMA_ERR_STORE;
	sqlite3_busy_timeout(c->db, 10000);
	return store_sql_memory_rank_register(c->db); /* recall's rank function (sqlite_memory_search.c) */
}

void dbconn_close(struct dbconn *c)
{
	for (int i = 0; i < c->n; i++)
		sqlite3_finalize(c->cache[i].stmt);
	c->n = 0;
	sqlite3_close(c->db);
	c->db = NULL;
}

sqlite3_stmt *dbconn_stmt(struct dbconn *c, const char *sql)
{
	for (int i = 0; i < c->n; i++) {
		if (c->cache[i].sql == sql) {
			sqlite3_reset(c->cache[i].stmt);
			sqlite3_clear_bindings(c->cache[i].stmt);
			return c->cache[i].stmt;
		}
	}
	sqlite3_stmt *stmt;
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
		return NULL;
	if (c->n < STORE_STMT_CACHE) {
		c->cache[c->n].sql = sql;
		c->cache[c->n].stmt = stmt;
		c->n++;
	}
	/* past the cache size the statement would leak; the cache is sized above the statement count */
	return stmt;
}

void dbconn_release(struct dbconn *c)
{
	for (int i = 0; i < c->n; i++)
		sqlite3_reset(c->cache[i].stmt);
}

bool store_page_cursor(const struct store_op *op, long long *ms, char id[STORE_TASK_ID_MAX + 1])
{
	*ms = INT64_MAX;
	snprintf(id, STORE_TASK_ID_MAX + 1, "\x7f");
	if (!op->cursor[0])
		return true;
	/* "<ms>:<id>", the id taken whole (a task id may hold any character, ':' included) */
	char *end;
	errno = 0;
	long long v = strtoll(op->cursor, &end, 10);
	size_t len = *end == ':' ? strlen(end + 1) : 0;
	if (end == op->cursor || errno || *end != ':' || len == 0 || len > STORE_TASK_ID_MAX)
		return false;
	*ms = v;
	memcpy(id, end + 1, len + 1);
	return true;
}

enum soma_err dbconn_exec(struct dbconn *c, const char *sql)
{
	return sqlite3_exec(c->db, sql, NULL, NULL, NULL) == SQLITE_OK ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sqlite_open(struct store *st, const char *data_dir, char *why, size_t why_cap)
{
	/* data_dir exists: store_open_url made it */
	pthread_once(&global_once, sqlite_global_config); /* before the first open */
	snprintf(st->path, sizeof(st->path), "%s/somaagent.db", data_dir);
	enum soma_err err = store_sqlite_wal_check(st->path, why, why_cap);
	if (err != SOMA_OK)
		return err;
	/* only a WAL with a commit in it had data: uncommitted frames alone (a torn first start) are
	 * ignored by SQLite and lose nothing */
	bool wal_had_commits = store_sqlite_wal_commits(st->path);
	if (access(st->path, F_OK) != 0) {
		/* a new database: switch it to WAL without syncing (there is nothing to lose yet, and a
		 * torn first start just starts again), sparing several fsyncs at first start */
		sqlite3 *fresh = NULL;
		if (sqlite3_open_v2(st->path, &fresh, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) == SQLITE_OK)
			(void)sqlite3_exec(fresh, "PRAGMA synchronous=OFF; PRAGMA journal_mode=WAL;", NULL, NULL, NULL);
		sqlite3_close(fresh);
	}
	if (dbconn_open(&st->main, st->path, SQLITE_OPEN_FULLMUTEX) != SOMA_OK) {
		snprintf(why, why_cap, "cannot open database %s (%s); check data.dir", st->path,
			 st->main.db ? sqlite3_errmsg(st->main.db) : "out of memory");
		return SOMA_ERR_STORE;
	}
	int current = 0, latest = 0;
	if (wal_had_commits && sqlite_schema_version(st, &current, &latest) == SOMA_OK && current == 0) {
		store_sqlite_wal_refuse(st->path, "SQLite found no committed tables in it", why, why_cap);
		return SOMA_ERR_CONFIG;
	}
	return SOMA_OK;
}

void sqlite_close(struct store *st)
{
	dbconn_close(&st->main);
}

/* "0001_x.sql" -> 1 */
static int migration_version(const char *name)
{
	return (int)strtol(name, NULL, 10);
}

static enum soma_err exec(struct store *st, const char *sql)
{
	return sqlite3_exec(st->main.db, sql, NULL, NULL, NULL) == SQLITE_OK ? SOMA_OK : SOMA_ERR_STORE;
}

int store_sqlite_schema_latest(void)
{
	int latest = 0;
	for (const struct embedded_file *m = store_migrations; m->name; m++)
		latest = migration_version(m->name);
	return latest;
}

enum soma_err sqlite_schema_version(struct store *st, int *current, int *latest)
{
	*latest = store_sqlite_schema_latest();
	*current = 0;
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(st->main.db, "SELECT max(version) FROM schema_migrations", -1, &s, NULL) != SQLITE_OK)
		return SOMA_OK; /* no table yet: nothing applied */
	if (sqlite3_step(s) == SQLITE_ROW)
		*current = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return SOMA_OK;
}

enum soma_err sqlite_migrate(struct store *st, int *applied)
{
	/* every pending migration in one transaction: all or none, and one fsync at first start */
	int count = 0, current, latest;
	if (exec(st, "BEGIN IMMEDIATE") != SOMA_OK)
		return SOMA_ERR_STORE;
	if (exec(st, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
		     "name TEXT NOT NULL, applied_ms INTEGER NOT NULL)") != SOMA_OK ||
	    sqlite_schema_version(st, &current, &latest) != SOMA_OK) {
		(void)exec(st, "ROLLBACK");
		return SOMA_ERR_STORE;
	}
	for (const struct embedded_file *m = store_migrations; m->name; m++) {
		int v = migration_version(m->name);
		if (v <= current)
			continue;
		sqlite3_stmt *s = NULL;
		bool ok = exec(st, m->text) == SOMA_OK &&
			  sqlite3_prepare_v2(st->main.db, "INSERT INTO schema_migrations VALUES (?, ?, ?)", -1, &s,
					     NULL) == SQLITE_OK;
		if (ok) {
			sqlite3_bind_int(s, 1, v);
			sqlite3_bind_text(s, 2, m->name, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 3, clock_wall_ms());
			ok = sqlite3_step(s) == SQLITE_DONE;
		}
		sqlite3_finalize(s);
		if (!ok) {
			(void)exec(st, "ROLLBACK");
			return SOMA_ERR_STORE;
		}
		count++;
	}
	if (exec(st, "COMMIT") != SOMA_OK) {
		(void)exec(st, "ROLLBACK");
		return SOMA_ERR_STORE;
	}
	if (applied)
		*applied = count;
	return SOMA_OK;
}

/* SQLite keeps writing to the files it opened even once data.dir was removed (rm -rf) or its
 * database replaced: every answer looked right until the process ended and took it all along. */
enum soma_err sqlite_ping(struct store *st)
{
	int moved = 0;
	if (atomic_load(&st->fault_gone) ||
	    (sqlite3_file_control(st->main.db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved)) {
		atomic_store(&st->fault_gone, true);
		return SOMA_ERR_UNAVAILABLE;
	}
	return exec(st, "SELECT 1");
}

enum soma_err sqlite_data_version(struct store *st, int64_t *version)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(st->main.db, "PRAGMA data_version", -1, &s, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	enum soma_err err = SOMA_ERR_STORE;
	if (sqlite3_step(s) == SQLITE_ROW) {
		*version = sqlite3_column_int64(s, 0);
		err = SOMA_OK;
	}
	sqlite3_finalize(s);
	return err;
}

enum soma_err sqlite_key_insert(struct store *st, const struct store_key *key)
{
	sqlite3_stmt *s = NULL;
	if (exec(st, "BEGIN IMMEDIATE") != SOMA_OK)
		return SOMA_ERR_STORE;
	bool ok = sqlite3_prepare_v2(st->main.db, "INSERT OR IGNORE INTO tenants(id, created_ms) VALUES (?, ?)", -1, &s,
				     NULL) == SQLITE_OK;
	if (ok) {
		sqlite3_bind_text(s, 1, key->tenant, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, key->created_ms);
		ok = sqlite3_step(s) == SQLITE_DONE;
	}
	sqlite3_finalize(s);
	s = NULL;
	ok = ok && sqlite3_prepare_v2(st->main.db,
				      "INSERT INTO api_keys(id, tenant_id, name, scopes, token_hash, created_ms) "
				      "VALUES (?, ?, ?, ?, ?, ?)",
				      -1, &s, NULL) == SQLITE_OK;
	if (ok) {
		sqlite3_bind_text(s, 1, key->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, key->tenant, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, key->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, key->scopes, -1, SQLITE_STATIC);
		sqlite3_bind_blob(s, 5, key->token_hash, sizeof(key->token_hash), SQLITE_STATIC);
		sqlite3_bind_int64(s, 6, key->created_ms);
		ok = sqlite3_step(s) == SQLITE_DONE;
	}
	sqlite3_finalize(s);
	if (!ok || exec(st, "COMMIT") != SOMA_OK) {
		(void)exec(st, "ROLLBACK");
		return SOMA_ERR_STORE;
	}
	return SOMA_OK;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
	snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

enum soma_err sqlite_key_list(struct store *st, struct store_key **keys, size_t *n)
{
	sqlite3_stmt *s;
	*keys = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(st->main.db,
			       "SELECT id, tenant_id, name, scopes, token_hash, created_ms, coalesce(revoked_ms, 0) "
			       "FROM api_keys ORDER BY created_ms, id",
			       -1, &s, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	size_t cap = 0;
	enum soma_err err = SOMA_OK;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			struct store_key *grown = realloc(*keys, cap * sizeof(**keys));
			if (!grown) {
				err = SOMA_ERR_NOMEM;
				break;
			}
			*keys = grown;
		}
		struct store_key *k = &(*keys)[(*n)++];
		memset(k, 0, sizeof(*k));
		copy_text(k->id, sizeof(k->id), sqlite3_column_text(s, 0));
		copy_text(k->tenant, sizeof(k->tenant), sqlite3_column_text(s, 1));
		copy_text(k->name, sizeof(k->name), sqlite3_column_text(s, 2));
		copy_text(k->scopes, sizeof(k->scopes), sqlite3_column_text(s, 3));
		if (sqlite3_column_bytes(s, 4) == (int)sizeof(k->token_hash))
			memcpy(k->token_hash, sqlite3_column_blob(s, 4), sizeof(k->token_hash));
		k->created_ms = sqlite3_column_int64(s, 5);
		k->revoked_ms = sqlite3_column_int64(s, 6);
	}
	if (err == SOMA_OK && rc != SQLITE_DONE)
		err = SOMA_ERR_STORE;
	sqlite3_finalize(s);
	if (err != SOMA_OK) {
		free(*keys);
		*keys = NULL;
		*n = 0;
	}
	return err;
}

enum soma_err sqlite_key_revoke(struct store *st, const char *id)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(st->main.db, "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
			       -1, &s, NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, clock_wall_ms());
	sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
	enum soma_err err = sqlite3_step(s) == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
	sqlite3_finalize(s);
	if (err == SOMA_OK && sqlite3_changes(st->main.db) == 0)
		err = SOMA_ERR_NOT_FOUND;
	return err;
}
