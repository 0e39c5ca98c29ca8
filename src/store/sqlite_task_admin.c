/*
 * sqlite_task_admin.c - SQL of the task API on the local queue (see store.h): one task's state,
 * per-queue counts, and the dead letters (list, requeue, drop).
 *
 * Publishing a task on its own (POST /v1/tasks) is here too; a task caused by a state change is
 * inserted by that change's op (MESSAGE).
 * A task's status in Celery's words: a queued row is PENDING (RETRY once it has been tried),
 * a reserved row STARTED, a dead row FAILURE; a finished task has left the queue table and its
 * outcome is in task_results (SUCCESS or FAILURE). Operators' ops (all_tenants) read and change
 * every tenant's rows; the gateway allows them to admin callers only.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "store/store_int.h"

/* RFC 3339 text of ms into buf, or NULL for 0 (never happened). */
static const char *time_or_null(int64_t ms, char *buf, size_t cap)
{
	return ms > 0 ? clock_rfc3339(ms, buf, cap) : NULL;
}

static json_t *json_or_null(const char *text)
{
	json_t *v = text ? json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
	return v ? v : json_null();
}

static enum soma_err task_get(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT name, state, attempts, last_error, updated_ms, queue FROM tasks "
					 "WHERE id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->tenant);
	char at[CLOCK_RFC3339_LEN + 1];
	if (sqlite3_step(s) == SQLITE_ROW) {
		const char *state = (const char *)sqlite3_column_text(s, 1);
		int64_t attempts = sqlite3_column_int64(s, 2);
		const char *error = (const char *)sqlite3_column_text(s, 3);
		const char *status = strcmp(state, "reserved") == 0 ? "STARTED"
				     : strcmp(state, "dead") == 0   ? "FAILURE"
				     : attempts > 0		    ? "RETRY"
								    : "PENDING";
		bool dead = strcmp(state, "dead") == 0;
		bool running = strcmp(state, "reserved") == 0; /* (updated_ms: when it was reserved) */
		char started[CLOCK_RFC3339_LEN + 1];
		op->row = json_pack(
			"{s:s, s:s, s:s, s:s, s:n, s:s?, s:I, s:s?, s:s?, s:b}", "task_id", op->task_id, "task",
			(const char *)sqlite3_column_text(s, 0), "queue", (const char *)sqlite3_column_text(s, 5),
			"status", status, "result", "error", error && error[0] ? error : NULL, "retries",
			(json_int_t)(attempts > 0 ? attempts - 1 : 0), "started_at",
			running ? time_or_null(sqlite3_column_int64(s, 4), started, sizeof(started)) : NULL,
			"completed_at", dead ? time_or_null(sqlite3_column_int64(s, 4), at, sizeof(at)) : NULL,
			"dead_letter", dead);
		return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
	}
	/* a result older than queue.result_expires_s is gone, as on Redis (sqlite_tasks.c deletes it later) */
	int64_t ttl_ms = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S) * 1000;
	s = dbconn_stmt(c, "SELECT status, result, error, completed_ms, name, retries, started_ms FROM task_results "
			   "WHERE task_id = ? AND tenant = ? AND completed_ms >= ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->tenant);
	sqlite3_bind_int64(s, 3, ttl_ms > 0 ? clock_wall_ms() - ttl_ms : INT64_MIN);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? SOMA_ERR_NOT_FOUND : SOMA_ERR_STORE;
	char started[CLOCK_RFC3339_LEN + 1];
	op->row = json_pack("{s:s, s:s?, s:s, s:o, s:s?, s:I, s:s?, s:s?, s:b}", "task_id", op->task_id, "task",
			    (const char *)sqlite3_column_text(s, 4), "status", (const char *)sqlite3_column_text(s, 0),
			    "result", json_or_null((const char *)sqlite3_column_text(s, 1)), "error",
			    (const char *)sqlite3_column_text(s, 2), "retries", (json_int_t)sqlite3_column_int64(s, 5),
			    "started_at", time_or_null(sqlite3_column_int64(s, 6), started, sizeof(started)),
			    "completed_at", time_or_null(sqlite3_column_int64(s, 3), at, sizeof(at)), "dead_letter", 0);
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err queue_stats(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(
		c, "SELECT queue, sum(state = 'queued' AND available_ms <= ?1), sum(state = 'queued' AND available_ms "
		   "> ?1), "
		   "sum(state = 'reserved'), sum(state = 'dead'), "
		   "coalesce(min(CASE WHEN state = 'queued' AND available_ms <= ?1 THEN available_ms END), 0) "
		   "FROM tasks WHERE ?2 OR tenant = ?3 GROUP BY queue ORDER BY queue");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, clock_wall_ms());
	sqlite3_bind_int(s, 2, op->all_tenants);
	bind_text(s, 3, op->tenant);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(op->rows, json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name",
							  (const char *)sqlite3_column_text(s, 0), "depth",
							  (json_int_t)sqlite3_column_int64(s, 1), "delayed",
							  (json_int_t)sqlite3_column_int64(s, 2), "reserved",
							  (json_int_t)sqlite3_column_int64(s, 3), "dead",
							  (json_int_t)sqlite3_column_int64(s, 4), "oldest_ms",
							  (json_int_t)sqlite3_column_int64(s, 5)));
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* Dead letters newest first; the cursor is "<updated_ms>:<id>" of the last row served. */
static enum soma_err dead_list(struct dbconn *c, struct store_op *op)
{
	long long cur_ms;
	char cur_id[STORE_TASK_ID_MAX + 1];
	if (!store_page_cursor(op, &cur_ms, cur_id))
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(
		c,
		"SELECT id, name, queue, tenant, session_id, last_error, attempts, updated_ms FROM tasks "
		"WHERE state = 'dead' AND (?1 OR tenant = ?2) AND (updated_ms < ?3 OR (updated_ms = ?3 AND id < ?4)) "
		"ORDER BY updated_ms DESC, id DESC LIMIT ?5");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int(s, 1, op->all_tenants);
	bind_text(s, 2, op->tenant);
	sqlite3_bind_int64(s, 3, cur_ms);
	bind_text(s, 4, cur_id);
	sqlite3_bind_int64(s, 5, op->limit + 1);
	op->rows = json_array();
	int rc;
	char at[CLOCK_RFC3339_LEN + 1];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		int64_t ms = sqlite3_column_int64(s, 7);
		if ((int64_t)json_array_size(op->rows) == op->limit)
			break; /* one more exists: the page ends at the last row served */
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld:%s", (long long)ms, id);
		int64_t attempts = sqlite3_column_int64(s, 6);
		json_array_append_new(op->rows, json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:I, s:s}", "task_id", id,
							  "task", (const char *)sqlite3_column_text(s, 1), "queue",
							  (const char *)sqlite3_column_text(s, 2), "tenant",
							  (const char *)sqlite3_column_text(s, 3), "session_id",
							  (const char *)sqlite3_column_text(s, 4), "error",
							  (const char *)sqlite3_column_text(s, 5), "retries",
							  (json_int_t)(attempts > 0 ? attempts - 1 : 0), "failed_at",
							  clock_rfc3339(ms, at, sizeof(at))));
	}
	if (rc == SQLITE_DONE)
		op->next_cursor[0] = '\0'; /* no row beyond this page */
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* A dead letter of a session deleted since (DELETE, retention) is not requeued: its task would run
 * for no session. SOMA_ERR_NOT_FOUND with a sentence then (as PostgreSQL's lock_session answers);
 * a dead letter without a session (a published or Celery task) is requeued as ever. */
static enum soma_err session_gone(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s =
		dbconn_stmt(c, "SELECT 1 FROM tasks t WHERE id = ?1 AND state = 'dead' AND (?2 OR tenant = ?3) "
			       "AND session_id IS NOT NULL AND session_id != '' AND NOT EXISTS "
			       "(SELECT 1 FROM sessions WHERE id = t.session_id)");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	sqlite3_bind_int(s, 2, op->all_tenants);
	bind_text(s, 3, op->tenant);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
	snprintf(op->error_text, sizeof(op->error_text), "the session of this dead letter was deleted");
	return SOMA_ERR_NOT_FOUND;
}

/* Requeue: fresh attempts, due now, and its FAILURE outcome forgotten (it is pending again). */
static enum soma_err dead_change(struct dbconn *c, struct store_op *op, bool *enqueued)
{
	bool requeue = op->kind == STORE_OP_DEAD_REQUEUE;
	if (requeue) {
		enum soma_err err = session_gone(c, op);
		if (err != SOMA_OK)
			return err;
	}
	sqlite3_stmt *s =
		requeue ? dbconn_stmt(c, "UPDATE tasks SET state = 'queued', attempts = 0, available_ms = ?1, "
					 "reserved_until_ms = 0, worker = '', last_error = '', updated_ms = ?1 "
					 "WHERE id = ?2 AND state = 'dead' AND (?3 OR tenant = ?4) RETURNING tenant")
			: dbconn_stmt(c, "DELETE FROM tasks WHERE id = ?2 AND state = 'dead' AND (?3 OR tenant = ?4) "
					 "RETURNING tenant");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, clock_wall_ms());
	bind_text(s, 2, op->task_id);
	sqlite3_bind_int(s, 3, op->all_tenants);
	bind_text(s, 4, op->tenant);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) /* whose task changed: its outcome and the audit row are that tenant's */
		snprintf(op->row_tenant, sizeof(op->row_tenant), "%s", (const char *)sqlite3_column_text(s, 0) ?: "");
	sqlite3_reset(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? SOMA_ERR_NOT_FOUND : SOMA_ERR_STORE;
	if (!requeue)
		return SOMA_OK;
	*enqueued = true;
	s = dbconn_stmt(c, "DELETE FROM task_results WHERE task_id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->row_tenant);
	return sqlite3_step(s) == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* Revoke (POST /v1/tasks/{id}/revoke): a queued task leaves the queue with a REVOKED outcome,
 * so no worker ever reserves it; a running one keeps running (threads are not killed) and a
 * finished one keeps its outcome. */
static enum soma_err task_revoke(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	sqlite3_stmt *s =
		dbconn_stmt(c, "DELETE FROM tasks WHERE id = ? AND tenant = ? AND state = 'queued' RETURNING name");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->tenant);
	char name[256] = ""; /* kept in its result: GET /v1/tasks/{id} names the task */
	int rc = sqlite3_step(s);
	bool revoked = rc == SQLITE_ROW;
	if (revoked) {
		snprintf(name, sizeof(name), "%s", (const char *)sqlite3_column_text(s, 0) ?: "");
		rc = sqlite3_step(s);
	}
	if (rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	if (revoked) {
		s = dbconn_stmt(c, "INSERT OR REPLACE INTO task_results(task_id, tenant, status, result, error, "
				   "completed_ms, name) VALUES (?, ?, 'REVOKED', NULL, 'revoked', ?, ?)");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->task_id);
		bind_text(s, 2, op->tenant);
		sqlite3_bind_int64(s, 3, now);
		bind_text(s, 4, name);
		if (sqlite3_step(s) != SQLITE_DONE)
			return SOMA_ERR_STORE;
		op->row = json_pack("{s:s, s:s}", "task_id", op->task_id, "status", "REVOKED");
		return SOMA_OK;
	}
	enum soma_err err = task_get(c, op); /* not queued: say what it is */
	if (err != SOMA_OK)
		return err;
	const char *status = json_string_value(json_object_get(op->row, "status"));
	return status && (strcmp(status, "STARTED") == 0 || strcmp(status, "RETRY") == 0) ? SOMA_OK : SOMA_ERR_CONFLICT;
}

enum soma_err store_sql_task_admin_read(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TASK_GET:
		return task_get(c, op);
	case STORE_OP_QUEUE_STATS:
		return queue_stats(c, op);
	case STORE_OP_DEAD_LIST:
		return dead_list(c, op);
	default:
		return store_sql_identity_read(c, op);
	}
}

/* A caller's task id is in use while its task has a result (the row left the tasks table, whose key
 * refuses the id only until then): SOMA_ERR_CONFLICT, whichever tenant's it is, else SOMA_OK. */
static enum soma_err result_kept(struct dbconn *c, const char *id)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT 1 FROM task_results WHERE task_id = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, id);
	int rc = sqlite3_step(s);
	return rc == SQLITE_ROW ? SOMA_ERR_CONFLICT : rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sql_task_admin_write(struct dbconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_DEAD_REQUEUE:
	case STORE_OP_DEAD_DELETE:
		return dead_change(c, op, enqueued);
	case STORE_OP_TASK_REVOKE:
		return task_revoke(c, op);
	case STORE_OP_TASK_PUBLISH: {
		enum soma_err err = result_kept(c, json_string_value(json_object_get(op->task, "id")));
		if (err == SOMA_OK)
			err = store_sql_task_insert(c, op->tenant, NULL, op->task);
		*enqueued = err == SOMA_OK;
		return err;
	}
	default:
		return store_sql_identity_write(c, op);
	}
}
