/*
 * pg_task_relay.c - PostgreSQL SQL of the redis queue's outbox and of revoke (see store.h:
 * TASK_RELAY_CLAIM, TASK_RELAY_DONE, TASK_DEAD_ADD, TASK_REVOKE), the same semantics as
 * sqlite_task_relay.c and sqlite_task_admin.c's revoke.
 *
 * With queue.driver=redis a task row is a message waiting to be published. Several nodes' relays
 * may claim at once: the claim takes its rows FOR UPDATE SKIP LOCKED, so a row is published by
 * one relay (a relay that dies leaves it 'relaying' until the lease passes; then any relay
 * publishes it again and the worker dedupes). A claim's op->row, when set, is RELAY_DONE's id list:
 * those rows are deleted first, in the claim's transaction (the relay's previous full batch).
 */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/pg_int.h"

/* One statement (one round trip) for the batch: the ids go in as a JSON array, looked up by the
 * primary key (id = ANY of an array). As "id IN (SELECT ...)" the planner, with the table's
 * statistics of a near-empty outbox, read the partial index of 'relaying' rows instead, dead
 * entries and all: since the lanes insert every message's task as 'relaying' (relay.c), that was
 * 167 buffers a call at -c20 against 22 before; by id it is ~3 a row. */
static enum soma_err relay_done(struct pgconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->row, i, id)
	{
		if (!json_is_string(id))
			return SOMA_ERR_INVALID;
	}
	char *ids = json_dumps(op->row, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!ids)
		return SOMA_ERR_NOMEM;
	struct pg_params p = {0};
	pg_param_text(&p, ids);
	enum soma_err err =
		pg_run(c,
		       "DELETE FROM tasks WHERE id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) "
		       "AND state = 'relaying'",
		       &p, NULL);
	free(ids);
	return err;
}

/* The rows whose lease ran out (a relay died after claiming them), then queued rows oldest first
 * (each half from its index, migration postgres/0004), at most op->limit in all. */
static enum soma_err relay_claim(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	enum soma_err err = op->row ? relay_done(c, op) : SOMA_OK; /* the last batch's, same transaction */
	if (err != SOMA_OK)
		return err;
	struct pg_params p = {0};
	pg_param_int(&p, now + op->delay_ms);
	pg_param_int(&p, now);
	pg_param_int(&p, op->limit > 0 ? op->limit : 100);
	PGresult *r = pg_exec(c,
			      "UPDATE tasks SET state = 'relaying', reserved_until_ms = $1 WHERE id IN ("
			      "SELECT id FROM (SELECT id FROM (SELECT id FROM tasks WHERE state = 'relaying' AND "
			      "reserved_until_ms <= $2 ORDER BY reserved_until_ms LIMIT $3 FOR UPDATE SKIP LOCKED) l "
			      "UNION ALL SELECT id FROM (SELECT id FROM tasks WHERE state = 'queued' ORDER BY "
			      "created_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) q) c LIMIT $3) "
			      "RETURNING id, queue, name, tenant, session_id, payload, attempts, max_retries, "
			      "available_ms, updated_ms > created_ms, created_ms",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	int n = PQntuples(r);
	/* RETURNING gives no order: the relay publishes oldest first */
	int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
	if (!op->rows || !order) {
		free(order);
		PQclear(r);
		return SOMA_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++) {
		int j = i;
		for (; j > 0 && pg_int(r, order[j - 1], 10) > pg_int(r, i, 10); j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	err = SOMA_OK;
	for (int k = 0; k < n && err == SOMA_OK; k++) {
		int i = order[k];
		json_t *payload = json_loads(pg_text(r, i, 5), JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		json_t *row =
			json_pack("{s:s, s:s, s:s, s:s, s:s?, s:o, s:I, s:I, s:I, s:b}", "id", pg_text(r, i, 0),
				  "queue", pg_text(r, i, 1), "name", pg_text(r, i, 2), "tenant", pg_text(r, i, 3),
				  "session_id", pg_text(r, i, 4), "payload", payload ? payload : json_object(),
				  "attempts", (json_int_t)pg_int(r, i, 6), "max_retries", (json_int_t)pg_int(r, i, 7),
				  "available_ms", (json_int_t)pg_int(r, i, 8), "requeued", pg_bool(r, i, 9));
		if (!row || json_array_append_new(op->rows, row) != 0)
			err = SOMA_ERR_NOMEM;
	}
	free(order);
	PQclear(r);
	return err;
}

static enum soma_err dead_add(struct pgconn *c, struct store_op *op)
{
	json_t *t = op->task;
	char *payload = json_dumps(json_object_get(t, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
	const char *session = json_string_value(json_object_get(t, "session_id"));
	const char *error = json_string_value(json_object_get(t, "error"));
	struct pg_params p = {0};
	pg_param_text(&p, json_string_value(json_object_get(t, "id")));
	pg_param_text(&p, json_string_value(json_object_get(t, "queue")));
	pg_param_text(&p, json_string_value(json_object_get(t, "name")));
	pg_param_text(&p, op->tenant);
	pg_param_text(&p, session && session[0] ? session : NULL);
	pg_param_text(&p, payload ? payload : "{}");
	pg_param_int(&p, json_integer_value(json_object_get(t, "attempts")));
	pg_param_int(&p, json_integer_value(json_object_get(t, "max_retries")));
	pg_param_int(&p, clock_wall_ms());
	pg_param_text(&p, error ? error : "");
	enum soma_err err = pg_run(c,
				   "INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, attempts, "
				   "max_retries, available_ms, last_error, created_ms, updated_ms) VALUES ($1, $2, $3, "
				   "$4, $5, $6, 'dead', $7, $8, $9, $10, $9, $9) ON CONFLICT (id) DO UPDATE SET "
				   "queue = $2, name = $3, tenant = $4, session_id = $5, payload = $6, state = 'dead', "
				   "attempts = $7, max_retries = $8, available_ms = $9, reserved_until_ms = 0, "
				   "worker = '', last_error = $10, created_ms = $9, updated_ms = $9",
				   &p, NULL);
	free(payload);
	return err;
}

/* A revoke that found no queued task: what it is instead. SOMA_OK for a task that runs (it keeps
 * running; workers skip it if it comes back), SOMA_ERR_CONFLICT for one that ended. */
static enum soma_err revoke_not_queued(struct pgconn *c, struct store_op *op, const struct pg_params *p)
{
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT state, attempts FROM tasks WHERE id = $1 AND tenant = $2", p, &err);
	if (!r)
		return err;
	if (PQntuples(r) > 0) {
		bool running = strcmp(pg_text(r, 0, 0), "reserved") == 0;
		const char *status = running ? (pg_int(r, 0, 1) > 0 ? "RETRY" : "STARTED") : "FAILURE";
		json_decref(op->row); /* (a batch run again: the first run's) */
		op->row = json_pack("{s:s, s:s}", "task_id", op->task_id, "status", status);
		PQclear(r);
		return !op->row ? SOMA_ERR_NOMEM : running ? SOMA_OK : SOMA_ERR_CONFLICT;
	}
	PQclear(r);
	r = pg_exec(c, "SELECT status FROM task_results WHERE task_id = $1 AND tenant = $2", p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return SOMA_ERR_NOT_FOUND;
	}
	json_decref(op->row);
	op->row = json_pack("{s:s, s:s}", "task_id", op->task_id, "status", pg_text(r, 0, 0));
	PQclear(r);
	return op->row ? SOMA_ERR_CONFLICT : SOMA_ERR_NOMEM;
}

static enum soma_err task_revoke(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0}, who = {0};
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, op->tenant);
	pg_param_int(&p, clock_wall_ms());
	pg_param_text(&who, op->task_id);
	pg_param_text(&who, op->tenant);
	/* the result keeps the task's name: GET /v1/tasks/{id} names the task */
	int64_t changed = 0;
	enum soma_err err =
		pg_run(c,
		       "WITH gone AS (DELETE FROM tasks WHERE id = $1 AND tenant = $2 AND state = 'queued' "
		       "RETURNING name) INSERT INTO task_results(task_id, tenant, status, result, error, completed_ms, "
		       "name) SELECT $1, $2, 'REVOKED', NULL, 'revoked', $3, name FROM gone ON CONFLICT (task_id) DO "
		       "UPDATE SET status = 'REVOKED', result = NULL, error = 'revoked', completed_ms = $3, "
		       "name = excluded.name WHERE task_results.tenant = excluded.tenant",
		       &p, &changed);
	if (err != SOMA_OK)
		return err;
	if (changed != 1)
		return revoke_not_queued(c, op, &who);
	if (err != SOMA_OK)
		return err;
	json_decref(op->row);
	op->row = json_pack("{s:s, s:s}", "task_id", op->task_id, "status", "REVOKED");
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

enum soma_err pg_sql_task_relay_write(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TASK_RELAY_CLAIM:
		return relay_claim(c, op);
	case STORE_OP_TASK_RELAY_DONE:
		return relay_done(c, op);
	case STORE_OP_TASK_DEAD_ADD:
		return dead_add(c, op);
	case STORE_OP_TASK_REVOKE:
		return task_revoke(c, op);
	default:
		return SOMA_ERR_INVALID;
	}
}
