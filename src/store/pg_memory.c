/*
 * pg_memory.c - SQL of the memory ops on PostgreSQL (see store.h, and sqlite_memory.c for the
 * same ops on SQLite): the memory outbox and the built-in memory's writes.
 *
 * DESIGN: as on SQLite, every memory write is an outbox row inserted in the transaction of the
 * event it comes from (pg_sql_memory_event, called by pg_chat.c) or of POST /v1/memory/remember;
 * the relay claims ready rows (pending -> sending) in id order per session, then settles them
 * (delivered: deleted; retry: pending with a backoff; failed: kept for an admin; release: pending
 * again without costing an attempt). What PostgreSQL adds is several nodes claiming from one
 * table at once:
 *   - the claim takes its candidates FOR UPDATE SKIP LOCKED, so two claims never take one row;
 *   - a candidate is kept only when no earlier row of its session is pending or sending outside
 *     this claim: an earlier row another node has just locked (skipped here, still pending in
 *     our snapshot) holds the later ones back, so a session's rows are never in flight on two
 *     nodes at once and arrive in order;
 *   - `sending` rows record the claiming backend (pid and start time). A row whose backend is
 *     gone belongs to a dead process (or a lost connection) and is put back to pending by the
 *     next claim of any node; rows of live nodes are never taken from them, so a node starting
 *     does not re-send what another node is delivering. (Behind a pooler in transaction mode the
 *     backend is not the process: run the relays on direct connections.)
 * With memory.driver=builtin the sink is this database's own `memories` table: a write is that
 * row itself, inserted in the transaction of its event (or of the remember), with the key's
 * no-op on a replay - durable before the 200 as an outbox row would be, without the outbox row,
 * its claim, its delivery and its delete (four writes of index churn per message). The relay
 * still delivers rows already in the outbox (written under memory.driver=somabrain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/json_out.h"
#include "store/memory_rows.h"
#include "store/pg_int.h"

bool pg_memory_direct(void)
{
	return strcmp(cfg_str(CFG_MEMORY_DRIVER), "builtin") == 0;
}

const char *pg_memory_ns(const char *ns)
{
	return ns && ns[0] ? ns : cfg_str(CFG_MEMORY_NAMESPACE);
}

bool pg_memory_value_row(const json_t *value, char **payload, char **content)
{
	*payload = value ? json_out(value, 1, NULL) : NULL;
	*content = value ? memory_value_text(value) : NULL;
	if (*payload && *content)
		return true;
	free(*payload);
	free(*content);
	*payload = *content = NULL;
	return false;
}

bool pg_memory_direct_row(const char *body, char **payload, char **content)
{
	json_t *b = json_loads(body, 0, NULL);
	bool ok = pg_memory_value_row(json_object_get(b, "value"), payload, content);
	json_decref(b);
	return ok;
}

/* memory.driver=builtin: the write is the memories row itself, in the caller's transaction (the
 * same row, and the same no-op on a replayed key, as the relay's MEMORY_PUT would give). */
static enum soma_err memory_insert(struct pgconn *c, const char *tenant, const char *key, const char *session_id,
				   const char *ns, const char *body)
{
	char *payload, *content;
	if (!pg_memory_direct_row(body, &payload, &content))
		return SOMA_ERR_NOMEM;
	struct pg_params p = {0};
	pg_param_text(&p, tenant);
	pg_param_text(&p, pg_memory_ns(ns));
	pg_param_text(&p, key);
	pg_param_text(&p, session_id ? session_id : "");
	pg_param_text(&p, content);
	pg_param_text(&p, payload);
	pg_param_int(&p, clock_wall_ms());
	enum soma_err err =
		pg_run(c,
		       "INSERT INTO memories(tenant, namespace, key, session_id, content, payload, created_ms) "
		       "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, namespace, key) DO NOTHING",
		       &p, NULL);
	if (err == SOMA_OK)
		pg_upkeep_rows_added(1);
	free(payload);
	free(content);
	return err;
}

static enum soma_err outbox_insert(struct pgconn *c, const char *tenant, const char *key, const char *session_id,
				   const char *ns, const char *body)
{
	if (pg_memory_direct())
		return memory_insert(c, tenant, key, session_id, ns, body);
	struct pg_params p = {0};
	pg_param_text(&p, key);
	pg_param_text(&p, tenant);
	pg_param_text(&p, session_id ? session_id : "");
	pg_param_text(&p, ns ? ns : ""); /* "": memory.namespace when delivered */
	pg_param_text(&p, body);
	pg_param_int(&p, clock_wall_ms());
	return pg_run(
		c,
		"INSERT INTO memory_outbox(key, tenant, session_id, namespace, body, available_ms, created_ms, "
		"updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6, $6) ON CONFLICT (tenant, namespace, key) DO NOTHING",
		&p, NULL);
}

enum soma_err pg_sql_memory_event(struct pgconn *c, const char *tenant, const char *session_id, json_t *event)
{
	char *text;
	const char *id;
	enum soma_err err = memory_event_body(tenant, session_id, event, &text, &id);
	if (err != SOMA_OK || !text)
		return err;
	err = outbox_insert(c, tenant, id, session_id, "", text);
	free(text);
	return err;
}

static enum soma_err op_remember(struct pgconn *c, struct store_op *op)
{
	char *text = memory_remember_body(op->row);
	if (!text)
		return SOMA_ERR_NOMEM;
	enum soma_err err = outbox_insert(c, op->tenant, json_string_value(json_object_get(op->row, "key")),
					  json_string_value(json_object_get(op->row, "session_id")),
					  json_string_value(json_object_get(op->row, "namespace")), text);
	free(text);
	return err;
}

#define OUTBOX_COLUMNS \
	"id, key, tenant, session_id, namespace, body, state, attempts, last_error, created_ms, available_ms"

static json_t *outbox_row_json(const PGresult *r, int i)
{
	json_t *body = json_loads(pg_text(r, i, 5), 0, NULL);
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:s, s:I, s:I}", "id", (json_int_t)pg_int(r, i, 0),
			 "key", pg_text(r, i, 1), "tenant", pg_text(r, i, 2), "session_id", pg_text(r, i, 3),
			 "namespace", pg_text(r, i, 4), "body", body ? body : json_object(), "state", pg_text(r, i, 6),
			 "attempts", (json_int_t)pg_int(r, i, 7), "last_error", pg_text(r, i, 8), "created_ms",
			 (json_int_t)pg_int(r, i, 9), "available_ms", (json_int_t)pg_int(r, i, 10));
}

/* Rows left `sending` by a backend that no longer exists go back to pending; *n = how many.
 * A backend whose start time we may not see (another role, without pg_read_all_stats) counts
 * as alive when its pid is there: when in doubt a row waits, it is never sent twice. */
static enum soma_err reclaim(struct pgconn *c, int64_t now, int64_t *n)
{
	struct pg_params p = {0};
	pg_param_int(&p, now);
	return pg_run(c,
		      "UPDATE memory_outbox o SET state = 'pending', updated_ms = $1 WHERE state = 'sending' AND "
		      "NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = o.claimed_pid AND "
		      "(a.backend_start IS NULL OR o.claimed_start IS NULL OR a.backend_start = o.claimed_start))",
		      &p, n);
}

/* The candidates (ready, no earlier row of the session waiting for its backoff or in flight),
 * locked; then kept only if no earlier row of the session is pending or sending outside them
 * (a row another claim holds locked); returned in id order, the order of delivery. */
static const char *const claim_sql =
	"WITH cand AS (SELECT id FROM memory_outbox o WHERE state = 'pending' AND available_ms <= $1 "
	"AND (session_id = '' OR NOT EXISTS (SELECT 1 FROM memory_outbox p WHERE p.tenant = o.tenant AND "
	"p.session_id = o.session_id AND p.id < o.id AND (p.state = 'sending' OR "
	"(p.state = 'pending' AND p.available_ms > $1)))) ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED), "
	"claimed AS (UPDATE memory_outbox m SET state = 'sending', claimed_ms = $1, updated_ms = $1, "
	"claimed_pid = pg_backend_pid(), claimed_start = (SELECT backend_start FROM pg_stat_activity "
	"WHERE pid = pg_backend_pid()) FROM cand WHERE m.id = cand.id AND (m.session_id = '' OR NOT EXISTS "
	"(SELECT 1 FROM memory_outbox p WHERE p.tenant = m.tenant AND p.session_id = m.session_id AND "
	"p.id < m.id AND p.state IN ('pending', 'sending') AND p.id NOT IN (SELECT id FROM cand))) "
	"RETURNING m." OUTBOX_COLUMNS ") "
	"SELECT " OUTBOX_COLUMNS " FROM claimed ORDER BY id";

static enum soma_err op_claim(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms(), n = 0;
	/* every claim takes back the rows of dead backends (a node that died hands its rows to the
	 * others within a poll); the first after a start reports how many */
	enum soma_err err = reclaim(c, now, &n);
	if (err != SOMA_OK)
		return err;
	op->seq = op->flag ? n : 0;
	op->rows = json_array();
	if (!op->rows)
		return SOMA_ERR_NOMEM;
	if (op->limit <= 0) /* only the reclaim */
		return SOMA_OK;
	struct pg_params p = {0};
	pg_param_int(&p, now);
	pg_param_int(&p, op->limit);
	PGresult *r = pg_exec(c, claim_sql, &p, &err);
	if (!r)
		return err;
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(op->rows, outbox_row_json(r, i));
	PQclear(r);
	return SOMA_OK;
}

/* A row that was not delivered: back to pending (retry, with an attempt; release, without) or
 * failed. Rare next to deliveries, so one statement each. */
static enum soma_err settle_other(struct pgconn *c, json_t *r, const char *result, int64_t now)
{
	static const char *const retry = "UPDATE memory_outbox SET state = 'pending', attempts = attempts + 1, "
					 "available_ms = $2::bigint + $3::bigint, last_error = $4, updated_ms = $2 "
					 "WHERE id = $1 AND state = 'sending'";
	static const char *const fail = "UPDATE memory_outbox SET state = 'failed', attempts = attempts + 1, "
					"last_error = $3, updated_ms = $2 WHERE id = $1 AND state = 'sending'";
	static const char *const release = "UPDATE memory_outbox SET state = 'pending', available_ms = $2::bigint + "
					   "$3::bigint, updated_ms = $2 WHERE id = $1 AND state = 'sending'";
	const char *sql = strcmp(result, "retry") == 0	   ? retry
			  : strcmp(result, "failed") == 0  ? fail
			  : strcmp(result, "release") == 0 ? release
							   : NULL;
	if (!sql)
		return SOMA_ERR_INVALID;
	const char *error = json_string_value(json_object_get(r, "error"));
	struct pg_params p = {0};
	pg_param_int(&p, json_integer_value(json_object_get(r, "id")));
	pg_param_int(&p, now);
	if (sql != fail)
		pg_param_int(&p, json_integer_value(json_object_get(r, "delay_ms")));
	if (sql != release)
		pg_param_text(&p, error ? error : "");
	return pg_run(c, sql, &p, NULL);
}

/* Delivered rows are deleted by one statement (an array of their ids: one round trip for the
 * batch, where SQLite pays nothing per statement); the others one by one. */
static enum soma_err op_settle(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	size_t i, n = json_array_size(op->row), len = 1;
	json_t *r;
	char *ids = malloc(n * (PG_NUM_LEN + 1) + 3); /* "{" id "," ... "}" */
	if (!ids)
		return SOMA_ERR_NOMEM;
	ids[0] = '{';
	enum soma_err err = SOMA_OK;
	json_array_foreach(op->row, i, r)
	{
		const char *result = json_string_value(json_object_get(r, "result"));
		if (!result)
			err = SOMA_ERR_INVALID;
		else if (strcmp(result, "delivered") == 0)
			len += (size_t)snprintf(ids + len, PG_NUM_LEN + 2, "%s%lld", len > 1 ? "," : "",
						(long long)json_integer_value(json_object_get(r, "id")));
		else
			err = settle_other(c, r, result, now);
		if (err != SOMA_OK)
			break;
	}
	snprintf(ids + len, 2, "}");
	if (err == SOMA_OK && len > 1) {
		struct pg_params p = {0};
		pg_param_text(&p, ids);
		err = pg_run(c, "DELETE FROM memory_outbox WHERE id = ANY($1::bigint[]) AND state = 'sending'", &p,
			     NULL);
	}
	free(ids);
	return err;
}

/* Admin actions on one row: retry (failed -> pending) or drop (failed or pending). */
static enum soma_err op_admin(struct pgconn *c, struct store_op *op, bool drop)
{
	char *end;
	long long id = strtoll(op->task_id, &end, 10);
	if (!op->task_id[0] || *end)
		return SOMA_ERR_NOT_FOUND;
	struct pg_params p = {0};
	pg_param_int(&p, id);
	pg_param_text(&p, op->tenant);
	pg_param_bool(&p, op->all_tenants);
	if (!drop)
		pg_param_int(&p, clock_wall_ms());
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      drop ? "DELETE FROM memory_outbox WHERE id = $1 AND state IN ('failed', 'pending') AND "
				     "($3 OR tenant = $2) RETURNING tenant"
				   : "UPDATE memory_outbox SET state = 'pending', attempts = 0, available_ms = $4, "
				     "updated_ms = $4 WHERE id = $1 AND state = 'failed' AND ($3 OR tenant = $2) "
				     "RETURNING tenant",
			      &p, &err);
	if (!r)
		return err;
	bool changed = PQntuples(r) == 1;
	if (changed) /* whose row changed: the audit row is that tenant's */
		snprintf(op->row_tenant, sizeof(op->row_tenant), "%s", pg_text(r, 0, 0) ?: "");
	PQclear(r);
	return changed ? SOMA_OK : SOMA_ERR_NOT_FOUND;
}

/* Built-in memory: each row once per (tenant, namespace, key); its tsvector is a generated
 * column (migration postgres/0002). The batch is one INSERT of a JSON array of rows (one round
 * trip); the content is a C string (no NUL, which PostgreSQL's text refuses). */
static enum soma_err op_put(struct pgconn *c, struct store_op *op)
{
	size_t i;
	json_t *m, *rows = json_array();
	enum soma_err err = rows ? SOMA_OK : SOMA_ERR_NOMEM;
	json_array_foreach(op->row, i, m)
	{
		json_t *value = json_object_get(m, "payload");
		char *content = memory_value_text(value), *payload = json_out(value, 1, NULL);
		const char *sid = json_string_value(json_object_get(m, "session_id"));
		json_t *row = content && payload
				      ? json_pack("{s:s?, s:s?, s:s?, s:s, s:s, s:s}", "tenant",
						  json_string_value(json_object_get(m, "tenant")), "namespace",
						  json_string_value(json_object_get(m, "namespace")), "key",
						  json_string_value(json_object_get(m, "key")), "session_id",
						  sid ? sid : "", "content", content, "payload", payload)
				      : NULL;
		free(content);
		free(payload);
		if (!row || json_array_append_new(rows, row) != 0) {
			err = SOMA_ERR_NOMEM; /* (or content that is not UTF-8: no row is better than a cut one) */
			break;
		}
	}
	char *text = err == SOMA_OK ? json_out(rows, 0, NULL) : NULL;
	json_decref(rows);
	if (err == SOMA_OK && !text)
		err = SOMA_ERR_NOMEM;
	if (err == SOMA_OK && i > 0) {
		struct pg_params p = {0};
		pg_param_text(&p, text);
		pg_param_int(&p, clock_wall_ms());
		err = pg_run(c,
			     "INSERT INTO memories(tenant, namespace, key, session_id, content, payload, created_ms) "
			     "SELECT tenant, namespace, key, session_id, content, payload, $2 FROM "
			     "json_to_recordset($1::json) "
			     "AS r(tenant text, namespace text, key text, session_id text, content text, payload text) "
			     "ON CONFLICT (tenant, namespace, key) DO NOTHING",
			     &p, NULL);
		if (err == SOMA_OK)
			pg_upkeep_rows_added((long)i);
	}
	free(text);
	return err;
}

static enum soma_err op_stats(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = "
			      "'sending'), count(*) FILTER (WHERE state = 'failed'), min(created_ms) FILTER (WHERE "
			      "state <> 'failed') FROM memory_outbox WHERE ($1 OR tenant = $2)",
			      &p, &err);
	if (!r)
		return err;
	json_decref(op->session);
	op->session = PQntuples(r) == 1
			      ? json_pack("{s:I, s:I, s:I, s:I}", "pending", (json_int_t)pg_int(r, 0, 0), "sending",
					  (json_int_t)pg_int(r, 0, 1), "failed", (json_int_t)pg_int(r, 0, 2),
					  "oldest_ms", (json_int_t)pg_int(r, 0, 3))
			      : NULL;
	int n = PQntuples(r);
	PQclear(r);
	return n != 1 ? SOMA_ERR_STORE : op->session ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err op_list(struct pgconn *c, struct store_op *op)
{
	long long after = 0;
	if (op->cursor[0] && sscanf(op->cursor, "%lld", &after) != 1)
		return SOMA_ERR_INVALID;
	struct pg_params p = {0};
	pg_param_int(&p, after);
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	pg_param_text(&p, op->queue);
	pg_param_int(&p, op->limit + 1);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT " OUTBOX_COLUMNS " FROM memory_outbox WHERE id > $1 AND ($2 OR tenant = $3) "
			      "AND ($4 = '' OR state = $4) ORDER BY id LIMIT $5",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	op->next_cursor[0] = '\0';
	int n = PQntuples(r);
	for (int i = 0; i < n && i < op->limit; i++)
		json_array_append_new(op->rows, outbox_row_json(r, i));
	if (n > op->limit && op->limit > 0)
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld", (long long)pg_int(r, (int)op->limit - 1, 0));
	PQclear(r);
	return op_stats(c, op); /* the counts of the same rows, into op->session */
}

enum soma_err pg_sql_memory_read(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_OUTBOX_STATS:
		return op_stats(c, op);
	case STORE_OP_OUTBOX_LIST:
		return op_list(c, op);
	case STORE_OP_MEMORY_SEARCH:
		return pg_sql_memory_search(c, op);
	default:
		return SOMA_ERR_INVALID;
	}
}

enum soma_err pg_sql_memory_write(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_MEMORY_REMEMBER:
		return op_remember(c, op);
	case STORE_OP_OUTBOX_CLAIM:
		return op_claim(c, op);
	case STORE_OP_OUTBOX_SETTLE:
		return op_settle(c, op);
	case STORE_OP_OUTBOX_RETRY:
		return op_admin(c, op, false);
	case STORE_OP_OUTBOX_DROP:
		return op_admin(c, op, true);
	case STORE_OP_MEMORY_PUT:
		return op_put(c, op);
	default:
		return pg_sql_retention_write(c, op);
	}
}
