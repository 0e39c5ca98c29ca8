/*
 * pg_retention.c - SQL of the retention ops on PostgreSQL (see store.h, RETENTION_*, and
 * sqlite_retention.c for the same on SQLite; the sweeper is src/orchestrator/retention.c).
 *
 * DESIGN: each op is one batch of at most op->limit rows in the writer's transaction. Several
 * nodes may sweep at once: every statement picks its rows FOR UPDATE SKIP LOCKED and the delete
 * re-checks the age, so two sweeps take disjoint rows (or find them gone) instead of waiting on
 * each other, and each counts only what it deleted. Idle sessions are locked by the statement that
 * picks them: a message that updated one first and committed moved its updated_ms, which the
 * lock re-reads (the row no longer matches and is left); one still running holds the row lock,
 * and the row is skipped. A session with a task queued, reserved or relaying (its reply is still to
 * come) is not picked: each tenant's statement asks the tasks' partial indexes about its own
 * candidates (IDLE_OF_TENANT), so it sees every task committed before it (read committed). A list
 * of every busy session read once per batch cost tenants x queued tasks on the writer thread (19 s
 * a batch with 2,000 tenants and 20,000 queued tasks), and was a snapshot: a dead letter requeued
 * meanwhile was deleted with its session. A task row appears only with a message, which locks and
 * moves the session row (the lock's re-read then leaves it), or with a dead letter's requeue, which
 * locks the session row FOR KEY SHARE first (pg_task_admin.c): the pick skips it, or it waits for
 * the sweep's commit; one committed after the pick's snapshot but before its lock is caught by
 * still_idle before the delete. Nor is a session in op->row picked (the replies running on the
 * sweeping node's workers: on queue.driver=redis they have no row). Each
 * picked session is then deleted by pg_session_delete, the path of
 * DELETE /v1/sessions/{id}. Idle sessions are found tenant by tenant in sessions_tenant_updated
 * (tenant, updated_ms, id), which every session update maintains anyway, as on SQLite
 * (sqlite_retention.c): the next tenant is one seek, its idle sessions a range read oldest first,
 * and a batch resumes at op->tenant (the walk is retention_walk.c); migration 0011 drops the index
 * 0010 added on updated_ms alone.
 * Audit rows may be deleted only when older than the transaction's
 * soma.audit_before_ms (a trigger, migration 0010), which this op sets to its cutoff and back to 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_int.h"

/* The pick of tenant's idle sessions. A session is left while a task works for it: the queued
 * tasks by a correlated NOT EXISTS on tasks_session (one index probe per candidate), the reserved
 * and relaying ones by a NOT IN read once per statement (a hashed subplan on tasks_expiry and
 * tasks_relay_expiry: the tasks running now, a few). Never a list of every busy session, nor the
 * dead letters. $3 is op->row's JSON array. */
#define IDLE_OF_TENANT                                                                                     \
	"SELECT id FROM sessions WHERE tenant = $4 AND updated_ms < $1 "                                   \
	"AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.session_id = sessions.id AND t.state = 'queued') "  \
	"AND id NOT IN (SELECT session_id FROM tasks WHERE state = 'reserved' AND session_id IS NOT NULL " \
	"UNION ALL SELECT session_id FROM tasks WHERE state = 'relaying' AND session_id IS NOT NULL) "     \
	"AND NOT (id = ANY (ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))) "                         \
	"ORDER BY updated_ms LIMIT $2 FOR UPDATE SKIP LOCKED"

/* Appends to found the idle sessions of tenant, its oldest first, at most limit, locked; running
 * is the JSON array of the session ids of op->row. */
static enum soma_err idle_of_tenant(void *conn, const struct store_op *op, void *arg, const char *tenant, int64_t limit,
				    json_t *found)
{
	struct pgconn *c = conn;
	const char *running = arg;
	struct pg_params p = {0};
	pg_param_int(&p, op->before_ms);
	pg_param_int(&p, limit);
	pg_param_text(&p, running);
	pg_param_text(&p, tenant);
	enum soma_err err;
	/* tenant = and updated_ms < on sessions_tenant_updated, read backwards for the oldest first */
	PGresult *r = pg_exec(c, IDLE_OF_TENANT, &p, &err);
	if (!r)
		return err;
	err = SOMA_OK;
	for (int i = 0; err == SOMA_OK && i < PQntuples(r); i++)
		if (json_array_append_new(found,
					  json_pack("{s:s, s:s}", "tenant", tenant, "session_id", pg_text(r, i, 0))))
			err = SOMA_ERR_NOMEM;
	PQclear(r);
	return err;
}

/* Whether the locked session still has no queued task: *idle. A dead letter requeued (dead ->
 * queued, STORE_OP_DEAD_REQUEUE) does not move the session row; it locks it first, so one either
 * committed before the pick locked the row - seen here, a later statement - or waits for this
 * transaction and finds the session gone. The pick's own snapshot may predate such a commit. */
static enum soma_err still_idle(struct pgconn *c, const char *session_id, bool *idle)
{
	struct pg_params p = {0};
	pg_param_text(&p, session_id);
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT 1 FROM tasks WHERE session_id = $1 AND state = 'queued' LIMIT 1", &p, &err);
	if (!r)
		return err;
	*idle = PQntuples(r) == 0;
	PQclear(r);
	return SOMA_OK;
}

/* *next = the first tenant having sessions, from after (or at, with at) after in their order; ""
 * when none is left. min() is one seek in sessions_tenant_updated: no scan of every session. */
static enum soma_err next_tenant(void *conn, const char *after, bool at, char *next, size_t size)
{
	struct pgconn *c = conn;
	struct pg_params p = {0};
	pg_param_text(&p, after);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      at ? "SELECT min(tenant) FROM sessions WHERE tenant >= $1"
				 : "SELECT min(tenant) FROM sessions WHERE tenant > $1",
			      &p, &err);
	if (!r)
		return err;
	snprintf(next, size, "%s", PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? pg_text(r, 0, 0) : "");
	PQclear(r);
	return SOMA_OK;
}

static enum soma_err op_sessions(struct pgconn *c, struct store_op *op)
{
	char *running = op->row ? json_dumps(op->row, JSON_COMPACT) : strdup("[]");
	json_t *found = json_array(), *deleted = json_array();
	enum soma_err err = !found || !deleted || !running ? SOMA_ERR_NOMEM : SOMA_OK;
	if (err == SOMA_OK)
		err = store_retention_walk(c, op, &(struct retention_walk){next_tenant, idle_of_tenant, running},
					   found);
	free(running);
	struct store_op one = {.kind = STORE_OP_SESSION_DELETE};
	size_t i;
	json_t *row;
	json_array_foreach(found, i, row)
	{
		if (err != SOMA_OK)
			break;
		snprintf(one.tenant, sizeof(one.tenant), "%s", json_string_value(json_object_get(row, "tenant")));
		snprintf(one.session_id, sizeof(one.session_id), "%s",
			 json_string_value(json_object_get(row, "session_id")));
		bool idle = false;
		err = still_idle(c, one.session_id, &idle);
		if (err == SOMA_OK && idle && (err = pg_session_delete(c, &one, false)) == SOMA_OK &&
		    json_array_append(deleted, row))
			err = SOMA_ERR_NOMEM;
	}
	json_decref(found);
	if (err != SOMA_OK) {
		json_decref(deleted);
		return err;
	}
	op->rows = deleted;
	return SOMA_OK;
}

static enum soma_err gate(struct pgconn *c, int64_t before_ms)
{
	char ms[32];
	snprintf(ms, sizeof(ms), "%lld", (long long)before_ms);
	struct pg_params p = {0};
	pg_param_text(&p, ms);
	return pg_run(c, "SELECT set_config('soma.audit_before_ms', $1, true)", &p, NULL);
}

static enum soma_err op_audit(struct pgconn *c, struct store_op *op)
{
	enum soma_err err = gate(c, op->before_ms);
	if (err != SOMA_OK)
		return err;
	struct pg_params p = {0};
	pg_param_int(&p, op->before_ms);
	pg_param_int(&p, op->limit);
	err = pg_run(c,
		     "DELETE FROM audit WHERE created_ms < $1 AND id IN (SELECT id FROM audit WHERE created_ms < $1 "
		     "ORDER BY created_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
		     &p, &op->seq);
	return err == SOMA_OK ? gate(c, 0) : err; /* append-only again for the rest of the transaction */
}

static enum soma_err op_dead(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_int(&p, op->before_ms);
	pg_param_int(&p, op->limit);
	return pg_run(c,
		      "DELETE FROM tasks WHERE state = 'dead' AND updated_ms < $1 AND id IN (SELECT id FROM tasks "
		      "WHERE state = 'dead' AND updated_ms < $1 ORDER BY updated_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
		      &p, &op->seq);
}

enum soma_err pg_sql_retention_write(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_RETENTION_SESSIONS:
		return op_sessions(c, op);
	case STORE_OP_RETENTION_AUDIT:
		return op_audit(c, op);
	case STORE_OP_RETENTION_DEAD:
		return op_dead(c, op);
	default:
		return SOMA_ERR_INVALID;
	}
}
