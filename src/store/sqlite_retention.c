/*
 * sqlite_retention.c - SQL of the retention ops on SQLite (see store.h, RETENTION_*; the sweeper
 * is src/orchestrator/retention.c).
 *
 * DESIGN: each op is one batch of at most op->limit rows in the writer's transaction, so the one
 * writer is never held for long: the sweeper submits batches until one comes back short. Idle
 * sessions are picked and deleted in the same transaction (SQLite has one writer), so a message
 * committed before the op is seen (its session is no longer idle) and one after it finds the session
 * gone and creates it anew: no acknowledged message is lost. A session a task still works for (a
 * row queued, reserved or, on queue.driver=redis, relaying) is not idle, however old its last event:
 * a reply that generates longer than retention.sessions_idle_s stores nothing until it ends, and must
 * not lose its session (and the message it answers) midway; nor is one named in op->row (replies
 * running on the sweeping node: on queue.driver=redis they have no row). Those sessions are read
 * once per batch (RETENTION_BUSY_SESSIONS: each busy state's partial index, so the dead letters the
 * tasks table keeps, forever by default, are never read; a NOT IN over the tasks per tenant scanned
 * them all for every tenant) into a set the tenant walk steps over.
 * Idle sessions are found tenant by tenant, in the index every session update maintains anyway
 * (sessions_tenant_updated: tenant, updated_ms, id): the next tenant is one seek (min(tenant) past
 * the last one), its idle sessions a range of that index read oldest first, and a batch resumes at
 * op->tenant, where the sweep's batch before stopped, so a sweep walks the tenants once (the walk
 * is retention_walk.c, shared with PostgreSQL). An index of its own (updated_ms alone, migration
 * 0014) cost every session update, two per chat message, one more index write; 0015 drops it.
 * Audit rows are append-only (a trigger, migration 0014) except those older than
 * audit_retention.before_ms, which this op alone sets, to its own cutoff, and sets back to 0
 * before it returns (a failure rolls its savepoint back).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* Runs sql binding ?1 = before_ms, ?2 = limit (a statement without ?2 ignores it); *changed (may be
 * NULL) = rows changed. */
static enum soma_err run_cut(struct dbconn *c, const char *sql, int64_t before_ms, int64_t limit, int64_t *changed)
{
	sqlite3_stmt *s = dbconn_stmt(c, sql);
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, before_ms);
	sqlite3_bind_int64(s, 2, limit);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	if (changed)
		*changed = sqlite3_changes(c->db);
	return SOMA_OK;
}

/* Fills busy (a JSON object used as a set of session ids) with the sessions to leave: op->row's
 * (replies running on this node) and those a task still works for (RETENTION_BUSY_SESSIONS: the
 * partial indexes of the busy states, never the dead letters), read once for the batch. */
static enum soma_err busy_sessions(struct dbconn *c, const struct store_op *op, json_t *busy)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->row, i, id)
	{
		if (json_is_string(id) && json_object_set(busy, json_string_value(id), json_true()))
			return SOMA_ERR_NOMEM;
	}
	sqlite3_stmt *s = dbconn_stmt(c, RETENTION_BUSY_SESSIONS);
	if (!s)
		return SOMA_ERR_STORE;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		if (json_object_set(busy, (const char *)sqlite3_column_text(s, 0), json_true()))
			break;
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SOMA_OK : rc == SQLITE_ROW ? SOMA_ERR_NOMEM : SOMA_ERR_STORE;
}

/* Appends to found the idle sessions of tenant not in busy, its oldest first, at most limit. */
static enum soma_err idle_of_tenant(void *conn, const struct store_op *op, void *arg, const char *tenant, int64_t limit,
				    json_t *found)
{
	struct dbconn *c = conn;
	const json_t *busy = arg;
	/* tenant = and updated_ms < on sessions_tenant_updated, read in order (no sort): the busy ones
	 * are stepped over here, a lookup each, and reading stops at the limit */
	sqlite3_stmt *s =
		dbconn_stmt(c, "SELECT id FROM sessions WHERE tenant = ?1 AND updated_ms < ?2 ORDER BY updated_ms");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, op->before_ms);
	enum soma_err err = SOMA_OK;
	int rc = SQLITE_DONE;
	while (err == SOMA_OK && limit > 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		if (json_object_get(busy, id))
			continue;
		if (json_array_append_new(found, json_pack("{s:s, s:s}", "tenant", tenant, "session_id", id)))
			err = SOMA_ERR_NOMEM;
		limit--;
	}
	sqlite3_reset(s);
	return err != SOMA_OK ? err : rc == SQLITE_DONE || rc == SQLITE_ROW ? SOMA_OK : SOMA_ERR_STORE;
}

/* *next = the first tenant having sessions, from after (or at, with at) after in their order; ""
 * when none is left. One seek in sessions_tenant_updated: no scan of every session. */
static enum soma_err next_tenant(void *conn, const char *after, bool at, char *next, size_t size)
{
	struct dbconn *c = conn;
	sqlite3_stmt *s = dbconn_stmt(c, at ? "SELECT min(tenant) FROM sessions WHERE tenant >= ?1"
					    : "SELECT min(tenant) FROM sessions WHERE tenant > ?1");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_text(s, 1, after, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	const char *t = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
	snprintf(next, size, "%s", t ? t : "");
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? SOMA_OK : SOMA_ERR_STORE;
}

static enum soma_err op_sessions(struct dbconn *c, struct store_op *op)
{
	json_t *busy = json_object();
	json_t *found = json_array();
	enum soma_err err = !busy || !found ? SOMA_ERR_NOMEM : busy_sessions(c, op, busy);
	if (err == SOMA_OK)
		err = store_retention_walk(c, op, &(struct retention_walk){next_tenant, idle_of_tenant, busy}, found);
	json_decref(busy);
	if (err != SOMA_OK) {
		json_decref(found);
		return err;
	}
	/* each as SESSION_DELETE deletes it (events, queued tasks, attachment rows no other session names) */
	struct store_op one = {.kind = STORE_OP_SESSION_DELETE};
	size_t i;
	json_t *row;
	json_array_foreach(found, i, row)
	{
		snprintf(one.tenant, sizeof(one.tenant), "%s", json_string_value(json_object_get(row, "tenant")));
		snprintf(one.session_id, sizeof(one.session_id), "%s",
			 json_string_value(json_object_get(row, "session_id")));
		if ((err = store_sql_session_delete(c, &one, false)) != SOMA_OK) {
			json_decref(found);
			return err;
		}
	}
	op->rows = found;
	return SOMA_OK;
}

static enum soma_err op_audit(struct dbconn *c, struct store_op *op)
{
	enum soma_err err =
		run_cut(c, "UPDATE audit_retention SET before_ms = ?1 WHERE id = 1", op->before_ms, 0, NULL);
	if (err == SOMA_OK)
		err = run_cut(c,
			      "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE created_ms < ?1 "
			      "ORDER BY created_ms LIMIT ?2)",
			      op->before_ms, op->limit, &op->seq);
	if (err == SOMA_OK) /* append-only again for everything else in this transaction */
		err = run_cut(c, "UPDATE audit_retention SET before_ms = 0 WHERE id = 1", 0, 0, NULL);
	return err;
}

static enum soma_err op_dead(struct dbconn *c, struct store_op *op)
{
	return run_cut(c,
		       "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE state = 'dead' AND updated_ms < ?1 "
		       "ORDER BY updated_ms LIMIT ?2)",
		       op->before_ms, op->limit, &op->seq);
}

enum soma_err store_sql_retention_write(struct dbconn *c, struct store_op *op)
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
