/*
 * pg.c - the PostgreSQL driver of the store (see store.h, pg_int.h): opening, migrations under an
 * advisory lock, and the synchronous calls of store.h on the main connection; the exec side (the
 * writer's and the readers' connections, the batch transaction) is pg_writer.c's.
 *
 * DESIGN: one main connection behind a mutex (CLI, migrations, keys, health, key-cache polls), the
 * writer's connection (exec.c's group-commit thread: BEGIN, SAVEPOINT per op, COMMIT), the message
 * lanes (store.message_connections connections, each with its thread, that commit chat messages
 * as they arrive: pg_lanes.c; every commit durable with synchronous_commit=on) and
 * store.pool_size reader connections. Several nodes share
 * the database: migrations run under pg_advisory_lock so the first node applies them and the
 * others find them done; data_version reads a row that triggers bump whenever keys or tenants
 * change (migrations 0001, 0003), so every node's key cache notices another node's change.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/pg_int.h"
#include "store/store_int.h"

#define MIGRATE_LOCK "7079220418" /* pg_advisory_lock key of store_migrate ("soma" migrations) */

struct embedded_file {
	const char *name;
	const char *text;
};
extern const struct embedded_file store_pg_migrations[];

/* "user@host:port/db" of a URL, without its password. */
static void describe_url(const char *url, char *out, size_t cap)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &err);
	const char *user = "", *host = "", *port = "", *db = "";
	for (PQconninfoOption *o = opts; o && o->keyword; o++) {
		if (!o->val)
			continue;
		if (strcmp(o->keyword, "user") == 0)
			user = o->val;
		else if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
	}
	snprintf(out, cap, "%s%s%s%s%s/%s", user, user[0] ? "@" : "", host[0] ? host : "localhost", port[0] ? ":" : "",
		 port, db);
	PQconninfoFree(opts);
	PQfreemem(err);
}

enum soma_err store_pg_open(struct store *st, const char *url, char *why, size_t why_cap)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);
	if (!opts) {
		snprintf(why, why_cap,
			 "store.url is not a valid PostgreSQL URL (%.*s); expected "
			 "postgresql://user:password@host:port/database",
			 perr ? (int)strcspn(perr, "\n") : 14, perr ? perr : "out of memory");
		PQfreemem(perr);
		return SOMA_ERR_CONFIG;
	}
	PQconninfoFree(opts);
	struct pg_store *pg = calloc(1, sizeof(*pg));
	if (!pg)
		return SOMA_ERR_NOMEM;
	st->pg = pg;
	snprintf(pg->url, sizeof(pg->url), "%s", url);
	describe_url(url, pg->where, sizeof(pg->where));
	pthread_mutex_init(&pg->main_lock, NULL);
	char msg[512];
	if (pg_conn_open(&pg->main, pg->url, "main", msg, sizeof(msg)) != SOMA_OK) {
		snprintf(why, why_cap,
			 "cannot connect to PostgreSQL at %s (%s); check store.url and that the server runs", pg->where,
			 msg);
		return SOMA_ERR_UNAVAILABLE;
	}
	return SOMA_OK;
}

static void pg_close(struct store *st)
{
	if (!st->pg)
		return;
	pg_conn_close(&st->pg->main);
	pthread_mutex_destroy(&st->pg->main_lock);
	free(st->pg);
	st->pg = NULL;
}

/* "0001_x.sql" -> 1 */
static int migration_version(const char *name)
{
	return (int)strtol(name, NULL, 10);
}

static enum soma_err schema_version_locked(struct pgconn *c, int *current, int *latest)
{
	*latest = 0;
	for (const struct embedded_file *m = store_pg_migrations; m->name; m++)
		*latest = migration_version(m->name);
	*current = 0;
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL, &err);
	if (!r)
		return err;
	bool exists = pg_bool(r, 0, 0);
	PQclear(r);
	if (!exists)
		return SOMA_OK; /* no table yet: nothing applied */
	if (!(r = pg_exec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations", NULL, &err)))
		return err;
	*current = (int)pg_int(r, 0, 0);
	PQclear(r);
	return SOMA_OK;
}

static enum soma_err pg_schema_version(struct store *st, int *current, int *latest)
{
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err = schema_version_locked(&st->pg->main, current, latest);
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

/* Every pending migration in one transaction, under the advisory lock. */
static enum soma_err migrate_locked(struct pgconn *c, int *applied)
{
	int current = 0, latest = 0, count = 0;
	enum soma_err err = pg_cmd(c, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
				      "name TEXT NOT NULL, applied_ms BIGINT NOT NULL)");
	if (err == SOMA_OK)
		err = schema_version_locked(c, &current, &latest);
	if (err == SOMA_OK)
		err = pg_cmd(c, "BEGIN");
	for (const struct embedded_file *m = store_pg_migrations; err == SOMA_OK && m->name; m++) {
		int v = migration_version(m->name);
		if (v <= current)
			continue;
		struct pg_params p = {0};
		pg_param_int(&p, v);
		pg_param_text(&p, m->name);
		pg_param_int(&p, clock_wall_ms());
		err = pg_cmd(c, m->text);
		if (err == SOMA_OK)
			err = pg_run(c, "INSERT INTO schema_migrations VALUES ($1, $2, $3)", &p, NULL);
		if (err != SOMA_OK)
			log_error("store", "PostgreSQL migration %s failed", m->name);
		count++;
	}
	if (err == SOMA_OK)
		err = pg_cmd(c, "COMMIT");
	if (err != SOMA_OK && pg_conn_up(c))
		(void)pg_cmd(c, "ROLLBACK");
	if (err == SOMA_OK && applied)
		*applied = count;
	return err;
}

static enum soma_err pg_migrate(struct store *st, int *applied)
{
	struct pgconn *c = &st->pg->main;
	pthread_mutex_lock(&st->pg->main_lock);
	/* up to date (the migrations commit with their schema_migrations rows): nothing to do, and no
	 * DDL, so a role that may only read and write the tables starts a node once they exist */
	int current = 0, latest = 0;
	enum soma_err err = schema_version_locked(c, &current, &latest);
	if (err != SOMA_OK || current >= latest) {
		if (applied)
			*applied = 0;
		pthread_mutex_unlock(&st->pg->main_lock);
		return err;
	}
	/* several nodes starting together: the first applies, the others wait and find nothing to do.
	 * Neither the wait nor a migration (an index built on a large table) has the connections'
	 * 60 s statement_timeout: a node waiting for another's migration would give up, and a long one
	 * could never finish */
	err = pg_cmd(c, "SET statement_timeout = 0");
	if (err == SOMA_OK)
		err = pg_cmd(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")");
	if (err == SOMA_OK) {
		err = migrate_locked(c, applied);
		if (pg_conn_up(c))
			(void)pg_cmd(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")");
	}
	if (pg_conn_up(c))
		(void)pg_cmd(c, "RESET statement_timeout");
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

static enum soma_err pg_ping(struct store *st)
{
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err = pg_run(&st->pg->main, "SELECT 1", NULL, NULL);
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

static enum soma_err pg_data_version(struct store *st, int64_t *version)
{
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err;
	PGresult *r = pg_exec(&st->pg->main, "SELECT version FROM keys_version_row", NULL, &err);
	if (r) {
		*version = pg_int(r, 0, 0);
		PQclear(r);
	}
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

static enum soma_err key_insert_locked(struct pgconn *c, const struct store_key *key)
{
	char hash[2 * sizeof(key->token_hash) + 1];
	for (size_t i = 0; i < sizeof(key->token_hash); i++)
		snprintf(hash + 2 * i, 3, "%02x", key->token_hash[i]);
	struct pg_params t = {0}, k = {0};
	pg_param_text(&t, key->tenant);
	pg_param_int(&t, key->created_ms);
	pg_param_text(&k, key->id);
	pg_param_text(&k, key->tenant);
	pg_param_text(&k, key->name);
	pg_param_text(&k, key->scopes);
	pg_param_text(&k, hash);
	pg_param_int(&k, key->created_ms);
	enum soma_err err = pg_cmd(c, "BEGIN");
	if (err == SOMA_OK)
		err = pg_run(c, "INSERT INTO tenants(id, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING", &t, NULL);
	if (err == SOMA_OK)
		err = pg_run(c,
			     "INSERT INTO api_keys(id, tenant_id, name, scopes, token_hash, created_ms) "
			     "VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6)",
			     &k, NULL);
	if (err == SOMA_OK)
		err = pg_cmd(c, "COMMIT");
	if (err != SOMA_OK && pg_conn_up(c))
		(void)pg_cmd(c, "ROLLBACK");
	return err;
}

static enum soma_err pg_key_insert(struct store *st, const struct store_key *key)
{
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err = key_insert_locked(&st->pg->main, key);
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

static void copy_text(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int hexval(char ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static enum soma_err pg_key_list(struct store *st, struct store_key **keys, size_t *n)
{
	*keys = NULL;
	*n = 0;
	enum soma_err err;
	pthread_mutex_lock(&st->pg->main_lock);
	PGresult *r = pg_exec(&st->pg->main,
			      "SELECT id, tenant_id, name, scopes, encode(token_hash, 'hex'), created_ms, "
			      "coalesce(revoked_ms, 0) FROM api_keys ORDER BY created_ms, id",
			      NULL, &err);
	pthread_mutex_unlock(&st->pg->main_lock);
	if (!r)
		return err;
	int rows = PQntuples(r);
	*keys = rows ? calloc((size_t)rows, sizeof(**keys)) : NULL;
	if (rows && !*keys) {
		PQclear(r);
		return SOMA_ERR_NOMEM;
	}
	for (int i = 0; i < rows; i++) {
		struct store_key *k = &(*keys)[i];
		copy_text(k->id, sizeof(k->id), pg_text(r, i, 0));
		copy_text(k->tenant, sizeof(k->tenant), pg_text(r, i, 1));
		copy_text(k->name, sizeof(k->name), pg_text(r, i, 2));
		copy_text(k->scopes, sizeof(k->scopes), pg_text(r, i, 3));
		const char *hex = pg_text(r, i, 4);
		if (hex && strlen(hex) == 2 * sizeof(k->token_hash)) {
			for (size_t j = 0; j < sizeof(k->token_hash); j++)
				k->token_hash[j] = (unsigned char)(hexval(hex[2 * j]) << 4 | hexval(hex[2 * j + 1]));
		}
		k->created_ms = pg_int(r, i, 5);
		k->revoked_ms = pg_int(r, i, 6);
	}
	*n = (size_t)rows;
	PQclear(r);
	return SOMA_OK;
}

static enum soma_err pg_key_revoke(struct store *st, const char *id)
{
	struct pg_params p = {0};
	pg_param_int(&p, clock_wall_ms());
	pg_param_text(&p, id);
	int64_t changed = 0;
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err =
		pg_run(&st->pg->main, "UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL", &p,
		       &changed);
	pthread_mutex_unlock(&st->pg->main_lock);
	return err == SOMA_OK && changed == 0 ? SOMA_ERR_NOT_FOUND : err;
}

static enum soma_err pg_audit_now(struct store *st, json_t *row)
{
	pthread_mutex_lock(&st->pg->main_lock);
	enum soma_err err = pg_audit_insert_now(&st->pg->main, row);
	pthread_mutex_unlock(&st->pg->main_lock);
	return err;
}

/* Other live nodes hold reservations in the same table: a reserved task is never taken from
 * them here; a dead node's tasks are reserved again once their visibility timeout passes. */
static enum soma_err pg_tasks_recover(struct store *st, int *n)
{
	(void)st;
	*n = 0;
	return SOMA_OK;
}

const struct store_driver store_pg_driver = {
	.name = "postgresql",
	.exec_open = pg_exec_open,
	.exec_close = pg_exec_close,
	.begin = pg_begin,
	.write_op = pg_write_op,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.retry = pg_retry,
	.read_op = pg_read_op,
	.take = pg_lanes_take,
	.close = pg_close,
	.migrate = pg_migrate,
	.schema_version = pg_schema_version,
	.ping = pg_ping,
	.data_version = pg_data_version,
	.key_insert = pg_key_insert,
	.key_list = pg_key_list,
	.key_revoke = pg_key_revoke,
	.audit_insert_now = pg_audit_now,
	.tasks_recover = pg_tasks_recover,
};
