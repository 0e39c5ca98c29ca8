/*
 * pg_batch.c - the messages of a group commit on PostgreSQL (see pg_int.h, struct pg_batch): each
 * MESSAGE as one statement, and the pipelines that send a batch's messages over the writer's
 * message connections.
 *
 * DESIGN: a batch's messages (pg_fast_new: a MESSAGE without attachments, one statement each)
 * wait in the batch until the commit (pg.c runs every other op on the writer connection, each in
 * its own savepoint: at once, or - the relays' ops - while the pipelines run, and sends that
 * transaction's COMMIT before reading any pipeline's answer). Then the messages go out
 * hashed by session over the message connections: on each, one pipeline BEGIN, the statements,
 * COMMIT, Sync - one round trip and one WAL flush for its share of the batch, the connections'
 * shares (and the writer's COMMIT) running side by side. Nothing of one waits for the client, so
 * a lock one of them waits for is always released. A session's messages all go to one connection,
 * in batch order, so their seqs follow it; batches run one after the other, so nothing
 * acknowledged is ever overtaken. A statement that fails aborts its pipeline: that message gets
 * its error, the transaction is rolled back, and the others (nothing of which was applied to an
 * op yet) go out again - a failing message never takes the rest of its batch with it, and leaves
 * no gap in its session's seqs. A lost connection fails its messages with SOMA_ERR_UNAVAILABLE
 * (503, not acknowledged; a COMMIT whose answer was lost may have committed, as on the writer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "store/memory_rows.h"
#include "store/pg_int.h"

/* The same rows as op_message, in one round trip: an upsert of the session (a new one starts at
 * seq 1; an existing one of the tenant gets seq + 1; one of another tenant is left alone and
 * nothing is returned: not found), then the event (its body is the JSON around the seq, $8 seq
 * $9), the memory outbox row ($10 NULL: none) and the task ($12 NULL: none) using that seq. The
 * upsert's row lock orders every node's appends to a session, as the UPDATE of op_message does.
 * pg_fast_direct_sql (memory.driver=builtin, pg_memory.c) inserts the memories row instead of the
 * outbox row: $10 key, $11 the value as JSON, $18 namespace, $19 the text it is found by. */
#define FAST_SESSION                                                                                                \
	"WITH s AS (INSERT INTO sessions AS x (id, tenant, subject, persona_id, last_seq, created_ms, updated_ms) " \
	"VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (id) DO UPDATE SET last_seq = x.last_seq + 1, "             \
	"updated_ms = $5 WHERE x.tenant = $2 RETURNING x.last_seq, x.xmax = 0 AS created), "                        \
	"e AS (INSERT INTO events(session_id, seq, event_id, tenant, type, body, created_ms) "                      \
	"SELECT $1, s.last_seq, $6, $2, $7, $8::text || s.last_seq || $9::text, $5 FROM s), "
#define FAST_TASK                                                                                                  \
	"t AS (INSERT INTO tasks(id, queue, name, tenant, session_id, payload, state, max_retries, available_ms, " \
	"created_ms, updated_ms) SELECT $12, $13, $14, $2, $1, $15, 'queued', $16, $17, $5, $5 FROM s "            \
	"WHERE $12::text IS NOT NULL) "                                                                            \
	"SELECT last_seq, created FROM s"
const char *const pg_fast_sql = FAST_SESSION
	"m AS (INSERT INTO memory_outbox(key, tenant, session_id, namespace, body, available_ms, "
	"created_ms, updated_ms) SELECT $10, $2, $1, '', $11, $5, $5, $5 FROM s WHERE $10::text IS NOT NULL "
	"ON CONFLICT (tenant, key) DO NOTHING), " FAST_TASK;
const char *const pg_fast_direct_sql =
	FAST_SESSION "m AS (INSERT INTO memories(tenant, namespace, key, session_id, content, payload, created_ms) "
		     "SELECT $2, $18, $10, $1, $19, $11, $5 FROM s WHERE $10::text IS NOT NULL "
		     "ON CONFLICT (tenant, namespace, key) DO NOTHING), " FAST_TASK;

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

struct pg_fast *pg_fast_new(struct store_op *op)
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
	char *text = json_dumps(op->event, JSON_COMPACT);
	char *mark = text ? strstr(text, FAST_SEQ_MARK_TXT) : NULL;
	const char *key = NULL;
	if (!mark || strstr(mark + 1, FAST_SEQ_MARK_TXT) ||
	    memory_event_body(op->tenant, op->session_id, op->event, &f->memory, &key) != SOMA_OK)
		goto fallback;
	size_t head_len = (size_t)(mark - text) + strlen("\"seq\":");
	f->head = strndup(text, head_len);
	f->tail = strdup(mark + strlen(FAST_SEQ_MARK_TXT));
	if (task) {
		f->payload = json_dumps(json_object_get(task, "payload"), JSON_COMPACT | JSON_ENCODE_ANY);
		if (!f->payload)
			goto fallback;
	}
	if (!f->head || !f->tail)
		goto fallback;
	free(text);
	bool direct = pg_memory_direct();
	f->sql = direct ? pg_fast_direct_sql : pg_fast_sql;
	if (direct && f->memory) { /* the memories row: its value and text instead of the outbox body */
		char *body = f->memory;
		bool ok = pg_memory_direct_row(body, &f->memory, &f->content);
		free(body);
		if (!ok)
			goto out;
	}
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
	return f;
fallback:
	free(text);
out:
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
	json_object_set_new(op->event, "seq", json_integer(f->seq));
	free(op->event_text);
	size_t cap = strlen(f->head) + PG_NUM_LEN + strlen(f->tail);
	op->event_text = malloc(cap);
	if (op->event_text) /* the bytes the statement stored: head || seq || tail */
		snprintf(op->event_text, cap, "%s%lld%s", f->head, (long long)f->seq, f->tail);
}

/* ---- the pipelines ----------------------------------------------------------------------------- */

void pg_batch_free(struct pg_batch *b)
{
	pg_batch_clear(b);
	free(b->pend);
	free(b->other);
	free(b->later);
	b->pend = NULL;
	b->other = b->later = NULL;
	b->pend_cap = b->other_cap = b->later_cap = 0;
}

/* Appends op to *ops (n used of *cap, doubling from 64); false on OOM. */
static bool ops_push(struct store_op ***ops, size_t *n, size_t *cap, struct store_op *op)
{
	if (*n == *cap) {
		size_t grown_cap = *cap ? 2 * *cap : 64;
		struct store_op **grown = realloc(*ops, grown_cap * sizeof(*grown));
		if (!grown)
			return false;
		*ops = grown;
		*cap = grown_cap;
	}
	(*ops)[(*n)++] = op;
	return true;
}

bool pg_batch_other(struct pg_batch *b, struct store_op *op)
{
	return ops_push(&b->other, &b->nother, &b->other_cap, op);
}

bool pg_batch_later(struct pg_batch *b, struct store_op *op)
{
	return ops_push(&b->later, &b->nlater, &b->later_cap, op);
}

void pg_batch_fail_others(struct pg_batch *b, enum soma_err err)
{
	for (size_t i = 0; i < b->nother; i++) {
		b->other[i]->err = err;
		free(b->other[i]->event_text);
		b->other[i]->event_text = NULL;
	}
}

void pg_batch_clear(struct pg_batch *b)
{
	b->nother = b->nlater = 0;
	for (size_t i = 0; i < b->npend; i++)
		pg_fast_free(b->pend[i]);
	b->npend = 0;
}

bool pg_batch_add(struct pg_batch *b, struct pg_fast *f)
{
	if (b->npend == b->pend_cap) {
		size_t cap = b->pend_cap ? 2 * b->pend_cap : 64;
		struct pg_fast **grown = realloc(b->pend, cap * sizeof(*grown));
		if (!grown)
			return false;
		b->pend = grown;
		b->pend_cap = cap;
	}
	b->pend[b->npend++] = f;
	return true;
}

static unsigned session_hash(const char *id)
{
	unsigned h = 2166136261u; /* FNV-1a */
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return h;
}

/* Settles every unsettled message of connection k with err. */
static void fast_fail(struct pg_batch *b, int k, enum soma_err err)
{
	for (size_t i = 0; i < b->npend; i++) {
		struct pg_fast *f = b->pend[i];
		if (f->conn == k && !f->done) {
			f->done = true;
			f->err = err;
		}
	}
}

/* Sends connection k's unsettled messages as one pipeline; false when nothing was sent (the
 * messages are then settled). */
static bool fast_send(struct pg_batch *b, int k)
{
	struct pgconn *c = &b->fast[k];
	size_t n = 0;
	const char *sql = NULL; /* prepared: the first message's (all have the same but in a test) */
	for (size_t i = 0; i < b->npend; i++) {
		if (b->pend[i]->conn == k && !b->pend[i]->done && !n++)
			sql = b->pend[i]->sql;
	}
	if (!n)
		return false;
	enum soma_err err;
	char name[PG_STMT_NAME];
	if (!pg_prepared(c, sql, name, &err)) {
		fast_fail(b, k, err);
		return false;
	}
	bool ok = PQenterPipelineMode(c->conn) && PQsendQueryParams(c->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
	for (size_t i = 0; ok && i < b->npend; i++) {
		struct pg_fast *f = b->pend[i];
		if (f->conn != k || f->done)
			continue;
		ok = name[0] && f->sql == sql ? PQsendQueryPrepared(c->conn, name, f->p.n, f->p.v, NULL, NULL, 0)
					      : PQsendQueryParams(c->conn, f->sql, f->p.n, NULL, f->p.v, NULL, NULL, 0);
	}
	ok = ok && PQsendQueryParams(c->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(c->conn);
	if (!ok) {
		fast_fail(b, k, pg_err_map(c, NULL));
		if (pg_conn_up(c)) /* not lost (out of memory?): start again from a clean session */
			pg_conn_close(c);
		return false;
	}
	return true;
}

/* One result of the pipeline (then the NULL that ends it); NULL when the connection failed. */
static PGresult *fast_result(struct pgconn *c)
{
	PGresult *r = PQgetResult(c->conn);
	if (!r)
		return NULL;
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_PIPELINE_SYNC && PQgetResult(c->conn) != NULL) { /* never more than one result */
		PQclear(r);
		return NULL;
	}
	return r;
}

/* Reads the results of fast_send(k): settles every message when the transaction committed, or
 * the one that failed (the others are sent again). */
static void fast_read(struct pg_batch *b, int k)
{
	struct pgconn *c = &b->fast[k];
	struct pg_fast *failed = NULL;
	enum soma_err failed_err = SOMA_OK, commit_err = SOMA_ERR_STORE;
	bool lost = false;
	PGresult *r = fast_result(c); /* BEGIN */
	if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
		failed_err = pg_err_map(c, r);
		lost = !r || !pg_conn_up(c);
	}
	PQclear(r);
	for (size_t i = 0; !lost && i < b->npend; i++) {
		struct pg_fast *f = b->pend[i];
		if (f->conn != k || f->done)
			continue;
		r = fast_result(c);
		ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (st == PGRES_TUPLES_OK) {
			f->found = PQntuples(r) == 1;
			f->seq = f->found ? pg_int(r, 0, 0) : 0;
			f->created = f->found && pg_bool(r, 0, 1);
		} else if (st != PGRES_PIPELINE_ABORTED) {
			enum soma_err e = pg_err_map(c, r);
			if (!r || !pg_conn_up(c))
				lost = true;
			else if (!failed) {
				failed = f;
				failed_err = e;
			}
		}
		PQclear(r);
	}
	if (!lost) {
		r = fast_result(c); /* COMMIT */
		if (r && PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0)
			commit_err = SOMA_OK;
		else if (r && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
			commit_err = pg_err_map(c, r);
		lost = !r || !pg_conn_up(c);
		PQclear(r);
	}
	if (!lost) {
		r = PQgetResult(c->conn); /* the Sync */
		lost = !r || PQresultStatus(r) != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(c->conn);
		PQclear(r);
	}
	if (lost) { /* whether the COMMIT got through is unknown: nothing is acknowledged */
		if (pg_conn_up(c))
			pg_conn_close(c);
		fast_fail(b, k, SOMA_ERR_UNAVAILABLE);
		return;
	}
	if (commit_err == SOMA_OK) {
		fast_fail(b, k, SOMA_OK);
		return;
	}
	if (!failed) { /* BEGIN or COMMIT failed: every message shares it */
		fast_fail(b, k, failed_err != SOMA_OK ? failed_err : commit_err);
		(void)pg_cmd(c, "ROLLBACK");
		return;
	}
	failed->done = true;
	failed->err = failed_err;
	if (pg_cmd(c, "ROLLBACK") != SOMA_OK) /* the others go out again */
		fast_fail(b, k, SOMA_ERR_UNAVAILABLE);
}

void pg_batch_start(struct pg_batch *b)
{
	if (b->started || !b->npend)
		return;
	b->started = true;
	for (size_t i = 0; i < b->npend; i++)
		b->pend[i]->conn = (int)(session_hash(b->pend[i]->op->session_id) % (unsigned)b->nfast);
	for (int k = 0; k < b->nfast; k++)
		b->sent[k] = fast_send(b, k);
}

void pg_batch_run(struct pg_batch *b)
{
	if (!b->npend)
		return;
	pg_batch_start(b);
	for (;;) { /* read what is out; send again what a failed message held back */
		for (int k = 0; k < b->nfast; k++) {
			if (b->sent[k])
				fast_read(b, k);
		}
		bool any = false;
		for (int k = 0; k < b->nfast; k++) {
			b->sent[k] = fast_send(b, k);
			any |= b->sent[k];
		}
		if (!any)
			break;
	}
	b->started = false;
	for (size_t i = 0; i < b->npend; i++) {
		pg_fast_apply(b->pend[i]);
		pg_fast_free(b->pend[i]);
	}
	b->npend = 0; /* the other ops stay, for pg_batch_fail_others */
}
