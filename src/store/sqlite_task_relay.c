/*
 * sqlite_task_relay.c - SQL of the redis queue's outbox (see store.h, "redis queue relay").
 *
 * With queue.driver=redis a task row is a message waiting to be published: the relay claims
 * queued rows (queued -> relaying, with a lease in reserved_until_ms), LPUSHes them to Redis,
 * then deletes them (RELAY_DONE, or op->row of the next RELAY_CLAIM: ids deleted first, in the
 * claim's transaction). A relay that dies between the two leaves its rows relaying
 * until the lease passes; they are claimed and published again (the worker dedupes). Dead
 * letters of the redis driver are rows in state 'dead' (DEAD_ADD), listed and requeued by the
 * same ops as the local queue's; a requeued row is queued again, so the relay republishes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/store_int.h"

/* One statement for the batch: the ids go in as a JSON array (json_each). */
static enum soma_err relay_done(struct dbconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->row, i, id)
	{
		if (!json_is_string(id))
			return SOMA_ERR_STORE;
	}
	char *ids = json_dumps(op->row, JSON_COMPACT | JSON_ENCODE_ANY);
	sqlite3_stmt *s = ids ? dbconn_stmt(c, "DELETE FROM tasks WHERE state = 'relaying' AND id IN "
					       "(SELECT value FROM json_each(?1))")
			      : NULL;
	int rc = SQLITE_ERROR;
	if (s) {
		bind_text(s, 1, ids);
		rc = sqlite3_step(s);
		sqlite3_reset(s);
	}
	free(ids);
	return !ids ? SOMA_ERR_NOMEM : rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* Oldest first: rowid order is insertion order among the rows present (a new row's rowid is above
 * every live one); the UPDATE visits, so RETURNING gives, the claimed rows in rowid order. Each
 * part reads its state's partial index (INDEXED BY: without it the planner walks the table in
 * rowid order to skip the sorts, stepping over every dead letter, and those are kept forever by
 * default), the two come out sorted by rowid and merge; the sorts hold only the queued and
 * expired relaying rows, which the relay keeps few. No index in rowid order over the live rows:
 * the local queue would pay for it on each message. ORDER BY created_ms sorted the whole table. */
static enum soma_err relay_claim(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	enum soma_err err = op->row ? relay_done(c, op) : SOMA_OK; /* the last batch's, same transaction */
	if (err != SOMA_OK)
		return err;
	sqlite3_stmt *s = dbconn_stmt(
		c, "UPDATE tasks SET state = 'relaying', reserved_until_ms = ?1 WHERE rowid IN ("
		   "SELECT rowid FROM tasks INDEXED BY tasks_ready WHERE state = 'queued' UNION ALL "
		   "SELECT rowid FROM tasks INDEXED BY tasks_relaying WHERE state = 'relaying' AND "
		   "reserved_until_ms <= ?2 ORDER BY 1 LIMIT ?3) "
		   "RETURNING id, queue, name, tenant, session_id, payload, attempts, max_retries, available_ms, "
		   "updated_ms > created_ms");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, now + op->delay_ms);
	sqlite3_bind_int64(s, 2, now);
	sqlite3_bind_int64(s, 3, op->limit > 0 ? op->limit : 100);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *payload =
			json_loads((const char *)sqlite3_column_text(s, 5), JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		json_t *row = json_pack(
			"{s:s, s:s, s:s, s:s, s:s?, s:o, s:I, s:I, s:I, s:b}", "id",
			(const char *)sqlite3_column_text(s, 0), "queue", (const char *)sqlite3_column_text(s, 1),
			"name", (const char *)sqlite3_column_text(s, 2), "tenant",
			(const char *)sqlite3_column_text(s, 3), "session_id", (const char *)sqlite3_column_text(s, 4),
			"payload", payload ? payload : json_object(), "attempts",
			(json_int_t)sqlite3_column_int64(s, 6), "max_retries", (json_int_t)sqlite3_column_int64(s, 7),
			"available_ms", (json_int_t)sqlite3_column_int64(s, 8), "requeued", sqlite3_column_int(s, 9));
		if (!row || json_array_append_new(op->rows, row) != 0) {
			sqlite3_reset(s);
			return SOMA_ERR_NOMEM;
		}
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

static enum soma_err dead_add(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s =
		dbconn_stmt(c, "INSERT OR REPLACE INTO tasks(id, queue, name, tenant, session_id, payload, "
			       "state, attempts, max_retries, available_ms, last_error, created_ms, updated_ms) "
			       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'dead', ?7, ?8, ?9, ?10, ?9, ?9)");
	if (!s)
		return SOMA_ERR_STORE;
	json_t *t = op->task;
	char *payload = json_dumps(json_object_get(t, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
	const char *session = json_string_value(json_object_get(t, "session_id"));
	bind_text(s, 1, json_string_value(json_object_get(t, "id")));
	bind_text(s, 2, json_string_value(json_object_get(t, "queue")));
	bind_text(s, 3, json_string_value(json_object_get(t, "name")));
	bind_text(s, 4, op->tenant);
	if (session && session[0])
		bind_text(s, 5, session);
	bind_text(s, 6, payload ? payload : "{}");
	sqlite3_bind_int64(s, 7, json_integer_value(json_object_get(t, "attempts")));
	sqlite3_bind_int64(s, 8, json_integer_value(json_object_get(t, "max_retries")));
	sqlite3_bind_int64(s, 9, clock_wall_ms());
	const char *error = json_string_value(json_object_get(t, "error"));
	bind_text(s, 10, error ? error : "");
	int rc = sqlite3_step(s);
	free(payload);
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sql_task_relay_write(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TASK_RELAY_CLAIM:
		return relay_claim(c, op);
	case STORE_OP_TASK_RELAY_DONE:
		return relay_done(c, op);
	case STORE_OP_TASK_DEAD_ADD:
		return dead_add(c, op);
	default:
		return SOMA_ERR_INVALID;
	}
}
