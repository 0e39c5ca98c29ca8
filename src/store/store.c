/*
 * store.c - the store's front: picks the driver from store.url and hands each synchronous call of
 * store.h to it (the asynchronous ops go through exec.c, also driver-neutral).
 *
 * DESIGN: an empty URL is the embedded SQLite database under data.dir; a postgresql:// or
 * postgres:// URL is the PostgreSQL driver (pg*.c), which every node of a fleet can share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "store/store_int.h"

static bool is_postgres_url(const char *url)
{
	return url && (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0);
}

enum soma_err store_open_url(const char *url, const char *data_dir, struct store **out, char *why, size_t why_cap)
{
	if (url && url[0] && !is_postgres_url(url)) {
		snprintf(why, why_cap, "store.url must be a postgresql:// URL or empty (SQLite under data.dir)");
		return SOMA_ERR_CONFIG;
	}
	/* the files beside the database (uploads) live under data.dir whichever driver holds the rows */
	if (store_mkdir_p(data_dir) != SOMA_OK) {
		snprintf(why, why_cap, "cannot create data directory %s (%s); check data.dir and its permissions",
			 data_dir, strerror(errno));
		return SOMA_ERR_IO;
	}
	struct store *st = calloc(1, sizeof(*st));
	if (!st)
		return SOMA_ERR_NOMEM;
	bool pg = url && url[0];
	st->drv = pg ? &store_pg_driver : &store_sqlite_driver;
	enum soma_err err = pg ? store_pg_open(st, url, why, why_cap) : store_sqlite_open(st, data_dir, why, why_cap);
	if (err != SOMA_OK) {
		st->drv->close(st);
		free(st);
		return err;
	}
	*out = st;
	return SOMA_OK;
}

enum soma_err store_open(const char *data_dir, struct store **out, char *why, size_t why_cap)
{
	return store_open_url("", data_dir, out, why, why_cap);
}

const char *store_driver_name(const struct store *st)
{
	return st->drv->name;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	store_exec_stop(st);
	st->drv->close(st);
	free(st);
}

bool store_schema_newer(struct store *st, char *why, size_t why_cap)
{
	int current = 0, latest = 0;
	if (st->drv->schema_version(st, &current, &latest) != SOMA_OK || current <= latest)
		return false;
	snprintf(why, why_cap,
		 "%s was migrated by a newer somaagent (schema %d, this binary knows %d); run that version, or "
		 "restore a backup made by this one",
		 strcmp(store_driver_name(st), "sqlite") == 0 ? "data.dir" : "the database at store.url", current,
		 latest);
	return true;
}

enum soma_err store_migrate(struct store *st, int *applied)
{
	/* a newer schema is not ours to run on: its tables may mean what this binary does not know */
	char why[256];
	if (store_schema_newer(st, why, sizeof(why))) {
		log_error("store", "%s", why);
		return SOMA_ERR_STORE;
	}
	return st->drv->migrate(st, applied);
}

enum soma_err store_schema_version(struct store *st, int *current, int *latest)
{
	return st->drv->schema_version(st, current, latest);
}

enum soma_err store_ping(struct store *st)
{
	return st->drv->ping(st);
}

enum store_fault store_fault(struct store *st)
{
	if (atomic_load(&st->fault_gone))
		return STORE_FAULT_GONE;
	/* a small commit may fit where larger ones fail (the WAL's room): the state holds a while */
	int64_t at = atomic_load(&st->full_at_ms);
	bool recent = at && clock_wall_ms() - at < STORE_FULL_HOLD_MS;
	return atomic_load(&st->fault_full) || recent ? STORE_FAULT_FULL : STORE_FAULT_NONE;
}

void store_mark_gone(struct store *st)
{
	atomic_store(&st->fault_gone, true);
}

enum soma_err store_data_version(struct store *st, int64_t *version)
{
	return st->drv->data_version(st, version);
}

enum soma_err store_key_insert(struct store *st, const struct store_key *key)
{
	return st->drv->key_insert(st, key);
}

enum soma_err store_key_list(struct store *st, struct store_key **keys, size_t *n)
{
	return st->drv->key_list(st, keys, n);
}

enum soma_err store_key_revoke(struct store *st, const char *id)
{
	return st->drv->key_revoke(st, id);
}

enum soma_err store_audit_insert_now(struct store *st, json_t *row)
{
	return st->drv->audit_insert_now(st, row);
}

enum soma_err store_tasks_recover(struct store *st, int *n)
{
	return st->drv->tasks_recover(st, n);
}

void store_blob_path(char *out, size_t cap, const char *sha256)
{
	snprintf(out, cap, "%s/blobs/%.2s/%s", cfg_str(CFG_DATA_DIR), sha256, sha256);
}
