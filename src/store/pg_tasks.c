/*
 * pg_tasks.c - SQL of the local task queue and of attachment rows on PostgreSQL (see store.h, and
 * sqlite_tasks.c for the same ops on SQLite).
 *
 * A task is queued -> reserved (attempts + 1, reserved_until = now + visibility timeout) ->
 * done, or back to queued with a delay on a retryable failure, or dead after max_retries.
 * DESIGN: several processes may reserve from one database (queue.driver = local on every node):
 * the reservation picks its row with FOR UPDATE SKIP LOCKED, so two writers never take the same
 * task and neither waits for the other. A reserved task whose worker died (on any node) is
 * reserved again once reserved_until has passed; nothing else ever takes it back. Once it has
 * used max_retries + 1 attempts that way it is dead-lettered instead.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "store/pg_int.h"

enum soma_err pg_sql_task_insert(struct pgconn *c, const char *tenant, const char *session_id, json_t *task)
{
	char *payload = json_dumps(json_object_get(task, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
	int64_t now = clock_wall_ms();
	json_t *retries = json_object_get(task, "max_retries");
	json_t *available = json_object_get(task, "available_ms"); /* countdown / eta; absent: now */
	/* a chat task handed to a worker before its message committed (queue/handoff.h) is inserted
	 * already reserved by it, as the message lanes insert it: task {worker, reserved_until_ms} */
	const char *worker = json_string_value(json_object_get(task, "worker"));
	struct pg_params p = {0};
	pg_param_text(&p, json_string_value(json_object_get(task, "id")));
	pg_param_text(&p, json_string_value(json_object_get(task, "queue")));
	pg_param_text(&p, json_string_value(json_object_get(task, "name")));
	pg_param_text(&p, tenant);
	pg_param_text(&p, session_id && session_id[0] ? session_id : NULL);
	pg_param_text(&p, payload ? payload : "{}");
	pg_param_int(&p, retries ? json_integer_value(retries) : 3);
	pg_param_int(&p, available ? json_integer_value(available) : now);
	pg_param_int(&p, now);
	pg_param_text(&p, worker ? "reserved" : "queued");
	pg_param_text(&p, worker ? worker : "");
	pg_param_int(&p, worker ? json_integer_value(json_object_get(task, "reserved_until_ms")) : 0);
	pg_param_int(&p, worker ? 1 : 0);
	enum soma_err err =
		pg_run(c,
		       "INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, "
		       "max_retries, available_ms, created_ms, updated_ms, worker, reserved_until_ms, attempts) "
		       "VALUES ($1, $2, $3, $4, $5, $6, $10, $7, $8, $9, $9, $11, $12, $13)",
		       &p, NULL);
	free(payload);
	return err;
}

/* The row a reservation returns, as the op's task object. */
static enum soma_err reserved_task(struct store_op *op, const PGresult *r)
{
	json_t *payload =
		json_loads(pg_text(r, 0, 4) ? pg_text(r, 0, 4) : "{}", JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	op->session = json_pack("{s:s, s:s, s:s, s:s?, s:o, s:I, s:I}", "id", pg_text(r, 0, 0), "name",
				pg_text(r, 0, 1), "tenant", pg_text(r, 0, 2), "session_id", pg_text(r, 0, 3), "payload",
				payload ? payload : json_object(), "attempts", (json_int_t)pg_int(r, 0, 5),
				"max_retries", (json_int_t)pg_int(r, 0, 6));
	return op->session ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* Dead-letters task id, just reserved by worker although it had used every attempt (its worker
 * stopped mid-run each time): the reservation's attempt is given back, as none ran. */
static enum soma_err task_exhausted(struct pgconn *c, const char *id, const char *worker)
{
	struct pg_params p = {0};
	pg_param_text(&p, id);
	pg_param_text(&p, worker);
	pg_param_text(&p, STORE_TASK_EXHAUSTED_ERROR);
	pg_param_int(&p, clock_wall_ms());
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "UPDATE tasks SET state = 'dead', attempts = attempts - 1, worker = '', last_error = $3, "
			      "updated_ms = $4 WHERE id = $1 AND worker = $2 AND state = 'reserved' "
			      "RETURNING attempts, max_retries",
			      &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 1)
		log_error("queue",
			  "task %s dead-lettered: its worker stopped mid-run on all %lld attempts (max_retries %lld)",
			  id, (long long)pg_int(r, 0, 0), (long long)pg_int(r, 0, 1));
	PQclear(r);
	return SOMA_OK;
}

static enum soma_err task_reserve(struct store_op *op, struct pgconn *c)
{
	/* ready tasks first (oldest available first), then reservations whose worker went silent */
	static const char *const sql[] = {
		"UPDATE tasks SET state = 'reserved', attempts = attempts + 1, reserved_until_ms = $1, worker = $2, "
		"updated_ms = $3 WHERE id = (SELECT id FROM tasks WHERE queue = $4 AND state = 'queued' AND "
		"available_ms <= $3 ORDER BY available_ms LIMIT 1 FOR UPDATE SKIP LOCKED) "
		"RETURNING id, name, tenant, session_id, payload, attempts, max_retries",
		"UPDATE tasks SET state = 'reserved', attempts = attempts + 1, reserved_until_ms = $1, worker = $2, "
		"updated_ms = $3 WHERE id = (SELECT id FROM tasks WHERE queue = $4 AND state = 'reserved' AND "
		"reserved_until_ms <= $3 ORDER BY reserved_until_ms LIMIT 1 FOR UPDATE SKIP LOCKED) "
		"RETURNING id, name, tenant, session_id, payload, attempts, max_retries",
	};
	int64_t now = clock_wall_ms();
	struct pg_params p = {0};
	pg_param_int(&p, now + op->delay_ms);
	pg_param_text(&p, op->worker);
	pg_param_int(&p, now);
	pg_param_text(&p, op->queue);
	int exhausted = 0;
	for (int i = 0; i < 2 && exhausted <= STORE_TASK_EXHAUSTED_MAX;) {
		enum soma_err err;
		PGresult *r = pg_exec(c, sql[i], &p, &err);
		if (!r)
			return err;
		if (PQntuples(r) == 1 && pg_int(r, 0, 5) - 1 > pg_int(r, 0, 6)) { /* no attempt left */
			err = task_exhausted(c, pg_text(r, 0, 0), op->worker);
			PQclear(r);
			if (err != SOMA_OK)
				return err;
			exhausted++;
			continue; /* the same kind of row again */
		}
		if (PQntuples(r) == 1) {
			err = reserved_task(op, r);
			PQclear(r);
			return err;
		}
		PQclear(r);
		i++;
	}
	return exhausted ? SOMA_OK : SOMA_ERR_NOT_FOUND; /* OK, no task, after a dead letter: an error rolls it back */
}

static enum soma_err task_retry(struct pgconn *c, struct store_op *op)
{
	/* op->flag: an interrupted run (shutdown) goes back without using up an attempt */
	const char *sql = op->flag ? "UPDATE tasks SET state = 'queued', attempts = greatest(attempts - 1, 0), "
				     "available_ms = $1, last_error = $2, updated_ms = $3 "
				     "WHERE id = $4 AND tenant = $5 AND state = 'reserved' RETURNING state"
				   : "UPDATE tasks SET state = CASE WHEN attempts > max_retries THEN 'dead' "
				     "ELSE 'queued' END, available_ms = $1, last_error = $2, updated_ms = $3 "
				     "WHERE id = $4 AND tenant = $5 AND state = 'reserved' RETURNING state";
	int64_t now = clock_wall_ms();
	struct pg_params p = {0};
	pg_param_int(&p, now + op->delay_ms);
	pg_param_text(&p, op->error_text);
	pg_param_int(&p, now);
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c, sql, &p, &err);
	if (!r)
		return err;
	err = PQntuples(r) == 1 ? SOMA_OK : SOMA_ERR_NOT_FOUND;
	if (err == SOMA_OK)
		op->dead = strcmp(PQgetvalue(r, 0, 0), "dead") == 0;
	PQclear(r);
	return err;
}

static enum soma_err task_extend(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_int(&p, clock_wall_ms() + op->delay_ms);
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	pg_param_text(&p, op->worker);
	int64_t changed = 0;
	enum soma_err err = pg_run(c,
				   "UPDATE tasks SET reserved_until_ms = $1 WHERE id = $2 AND tenant = $3 "
				   "AND state = 'reserved' AND worker = $4",
				   &p, &changed);
	return err == SOMA_OK && !changed ? SOMA_ERR_NOT_FOUND : err;
}

/* Deletes up to RESULTS_SWEEP_BATCH results completed queue.result_expires_s ago, at most once
 * per min(60 s, that lifetime) process-wide (it runs on a lane as tasks finish: an idle store
 * keeps its old rows, which task_get no longer shows); a full batch sweeps again next time. */
static void results_sweep(struct pgconn *c, int64_t now)
{
	static _Atomic int64_t next_ms;
	int64_t ttl_ms = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S) * 1000, due = atomic_load(&next_ms);
	if (ttl_ms <= 0 || now < due ||
	    !atomic_compare_exchange_strong(&next_ms, &due, now + (ttl_ms < 60000 ? ttl_ms : 60000)))
		return; /* (another lane sweeps) */
	struct pg_params p = {0};
	pg_param_int(&p, now - ttl_ms);
	int64_t deleted = 0;
	if (pg_run(c,
		   "DELETE FROM task_results WHERE task_id IN (SELECT task_id FROM task_results WHERE completed_ms < "
		   "$1::bigint LIMIT 500)",
		   &p, &deleted) == SOMA_OK &&
	    deleted >= 500)
		atomic_store(&next_ms, 0); /* more to delete */
}

/* A finished task leaves the queue table (its outcome stays in task_results, with its name, retries
 * and start copied from its row), so the queue only ever holds live work; a failed one stays as a
 * dead letter (a revoked or rejected one does not). */
static enum soma_err task_finish(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms(), changed = 0;
	bool dead = op->failed && !op->rejected;
	char *result = op->row ? json_dumps(op->row, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	struct pg_params q = {0};
	pg_param_text(&q, op->task_id);
	pg_param_text(&q, op->tenant);
	pg_param_text(&q, op->failed ? "FAILURE" : op->revoked ? "REVOKED" : "SUCCESS");
	pg_param_text(&q, result);
	pg_param_text(&q, op->failed || op->revoked ? op->error_text : NULL);
	pg_param_int(&q, now);
	enum soma_err err =
		pg_run(c,
		       "INSERT INTO task_results(task_id, tenant, status, result, error, completed_ms, name, retries, "
		       "started_ms) SELECT $1, tenant, $3::text, $4::text, $5::text, $6::bigint, name, "
		       "greatest(attempts - 1, 0), CASE WHEN state = 'reserved' THEN updated_ms END FROM tasks "
		       "WHERE id = $1 AND tenant = $2 ON CONFLICT (task_id) DO UPDATE SET "
		       "status = excluded.status, result = excluded.result, error = excluded.error, "
		       "completed_ms = excluded.completed_ms, name = excluded.name, retries = excluded.retries, "
		       "started_ms = excluded.started_ms WHERE task_results.tenant = excluded.tenant",
		       &q, NULL);
	free(result);
	if (err != SOMA_OK)
		return err;
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	if (dead) {
		pg_param_text(&p, op->error_text);
		pg_param_int(&p, now);
	}
	err = pg_run(c,
		     dead ? "UPDATE tasks SET state = 'dead', last_error = $3, updated_ms = $4 "
			    "WHERE id = $1 AND tenant = $2"
			  : "DELETE FROM tasks WHERE id = $1 AND tenant = $2",
		     &p, &changed);
	if (err != SOMA_OK)
		return err;
	if (!changed)
		return SOMA_ERR_NOT_FOUND; /* no such task for this tenant: touch nothing (nothing was copied) */
	results_sweep(c, now);
	return SOMA_OK;
}

/* Inserts every attachment row of op->row (an array; may be empty: then only the session is
 * checked, before the upload stores its files). op->session_id, when set, must be the tenant's:
 * another tenant's is not found; one that does not exist yet binds nothing - the rows are
 * stored without a session (their "session_id" set to null in op->row) and the first message
 * that names them binds them (pg_chat.c), so no file is tied to a session id someone else may
 * create later. */
static enum soma_err attachment_put(struct pgconn *c, struct store_op *op)
{
	enum soma_err err;
	if (op->session_id[0]) {
		struct pg_params q = {0};
		pg_param_text(&q, op->session_id);
		PGresult *r = pg_exec(c, "SELECT tenant FROM sessions WHERE id = $1", &q, &err);
		if (!r)
			return err;
		int found = PQntuples(r);
		bool other = found == 1 && strcmp(PQgetvalue(r, 0, 0), op->tenant) != 0;
		PQclear(r);
		if (other) {
			snprintf(op->error_text, sizeof(op->error_text), "session %s not found", op->session_id);
			return SOMA_ERR_NOT_FOUND;
		}
		if (!found)
			op->session_id[0] = '\0';
	}
	size_t i;
	json_t *row;
	json_array_foreach(op->row, i, row)
	{
		struct pg_params p = {0};
		pg_param_text(&p, json_string_value(json_object_get(row, "id")));
		pg_param_text(&p, op->tenant);
		pg_param_text(&p, op->session_id[0] ? op->session_id : NULL);
		pg_param_text(&p, json_string_value(json_object_get(row, "filename")));
		pg_param_text(&p, json_string_value(json_object_get(row, "mime")));
		pg_param_int(&p, json_integer_value(json_object_get(row, "size")));
		pg_param_text(&p, json_string_value(json_object_get(row, "sha256")));
		pg_param_int(&p, clock_wall_ms());
		err = pg_run(
			c,
			"INSERT INTO attachments(id, tenant, session_id, filename, mime, size, sha256, created_ms) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
			&p, NULL);
		if (err != SOMA_OK)
			return err == SOMA_ERR_UNAVAILABLE ? err : SOMA_ERR_STORE;
		json_object_set_new(row, "session_id", op->session_id[0] ? json_string(op->session_id) : json_null());
	}
	return SOMA_OK;
}

enum soma_err pg_sql_task_write(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_TASK_RESERVE:
		return task_reserve(op, c);
	case STORE_OP_TASK_RETRY:
		return task_retry(c, op);
	case STORE_OP_TASK_FINISH:
		return task_finish(c, op);
	case STORE_OP_TASK_EXTEND:
		return task_extend(c, op);
	case STORE_OP_ATTACHMENT_PUT:
		return attachment_put(c, op);
	case STORE_OP_TASK_RELAY_CLAIM:
	case STORE_OP_TASK_RELAY_DONE:
	case STORE_OP_TASK_DEAD_ADD:
	case STORE_OP_TASK_REVOKE:
		return pg_sql_task_relay_write(c, op);
	default:
		return pg_sql_task_admin_write(c, op, enqueued);
	}
}

enum soma_err pg_sql_attachment_get(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT id, session_id, filename, mime, size, sha256, created_ms "
			      "FROM attachments WHERE id = $1 AND tenant = $2",
			      &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return SOMA_ERR_NOT_FOUND;
	}
	char created[CLOCK_RFC3339_LEN + 1];
	op->row = json_pack("{s:s, s:s?, s:s, s:s, s:I, s:s, s:s}", "id", pg_text(r, 0, 0), "session_id",
			    pg_text(r, 0, 1), "filename", pg_text(r, 0, 2), "mime", pg_text(r, 0, 3), "size",
			    (json_int_t)pg_int(r, 0, 4), "sha256", pg_text(r, 0, 5), "created_at",
			    clock_rfc3339(pg_int(r, 0, 6), created, sizeof(created)));
	PQclear(r);
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* Of the sha256 strings in op->rows, those no attachment row names, into op->rows (the blob
 * sweep, gateway/blob_sweep.c): one statement over a text array; the index attachments_sha. */
enum soma_err pg_sql_blobs_unused(struct pgconn *c, struct store_op *op)
{
	char *list = json_dumps(op->rows, JSON_COMPACT); /* ["a","b"]: the array as JSON text */
	if (!list)
		return SOMA_ERR_NOMEM;
	struct pg_params p = {0};
	pg_param_text(&p, list);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT s FROM jsonb_array_elements_text($1::jsonb) AS s WHERE NOT EXISTS "
			      "(SELECT 1 FROM attachments WHERE sha256 = s)",
			      &p, &err);
	free(list);
	if (!r)
		return err;
	json_t *unused = json_array();
	for (int i = 0; unused && i < PQntuples(r); i++)
		json_array_append_new(unused, json_string(pg_text(r, i, 0)));
	PQclear(r);
	json_decref(op->rows);
	op->rows = unused;
	return unused ? SOMA_OK : SOMA_ERR_NOMEM;
}
