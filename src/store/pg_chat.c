/*
 * pg_chat.c - SQL of the chat ops on PostgreSQL: sessions and their events (see store.h, and
 * sqlite_chat.c for the same ops on SQLite: same semantics, same outputs).
 * Every statement names the tenant; a session of another tenant is reported as not found.
 * A message's files and a session's delete or reset are in pg_chat_files.c.
 *
 * DESIGN: the seq of an event comes from `UPDATE sessions SET last_seq = last_seq + 1 ...
 * RETURNING last_seq`, whose row lock orders the appends of every node writing to one session.
 * Two nodes creating the same new session race on its primary key: the loser's INSERT does
 * nothing (ON CONFLICT) and it appends to the session the winner created, as SQLite's single
 * writer would have.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/pg_int.h"

static char *rfc3339_dup(int64_t ms)
{
	char buf[CLOCK_RFC3339_LEN + 1];
	return strdup(clock_rfc3339(ms, buf, sizeof(buf)));
}

int pg_session_owner(struct pgconn *c, const char *id, const char *tenant, bool lock, enum soma_err *err)
{
	struct pg_params p = {0};
	pg_param_text(&p, id);
	PGresult *r = pg_exec(c,
			      lock ? "SELECT tenant FROM sessions WHERE id = $1 FOR UPDATE"
				   : "SELECT tenant FROM sessions WHERE id = $1",
			      &p, err);
	if (!r)
		return 0;
	int owner = PQntuples(r) == 0 ? 0 : strcmp(PQgetvalue(r, 0, 0), tenant) == 0 ? 1 : -1;
	PQclear(r);
	return owner;
}

/* Creates the session unless it exists; *owner as pg_session_owner() after the insert. */
static enum soma_err session_create(struct pgconn *c, struct store_op *op, int64_t now, int *owner)
{
	const char *persona = json_string_value(json_object_get(op->event, "persona_id"));
	struct pg_params p = {0};
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	pg_param_text(&p, op->subject);
	pg_param_text(&p, persona);
	pg_param_int(&p, now);
	int64_t created = 0;
	enum soma_err err = pg_run(c,
				   "INSERT INTO sessions(id, tenant, subject, persona_id, created_ms, updated_ms) "
				   "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
				   &p, &created);
	if (err != SOMA_OK)
		return err;
	if (created) {
		*owner = 1;
		op->created = true;
		return SOMA_OK;
	}
	*owner = pg_session_owner(c, op->session_id, op->tenant, false, &err); /* another node created it meanwhile */
	return err;
}

/* Assigns the next seq of the session and stores op->event; fills op->seq and op->event_text.
 * The session's updated_ms moves as PG_TOUCHED says (pg_int.h). */
#define EVENT_TOUCHED PG_TOUCHED("updated_ms", "$1")
static enum soma_err event_insert(struct pgconn *c, struct store_op *op, int64_t now)
{
	struct pg_params p = {0};
	pg_param_int(&p, now);
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "UPDATE sessions SET last_seq = last_seq + 1, updated_ms = " EVENT_TOUCHED
			      " WHERE id = $2 AND tenant = $3 RETURNING last_seq",
			      &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return SOMA_ERR_NOT_FOUND;
	}
	op->seq = pg_int(r, 0, 0);
	PQclear(r);
	char created[CLOCK_RFC3339_LEN + 1];
	json_object_set_new(op->event, "seq", json_integer(op->seq));
	json_object_set_new(op->event, "session_id", json_string(op->session_id));
	if (!json_object_get(op->event, "created_at"))
		json_object_set_new(op->event, "created_at", json_string(clock_rfc3339(now, created, sizeof(created))));
	free(op->event_text);
	op->event_text = json_dumps(op->event, JSON_COMPACT);
	const char *event_id = json_string_value(json_object_get(op->event, "event_id"));
	const char *type = json_string_value(json_object_get(op->event, "type"));
	if (!op->event_text || !event_id)
		return SOMA_ERR_INVALID;
	struct pg_params e = {0};
	pg_param_text(&e, op->session_id);
	pg_param_int(&e, op->seq);
	pg_param_text(&e, event_id);
	pg_param_text(&e, op->tenant);
	pg_param_text(&e, type ? type : "");
	pg_param_text(&e, op->event_text);
	pg_param_int(&e, now);
	pg_param_text(&e, op->outcome_of[0] ? op->outcome_of : NULL);
	/* a second outcome of one task is a unique violation (events_outcome_of): SOMA_ERR_CONFLICT,
	 * and the op's savepoint takes its seq back */
	if (!op->reply_to[0])
		return pg_run(
			c,
			"INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms, outcome_of) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
			&e, NULL);
	/* a task's reply only while the message it answers exists: a reset may have erased it since
	 * the task read its context, and a reply must not open the fresh conversation (same statement,
	 * no round trip more) */
	pg_param_text(&e, op->reply_to);
	int64_t stored = 0;
	err = pg_run(c,
		     "INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms, outcome_of) "
		     "SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::text WHERE "
		     "EXISTS (SELECT 1 FROM events WHERE event_id = $9 AND session_id = $1)",
		     &e, &stored);
	if (err == SOMA_OK && !stored) {
		snprintf(op->error_text, sizeof(op->error_text), "message %s is gone (the session was reset)",
			 op->reply_to);
		return SOMA_ERR_NOT_FOUND; /* the op's savepoint takes its seq back */
	}
	return err;
}

static enum soma_err op_message(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	int64_t now = clock_wall_ms();
	enum soma_err err = SOMA_OK;
	if (op->attachments && (err = pg_attachments_owned(c, op)) != SOMA_OK)
		return err;
	/* most messages go to a session of the tenant that exists: its seq update finds it, a round
	 * trip less than asking first; only when it does not is the owner asked (or it is created) */
	err = event_insert(c, op, now);
	if (err == SOMA_ERR_NOT_FOUND) {
		int owner = pg_session_owner(c, op->session_id, op->tenant, false, &err);
		if (err == SOMA_OK && owner == 0)
			err = session_create(c, op, now, &owner);
		if (err != SOMA_OK)
			return err;
		if (owner < 0) {
			snprintf(op->error_text, sizeof(op->error_text), "session %s not found", op->session_id);
			return SOMA_ERR_NOT_FOUND;
		}
		err = event_insert(c, op, now);
	}
	if (err == SOMA_OK && op->attachments)
		err = pg_attachments_bind(c, op);
	if (err != SOMA_OK)
		return err;
	/* memory: the turn's outbox row commits with it (pg_memory.c) */
	if ((err = pg_sql_memory_event(c, op->tenant, op->session_id, op->event)) != SOMA_OK)
		return err;
	if (op->task) {
		bool handed = store_task_take_handoff(op, now);
		if ((err = pg_sql_task_insert(c, op->tenant, op->session_id, op->task)) != SOMA_OK)
			return err;
		*enqueued = !handed; /* a handed task is reserved already: no worker to wake */
	}
	return SOMA_OK;
}

static enum soma_err op_event_append(struct pgconn *c, struct store_op *op)
{
	enum soma_err err = event_insert(c, op, clock_wall_ms());
	if (err == SOMA_OK) /* memory: the reply's outbox row commits with it (pg_memory.c) */
		err = pg_sql_memory_event(c, op->tenant, op->session_id, op->event);
	if (err != SOMA_OK || !op->task_id[0])
		return err;
	/* the task's effect and its completion commit together: ack after the effect is durable */
	struct store_op finish = {.kind = STORE_OP_TASK_FINISH};
	memcpy(finish.tenant, op->tenant, sizeof(op->tenant));
	memcpy(finish.task_id, op->task_id, sizeof(op->task_id));
	bool unused;
	if ((err = pg_sql_task_write(c, &finish, &unused)) != SOMA_OK || !op->queue[0])
		return err;
	/* and the worker's next task, reserved in the same commit: one round trip per task */
	struct store_op next = {.kind = STORE_OP_TASK_RESERVE, .delay_ms = op->delay_ms};
	memcpy(next.queue, op->queue, sizeof(op->queue));
	memcpy(next.worker, op->worker, sizeof(op->worker));
	enum soma_err reserved = pg_sql_task_write(c, &next, &unused);
	if (reserved == SOMA_OK)
		op->session = next.session; /* the reserved task, now the op's */
	else if (reserved != SOMA_ERR_NOT_FOUND)
		return reserved; /* a failed statement aborted the transaction: the op is rolled back */
	return SOMA_OK;		 /* no next task changes nothing here */
}

static enum soma_err op_session_pause(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_bool(&p, op->flag);
	pg_param_int(&p, clock_wall_ms());
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	int64_t changed = 0;
	enum soma_err err = pg_run(c, "UPDATE sessions SET paused = $1, updated_ms = $2 WHERE id = $3 AND tenant = $4",
				   &p, &changed);
	return err == SOMA_OK && !changed ? SOMA_ERR_NOT_FOUND : err;
}

enum soma_err pg_sql_write(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	switch (op->kind) {
	case STORE_OP_MESSAGE:
		return op_message(c, op, enqueued);
	case STORE_OP_EVENT_APPEND:
		return op_event_append(c, op);
	case STORE_OP_SESSION_DELETE:
		return pg_session_delete(c, op, false);
	case STORE_OP_SESSION_RESET:
		return pg_session_delete(c, op, true);
	case STORE_OP_SESSION_PAUSE:
		return op_session_pause(c, op);
	default:
		return pg_sql_task_write(c, op, enqueued);
	}
}

/* ---- reads ------------------------------------------------------------------------------------ */

static json_t *session_json(const PGresult *r, int i)
{
	char *created = rfc3339_dup(pg_int(r, i, 6)), *updated = rfc3339_dup(pg_int(r, i, 7));
	json_t *meta = json_loads(pg_text(r, i, 4) ? pg_text(r, i, 4) : "{}", 0, NULL);
	json_t *o = json_pack("{s:s, s:s?, s:s, s:s, s:o, s:b, s:I, s:s, s:s}", "session_id", pg_text(r, i, 0),
			      "persona_id", pg_text(r, i, 3), "tenant", pg_text(r, i, 1), "subject", pg_text(r, i, 2),
			      "metadata", meta ? meta : json_object(), "paused", pg_bool(r, i, 5), "last_seq",
			      (json_int_t)pg_int(r, i, 8), "created_at", created ? created : "", "updated_at",
			      updated ? updated : "");
	free(created);
	free(updated);
	return o;
}

#define SESSION_COLUMNS "id, tenant, subject, persona_id, metadata, paused, created_ms, updated_ms, last_seq"

static enum soma_err op_session_get(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = $1 AND tenant = $2", &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return SOMA_ERR_NOT_FOUND;
	}
	op->session = session_json(r, 0);
	op->seq = pg_int(r, 0, 8);
	PQclear(r);
	return op->session ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err op_sessions_list(struct pgconn *c, struct store_op *op)
{
	char cur_id[STORE_TASK_ID_MAX + 1];
	struct pg_params p = {0};
	pg_param_text(&p, op->tenant);
	if (!pg_page_params(op, &p, cur_id))
		return SOMA_ERR_INVALID;
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT " SESSION_COLUMNS " FROM sessions WHERE tenant = $1 AND "
			      "(updated_ms < $2 OR (updated_ms = $2 AND id < $3 COLLATE \"C\")) "
			      "ORDER BY updated_ms DESC, id COLLATE \"C\" DESC LIMIT $4",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	int n = PQntuples(r);
	for (int i = 0; i < n && i < op->limit; i++)
		json_array_append_new(op->rows, session_json(r, i));
	pg_page_next(op, r, 7, 0);
	PQclear(r);
	return SOMA_OK;
}

/* op->seq = the session's last seq; NOT_FOUND when it is not the tenant's. */
static enum soma_err last_seq(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c, "SELECT last_seq FROM sessions WHERE id = $1 AND tenant = $2", &p, &err);
	if (!r)
		return err;
	err = PQntuples(r) == 1 ? SOMA_OK : SOMA_ERR_NOT_FOUND;
	if (err == SOMA_OK)
		op->seq = pg_int(r, 0, 0);
	PQclear(r);
	return err;
}

static enum soma_err op_events_after(struct pgconn *c, struct store_op *op)
{
	enum soma_err err = last_seq(c, op);
	if (err != SOMA_OK)
		return err;
	struct pg_params p = {0};
	pg_param_text(&p, op->session_id);
	pg_param_text(&p, op->tenant);
	pg_param_int(&p, op->limit);
	PGresult *r;
	if (op->after_seq >= 0) {
		pg_param_int(&p, op->after_seq);
		r = pg_exec(c,
			    "SELECT seq, body FROM events WHERE session_id = $1 AND tenant = $2 AND seq > $4 "
			    "ORDER BY seq LIMIT $3",
			    &p, &err);
	} else {
		r = pg_exec(c,
			    "SELECT seq, body FROM (SELECT seq, body FROM events WHERE session_id = $1 AND tenant = $2 "
			    "ORDER BY seq DESC LIMIT $3) AS last ORDER BY seq",
			    &p, &err);
	}
	if (!r)
		return err;
	op->rows = json_array();
	int n = PQntuples(r);
	for (int i = 0; i < n; i++)
		json_array_append_new(op->rows, json_pack("{s:I, s:s}", "seq", (json_int_t)pg_int(r, i, 0), "body",
							  pg_text(r, i, 1)));
	PQclear(r);
	return SOMA_OK;
}

/* The conversation an LLM call needs: the message text comes out of the stored JSON in SQL. One
 * statement, so one snapshot: the session's last seq is that of the turns read (an early-started
 * reply, queue/handoff.h, tells from it whether the read saw its message). */
static enum soma_err op_context(struct pgconn *c, struct store_op *op)
{
	/* the session's last seq, whether the task asking already has its outcome (a copy of a task
	 * that ran: migration 0005), whether the message it answers still exists (a reset erases it,
	 * and the outcome with it: a task, or a copy of one, that comes after the reset is dropped, not
	 * answered into the fresh conversation), and the recent turns, newest first, in one round trip */
	struct pg_params q = {0};
	pg_param_text(&q, op->session_id);
	pg_param_text(&q, op->tenant);
	pg_param_text(&q, op->outcome_of);
	pg_param_text(&q, op->reply_to);
	pg_param_int(&q, op->limit);
	enum soma_err err;
	PGresult *r =
		pg_exec(c,
			"SELECT s.last_seq, EXISTS (SELECT 1 FROM events WHERE outcome_of = $3), m.seq, e.type, e.msg, "
			"e.att "
			"FROM sessions s LEFT JOIN LATERAL (SELECT seq FROM events WHERE event_id = $4 AND "
			"session_id = $1) m ON true LEFT JOIN LATERAL (SELECT seq, type, body::json->>'message' AS "
			"msg, CASE WHEN type = 'user' THEN body::json->>'attachments' END AS att FROM events WHERE "
			"session_id = $1 AND tenant = $2 AND type IN ('user', 'assistant.final') "
			"AND seq <= COALESCE(m.seq, 9223372036854775807) ORDER BY seq DESC LIMIT $5) e ON true "
			"WHERE s.id = $1 AND s.tenant = $2 ORDER BY e.seq DESC",
			&q, &err);
	if (!r)
		return err;
	int n = PQntuples(r);
	err = n >= 1 ? SOMA_OK : SOMA_ERR_NOT_FOUND;
	if (err == SOMA_OK) {
		op->seq = pg_int(r, 0, 0);
		op->has_outcome = op->outcome_of[0] && pg_bool(r, 0, 1);
		/* the turns end at the message answered: a later message is not this task's to answer */
		op->reply_seen = op->reply_to[0] && !PQgetisnull(r, 0, 2);
		op->context_cut = op->reply_seen && pg_int(r, 0, 2) < op->seq;
		if (!op->has_outcome && !op->reply_probe && op->reply_to[0] && !op->reply_seen) {
			snprintf(op->error_text, sizeof(op->error_text), "message %s is gone (the session was reset)",
				 op->reply_to);
			err = SOMA_ERR_NOT_FOUND;
		}
	}
	if (err != SOMA_OK || op->has_outcome) {
		PQclear(r);
		return err;
	}
	op->rows = json_array();
	for (int i = 0; i < n && !PQgetisnull(r, i, 3); i++) { /* (a session without turns: one NULL row) */
		const char *text = pg_text(r, i, 4), *att = pg_text(r, i, 5);
		/* a user event's attachment ids too, when it names any (the task reads those files) */
		json_t *ids = att && strcmp(att, "[]") != 0 ? json_loads(att, 0, NULL) : NULL;
		json_array_append_new(op->rows,
				      json_pack("{s:s, s:s, s:o*}", "role",
						strcmp(pg_text(r, i, 3), "user") == 0 ? "user" : "assistant", "content",
						text ? text : "", "attachments", json_array_size(ids) ? ids : NULL));
		if (!json_array_size(ids))
			json_decref(ids);
	}
	PQclear(r);
	return SOMA_OK;
}

enum soma_err pg_sql_read(struct pgconn *c, struct store_op *op)
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
		return pg_sql_attachment_get(c, op);
	case STORE_OP_BLOBS_UNUSED:
		return pg_sql_blobs_unused(c, op);
	default:
		return pg_sql_task_admin_read(c, op);
	}
}
