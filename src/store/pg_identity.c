/*
 * pg_identity.c - SQL of the admin API's identity ops on PostgreSQL (see store.h, and
 * sqlite_identity.c for the same ops on SQLite): API keys (insert, revoke, list) and tenants
 * (create, list), run on the store's threads.
 *
 * DESIGN: only the SHA-256 of a token reaches the database (bytea; the op carries it as hex and
 * decode()/encode() convert on the server). Keys list newest first with a "<created_ms>:<id>"
 * cursor; tenants by id with the last id as cursor; ids compare with COLLATE "C" (byte order, as
 * on SQLite, whatever the database's collation). Kinds that are not ours go on to the audit's.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "store/pg_int.h"

static const char *field(const json_t *row, const char *name)
{
	const char *v = json_string_value(json_object_get(row, name));
	return v ? v : "";
}

static bool is_hash_hex(const char *hex)
{
	if (strlen(hex) != 64)
		return false;
	for (const char *p = hex; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
			return false;
	}
	return true;
}

static enum soma_err key_insert(struct pgconn *c, struct store_op *op)
{
	const json_t *row = op->row;
	json_int_t created = json_integer_value(json_object_get(row, "created_ms"));
	if (!is_hash_hex(field(row, "token_hash")) || !field(row, "id")[0] || !field(row, "tenant")[0])
		return SOMA_ERR_INVALID;
	struct pg_params t = {0};
	pg_param_text(&t, field(row, "tenant"));
	pg_param_int(&t, created);
	enum soma_err err =
		pg_run(c, "INSERT INTO tenants(id, created_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", &t, NULL);
	if (err != SOMA_OK)
		return err;
	struct pg_params p = {0};
	pg_param_text(&p, field(row, "id"));
	pg_param_text(&p, field(row, "tenant"));
	pg_param_text(&p, field(row, "name"));
	pg_param_text(&p, field(row, "scopes"));
	pg_param_text(&p, field(row, "token_hash"));
	pg_param_int(&p, created);
	return pg_run(c,
		      "INSERT INTO api_keys(id, tenant_id, name, scopes, token_hash, created_ms) "
		      "VALUES ($1, $2, $3, $4, decode($5, 'hex'), $6)",
		      &p, NULL); /* a taken id: unique violation -> SOMA_ERR_CONFLICT */
}

static enum soma_err key_revoke(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	struct pg_params p = {0};
	pg_param_int(&p, now);
	pg_param_text(&p, op->task_id);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL "
			      "RETURNING tenant_id, name, scopes, encode(token_hash, 'hex'), created_ms",
			      &p, &err);
	if (!r)
		return err;
	if (PQntuples(r) == 0) {
		PQclear(r);
		snprintf(op->error_text, sizeof(op->error_text), "no active API key has id %.64s; see GET /v1/keys",
			 op->task_id);
		return SOMA_ERR_NOT_FOUND;
	}
	json_decref(op->row); /* (a batch run again: the first run's) */
	op->row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id", op->task_id, "tenant", pg_text(r, 0, 0),
			    "name", pg_text(r, 0, 1), "scopes", pg_text(r, 0, 2), "token_hash", pg_text(r, 0, 3),
			    "created_ms", (json_int_t)pg_int(r, 0, 4), "revoked_ms", (json_int_t)now);
	PQclear(r);
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err keys_list(struct pgconn *c, struct store_op *op)
{
	char cur_id[STORE_TASK_ID_MAX + 1];
	struct pg_params p = {0};
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	if (!pg_page_params(op, &p, cur_id))
		return SOMA_ERR_INVALID;
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT id, tenant_id, name, scopes, created_ms, coalesce(revoked_ms, 0) FROM api_keys "
			      "WHERE ($1 OR tenant_id = $2) AND (created_ms < $3 OR (created_ms = $3 AND "
			      "id COLLATE \"C\" < $4)) ORDER BY created_ms DESC, id COLLATE \"C\" DESC LIMIT $5",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	int n = PQntuples(r);
	for (int i = 0; i < n && i < op->limit; i++)
		json_array_append_new(op->rows, store_key_row_json(pg_text(r, i, 0), pg_text(r, i, 1), pg_text(r, i, 2),
								   pg_text(r, i, 3), pg_int(r, i, 4), pg_int(r, i, 5)));
	pg_page_next(op, r, 4, 0);
	PQclear(r);
	return SOMA_OK;
}

static enum soma_err tenant_create(struct pgconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	struct pg_params p = {0};
	pg_param_text(&p, op->task_id);
	pg_param_text(&p, field(op->row, "name"));
	pg_param_int(&p, now);
	int64_t changed = 0;
	enum soma_err err =
		pg_run(c, "INSERT INTO tenants(id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
		       &p, &changed);
	if (err != SOMA_OK)
		return err;
	if (changed == 0)
		return SOMA_ERR_CONFLICT;
	char at[CLOCK_RFC3339_LEN + 1];
	json_t *out = json_pack("{s:s, s:s, s:s, s:i}", "id", op->task_id, "name", field(op->row, "name"), "created_at",
				clock_rfc3339(now, at, sizeof(at)), "active_keys", 0);
	json_decref(op->row);
	op->row = out;
	return out ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err tenants_list(struct pgconn *c, struct store_op *op)
{
	struct pg_params p = {0};
	pg_param_text(&p, op->cursor);
	pg_param_int(&p, op->limit + 1);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT t.id, t.name, t.created_ms, (SELECT count(*) FROM api_keys k WHERE "
			      "k.tenant_id = t.id AND k.revoked_ms IS NULL) FROM tenants t "
			      "WHERE t.id COLLATE \"C\" > $1 ORDER BY t.id COLLATE \"C\" LIMIT $2",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	op->next_cursor[0] = '\0';
	int n = PQntuples(r);
	char at[CLOCK_RFC3339_LEN + 1];
	for (int i = 0; i < n && i < op->limit; i++) {
		const char *id = pg_text(r, i, 0);
		if (n > op->limit)
			snprintf(op->next_cursor, sizeof(op->next_cursor), "%s", id);
		json_array_append_new(op->rows, json_pack("{s:s, s:s, s:s, s:I}", "id", id, "name", pg_text(r, i, 1),
							  "created_at", clock_rfc3339(pg_int(r, i, 2), at, sizeof(at)),
							  "active_keys", (json_int_t)pg_int(r, i, 3)));
	}
	PQclear(r);
	return SOMA_OK;
}

enum soma_err pg_sql_identity_read(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_KEYS_LIST:
		return keys_list(c, op);
	case STORE_OP_TENANTS_LIST:
		return tenants_list(c, op);
	default:
		return pg_sql_audit_read(c, op);
	}
}

enum soma_err pg_sql_identity_write(struct pgconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_KEY_INSERT:
		return key_insert(c, op);
	case STORE_OP_KEY_REVOKE:
		return key_revoke(c, op);
	case STORE_OP_TENANT_CREATE:
		return tenant_create(c, op);
	default:
		return pg_sql_audit_write(c, op);
	}
}
