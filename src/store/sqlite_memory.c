/*
 * sqlite_memory.c - SQL of the memory ops (see store.h): the memory outbox and the built-in memory.
 *
 * DESIGN: the outbox is the one road every memory write takes. A row is inserted in the
 * transaction of the event it comes from (store_sql_memory_event, called by sqlite_chat.c) or of
 * POST /v1/memory/remember, so nothing acknowledged is lost. The relay (src/memory/relay.c)
 * claims ready rows (pending -> sending) in id order, never a row whose session has an earlier
 * row still waiting (backoff) or in flight, so each session's memories arrive in order; it then
 * settles each row: delivered rows are deleted, failures go back to pending with a backoff or to
 * `failed` (kept for an admin to retry or drop). Failed rows do not hold their session back.
 * `sending` rows of a dead process are put back by the first claim after a start.
 * The built-in memory is a table with an FTS5 index (content-only); a recall ranks by bm25 with
 * a recency factor and reads only the caller's tenant's rows.
 * With memory.driver=builtin (the default) the sink is this database's own `memories` table, so a
 * write is that row itself, inserted in the transaction of its event (or of the remember) with
 * the key's no-op on a replay (as PostgreSQL does, pg_memory.c): durable before the 200 as an
 * outbox row would be, without the outbox row, its claim, the relay's MEMORY_PUT and the delete.
 * The relay still delivers rows already in the outbox (written under memory.driver=somabrain).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/json_out.h"
#include "store/memory_rows.h"
#include "store/store_int.h"

static enum soma_err step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE ? SOMA_OK : rc == SQLITE_CONSTRAINT ? SOMA_ERR_CONFLICT : SOMA_ERR_STORE;
}

/* memory.driver=builtin: memories are written as their row, not through the outbox. */
static bool memory_direct(void)
{
	return strcmp(cfg_str(CFG_MEMORY_DRIVER), "builtin") == 0;
}

/* -- memories rows wait for the end of the writer's batch --
 * The writer runs each op of a batch inside SAVEPOINT op, and FTS5 writes its pending index
 * data as a new segment at every SAVEPOINT (fts5SavepointMethod -> sqlite3Fts5StorageSync): a
 * memory inserted by each op of a batch became one segment per message (perf: 4% of the
 * server's CPU in sqlite3VtabSavepoint, plus the merges, and recalls visiting more segments).
 * So an op only queues its memories row here; store_sql_memory_flush inserts the batch's rows
 * (and FTS5 indexes them in one segment) just before COMMIT, in the same transaction: a row is
 * durable, and visible, exactly when its event is. A rolled-back op drops what it queued
 * (store_sql_memory_pending_cut). Writer thread only: the queue is thread-local.
 * The relay's MEMORY_PUT (rows an earlier run left in the outbox for SomaBrain, up to 256 per
 * op) inserts its rows at once: they are older than anything queued in the batch, so a key they
 * share with a queued row (a replay) keeps the older row, as in order. */
#define PENDING_MAX 1024 /* rows queued per batch: a batch has at most 256 ops (exec.c) of one row each */

struct pending_row {
	char *tenant, *ns, *key, *session_id, *content, *payload; /* owned */
	int64_t created_ms;					  /* when the op ran */
};

static _Thread_local struct pending_row pending[PENDING_MAX];
static _Thread_local size_t npending;
static _Thread_local bool written; /* chunk_insert added rows (a new FTS5 segment) */

static void pending_free(struct pending_row *r)
{
	free(r->tenant), free(r->ns), free(r->key), free(r->session_id), free(r->content), free(r->payload);
}

size_t store_sql_memory_pending(void)
{
	return npending;
}

void store_sql_memory_pending_cut(size_t mark)
{
	while (npending > mark)
		pending_free(&pending[--npending]);
}

/* INSERTs of 1, 2, 4 ... CHUNK_MAX rows (built once; dbconn_stmt caches a statement by the
 * address of its SQL). FTS5 also writes a segment when each statement that changed it ends (its
 * statement savepoint is released), so the queue goes in as a few multi-row statements: a batch
 * of 50 rows is three (32 + 16 + 2), three small segments instead of fifty. */
#define CHUNK_SIZES 6
#define CHUNK_MAX   32 /* 1 << (CHUNK_SIZES - 1) */

static char chunk_sql[CHUNK_SIZES][1024]; /* the longest (32 rows) is 652 bytes */
static pthread_once_t chunk_once = PTHREAD_ONCE_INIT;

static void chunk_sql_build(void)
{
	for (int k = 0; k < CHUNK_SIZES; k++) {
		char *p = chunk_sql[k], *end = p + sizeof(chunk_sql[k]);
		p += snprintf(p, (size_t)(end - p),
			      "INSERT INTO memories(tenant, namespace, key, session_id, content, "
			      "payload, created_ms) VALUES ");
		for (int i = 0; i < 1 << k; i++)
			p += snprintf(p, (size_t)(end - p), "%s(?,?,?,?,?,?,?)", i ? "," : "");
		snprintf(p, (size_t)(end - p), " ON CONFLICT(tenant, namespace, key) DO NOTHING");
	}
}

/* rows r[0 .. 2^k) in one statement */
static enum soma_err chunk_insert(struct dbconn *c, const struct pending_row *r, int k)
{
	sqlite3_stmt *s = dbconn_stmt(c, chunk_sql[k]);
	if (!s)
		return SOMA_ERR_STORE;
	for (int i = 0; i < 1 << k; i++) {
		bind_text(s, i * 7 + 1, r[i].tenant);
		bind_text(s, i * 7 + 2, r[i].ns);
		bind_text(s, i * 7 + 3, r[i].key);
		bind_text(s, i * 7 + 4, r[i].session_id);
		bind_text(s, i * 7 + 5, r[i].content);
		bind_text(s, i * 7 + 6, r[i].payload);
		sqlite3_bind_int64(s, i * 7 + 7, r[i].created_ms);
	}
	enum soma_err err = step_done(s);
	sqlite3_reset(s);
	written |= err == SOMA_OK;
	return err;
}

bool store_sql_memory_written(void)
{
	bool was = written;
	written = false;
	return was;
}

enum soma_err store_sql_memory_flush(struct dbconn *c)
{
	pthread_once(&chunk_once, chunk_sql_build);
	enum soma_err err = SOMA_OK;
	size_t done = 0;
	for (int k = CHUNK_SIZES - 1; k >= 0 && err == SOMA_OK; k--)
		while (err == SOMA_OK && npending - done >= (size_t)1 << k) {
			err = chunk_insert(c, &pending[done], k);
			done += (size_t)1 << k;
		}
	store_sql_memory_pending_cut(0);
	return err;
}

/* The memories row of value (borrowed), queued for the end of the batch (queue) or inserted at
 * once (!queue, or the queue full); a key already stored in (tenant, namespace) is a no-op then, so a replay
 * writes nothing. ns "": memory.namespace. */
static enum soma_err memory_row_insert(struct dbconn *c, const char *tenant, const char *ns, const char *key,
				       const char *session_id, json_t *value, bool queue)
{
	if (!value)
		return SOMA_ERR_INVALID;
	struct pending_row r = {.tenant = strdup(tenant ? tenant : ""),
				.ns = strdup(ns && ns[0] ? ns : cfg_str(CFG_MEMORY_NAMESPACE)),
				.key = strdup(key ? key : ""),
				.session_id = strdup(session_id ? session_id : ""),
				.content = memory_value_text(value),
				.payload = json_out(value, 1, NULL),
				.created_ms = clock_wall_ms()};
	if (!r.tenant || !r.ns || !r.key || !r.session_id || !r.content || !r.payload) {
		pending_free(&r);
		return SOMA_ERR_NOMEM;
	}
	if (queue && npending < PENDING_MAX) { /* (never full: see PENDING_MAX) */
		pending[npending++] = r;
		return SOMA_OK;
	}
	pthread_once(&chunk_once, chunk_sql_build);
	enum soma_err err = chunk_insert(c, &r, 0);
	pending_free(&r);
	return err;
}

static enum soma_err outbox_insert(struct dbconn *c, const char *tenant, const char *key, const char *session_id,
				   const char *ns, const char *body)
{
	int64_t now = clock_wall_ms();
	sqlite3_stmt *s = dbconn_stmt(c, "INSERT INTO memory_outbox(key, tenant, session_id, namespace, body, "
					 "available_ms, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
					 "ON CONFLICT(tenant, namespace, key) DO NOTHING");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, key);
	bind_text(s, 2, tenant);
	bind_text(s, 3, session_id ? session_id : "");
	bind_text(s, 4, ns ? ns : ""); /* "": memory.namespace when delivered */
	bind_text(s, 5, body);
	sqlite3_bind_int64(s, 6, now);
	sqlite3_bind_int64(s, 7, now);
	sqlite3_bind_int64(s, 8, now);
	return step_done(s);
}

enum soma_err store_sql_memory_event(struct dbconn *c, const char *tenant, const char *session_id, json_t *event)
{
	const char *id;
	if (memory_direct()) {
		json_t *body;
		enum soma_err err = memory_event_row(tenant, session_id, event, &body, &id);
		if (err != SOMA_OK || !body)
			return err;
		err = memory_row_insert(c, tenant, "", id, session_id, json_object_get(body, "value"), true);
		json_decref(body);
		return err;
	}
	char *text;
	enum soma_err err = memory_event_body(tenant, session_id, event, &text, &id);
	if (err != SOMA_OK || !text)
		return err;
	err = outbox_insert(c, tenant, id, session_id, "", text);
	free(text);
	return err;
}

static enum soma_err op_remember(struct dbconn *c, struct store_op *op)
{
	const char *key = json_string_value(json_object_get(op->row, "key"));
	const char *sid = json_string_value(json_object_get(op->row, "session_id"));
	const char *ns = json_string_value(json_object_get(op->row, "namespace"));
	if (memory_direct())
		return memory_row_insert(c, op->tenant, ns, key, sid, json_object_get(op->row, "value"), true);
	char *text = memory_remember_body(op->row);
	if (!text)
		return SOMA_ERR_NOMEM;
	enum soma_err err = outbox_insert(c, op->tenant, key, sid, ns, text);
	free(text);
	return err;
}

static json_t *outbox_row_json(sqlite3_stmt *s)
{
	json_t *body = json_loads((const char *)sqlite3_column_text(s, 5), 0, NULL);
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:s, s:I, s:I}", "id",
			 (json_int_t)sqlite3_column_int64(s, 0), "key", (const char *)sqlite3_column_text(s, 1),
			 "tenant", (const char *)sqlite3_column_text(s, 2), "session_id",
			 (const char *)sqlite3_column_text(s, 3), "namespace", (const char *)sqlite3_column_text(s, 4),
			 "body", body ? body : json_object(), "state", (const char *)sqlite3_column_text(s, 6),
			 "attempts", (json_int_t)sqlite3_column_int64(s, 7), "last_error",
			 (const char *)sqlite3_column_text(s, 8), "created_ms", (json_int_t)sqlite3_column_int64(s, 9),
			 "available_ms", (json_int_t)sqlite3_column_int64(s, 10));
}

#define OUTBOX_COLUMNS \
	"id, key, tenant, session_id, namespace, body, state, attempts, last_error, created_ms, available_ms"

static enum soma_err op_claim(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	if (op->flag) {
		sqlite3_stmt *r = dbconn_stmt(c, "UPDATE memory_outbox SET state = 'pending', updated_ms = ? "
						 "WHERE state = 'sending'");
		if (!r)
			return SOMA_ERR_STORE;
		sqlite3_bind_int64(r, 1, now);
		if (step_done(r) != SOMA_OK)
			return SOMA_ERR_STORE;
		op->seq = sqlite3_changes(c->db); /* how many were reclaimed */
	}
	op->rows = json_array();
	if (op->limit <= 0) /* only the reclaim */
		return op->rows ? SOMA_OK : SOMA_ERR_NOMEM;
	/* a row waits while an earlier row of its session waits for its backoff or is in flight
	 * (looked up by the (tenant, session_id, id) index of migration 0007). The candidates are
	 * read in rowid order, stopping at `limit` (the unary + keeps the planner off the
	 * (state, available_ms, id) index: through it, every ready row of a long backlog was read
	 * and sorted by id on each claim, 19 ms at 20,000 rows against 0.05 ms this way) */
	sqlite3_stmt *s = dbconn_stmt(
		c, "SELECT " OUTBOX_COLUMNS " FROM memory_outbox o WHERE +state = 'pending' AND +available_ms <= ?1 "
		   "AND (session_id = '' OR NOT EXISTS (SELECT 1 FROM memory_outbox p WHERE p.tenant = o.tenant AND "
		   "p.session_id = o.session_id AND p.id < o.id AND (p.state = 'sending' OR "
		   "(p.state = 'pending' AND p.available_ms > ?1)))) ORDER BY id LIMIT ?2");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, now);
	sqlite3_bind_int64(s, 2, op->limit);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(op->rows, outbox_row_json(s));
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	size_t i;
	json_t *row;
	json_array_foreach(op->rows, i, row)
	{
		sqlite3_stmt *u = dbconn_stmt(c, "UPDATE memory_outbox SET state = 'sending', claimed_ms = ?, "
						 "updated_ms = ? WHERE id = ?");
		if (!u)
			return SOMA_ERR_STORE;
		sqlite3_bind_int64(u, 1, now);
		sqlite3_bind_int64(u, 2, now);
		sqlite3_bind_int64(u, 3, json_integer_value(json_object_get(row, "id")));
		if (step_done(u) != SOMA_OK)
			return SOMA_ERR_STORE;
	}
	return SOMA_OK;
}

static enum soma_err settle_one(struct dbconn *c, json_t *r, int64_t now)
{
	static const char *const del = "DELETE FROM memory_outbox WHERE id = ?1 AND state = 'sending'";
	static const char *const retry = "UPDATE memory_outbox SET state = 'pending', attempts = attempts + 1, "
					 "available_ms = ?2 + ?3, last_error = ?4, updated_ms = ?2 WHERE id = ?1 AND "
					 "state = 'sending'";
	static const char *const fail = "UPDATE memory_outbox SET state = 'failed', attempts = attempts + 1, "
					"last_error = ?4, updated_ms = ?2 WHERE id = ?1 AND state = 'sending'";
	static const char *const release = "UPDATE memory_outbox SET state = 'pending', available_ms = ?2 + ?3, "
					   "updated_ms = ?2 WHERE id = ?1 AND state = 'sending'";
	const char *result = json_string_value(json_object_get(r, "result"));
	const char *sql = !result			     ? NULL
			  : strcmp(result, "delivered") == 0 ? del
			  : strcmp(result, "retry") == 0     ? retry
			  : strcmp(result, "failed") == 0    ? fail
			  : strcmp(result, "release") == 0   ? release
							     : NULL;
	if (!sql)
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(c, sql);
	if (!s)
		return SOMA_ERR_STORE;
	const char *error = json_string_value(json_object_get(r, "error"));
	sqlite3_bind_int64(s, 1, json_integer_value(json_object_get(r, "id")));
	if (sql != del) {
		sqlite3_bind_int64(s, 2, now);
		if (sql != fail)
			sqlite3_bind_int64(s, 3, json_integer_value(json_object_get(r, "delay_ms")));
		if (sql != release)
			bind_text(s, 4, error ? error : "");
	}
	return step_done(s);
}

static enum soma_err op_settle(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	size_t i;
	json_t *r;
	json_array_foreach(op->row, i, r)
	{
		enum soma_err err = settle_one(c, r, now);
		if (err != SOMA_OK)
			return err;
	}
	return SOMA_OK;
}

/* Admin actions on one row: retry (failed -> pending) or drop (failed or pending). */
static enum soma_err op_admin(struct dbconn *c, struct store_op *op, bool drop)
{
	sqlite3_stmt *s = dbconn_stmt(
		c,
		drop ? "DELETE FROM memory_outbox WHERE id = ?1 AND state IN ('failed', 'pending') AND "
		       "(?3 OR tenant = ?2) RETURNING tenant"
		     : "UPDATE memory_outbox SET state = 'pending', attempts = 0, available_ms = ?4, updated_ms = ?4 "
		       "WHERE id = ?1 AND state = 'failed' AND (?3 OR tenant = ?2) RETURNING tenant");
	if (!s)
		return SOMA_ERR_STORE;
	char *end;
	long long id = strtoll(op->task_id, &end, 10);
	if (!op->task_id[0] || *end)
		return SOMA_ERR_NOT_FOUND;
	sqlite3_bind_int64(s, 1, id);
	bind_text(s, 2, op->tenant);
	sqlite3_bind_int(s, 3, op->all_tenants);
	if (!drop)
		sqlite3_bind_int64(s, 4, clock_wall_ms());
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) /* whose row changed: the audit row is that tenant's */
		snprintf(op->row_tenant, sizeof(op->row_tenant), "%s", (const char *)sqlite3_column_text(s, 0) ?: "");
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? SOMA_OK : rc == SQLITE_DONE ? SOMA_ERR_NOT_FOUND : SOMA_ERR_STORE;
}

static enum soma_err op_put(struct dbconn *c, struct store_op *op)
{
	size_t i;
	json_t *m;
	json_array_foreach(op->row, i, m)
	{
		enum soma_err err = memory_row_insert(c, json_string_value(json_object_get(m, "tenant")),
						      json_string_value(json_object_get(m, "namespace")),
						      json_string_value(json_object_get(m, "key")),
						      json_string_value(json_object_get(m, "session_id")),
						      json_object_get(m, "payload"), false);
		if (err != SOMA_OK)
			return err;
	}
	return SOMA_OK;
}

static enum soma_err op_stats(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT sum(state = 'pending'), sum(state = 'sending'), sum(state = "
					 "'failed'), min(CASE WHEN state != 'failed' THEN created_ms END) FROM "
					 "memory_outbox WHERE (?1 OR tenant = ?2)");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int(s, 1, op->all_tenants);
	bind_text(s, 2, op->tenant);
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_reset(s);
		return SOMA_ERR_STORE;
	}
	op->session =
		json_pack("{s:I, s:I, s:I, s:I}", "pending", (json_int_t)sqlite3_column_int64(s, 0), "sending",
			  (json_int_t)sqlite3_column_int64(s, 1), "failed", (json_int_t)sqlite3_column_int64(s, 2),
			  "oldest_ms", (json_int_t)sqlite3_column_int64(s, 3));
	sqlite3_reset(s);
	return op->session ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err op_list(struct dbconn *c, struct store_op *op)
{
	long long after = 0;
	if (op->cursor[0] && sscanf(op->cursor, "%lld", &after) != 1)
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT " OUTBOX_COLUMNS " FROM memory_outbox WHERE id > ?1 AND (?2 OR "
					 "tenant = ?3) AND (?4 = '' OR state = ?4) ORDER BY id LIMIT ?5");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int(s, 2, op->all_tenants);
	bind_text(s, 3, op->tenant);
	bind_text(s, 4, op->queue);
	sqlite3_bind_int64(s, 5, op->limit + 1);
	op->rows = json_array();
	op->next_cursor[0] = '\0';
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)json_array_size(op->rows) == op->limit) {
			json_t *last = json_array_get(op->rows, json_array_size(op->rows) - 1);
			snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld",
				 (long long)json_integer_value(json_object_get(last, "id")));
			break;
		}
		json_array_append_new(op->rows, outbox_row_json(s));
	}
	sqlite3_reset(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	return op_stats(c, op); /* the counts of the same rows, into op->session */
}

enum soma_err store_sql_memory_read(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_OUTBOX_STATS:
		return op_stats(c, op);
	case STORE_OP_OUTBOX_LIST:
		return op_list(c, op);
	case STORE_OP_MEMORY_SEARCH:
		return store_sql_memory_search(c, op);
	default:
		return SOMA_ERR_INVALID;
	}
}

enum soma_err store_sql_memory_write(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_MEMORY_REMEMBER:
		return op_remember(c, op);
	case STORE_OP_OUTBOX_CLAIM:
		return op_claim(c, op);
	case STORE_OP_OUTBOX_SETTLE:
		return op_settle(c, op);
	case STORE_OP_OUTBOX_RETRY:
		return op_admin(c, op, false);
	case STORE_OP_OUTBOX_DROP:
		return op_admin(c, op, true);
	case STORE_OP_MEMORY_PUT:
		return op_put(c, op);
	default:
		return store_sql_retention_write(c, op);
	}
}
