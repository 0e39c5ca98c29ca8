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
 * come) is not picked: a task row appears only with a message, which locks and moves the session
 * row, and leaves only when its reply is stored (so reading those sessions once at the start of the
 * batch, RETENTION_BUSY_SESSIONS on each state's partial index, misses none: one that became busy
 * since moved, and the lock's re-read leaves it; a correlated NOT EXISTS per tenant read every dead
 * letter of the tasks table for each tenant); nor is one in op->row (the replies running on the
 * sweeping node's workers: on queue.driver=redis they have no row). Each
 * picked session is then deleted by pg_session_delete, the path of
 * DELETE /v1/sessions/{id}. Idle sessions are found tenant by tenant in sessions_tenant_updated
 * (tenant, updated_ms, id), which every session update maintains anyway, as on SQLite
 * (sqlite_retention.c): the next tenant is one seek, its idle sessions a range read oldest first,
 * and a batch resumes at op->tenant; migration 0011 drops the index 0010 added on updated_ms alone.
 * Audit rows may be deleted only when older than the transaction's
 * soma.audit_before_ms (a trigger, migration 0010), which this op sets to its cutoff and back to 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/pg_int.h"

/* *leave = the JSON text (caller frees) of the session ids to leave: op->row's (replies running on
 * this node) and those a task still works for (RETENTION_BUSY_SESSIONS: the partial indexes of the
 * busy states, never the dead letters), read once for the batch. */
static enum soma_err busy_sessions(struct pgconn *c, const struct store_op *op, char **leave)
{
	enum soma_err err;
	PGresult *r = pg_exec(c, RETENTION_BUSY_SESSIONS, NULL, &err);
	if (!r)
		return err;
	json_t *ids = op->row ? json_copy(op->row) : json_array();
	for (int i = 0; ids && i < PQntuples(r); i++)
		if (json_array_append_new(ids, json_string(pg_text(r, i, 0)))) {
			json_decref(ids);
			ids = NULL;
		}
	PQclear(r);
	*leave = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
	json_decref(ids);
	return *leave ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* Appends to found the idle sessions of tenant, its oldest first, at most limit, locked; leave is
 * the JSON array of session ids to leave (busy_sessions). */
static enum soma_err idle_of_tenant(struct pgconn *c, const struct store_op *op, const char *tenant, const char *leave,
				    int64_t limit, json_t *found)
{
	struct pg_params p = {0};
	pg_param_int(&p, op->before_ms);
	pg_param_int(&p, limit);
	pg_param_text(&p, leave);
	pg_param_text(&p, tenant);
	enum soma_err err;
	/* tenant = and updated_ms < on sessions_tenant_updated, read backwards for the oldest first */
	PGresult *r = pg_exec(c,
			      "SELECT id FROM sessions WHERE tenant = $4 AND updated_ms < $1 "
			      "AND NOT (id = ANY (ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))) "
			      "ORDER BY updated_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
			      &p, &err);
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

/* *next = the first tenant having sessions, from after (or at, with at) after in their order; ""
 * when none is left. min() is one seek in sessions_tenant_updated: no scan of every session. */
static enum soma_err next_tenant(struct pgconn *c, const char *after, bool at, char *next, size_t size)
{
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
	char *leave = NULL;
	json_t *found = json_array();
	enum soma_err err = !found ? SOMA_ERR_NOMEM : busy_sessions(c, op, &leave);
	/* tenant by tenant from op->tenant (where the sweep's batch before stopped), until limit */
	char tenant[STORE_ID_MAX + 1];
	if (err == SOMA_OK)
		err = next_tenant(c, op->tenant, true, tenant, sizeof(tenant));
	while (err == SOMA_OK && tenant[0] && (int64_t)json_array_size(found) < op->limit) {
		err = idle_of_tenant(c, op, tenant, leave, op->limit - (int64_t)json_array_size(found), found);
		if (err == SOMA_OK && (int64_t)json_array_size(found) < op->limit) {
			char after[STORE_ID_MAX + 1];
			memcpy(after, tenant, sizeof(after));
			err = next_tenant(c, after, false, tenant, sizeof(tenant));
		}
	}
	free(leave);
	if (err != SOMA_OK) {
		json_decref(found);
		return err;
	}
	struct store_op one = {.kind = STORE_OP_SESSION_DELETE};
	size_t i;
	json_t *row;
	json_array_foreach(found, i, row)
	{
		snprintf(one.tenant, sizeof(one.tenant), "%s", json_string_value(json_object_get(row, "tenant")));
		snprintf(one.session_id, sizeof(one.session_id), "%s",
			 json_string_value(json_object_get(row, "session_id")));
		if ((err = pg_session_delete(c, &one, false)) != SOMA_OK)
			break;
	}
	if (err != SOMA_OK) {
		json_decref(found);
		return err;
	}
	op->rows = found;
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
