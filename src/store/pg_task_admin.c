/*
 * pg_task_admin.c - SQL of the task API on PostgreSQL (see store.h, and sqlite_task_admin.c for
 * the same ops on SQLite): one task's state, per-queue counts, the dead letters (list, requeue,
 * drop), and publishing a task on its own (POST /v1/tasks).
 *
 * DESIGN: the statements and outputs are the SQLite driver's, op for op, so the API answers the
 * same on both stores. A queued row is PENDING (RETRY once tried), a reserved row STARTED, a dead
 * row FAILURE; a finished task's outcome is in task_results. Every statement takes the tenant
 * (or all_tenants, for operators). Ids compare and sort with COLLATE "C": byte order, as SQLite
 * compares, whatever the database's collation (the cursor's "\x7f" sentinel relies on it).
 * One difference: a requeue locks the dead letter's session first and answers 404 when it is gone
 * (lock_session), because other nodes' retention sweeps delete sessions meanwhile; SQLite's one
 * writer needs no lock, only the same check (sqlite_task_admin.c session_gone).
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "store/pg_int.h"

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

static json_t *queued_task_json(const struct store_op *op, const PGresult *r)
{
	const char *state = pg_text(r, 0, 1);
	int64_t attempts = pg_int(r, 0, 2);
	const char *error = pg_text(r, 0, 3);
	bool dead = strcmp(state, "dead") == 0;
	const char *status = strcmp(state, "reserved") == 0 ? "STARTED"
			     : dead			    ? "FAILURE"
			     : attempts > 0		    ? "RETRY"
							    : "PENDING";
	char at[CLOCK_RFC3339_LEN + 1], started[CLOCK_RFC3339_LEN + 1];
	bool running = strcmp(state, "reserved") == 0; /* (updated_ms: when it was reserved) */
	return json_pack("{s:s, s:s, s:s, s:s, s:n, s:s?, s:I, s:s?, s:s?, s:b}", "task_id", op->task_id, "task",
			 pg_text(r, 0, 0), "queue", pg_text(r, 0, 5), "status", status, "result", "error",
			 error && error[0] ? error : NULL, "retries", (json_int_t)(attempts > 0 ? attempts - 1 : 0),
			 "started_at", running ? time_or_null(pg_int(r, 0, 4), started, sizeof(started)) : NULL,
			 "completed_at", dead ? time_or_null(pg_int(r, 0, 4), at, sizeof(at)) : NULL, "dead_letter",
			 dead);
}

static enum soma_err task_get(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT name, state, attempts, last_error, updated_ms, queue FROM tasks "
			      "WHERE id = $1 AND tenant = $2",
			      &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) > 0) {
		op->row = queued_task_json(op, r);
		PQclear(r);
		return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
	}
	PQclear(r);
	/* a result older than queue.result_expires_s is gone, as on Redis (pg_tasks.c deletes it later) */
	int64_t ttl_ms = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S) * 1000;
	pg_param_int(&p, ttl_ms > 0 ? clock_wall_ms() - ttl_ms : INT64_MIN);
	r = pg_exec(c,
		    "SELECT status, result, error, completed_ms, name, retries, started_ms FROM task_results "
		    "WHERE task_id = $1 AND tenant = $2 AND completed_ms >= $3::bigint",
		    &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return SOMA_ERR_NOT_FOUND;
	}
	char at[CLOCK_RFC3339_LEN + 1], started[CLOCK_RFC3339_LEN + 1];
	op->row = json_pack("{s:s, s:s?, s:s, s:o, s:s?, s:I, s:s?, s:s?, s:b}", "task_id", op->task_id, "task",
			    pg_text(r, 0, 4), "status", pg_text(r, 0, 0), "result", json_or_null(pg_text(r, 0, 1)),
			    "error", pg_text(r, 0, 2), "retries", (json_int_t)pg_int(r, 0, 5), "started_at",
			    time_or_null(pg_int(r, 0, 6), started, sizeof(started)), "completed_at",
			    time_or_null(pg_int(r, 0, 3), at, sizeof(at)), "dead_letter", 0);
	PQclear(r);
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err queue_stats(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_int(&p, clock_wall_ms());
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT queue, count(*) FILTER (WHERE state = 'queued' AND available_ms <= $1), "
			      "count(*) FILTER (WHERE state = 'queued' AND available_ms > $1), "
			      "count(*) FILTER (WHERE state = 'reserved'), count(*) FILTER (WHERE state = 'dead'), "
			      "coalesce(min(available_ms) FILTER (WHERE state = 'queued' AND available_ms <= $1), 0) "
			      "FROM tasks WHERE $2 OR tenant = $3 GROUP BY queue ORDER BY queue COLLATE \"C\"",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(op->rows,
				      json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", pg_text(r, i, 0), "depth",
						(json_int_t)pg_int(r, i, 1), "delayed", (json_int_t)pg_int(r, i, 2),
						"reserved", (json_int_t)pg_int(r, i, 3), "dead",
						(json_int_t)pg_int(r, i, 4), "oldest_ms", (json_int_t)pg_int(r, i, 5)));
	PQclear(r);
	return op->rows ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* Dead letters newest first; the cursor is "<updated_ms>:<id>" of the last row served. */
static enum soma_err dead_list(struct pgconn *c, struct store_op *op)
{
	char cur_id[STORE_TASK_ID_MAX + 1];
	struct pg_params p = {0};
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	if (!pg_page_params(op, &p, cur_id))
		return SOMA_ERR_INVALID;
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT id, name, queue, tenant, session_id, last_error, attempts, updated_ms FROM tasks "
			      "WHERE state = 'dead' AND ($1 OR tenant = $2) AND (updated_ms < $3 OR "
			      "(updated_ms = $3 AND id COLLATE \"C\" < $4)) "
			      "ORDER BY updated_ms DESC, id COLLATE \"C\" DESC LIMIT $5",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	int n = PQntuples(r);
	char at[CLOCK_RFC3339_LEN + 1];
	for (int i = 0; i < n && i < op->limit; i++) {
		const char *id = pg_text(r, i, 0);
		int64_t ms = pg_int(r, i, 7), attempts = pg_int(r, i, 6);
		json_array_append_new(op->rows,
				      json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:I, s:s}", "task_id", id, "task",
						pg_text(r, i, 1), "queue", pg_text(r, i, 2), "tenant", pg_text(r, i, 3),
						"session_id", pg_text(r, i, 4), "error", pg_text(r, i, 5), "retries",
						(json_int_t)(attempts > 0 ? attempts - 1 : 0), "failed_at",
						clock_rfc3339(ms, at, sizeof(at))));
	}
	pg_page_next(op, r, 7, 0);
	PQclear(r);
	return SOMA_OK;
}

/* A requeue locks the dead letter's session first (FOR KEY SHARE: a message's update of the row
 * does not wait for it; a delete's FOR UPDATE does): the retention sweep, which picks a session by
 * its tasks, either skips the locked row or holds it, and then this waits and finds it gone (404:
 * its task would run for no session). A dead letter without a session (a published or Celery
 * task) takes no lock. */
static enum soma_err lock_session(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT 1 FROM sessions WHERE id = (SELECT session_id FROM tasks WHERE id = $1 AND "
			      "state = 'dead' AND ($2 OR tenant = $3)) FOR KEY SHARE",
			      &p, &err);
	if (!r)
		return err;
	bool locked = PQntuples(r) == 1;
	PQclear(r);
	if (locked)
		return SOMA_OK;
	r = pg_exec(c,
		    "SELECT 1 FROM tasks WHERE id = $1 AND state = 'dead' AND ($2 OR tenant = $3) AND session_id IS "
		    "NOT NULL",
		    &p, &err);
	if (!r)
		return err;
	bool orphan = PQntuples(r) == 1;
	PQclear(r);
	if (orphan)
		snprintf(op->error_text, sizeof(op->error_text), "the session of this dead letter was deleted");
	return orphan ? SOMA_ERR_NOT_FOUND : SOMA_OK; /* none: the UPDATE answers (no such dead letter) */
}

/* Requeue: fresh attempts, due now, and its FAILURE outcome forgotten (it is pending again). */
static enum soma_err dead_change(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	bool requeue = op->kind == STORE_OP_DEAD_REQUEUE;
	if (requeue) {
		enum soma_err err = lock_session(c, op);
		if (err != SOMA_OK)
			return err;
	}
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	if (requeue)
		pg_param_int(&p, clock_wall_ms());
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      requeue ? "UPDATE tasks SET state = 'queued', attempts = 0, available_ms = $4, "
					"reserved_until_ms = 0, worker = '', last_error = '', updated_ms = $4 "
					"WHERE id = $1 AND state = 'dead' AND ($2 OR tenant = $3) RETURNING tenant"
				      : "DELETE FROM tasks WHERE id = $1 AND state = 'dead' AND ($2 OR tenant = $3) "
					"RETURNING tenant",
			      &p, &err);
	if (!r)
		return err;
	bool changed = PQntuples(r) == 1;
	if (changed) /* whose task changed: its outcome and the audit row are that tenant's */
		snprintf(op->row_tenant, sizeof(op->row_tenant), "%s", pg_text(r, 0, 0) ?: "");
	PQclear(r);
	if (!changed)
		return SOMA_ERR_NOT_FOUND;
	if (!requeue)
		return SOMA_OK;
	*enqueued = true;
	struct pg_params q = {0};
	pg_param_text(&q, op->task_id);
	pg_param_text(&q, op->row_tenant);
	return pg_run(c, "DELETE FROM task_results WHERE task_id = $1 AND tenant = $2", &q, NULL);
}

enum soma_err pg_sql_task_admin_read(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TASK_GET:
		return task_get(c, op);
	case STORE_OP_QUEUE_STATS:
		return queue_stats(c, op);
	case STORE_OP_DEAD_LIST:
		return dead_list(c, op);
	default:
		return pg_sql_identity_read(c, op);
	}
}

/* A caller's task id is in use while its task has a result (the row left the tasks table, whose key
 * refuses the id only until then): SOMA_ERR_CONFLICT, whichever tenant's it is, else SOMA_OK. */
static enum soma_err result_kept(struct pgconn *c, const char *id)
{
	struct pg_params p = {0};
	pg_param_text(&p, id);
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT 1 FROM task_results WHERE task_id = $1", &p, &err);
	if (!r)
		return err;
	err = PQntuples(r) > 0 ? SOMA_ERR_CONFLICT : SOMA_OK;
	PQclear(r);
	return err;
}

enum soma_err pg_sql_task_admin_write(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_DEAD_REQUEUE:
	case STORE_OP_DEAD_DELETE:
		return dead_change(c, op, enqueued);
	case STORE_OP_TASK_PUBLISH: {
		enum soma_err err = result_kept(c, json_string_value(json_object_get(op->task, "id")));
		if (err == SOMA_OK)
			err = pg_sql_task_insert(c, op->tenant, NULL, op->task);
		*enqueued = err == SOMA_OK;
		return err;
	}
	default:
		return pg_sql_identity_write(c, op);
	}
}
