/*
 * sqlite_retention.c - SQL of the retention ops on SQLite (see store.h, RETENTION_*; the sweeper
 * is src/orchestrator/retention.c).
 *
 * DESIGN: each op is one batch of at most op->limit rows in the writer's transaction, so the one
 * writer is never held for long: the sweeper submits batches until one comes back short. Idle
 * sessions are picked and deleted in the same transaction (SQLite has one writer), so a message
 * committed before the op is seen (its session is no longer idle) and one after it finds the session
 * gone and creates it anew: no acknowledged message is lost. A session a task still works for (a
 * row queued, reserved or, on queue.driver=redis, relaying: RETENTION_BUSY_TASK) is not idle, however
 * old its last event: a reply that generates longer than retention.sessions_idle_s stores nothing
 * until it ends, and must not lose its session (and the message it answers) midway; nor is one named
 * in op->row (replies running on the sweeping node: on queue.driver=redis they have no row).
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

static enum soma_err op_sessions(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT tenant, id FROM sessions WHERE updated_ms < ?1 AND id NOT IN "
					 "(SELECT session_id FROM tasks WHERE " RETENTION_BUSY_TASK
					 " AND session_id IS NOT NULL) AND id NOT IN (SELECT value FROM json_each(?3)) "
					 "ORDER BY updated_ms LIMIT ?2");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, op->before_ms);
	sqlite3_bind_int64(s, 2, op->limit);
	char *running = op->row ? json_dumps(op->row, JSON_COMPACT) : strdup("[]");
	if (!running)
		return SOMA_ERR_NOMEM;
	sqlite3_bind_text(s, 3, running, -1, free);
	json_t *found = json_array();
	int rc;
	while (found && (rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(found, json_pack("{s:s, s:s}", "tenant", (const char *)sqlite3_column_text(s, 0),
						       "session_id", (const char *)sqlite3_column_text(s, 1)));
	sqlite3_reset(s);
	if (!found || rc != SQLITE_DONE) {
		json_decref(found);
		return found ? SOMA_ERR_STORE : SOMA_ERR_NOMEM;
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
		enum soma_err err = store_sql_session_delete(c, &one, false);
		if (err != SOMA_OK) {
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
