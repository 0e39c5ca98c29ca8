/*
 * sqlite_tasks.c - SQL of the local task queue and of attachment rows: their insert, read, and the
 * check and binding of those a message names (see store.h).
 *
 * A task is queued -> reserved (attempts + 1, reserved_until = now + visibility timeout) ->
 * done, or back to queued with a delay on a retryable failure, or dead after max_retries.
 * A reserved task whose worker died is reserved again once reserved_until has passed (or, with
 * SQLite, at the next start), until it has used max_retries + 1 attempts: then it is dead.
 * A finished task's outcome (task_results) lives queue.result_expires_s: task_get (sqlite_task_admin.c)
 * does not show an older one, and results_sweep deletes them as later tasks finish.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/json_out.h"
#include "core/log.h"
#include "store/store_int.h"

enum soma_err store_sql_task_insert(struct dbconn *c, const char *tenant, const char *session_id, json_t *task)
{
	/* a chat task handed to a worker before its message committed (queue/handoff.h) is inserted
	 * already reserved by it: task {worker, reserved_until_ms} */
	sqlite3_stmt *s =
		dbconn_stmt(c, "INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, "
			       "max_retries, available_ms, created_ms, updated_ms, worker, reserved_until_ms, "
			       "attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	char *payload = json_out(json_object_get(task, "payload"), 1, NULL);
	int64_t now = clock_wall_ms();
	json_t *retries = json_object_get(task, "max_retries");
	json_t *available = json_object_get(task, "available_ms"); /* countdown / eta; absent: now */
	const char *worker = json_string_value(json_object_get(task, "worker"));
	bind_text(s, 1, json_string_value(json_object_get(task, "id")));
	bind_text(s, 2, json_string_value(json_object_get(task, "queue")));
	bind_text(s, 3, json_string_value(json_object_get(task, "name")));
	bind_text(s, 4, tenant);
	if (session_id && session_id[0])
		bind_text(s, 5, session_id);
	bind_text(s, 6, payload ? payload : "{}");
	bind_text(s, 7, worker ? "reserved" : "queued");
	sqlite3_bind_int64(s, 8, retries ? json_integer_value(retries) : 3);
	sqlite3_bind_int64(s, 9, available ? json_integer_value(available) : now);
	sqlite3_bind_int64(s, 10, now);
	sqlite3_bind_int64(s, 11, now);
	bind_text(s, 12, worker ? worker : "");
	sqlite3_bind_int64(s, 13, worker ? json_integer_value(json_object_get(task, "reserved_until_ms")) : 0);
	sqlite3_bind_int64(s, 14, worker ? 1 : 0);
	int rc = sqlite3_step(s);
	free(payload);
	return rc == SQLITE_DONE ? SOMA_OK : rc == SQLITE_CONSTRAINT ? SOMA_ERR_CONFLICT : SOMA_ERR_STORE;
}

/* A reserved task's payload leaves the writer as text under this key; store_sql_finish makes it
 * the "payload" object on the thread that waits for the op: parsing it was about a twentieth of
 * the writer thread's work per chat message (callgrind), and that thread bounds ingest. */
#define PAYLOAD_TEXT		 "payload_text"
#define RESULTS_SWEEP_BATCH	 500 /* expired results deleted by one statement */
#define RESULTS_SWEEP_BATCH_TEXT "500"

void store_sql_finish(struct store_op *op)
{
	const char *text = op->session ? json_string_value(json_object_get(op->session, PAYLOAD_TEXT)) : NULL;
	if (!text)
		return;
	json_t *payload = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	json_object_set_new(op->session, "payload", payload ? payload : json_object());
	json_object_del(op->session, PAYLOAD_TEXT);
}

/* Dead-letters the task at rowid, which has used every attempt (STORE_TASK_EXHAUSTED_ERROR). */
static enum soma_err task_exhausted(struct dbconn *c, int64_t rowid)
{
	sqlite3_stmt *s = dbconn_stmt(c, "UPDATE tasks SET state = 'dead', worker = '', last_error = ?, updated_ms = ? "
					 "WHERE rowid = ? RETURNING id, attempts, max_retries");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, STORE_TASK_EXHAUSTED_ERROR);
	sqlite3_bind_int64(s, 2, clock_wall_ms());
	sqlite3_bind_int64(s, 3, rowid);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		log_error("queue",
			  "task %s dead-lettered: its worker stopped mid-run on all %lld attempts (max_retries %lld)",
			  (const char *)sqlite3_column_text(s, 0), (long long)sqlite3_column_int64(s, 1),
			  (long long)sqlite3_column_int64(s, 2));
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* Finds the task, then reserves it by its rowid: an UPDATE ... RETURNING buffers its output in
 * a temporary b-tree that SQLite opens and closes on every run (callgrind); only the writer
 * writes, so the two statements are atomic. A task found with no attempt left is dead-lettered
 * (task_exhausted) and the next one looked for. */
static enum soma_err task_reserve(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	sqlite3_stmt *s = dbconn_stmt(
		c, "SELECT rowid, id, name, tenant, session_id, payload, attempts + 1, max_retries FROM tasks "
		   "WHERE id = coalesce("
		   "(SELECT id FROM tasks WHERE queue = ?1 AND state = 'queued' AND available_ms <= ?2 "
		   "ORDER BY available_ms LIMIT 1), "
		   "(SELECT id FROM tasks WHERE queue = ?1 AND state = 'reserved' AND reserved_until_ms <= ?2 "
		   "ORDER BY reserved_until_ms LIMIT 1))");
	if (!s)
		return SOMA_ERR_STORE;
	int rc = SQLITE_DONE, exhausted = 0;
	for (; exhausted <= STORE_TASK_EXHAUSTED_MAX; exhausted++) {
		bind_text(s, 1, op->queue);
		sqlite3_bind_int64(s, 2, now);
		rc = sqlite3_step(s);
		if (rc != SQLITE_ROW || sqlite3_column_int64(s, 6) - 1 <= sqlite3_column_int64(s, 7))
			break;
		int64_t rowid = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		enum soma_err err = task_exhausted(c, rowid);
		if (err != SOMA_OK)
			return err;
		rc = SQLITE_DONE; /* (past the last round: none reserved this time) */
	}
	if (rc == SQLITE_DONE) /* OK, no task, after a dead letter: an error would roll it back */
		return exhausted ? SOMA_OK : SOMA_ERR_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return SOMA_ERR_STORE;
	int64_t rowid = sqlite3_column_int64(s, 0);
	const char *session = (const char *)sqlite3_column_text(s, 4);
	/* the payload's text: store_sql_finish parses it on the waiting thread */
	op->session = json_pack(
		"{s:s, s:s, s:s, s:s?, s:s, s:I, s:I}", "id", (const char *)sqlite3_column_text(s, 1), "name",
		(const char *)sqlite3_column_text(s, 2), "tenant", (const char *)sqlite3_column_text(s, 3),
		"session_id", session, PAYLOAD_TEXT, (const char *)sqlite3_column_text(s, 5), "attempts",
		(json_int_t)sqlite3_column_int64(s, 6), "max_retries", (json_int_t)sqlite3_column_int64(s, 7));
	sqlite3_reset(s);
	if (!op->session)
		return SOMA_ERR_NOMEM;
	s = dbconn_stmt(c, "UPDATE tasks SET state = 'reserved', attempts = attempts + 1, reserved_until_ms = ?, "
			   "worker = ?, updated_ms = ? WHERE rowid = ?");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, now + op->delay_ms);
	bind_text(s, 2, op->worker);
	sqlite3_bind_int64(s, 3, now);
	sqlite3_bind_int64(s, 4, rowid);
	if (sqlite3_step(s) == SQLITE_DONE)
		return SOMA_OK;
	json_decref(op->session); /* not reserved: the caller gets no task */
	op->session = NULL;
	return SOMA_ERR_STORE;
}

static enum soma_err task_retry(struct dbconn *c, struct store_op *op)
{
	/* op->flag: an interrupted run (shutdown) goes back without using up an attempt */
	sqlite3_stmt *s =
		op->flag ? dbconn_stmt(c, "UPDATE tasks SET state = 'queued', attempts = max(attempts - 1, 0), "
					  "available_ms = ?, last_error = ?, updated_ms = ? "
					  "WHERE id = ? AND tenant = ? AND state = 'reserved' RETURNING state")
			 : dbconn_stmt(c, "UPDATE tasks SET state = CASE WHEN attempts > max_retries THEN 'dead' "
					  "ELSE 'queued' END, available_ms = ?, last_error = ?, updated_ms = ? "
					  "WHERE id = ? AND tenant = ? AND state = 'reserved' RETURNING state");
	if (!s)
		return SOMA_ERR_STORE;
	int64_t now = clock_wall_ms();
	sqlite3_bind_int64(s, 1, now + op->delay_ms);
	bind_text(s, 2, op->error_text);
	sqlite3_bind_int64(s, 3, now);
	bind_text(s, 4, op->task_id);
	bind_text(s, 5, op->tenant);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		op->dead = strcmp((const char *)sqlite3_column_text(s, 0), "dead") == 0;
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? SOMA_OK : rc == SQLITE_DONE ? SOMA_ERR_NOT_FOUND : SOMA_ERR_STORE;
}

static enum soma_err task_extend(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "UPDATE tasks SET reserved_until_ms = ? WHERE id = ? AND tenant = ? "
					 "AND state = 'reserved' AND worker = ?");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, clock_wall_ms() + op->delay_ms);
	bind_text(s, 2, op->task_id);
	bind_text(s, 3, op->tenant);
	bind_text(s, 4, op->worker);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	return sqlite3_changes(c->db) ? SOMA_OK : SOMA_ERR_NOT_FOUND;
}

/* Deletes up to RESULTS_SWEEP_BATCH results completed queue.result_expires_s ago, at most once
 * per min(60 s, that lifetime) (this runs on the writer thread as tasks finish: an idle store
 * keeps its old rows, which task_get no longer shows); a full batch sweeps again next time. */
static void results_sweep(struct dbconn *c, int64_t now)
{
	static int64_t next_ms; /* (the writer thread only) */
	int64_t ttl_ms = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S) * 1000;
	if (ttl_ms <= 0 || now < next_ms)
		return;
	sqlite3_stmt *s = dbconn_stmt(c, "DELETE FROM task_results WHERE rowid IN (SELECT rowid FROM task_results "
					 "WHERE completed_ms < ? LIMIT " RESULTS_SWEEP_BATCH_TEXT ")");
	if (!s)
		return;
	sqlite3_bind_int64(s, 1, now - ttl_ms);
	if (sqlite3_step(s) != SQLITE_DONE || sqlite3_changes(c->db) < RESULTS_SWEEP_BATCH)
		next_ms = now + (ttl_ms < 60000 ? ttl_ms : 60000);
}

/* A finished task leaves the queue table (its outcome stays in task_results, with its name, retries
 * and start copied from its row), so the queue only ever holds live work; a failed one stays as a
 * dead letter (a revoked or rejected one does not). */
static enum soma_err task_finish(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	bool dead = op->failed && !op->rejected;
	sqlite3_stmt *s = dbconn_stmt(
		c, "INSERT OR REPLACE INTO task_results(task_id, tenant, status, result, error, completed_ms, name, "
		   "retries, started_ms) SELECT ?1, tenant, ?3, ?4, ?5, ?6, name, max(attempts - 1, 0), "
		   "CASE WHEN state = 'reserved' THEN updated_ms END FROM tasks WHERE id = ?1 AND tenant = ?2");
	if (!s)
		return SOMA_ERR_STORE;
	char *result = op->row ? json_out(op->row, 1, NULL) : NULL;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->tenant);
	bind_text(s, 3, op->failed ? "FAILURE" : op->revoked ? "REVOKED" : "SUCCESS");
	if (result)
		bind_text(s, 4, result);
	if (op->failed || op->revoked)
		bind_text(s, 5, op->error_text);
	sqlite3_bind_int64(s, 6, now);
	int rc = sqlite3_step(s);
	free(result);
	if (rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	s = dead ? dbconn_stmt(c, "UPDATE tasks SET state = 'dead', last_error = ?1, updated_ms = ?2 "
				  "WHERE id = ?3 AND tenant = ?4")
		 : dbconn_stmt(c, "DELETE FROM tasks WHERE id = ?3 AND tenant = ?4");
	if (!s)
		return SOMA_ERR_STORE;
	if (dead) {
		bind_text(s, 1, op->error_text);
		sqlite3_bind_int64(s, 2, now);
	}
	bind_text(s, 3, op->task_id);
	bind_text(s, 4, op->tenant);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	if (sqlite3_changes(c->db) == 0)
		return SOMA_ERR_NOT_FOUND; /* no such task for this tenant: touch nothing (nothing was copied) */
	results_sweep(c, now);
	return SOMA_OK;
}

/* Inserts every attachment row of op->row (an array; may be empty: then only the session is
 * checked, before the upload stores its files). op->session_id, when set, must be the tenant's:
 * another tenant's is not found; one that does not exist yet binds nothing - the rows are
 * stored without a session (their "session_id" set to null in op->row) and the first message
 * that names them binds them (sqlite_chat.c), so no file is tied to a session id someone else
 * may create later. */
static enum soma_err attachment_put(struct dbconn *c, struct store_op *op)
{
	if (op->session_id[0]) {
		sqlite3_stmt *q = dbconn_stmt(c, "SELECT tenant FROM sessions WHERE id = ?");
		if (!q)
			return SOMA_ERR_STORE;
		bind_text(q, 1, op->session_id);
		int rc = sqlite3_step(q);
		if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(q, 0), op->tenant) != 0) {
			snprintf(op->error_text, sizeof(op->error_text), "session %s not found", op->session_id);
			return SOMA_ERR_NOT_FOUND;
		}
		if (rc == SQLITE_DONE)
			op->session_id[0] = '\0';
		else if (rc != SQLITE_ROW)
			return SOMA_ERR_STORE;
	}
	size_t i;
	json_t *row;
	json_array_foreach(op->row, i, row)
	{
		sqlite3_stmt *s =
			dbconn_stmt(c, "INSERT INTO attachments(id, tenant, session_id, filename, mime, size, "
				       "sha256, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, json_string_value(json_object_get(row, "id")));
		bind_text(s, 2, op->tenant);
		if (op->session_id[0])
			bind_text(s, 3, op->session_id);
		bind_text(s, 4, json_string_value(json_object_get(row, "filename")));
		bind_text(s, 5, json_string_value(json_object_get(row, "mime")));
		sqlite3_bind_int64(s, 6, json_integer_value(json_object_get(row, "size")));
		bind_text(s, 7, json_string_value(json_object_get(row, "sha256")));
		sqlite3_bind_int64(s, 8, clock_wall_ms());
		if (sqlite3_step(s) != SQLITE_DONE)
			return SOMA_ERR_STORE;
		json_object_set_new(row, "session_id", op->session_id[0] ? json_string(op->session_id) : json_null());
	}
	return SOMA_OK;
}

enum soma_err store_sql_task_write(struct dbconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_TASK_RESERVE:
		return task_reserve(c, op);
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
		return store_sql_task_relay_write(c, op);
	default:
		return store_sql_task_admin_write(c, op, enqueued);
	}
}

enum soma_err store_sql_attachments_owned(struct dbconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->attachments, i, id)
	{
		sqlite3_stmt *s = dbconn_stmt(c, "SELECT 1 FROM attachments WHERE id = ? AND tenant = ?");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, json_string_value(id));
		bind_text(s, 2, op->tenant);
		if (sqlite3_step(s) != SQLITE_ROW) {
			snprintf(op->error_text, sizeof(op->error_text), "attachment %s not found",
				 json_string_value(id) ? json_string_value(id) : "?");
			return SOMA_ERR_NOT_FOUND;
		}
	}
	return SOMA_OK;
}

/* Binds the message's attachments that have no session yet (uploaded without one, or before
 * their session existed) to its session, so deleting the session deletes them; one bound to
 * another session of the tenant stays that session's. And notes that the session names each
 * (attachment_refs): deleting the session an attachment is bound to keeps it while another
 * session still names it (sqlite_chat.c). */
enum soma_err store_sql_attachments_bind(struct dbconn *c, struct store_op *op)
{
	size_t i;
	json_t *id;
	json_array_foreach(op->attachments, i, id)
	{
		sqlite3_stmt *s = dbconn_stmt(c, "UPDATE attachments SET session_id = ?1 "
						 "WHERE id = ?2 AND tenant = ?3 AND session_id IS NULL");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->session_id);
		bind_text(s, 2, json_string_value(id));
		bind_text(s, 3, op->tenant);
		if (sqlite3_step(s) != SQLITE_DONE)
			return SOMA_ERR_STORE;
		s = dbconn_stmt(c, "INSERT OR IGNORE INTO attachment_refs(tenant, attachment_id, session_id) "
				   "VALUES (?1, ?2, ?3)");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->tenant);
		bind_text(s, 2, json_string_value(id));
		bind_text(s, 3, op->session_id);
		if (sqlite3_step(s) != SQLITE_DONE)
			return SOMA_ERR_STORE;
	}
	return SOMA_OK;
}

enum soma_err store_sql_attachment_get(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT id, session_id, filename, mime, size, sha256, created_ms "
					 "FROM attachments WHERE id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, op->tenant);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return SOMA_ERR_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return SOMA_ERR_STORE;
	char created[CLOCK_RFC3339_LEN + 1];
	op->row = json_pack("{s:s, s:s?, s:s, s:s, s:I, s:s, s:s}", "id", (const char *)sqlite3_column_text(s, 0),
			    "session_id", (const char *)sqlite3_column_text(s, 1), "filename",
			    (const char *)sqlite3_column_text(s, 2), "mime", (const char *)sqlite3_column_text(s, 3),
			    "size", (json_int_t)sqlite3_column_int64(s, 4), "sha256",
			    (const char *)sqlite3_column_text(s, 5), "created_at",
			    clock_rfc3339(sqlite3_column_int64(s, 6), created, sizeof(created)));
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* Of the sha256 strings in op->rows, those no attachment row names, into op->rows (the blob
 * sweep, gateway/blob_sweep.c). One statement over the JSON array; the index attachments_sha. */
enum soma_err store_sql_blobs_unused(struct dbconn *c, struct store_op *op)
{
	char *text = json_dumps(op->rows, JSON_COMPACT);
	sqlite3_stmt *s = text ? dbconn_stmt(c, "SELECT value FROM json_each(?) WHERE NOT EXISTS "
						"(SELECT 1 FROM attachments WHERE sha256 = json_each.value)")
			       : NULL;
	json_t *unused = json_array();
	enum soma_err err = s && unused ? SOMA_OK : text ? SOMA_ERR_STORE : SOMA_ERR_NOMEM;
	if (err == SOMA_OK) {
		sqlite3_bind_text(s, 1, text, -1, SQLITE_STATIC);
		int rc;
		while ((rc = sqlite3_step(s)) == SQLITE_ROW)
			json_array_append_new(unused, json_string((const char *)sqlite3_column_text(s, 0)));
		err = rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
		sqlite3_reset(s);
	}
	free(text);
	json_decref(op->rows);
	op->rows = err == SOMA_OK ? unused : NULL;
	if (err != SOMA_OK)
		json_decref(unused);
	return err;
}

enum soma_err sqlite_tasks_recover(struct store *st, int *n)
{
	sqlite3_stmt *s;
	*n = 0;
	if (sqlite3_prepare_v2(
		    st->main.db,
		    "UPDATE tasks SET state = 'queued', available_ms = ?, worker = '' WHERE state = 'reserved'", -1, &s,
		    NULL) != SQLITE_OK)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, clock_wall_ms());
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return SOMA_ERR_STORE;
	*n = sqlite3_changes(st->main.db);
	return SOMA_OK;
}
