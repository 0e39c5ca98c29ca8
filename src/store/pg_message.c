/*
 * pg_message.c - a MESSAGE on PostgreSQL as one statement (see pg_int.h, struct pg_fast): the
 * session upsert, the event, its memory row and its task, with everything the statement needs
 * prepared in advance.
 *
 * DESIGN: pg_fast_new runs on the thread that submits the op (an io thread: store_submit ->
 * pg_lanes_take), so the JSON work of a message - completing the event, dumping it around its
 * seq, the memory body, the task payload - is spread over the io threads instead of one store
 * thread. The statement returns the seq the session upsert gave the event; nothing of the op is
 * changed between pg_fast_new and pg_fast_apply, so a transaction that failed can be sent again
 * as it was (pg_lanes.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/json_out.h"
#include "store/memory_rows.h"
#include "store/pg_int.h"

/* The same rows as op_message, in one round trip: an upsert of the session (a new one starts at
 * seq 1; an existing one of the tenant gets seq + 1; one of another tenant is left alone and
 * nothing is returned: not found), then the event (its body is the JSON around the seq, $8 seq
 * $9), the memory outbox row ($10 NULL: none) and the task ($12 NULL: none) using that seq. The
 * upsert's row lock orders every node's appends to a session, as the UPDATE of op_message does.
 * pg_fast_direct_sql (memory.driver=builtin, pg_memory.c) inserts the memories row instead of the
 * outbox row: $10 key, $11 the value as JSON, $18 namespace, $19 the text it is found by. The
 * session's updated_ms moves as PG_TOUCHED says (pg_int.h). */
#define FAST_TOUCHED PG_TOUCHED("x.updated_ms", "$5")
#define FAST_SESSION                                                                                                \
	"WITH s AS (INSERT INTO sessions AS x (id, tenant, subject, persona_id, last_seq, created_ms, updated_ms) " \
	"VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (id) DO UPDATE SET last_seq = x.last_seq + 1, "             \
	"updated_ms = " FAST_TOUCHED " WHERE x.tenant = $2 RETURNING x.last_seq, x.xmax = 0 AS created), "          \
	"e AS (INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) "                      \
	"SELECT $1, s.last_seq, $6, $2, $7, $8::text || s.last_seq || $9::text, $5 FROM s), "
/* The task: queued; or (a worker's id in W) already reserved by that worker until R - a chat task
 * handed to an idle worker before its message committed (queue/handoff.h); or (W NULL, R set)
 * already claimed by this node's redis relay until R, which the lane hands it to after the
 * COMMIT (store_set_task_relay): no claim statement, no second row version. */
#define FAST_TASK(W, R)                                                                                            \
	"t AS (INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, max_retries, available_ms, " \
	"created_ms, updated_ms, worker, reserved_until_ms, attempts) SELECT $12, $13, $14, $2, $1, $15, "         \
	"CASE WHEN " W "::text IS NOT NULL THEN 'reserved' WHEN " R "::bigint IS NOT NULL THEN 'relaying' "        \
	"ELSE 'queued' END, $16, $17, $5, $5, "                                                                    \
	"coalesce(" W "::text, ''), coalesce(" R "::bigint, 0), CASE WHEN " W "::text IS NULL THEN 0 ELSE 1 END "  \
	"FROM s WHERE $12::text IS NOT NULL) "                                                                     \
	"SELECT last_seq, created FROM s"
const char *const pg_fast_sql = FAST_SESSION
	"m AS (INSERT INTO memory_outbox(key, tenant, session_id, namespace, body, available_ms, "
	"created_ms, updated_ms) SELECT $10, $2, $1, '', $11, $5, $5, $5 FROM s WHERE $10::text IS NOT NULL "
	"ON CONFLICT (tenant, namespace, key) DO NOTHING), " FAST_TASK("$18", "$19");
const char *const pg_fast_direct_sql =
	FAST_SESSION "m AS (INSERT INTO memories(tenant, namespace, key, session_id, content, payload, created_ms) "
		     "SELECT $2, $18, $10, $1, $19, $11, $5 FROM s WHERE $10::text IS NOT NULL "
		     "ON CONFLICT (tenant, namespace, key) DO NOTHING), " FAST_TASK("$20", "$21");

/* The seq the event is dumped with before its real one is known: the JSON is split around
 * `"seq":<this>`, which must occur exactly once (a key of the event; a string cannot hold it, its
 * quotes would be escaped). */
#define FAST_SEQ_MARK	  7239051986023841579LL
#define FAST_SEQ_MARK_TXT "\"seq\":7239051986023841579"

void pg_fast_free(struct pg_fast *f)
{
	if (!f)
		return;
	free(f->head);
	free(f->tail);
	free(f->memory);
	free(f->payload);
	free(f->content);
	free(f);
}

/* The event's memory, if it is one (*key its id, borrowed from the event): with the built-in
 * memory (direct) the memories row's value and text (f->memory, f->content), taken from the body's
 * tree as it is built; else the outbox body (f->memory). False on a failure (OOM, bad event). */
static bool memory_of(const struct store_op *op, bool direct, struct pg_fast *f, const char **key)
{
	if (!direct)
		return memory_event_body(op->tenant, op->session_id, op->event, &f->memory, key) == SOMA_OK;
	json_t *body;
	if (memory_event_row(op->tenant, op->session_id, op->event, &body, key) != SOMA_OK)
		return false;
	bool ok = !body || pg_memory_value_row(json_object_get(body, "value"), &f->memory, &f->content);
	json_decref(body);
	return ok;
}

struct pg_fast *pg_fast_new(struct store_op *op, int64_t relay_lease_ms)
{
	if (op->kind != STORE_OP_MESSAGE || op->attachments || !op->event)
		return NULL;
	const char *event_id = json_string_value(json_object_get(op->event, "event_id"));
	const char *type = json_string_value(json_object_get(op->event, "type"));
	json_t *task = op->task;
	if (!event_id || (task && (!json_string_value(json_object_get(task, "id")) ||
				   !json_string_value(json_object_get(task, "queue")) ||
				   !json_string_value(json_object_get(task, "name")))))
		return NULL; /* the ordinary path reports it */
	struct pg_fast *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->op = op;
	int64_t now = clock_wall_ms();
	/* the event as event_insert completes it, with the mark for its seq */
	char created[CLOCK_RFC3339_LEN + 1];
	json_object_set_new(op->event, "seq", json_integer(FAST_SEQ_MARK));
	json_object_set_new(op->event, "session_id", json_string(op->session_id));
	if (!json_object_get(op->event, "created_at"))
		json_object_set_new(op->event, "created_at", json_string(clock_rfc3339(now, created, sizeof(created))));
	char *text = json_out(op->event, 0, NULL);
	char *mark = text ? strstr(text, FAST_SEQ_MARK_TXT) : NULL;
	const char *key = NULL;
	bool direct = pg_memory_direct();
	if (!mark || strstr(mark + 1, FAST_SEQ_MARK_TXT) || !memory_of(op, direct, f, &key))
		goto fallback;
	size_t head_len = (size_t)(mark - text) + strlen("\"seq\":");
	f->head = strndup(text, head_len);
	f->tail = strdup(mark + strlen(FAST_SEQ_MARK_TXT));
	if (task) {
		f->payload = json_out(json_object_get(task, "payload"), 1, NULL);
		if (!f->payload)
			goto fallback;
	}
	if (!f->head || !f->tail)
		goto fallback;
	free(text);
	f->sql = direct ? pg_fast_direct_sql : pg_fast_sql;
	const char *persona = json_string_value(json_object_get(op->event, "persona_id"));
	struct pg_params *p = &f->p;
	pg_param_text(p, op->session_id);
	pg_param_text(p, op->tenant);
	pg_param_text(p, op->subject);
	pg_param_text(p, persona);
	pg_param_int(p, now);
	pg_param_text(p, event_id);
	pg_param_text(p, type ? type : "");
	pg_param_text(p, f->head);
	pg_param_text(p, f->tail);
	pg_param_text(p, f->memory ? key : NULL);
	pg_param_text(p, f->memory);
	if (task) {
		json_t *retries = json_object_get(task, "max_retries");
		json_t *available = json_object_get(task, "available_ms"); /* countdown / eta; absent: now */
		pg_param_text(p, json_string_value(json_object_get(task, "id")));
		pg_param_text(p, json_string_value(json_object_get(task, "queue")));
		pg_param_text(p, json_string_value(json_object_get(task, "name")));
		pg_param_text(p, f->payload);
		pg_param_int(p, retries ? json_integer_value(retries) : 3);
		pg_param_int(p, available ? json_integer_value(available) : now);
	} else {
		for (int i = 0; i < 6; i++)
			pg_param_text(p, NULL);
	}
	if (direct) {
		pg_param_text(p, pg_memory_ns(NULL));
		pg_param_text(p, f->content);
	}
	pg_param_text(p, task && op->worker[0] ? op->worker : NULL); /* handed to that worker already */
	f->relayed = task && !op->worker[0] && relay_lease_ms > 0;
	if (task && op->worker[0])
		pg_param_int(p, now + op->delay_ms);
	else if (f->relayed)
		pg_param_int(p, now + relay_lease_ms); /* claimed for the relay, as TASK_RELAY_CLAIM would */
	else
		pg_param_text(p, NULL);
	f->available_ms = task && json_object_get(task, "available_ms")
				  ? json_integer_value(json_object_get(task, "available_ms"))
				  : now;
	return f;
fallback:
	free(text);
	pg_fast_free(f);
	return NULL;
}

void pg_fast_apply(struct pg_fast *f)
{
	struct store_op *op = f->op;
	op->err = f->err;
	if (f->err != SOMA_OK)
		return;
	if (!f->found) {
		snprintf(op->error_text, sizeof(op->error_text), "session %s not found", op->session_id);
		op->err = SOMA_ERR_NOT_FOUND;
		return;
	}
	op->seq = f->seq;
	op->created = f->created;
	if (f->content) /* a memories row went into the index's pending list */
		pg_upkeep_rows_added(1);
	json_object_set_new(op->event, "seq", json_integer(f->seq));
	free(op->event_text);
	size_t cap = strlen(f->head) + PG_NUM_LEN + strlen(f->tail);
	op->event_text = malloc(cap);
	if (op->event_text) /* the bytes the statement stored: head || seq || tail */
		snprintf(op->event_text, cap, "%s%lld%s", f->head, (long long)f->seq, f->tail);
}

json_t *pg_fast_task_row(const struct pg_fast *f)
{
	const struct store_op *op = f->op;
	json_t *t = op->task, *retries = json_object_get(t, "max_retries");
	json_t *payload = json_deep_copy(json_object_get(t, "payload")); /* the op's stays its own */
	if (!payload)
		payload = json_object();
	/* {id, queue, name, tenant, session_id, payload, attempts, max_retries, available_ms, requeued},
	 * member by member (what json_pack built, without reading a format per message) */
	json_t *row = json_object();
	bool ok = row && payload && json_object_set_nocheck(row, "id", json_object_get(t, "id")) == 0 &&
		  json_object_set_nocheck(row, "queue", json_object_get(t, "queue")) == 0 &&
		  json_object_set_nocheck(row, "name", json_object_get(t, "name")) == 0 &&
		  json_object_set_new_nocheck(row, "tenant", json_string(op->tenant)) == 0 &&
		  json_object_set_new_nocheck(row, "session_id", json_string(op->session_id)) == 0 &&
		  json_object_set_nocheck(row, "payload", payload) == 0 &&
		  json_object_set_new_nocheck(row, "attempts", json_integer(0)) == 0 &&
		  json_object_set_new_nocheck(row, "max_retries",
					      json_integer(retries ? json_integer_value(retries) : 3)) == 0 &&
		  json_object_set_new_nocheck(row, "available_ms", json_integer(f->available_ms)) == 0 &&
		  json_object_set_new_nocheck(row, "requeued", json_false()) == 0;
	json_decref(payload);
	if (!ok) {
		json_decref(row);
		return NULL;
	}
	return row;
}

size_t pg_fast_sort_by_session(struct pg_fast **g, size_t n)
{
	for (size_t i = 1; i < n; i++) { /* insertion sort: stable, and groups are small */
		struct pg_fast *f = g[i];
		size_t j = i;
		while (j > 0 && strcmp(g[j - 1]->op->session_id, f->op->session_id) > 0) {
			g[j] = g[j - 1];
			j--;
		}
		g[j] = f;
	}
	return n;
}

void pg_fast_find_committed(struct pgconn *c, struct pg_fast **g, size_t n)
{
	json_t *ids = json_array();
	for (size_t i = 0; ids && i < n; i++) {
		if (!g[i]->done)
			json_array_append(ids, json_object_get(g[i]->op->event, "event_id"));
	}
	char *list = ids && json_array_size(ids) ? json_dumps(ids, JSON_COMPACT) : NULL;
	json_decref(ids);
	for (int tries = 0; list && tries < 20 && pg_conn_ready(c) != SOMA_OK; tries++) {
		struct timespec ts = {0, 50 * 1000000L}; /* the first backoff is 100 ms */
		nanosleep(&ts, NULL);
	}
	enum soma_err err = SOMA_ERR_UNAVAILABLE;
	PGresult *r = NULL;
	if (list && pg_conn_up(c)) {
		struct pg_params p = {0};
		pg_param_text(&p, list);
		r = pg_exec(c,
			    "SELECT event_id, seq FROM events WHERE event_id IN (SELECT "
			    "jsonb_array_elements_text($1::jsonb))",
			    &p, &err);
	}
	for (int row = 0; r && row < PQntuples(r); row++) {
		for (size_t i = 0; i < n; i++) {
			struct pg_fast *f = g[i];
			const char *id = json_string_value(json_object_get(f->op->event, "event_id"));
			if (!f->done && id && strcmp(id, pg_text(r, row, 0)) == 0) {
				f->done = f->found = true;
				f->err = SOMA_OK;
				f->seq = pg_int(r, row, 1);
				f->created = f->seq == 1;
			}
		}
	}
	PQclear(r);
	free(list);
}
