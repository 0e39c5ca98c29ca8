/*
 * sqlite_chat.c - SQL of the chat ops: sessions and their events (see store.h).
 * Every statement names the tenant; a session of another tenant is reported as not found.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json_out.h"
#include "store/context_cache.h"
#include "store/store_int.h"

static char *rfc3339_dup(int64_t ms)
{
	char buf[CLOCK_RFC3339_LEN + 1];
	return strdup(clock_rfc3339(ms, buf, sizeof(buf)));
}

/* 1 when the session exists for tenant, 0 when absent, -1 when it belongs to another tenant. */
static int session_owner(struct dbconn *c, const char *id, const char *tenant, enum soma_err *err)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT tenant FROM sessions WHERE id = ?");
	if (!s)
		return *err = SOMA_ERR_STORE, 0;
	bind_text(s, 1, id);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW)
		return *err = SOMA_ERR_STORE, 0;
	return strcmp((const char *)sqlite3_column_text(s, 0), tenant) == 0 ? 1 : -1;
}

static enum soma_err session_create(struct dbconn *c, struct store_op *op, int64_t now)
{
	sqlite3_stmt *s =
		dbconn_stmt(c, "INSERT INTO sessions(id, tenant, subject, persona_id, created_ms, updated_ms) "
			       "VALUES (?, ?, ?, ?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	const char *persona = json_string_value(json_object_get(op->event, "persona_id"));
	bind_text(s, 1, op->session_id);
	bind_text(s, 2, op->tenant);
	bind_text(s, 3, op->subject);
	if (persona)
		bind_text(s, 4, persona);
	sqlite3_bind_int64(s, 5, now);
	sqlite3_bind_int64(s, 6, now);
	return sqlite3_step(s) == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* The event's text but its seq, made on the submitting thread (store_driver.prepare): writing
 * the event out was about a twentieth of the writer thread's time, and that thread bounds
 * ingest. It sets what event_insert would (session_id, created_at when absent); event_insert
 * appends the seq as the last member, where json_object_set_new puts a new key, so the text is
 * the one json_out would make of the event then. */
/* What the store sets in every event it inserts but its seq: session_id, and created_at when absent. */
static void event_fill(struct store_op *op, int64_t now)
{
	char created[CLOCK_RFC3339_LEN + 1];
	json_object_set_new(op->event, "session_id", json_string(op->session_id));
	if (!json_object_get(op->event, "created_at"))
		json_object_set_new(op->event, "created_at", json_string(clock_rfc3339(now, created, sizeof(created))));
}

void store_sql_prepare(struct store_op *op)
{
	if ((op->kind != STORE_OP_MESSAGE && op->kind != STORE_OP_EVENT_APPEND) || !op->event ||
	    json_object_get(op->event, "seq"))
		return;
	event_fill(op, clock_wall_ms());
	free(op->event_head);
	op->event_head = json_out(op->event, 0, NULL); /* NULL: event_insert writes it out itself */
}

/* head ("{...}", at least one member) with ,"seq":seq before its closing brace; malloc'd, or NULL. */
static char *event_text_of(const char *head, int64_t seq)
{
	size_t len = strlen(head);
	if (len < 3 || head[len - 1] != '}')
		return NULL;
	char tail[40];
	int n = snprintf(tail, sizeof(tail), ",\"seq\":%lld}", (long long)seq);
	char *text = malloc(len - 1 + (size_t)n + 1);
	if (!text)
		return NULL;
	memcpy(text, head, len - 1);
	memcpy(text + len - 1, tail, (size_t)n + 1);
	return text;
}

/* A session's row as an event's insert needs it. */
struct session_row {
	int64_t rowid;	  /* its rowid */
	int64_t next_seq; /* the seq its next event gets */
	bool found;	  /* there is a session of that id */
	bool owned;	  /* and it is the tenant's */
};

static enum soma_err session_find(struct dbconn *c, const char *id, const char *tenant, struct session_row *r)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT rowid, last_seq + 1, tenant = ?2 FROM sessions WHERE id = ?1");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, id);
	bind_text(s, 2, tenant);
	int rc = sqlite3_step(s);
	*r = (struct session_row){0};
	if (rc == SQLITE_ROW)
		*r = (struct session_row){sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), true,
					  sqlite3_column_int(s, 2) != 0};
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* Assigns the next seq of the session (row: as session_find read it, or NULL to read it here) and
 * stores op->event; fills op->seq and op->event_text. The session's row is read, then written by
 * its rowid: an UPDATE ... RETURNING buffers its output in a temporary b-tree that SQLite opens,
 * sizes and closes on every run (about a fifth of the cost of an event's insert, callgrind); only
 * the writer writes, so this is atomic. */
static enum soma_err event_insert(struct dbconn *c, struct store_op *op, int64_t now, const struct session_row *row)
{
	struct session_row found;
	enum soma_err err;
	if (!row) {
		if ((err = session_find(c, op->session_id, op->tenant, &found)) != SOMA_OK)
			return err;
		row = &found;
	}
	if (!row->found || !row->owned)
		return SOMA_ERR_NOT_FOUND;
	op->seq = row->next_seq;
	sqlite3_stmt *s = dbconn_stmt(c, "UPDATE sessions SET last_seq = ?, updated_ms = ? WHERE rowid = ?");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, op->seq);
	sqlite3_bind_int64(s, 2, now);
	sqlite3_bind_int64(s, 3, row->rowid);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	free(op->event_text);
	op->event_text = op->event_head ? event_text_of(op->event_head, op->seq) : NULL;
	if (!op->event_text) /* not prepared, or no memory then: the same members, seq last */
		event_fill(op, now);
	json_object_set_new(op->event, "seq", json_integer(op->seq)); /* last, as in the text */
	if (!op->event_text)
		op->event_text = json_out(op->event, 0, NULL);
	const char *event_id = json_string_value(json_object_get(op->event, "event_id"));
	const char *type = json_string_value(json_object_get(op->event, "type"));
	if (!op->event_text || !event_id)
		return SOMA_ERR_INVALID;
	/* a task's reply only while the message it answers exists (op->reply_to): a reset may have
	 * erased it since the task read its context, and a reply must not open the fresh conversation */
	s = dbconn_stmt(c, op->reply_to[0]
				   ? "INSERT INTO events(session_id, seq, event_id, tenant, type, body, "
				     "created_ms, outcome_of) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE "
				     "EXISTS (SELECT 1 FROM events WHERE event_id = ?9 AND session_id = ?1)"
				   : "INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms, "
				     "outcome_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->session_id);
	sqlite3_bind_int64(s, 2, op->seq);
	bind_text(s, 3, event_id);
	bind_text(s, 4, op->tenant);
	bind_text(s, 5, type ? type : "");
	bind_text(s, 6, op->event_text);
	sqlite3_bind_int64(s, 7, now);
	if (op->outcome_of[0]) /* a second outcome of one task is a constraint violation (0008) */
		bind_text(s, 8, op->outcome_of);
	if (op->reply_to[0])
		bind_text(s, 9, op->reply_to);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE && op->reply_to[0] && sqlite3_changes(c->db) == 0) {
		snprintf(op->error_text, sizeof(op->error_text), "message %s is gone (the session was reset)",
			 op->reply_to);
		return SOMA_ERR_NOT_FOUND; /* the op's savepoint takes its seq back */
	}
	return rc == SQLITE_DONE ? SOMA_OK : rc == SQLITE_CONSTRAINT ? SOMA_ERR_CONFLICT : SOMA_ERR_STORE;
}

static enum soma_err op_message(struct dbconn *c, struct store_op *op, bool *enqueued)
{
	int64_t now = clock_wall_ms();
	enum soma_err err = SOMA_OK;
	if (op->attachments && (err = store_sql_attachments_owned(c, op)) != SOMA_OK)
		return err;
	struct session_row row;
	if ((err = session_find(c, op->session_id, op->tenant, &row)) != SOMA_OK)
		return err;
	if (row.found && !row.owned) {
		snprintf(op->error_text, sizeof(op->error_text), "session %s not found", op->session_id);
		return SOMA_ERR_NOT_FOUND;
	}
	if (!row.found) {
		if ((err = session_create(c, op, now)) != SOMA_OK)
			return err;
		op->created = true;
		row = (struct session_row){sqlite3_last_insert_rowid(c->db), 1, true, true};
	}
	if ((err = event_insert(c, op, now, &row)) != SOMA_OK)
		return err;
	if (op->attachments && (err = store_sql_attachments_bind(c, op)) != SOMA_OK)
		return err;
	/* memory: the turn's outbox row commits with it (src/store/sqlite_memory.c) */
	if ((err = store_sql_memory_event(c, op->tenant, op->session_id, op->event)) != SOMA_OK)
		return err;
	if (op->task) {
		bool handed = store_task_take_handoff(op, now);
		if ((err = store_sql_task_insert(c, op->tenant, op->session_id, op->task)) != SOMA_OK)
			return err;
		*enqueued = !handed; /* a handed task is reserved already: no worker to wake */
	}
	return SOMA_OK;
}

static enum soma_err op_event_append(struct dbconn *c, struct store_op *op)
{
	enum soma_err err = event_insert(c, op, clock_wall_ms(), NULL);
	if (err == SOMA_OK) /* memory: the reply's outbox row commits with it (sqlite_memory.c) */
		err = store_sql_memory_event(c, op->tenant, op->session_id, op->event);
	if (err != SOMA_OK || !op->task_id[0])
		return err;
	/* the task's effect and its completion commit together: ack after the effect is durable */
	struct store_op finish = {.kind = STORE_OP_TASK_FINISH};
	memcpy(finish.tenant, op->tenant, sizeof(op->tenant));
	memcpy(finish.task_id, op->task_id, sizeof(op->task_id));
	bool unused;
	if ((err = store_sql_task_write(c, &finish, &unused)) != SOMA_OK || !op->queue[0])
		return err;
	/* and the worker's next task, reserved in the same commit: one round trip per task */
	struct store_op next = {.kind = STORE_OP_TASK_RESERVE, .delay_ms = op->delay_ms};
	memcpy(next.queue, op->queue, sizeof(op->queue));
	memcpy(next.worker, op->worker, sizeof(op->worker));
	err = store_sql_task_write(c, &next, &unused);
	if (err == SOMA_OK)
		op->session = next.session; /* the reserved task, now the op's */
	/* no next task changes nothing here; a failing statement (disk full, I/O error) fails the op,
	 * which SQLite may have rolled back with the whole transaction (sqlite_exec.c checks) */
	return err == SOMA_OK || err == SOMA_ERR_NOT_FOUND ? SOMA_OK : err;
}

/* Deletes the session, its events, queued tasks and attachments; a reset only its events and
 * queued tasks. Either way the session names no attachment any more (attachment_refs). An
 * attachment of the session that another session of the tenant still names is not deleted but
 * handed to one of those (the least id), whose delete then takes it when it is the last. */
enum soma_err store_sql_session_delete(struct dbconn *c, struct store_op *op, bool reset)
{
	static const char *const del_session = "DELETE FROM sessions WHERE id = ?1 AND tenant = ?2";
	static const char *const del_events = "DELETE FROM events WHERE session_id = ?1 AND tenant = ?2";
	static const char *const del_tasks =
		"DELETE FROM tasks WHERE session_id = ?1 AND tenant = ?2 AND state = 'queued'";
	static const char *const del_refs = "DELETE FROM attachment_refs WHERE tenant = ?2 AND session_id = ?1";
	static const char *const hand_over =
		"UPDATE attachments SET session_id = (SELECT min(r.session_id) FROM attachment_refs r "
		"WHERE r.tenant = ?2 AND r.attachment_id = attachments.id) "
		"WHERE session_id = ?1 AND tenant = ?2 AND EXISTS (SELECT 1 FROM attachment_refs r "
		"WHERE r.tenant = ?2 AND r.attachment_id = attachments.id)";
	static const char *const del_attach = "DELETE FROM attachments WHERE session_id = ?1 AND tenant = ?2";
	enum soma_err err = SOMA_OK;
	if (session_owner(c, op->session_id, op->tenant, &err) != 1)
		return err != SOMA_OK ? err : SOMA_ERR_NOT_FOUND;
	/* del_refs first: hand_over then sees only the other sessions' references */
	const char *const all[] = {del_tasks, del_events, del_refs, hand_over, del_attach, del_session};
	size_t n = reset ? 3 : 6;
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *s = dbconn_stmt(c, all[i]);
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->session_id);
		bind_text(s, 2, op->tenant);
		if (sqlite3_step(s) != SQLITE_DONE)
			return SOMA_ERR_STORE;
	}
	return SOMA_OK;
}

static enum soma_err op_session_pause(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "UPDATE sessions SET paused = ?, updated_ms = ? WHERE id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int(s, 1, op->flag);
	sqlite3_bind_int64(s, 2, clock_wall_ms());
	bind_text(s, 3, op->session_id);
	bind_text(s, 4, op->tenant);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	return sqlite3_changes(c->db) ? SOMA_OK : SOMA_ERR_NOT_FOUND;
}

enum soma_err store_sql_write(struct dbconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_MESSAGE:
		return op_message(c, op, enqueued);
	case STORE_OP_EVENT_APPEND:
		return op_event_append(c, op);
	case STORE_OP_SESSION_DELETE:
		return store_sql_session_delete(c, op, false);
	case STORE_OP_SESSION_RESET:
		return store_sql_session_delete(c, op, true);
	case STORE_OP_SESSION_PAUSE:
		return op_session_pause(c, op);
	default:
		return store_sql_task_write(c, op, enqueued);
	}
}

/* ---- reads ------------------------------------------------------------------------------------ */

static json_t *session_json(sqlite3_stmt *s)
{
	char *created = rfc3339_dup(sqlite3_column_int64(s, 6)), *updated = rfc3339_dup(sqlite3_column_int64(s, 7));
	const char *persona = (const char *)sqlite3_column_text(s, 3);
	json_t *meta = json_loads((const char *)sqlite3_column_text(s, 4), 0, NULL);
	json_t *o = json_pack("{s:s, s:s?, s:s, s:s, s:o, s:b, s:I, s:s, s:s}", "session_id",
			      (const char *)sqlite3_column_text(s, 0), "persona_id", persona, "tenant",
			      (const char *)sqlite3_column_text(s, 1), "subject",
			      (const char *)sqlite3_column_text(s, 2), "metadata", meta ? meta : json_object(),
			      "paused", sqlite3_column_int(s, 5), "last_seq", (json_int_t)sqlite3_column_int64(s, 8),
			      "created_at", created ? created : "", "updated_at", updated ? updated : "");
	free(created);
	free(updated);
	return o;
}

#define SESSION_COLUMNS "id, tenant, subject, persona_id, metadata, paused, created_ms, updated_ms, last_seq"

static enum soma_err op_session_get(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->session_id);
	bind_text(s, 2, op->tenant);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return SOMA_ERR_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return SOMA_ERR_STORE;
	op->session = session_json(s);
	op->seq = sqlite3_column_int64(s, 8);
	return op->session ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err op_sessions_list(struct dbconn *c, struct store_op *op)
{
	long long cur_ms;
	char cur_id[STORE_TASK_ID_MAX + 1];
	if (!store_page_cursor(op, &cur_ms, cur_id))
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT " SESSION_COLUMNS " FROM sessions WHERE tenant = ? AND "
					 "(updated_ms < ? OR (updated_ms = ? AND id < ?)) "
					 "ORDER BY updated_ms DESC, id DESC LIMIT ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->tenant);
	sqlite3_bind_int64(s, 2, cur_ms);
	sqlite3_bind_int64(s, 3, cur_ms);
	bind_text(s, 4, cur_id);
	sqlite3_bind_int64(s, 5, op->limit + 1);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)json_array_size(op->rows) == op->limit) {
			snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld:%s", (long long)cur_ms, cur_id);
			break;
		}
		cur_ms = sqlite3_column_int64(s, 7);
		snprintf(cur_id, sizeof(cur_id), "%s", (const char *)sqlite3_column_text(s, 0));
		json_array_append_new(op->rows, session_json(s));
	}
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

static enum soma_err op_events_after(struct dbconn *c, struct store_op *op)
{
	enum soma_err err = SOMA_OK;
	if (session_owner(c, op->session_id, op->tenant, &err) != 1)
		return err != SOMA_OK ? err : SOMA_ERR_NOT_FOUND;
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT last_seq FROM sessions WHERE id = ? AND tenant = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->session_id);
	bind_text(s, 2, op->tenant);
	op->seq = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	if (op->after_seq >= 0) {
		s = dbconn_stmt(c, "SELECT seq, body FROM events WHERE session_id = ?1 AND seq > ?2 AND tenant = ?4 "
				   "ORDER BY seq LIMIT ?3");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->session_id);
		sqlite3_bind_int64(s, 2, op->after_seq);
		sqlite3_bind_int64(s, 3, op->limit);
	} else {
		s = dbconn_stmt(
			c, "SELECT seq, body FROM (SELECT body, seq FROM events WHERE session_id = ?1 AND tenant = ?4 "
			   "ORDER BY seq DESC LIMIT ?2) ORDER BY seq");
		if (!s)
			return SOMA_ERR_STORE;
		bind_text(s, 1, op->session_id);
		sqlite3_bind_int64(s, 2, op->limit);
	}
	bind_text(s, 4, op->tenant);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(op->rows, json_pack("{s:I, s:s}", "seq", (json_int_t)sqlite3_column_int64(s, 0),
							  "body", (const char *)sqlite3_column_text(s, 1)));
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

/* The conversation an LLM call needs, without parsing stored events in C: the message text
 * comes out of the stored JSON with SQLite's json_extract. op->seq = the session's last seq. */
static enum soma_err op_context(struct dbconn *c, struct store_op *op)
{
	/* with the session's last seq: whether the task asking already has its outcome (a copy of a
	 * task that ran: migration 0008), and whether the message it answers still exists (a reset
	 * erases it, and the outcome with it: a task, or a copy of one, that comes after the reset
	 * is dropped, not answered into the fresh conversation) */
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT last_seq, EXISTS (SELECT 1 FROM events WHERE outcome_of = ?3), "
					 "(SELECT seq FROM events WHERE event_id = ?4 AND session_id = ?1) "
					 "FROM sessions WHERE id = ?1 AND tenant = ?2");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->session_id);
	bind_text(s, 2, op->tenant);
	bind_text(s, 3, op->outcome_of);
	bind_text(s, 4, op->reply_to);
	if (sqlite3_step(s) != SQLITE_ROW)
		return SOMA_ERR_NOT_FOUND;
	op->seq = sqlite3_column_int64(s, 0);
	op->has_outcome = op->outcome_of[0] && sqlite3_column_int(s, 1);
	if (op->has_outcome)
		return SOMA_OK;
	bool seen = op->reply_to[0] && sqlite3_column_type(s, 2) != SQLITE_NULL;
	/* the context ends at the message answered: a later message is not this task's to answer */
	int64_t upto = seen ? sqlite3_column_int64(s, 2) : INT64_MAX;
	op->reply_seen = seen;
	if (!op->reply_probe && op->reply_to[0] && !seen) {
		snprintf(op->error_text, sizeof(op->error_text), "message %s is gone (the session was reset)",
			 op->reply_to);
		return SOMA_ERR_NOT_FOUND;
	}
	op->context_cut = seen && upto < op->seq;
	/* a user event's attachment ids too (the task reads those files into the turn it sends) */
	s = dbconn_stmt(c, "SELECT type, json_extract(body, '$.message'), event_id, CASE WHEN type = 'user' THEN "
			   "json_extract(body, '$.attachments') END FROM events WHERE session_id = ?1 "
			   "AND tenant = ?3 AND type IN ('user', 'assistant.final') AND seq <= ?4 ORDER BY seq DESC "
			   "LIMIT ?2");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->session_id);
	sqlite3_bind_int64(s, 2, op->limit);
	bind_text(s, 3, op->tenant);
	sqlite3_bind_int64(s, 4, upto);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *type = (const char *)sqlite3_column_text(s, 0);
		const char *text = (const char *)sqlite3_column_text(s, 1);
		const char *att = (const char *)sqlite3_column_text(s, 3); /* "[]" or NULL: none */
		json_array_append_new(
			op->rows, store_turn_row(strcmp(type, "user") == 0 ? "user" : "assistant",
						 json_string(text ? text : ""), (const char *)sqlite3_column_text(s, 2),
						 att && strcmp(att, "[]") != 0 ? json_loads(att, 0, NULL) : NULL));
	}
	return rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sql_read(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_SESSION_GET:
		return op_session_get(c, op);
	case STORE_OP_SESSIONS_LIST:
		return op_sessions_list(c, op);
	case STORE_OP_EVENTS_AFTER:
		return op_events_after(c, op);
	case STORE_OP_CONTEXT:
		return op_context(c, op);
	case STORE_OP_ATTACHMENT_GET:
		return store_sql_attachment_get(c, op);
	case STORE_OP_BLOBS_UNUSED:
		return store_sql_blobs_unused(c, op);
	default:
		return store_sql_task_admin_read(c, op);
	}
}
