/*
 * sqlite_identity.c - SQL of the admin API's identity ops (see store.h): API keys (insert,
 * revoke, list) and tenants (create, list), run on the store's threads.
 *
 * DESIGN: the same tables as the CLI's synchronous key functions in sqlite.c (migration 0001,
 * tenant names from 0005); those run on the main connection for `somaagent keys`, these on the
 * writer and readers for the HTTP API, so the io threads never wait for the disk. Only the
 * SHA-256 of a token reaches the database. Keys list newest first with a "<created_ms>:<id>"
 * cursor; tenants by id with the last id as cursor. Kinds that are not ours go on to the
 * audit trail's ops.
 */
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "store/store_int.h"

static const char *field(const json_t *row, const char *name)
{
	const char *v = json_string_value(json_object_get(row, name));
	return v ? v : "";
}

/* The hex of a 32-byte hash into out[65]; false when hex is not 64 hex digits. */
static bool hash_from_hex(const char *hex, unsigned char out[32])
{
	if (strlen(hex) != 64)
		return false;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return false;
		out[i] = (unsigned char)v;
	}
	return true;
}

static void hash_to_hex(const unsigned char *h, int len, char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", i < len ? h[i] : 0);
}

static enum soma_err key_insert(struct dbconn *c, struct store_op *op)
{
	unsigned char hash[32];
	const json_t *row = op->row;
	json_int_t created = json_integer_value(json_object_get(row, "created_ms"));
	if (!hash_from_hex(field(row, "token_hash"), hash) || !field(row, "id")[0] || !field(row, "tenant")[0])
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(c, "INSERT OR IGNORE INTO tenants(id, created_ms) VALUES (?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, field(row, "tenant"));
	sqlite3_bind_int64(s, 2, created);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	s = dbconn_stmt(c, "INSERT INTO api_keys(id, tenant_id, name, scopes, token_hash, created_ms) "
			   "VALUES (?, ?, ?, ?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, field(row, "id"));
	bind_text(s, 2, field(row, "tenant"));
	bind_text(s, 3, field(row, "name"));
	bind_text(s, 4, field(row, "scopes"));
	sqlite3_bind_blob(s, 5, hash, sizeof(hash), SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 6, created);
	int rc = sqlite3_step(s);
	return rc == SQLITE_DONE ? SOMA_OK : rc == SQLITE_CONSTRAINT ? SOMA_ERR_CONFLICT : SOMA_ERR_STORE;
}

static enum soma_err key_revoke(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	sqlite3_stmt *s = dbconn_stmt(c, "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, now);
	bind_text(s, 2, op->task_id);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	if (sqlite3_changes(c->db) == 0) {
		snprintf(op->error_text, sizeof(op->error_text), "no active API key has id %.64s; see GET /v1/keys",
			 op->task_id);
		return SOMA_ERR_NOT_FOUND;
	}
	s = dbconn_stmt(c, "SELECT tenant_id, name, scopes, token_hash, created_ms FROM api_keys WHERE id = ?");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	if (sqlite3_step(s) != SQLITE_ROW)
		return SOMA_ERR_STORE;
	char hex[65];
	hash_to_hex(sqlite3_column_blob(s, 3), sqlite3_column_bytes(s, 3), hex);
	op->row = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id", op->task_id, "tenant",
			    (const char *)sqlite3_column_text(s, 0), "name", (const char *)sqlite3_column_text(s, 1),
			    "scopes", (const char *)sqlite3_column_text(s, 2), "token_hash", hex, "created_ms",
			    (json_int_t)sqlite3_column_int64(s, 4), "revoked_ms", (json_int_t)now);
	sqlite3_reset(s);
	return op->row ? SOMA_OK : SOMA_ERR_NOMEM;
}

/* "read write" -> ["read", "write"] */
static json_t *scope_array(const char *scopes)
{
	json_t *arr = json_array();
	for (const char *p = scopes ? scopes : ""; *p;) {
		p += strspn(p, " ");
		size_t n = strcspn(p, " ");
		if (n)
			json_array_append_new(arr, json_stringn(p, n));
		p += n;
	}
	return arr;
}

json_t *store_key_row_json(const char *id, const char *tenant, const char *name, const char *scopes, int64_t created_ms,
			   int64_t revoked_ms)
{
	char created[CLOCK_RFC3339_LEN + 1], revoked[CLOCK_RFC3339_LEN + 1];
	clock_rfc3339(created_ms, created, sizeof(created));
	if (revoked_ms)
		clock_rfc3339(revoked_ms, revoked, sizeof(revoked));
	return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s?, s:s}", "id", id, "tenant", tenant, "name", name ? name : "",
			 "scopes", scope_array(scopes), "created_at", created, "revoked_at",
			 revoked_ms ? revoked : NULL, "status", revoked_ms ? "revoked" : "active");
}

static enum soma_err keys_list(struct dbconn *c, struct store_op *op)
{
	long long cur_ms;
	char cur_id[STORE_TASK_ID_MAX + 1];
	if (!store_page_cursor(op, &cur_ms, cur_id))
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s =
		dbconn_stmt(c, "SELECT id, tenant_id, name, scopes, created_ms, coalesce(revoked_ms, 0) FROM api_keys "
			       "WHERE (?1 OR tenant_id = ?2) AND (created_ms < ?3 OR (created_ms = ?3 AND id < ?4)) "
			       "ORDER BY created_ms DESC, id DESC LIMIT ?5");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int(s, 1, op->all_tenants);
	bind_text(s, 2, op->tenant);
	sqlite3_bind_int64(s, 3, cur_ms);
	bind_text(s, 4, cur_id);
	sqlite3_bind_int64(s, 5, op->limit + 1);
	op->rows = json_array();
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)json_array_size(op->rows) == op->limit)
			break; /* one more exists: the page ends at the last row served */
		const char *id = (const char *)sqlite3_column_text(s, 0);
		int64_t created = sqlite3_column_int64(s, 4);
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld:%s", (long long)created, id);
		json_array_append_new(op->rows, store_key_row_json(id, (const char *)sqlite3_column_text(s, 1),
								   (const char *)sqlite3_column_text(s, 2),
								   (const char *)sqlite3_column_text(s, 3), created,
								   sqlite3_column_int64(s, 5)));
	}
	if (rc == SQLITE_DONE)
		op->next_cursor[0] = '\0';
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

static enum soma_err tenant_create(struct dbconn *c, struct store_op *op)
{
	int64_t now = clock_wall_ms();
	sqlite3_stmt *s = dbconn_stmt(c, "INSERT OR IGNORE INTO tenants(id, name, created_ms) VALUES (?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->task_id);
	bind_text(s, 2, field(op->row, "name"));
	sqlite3_bind_int64(s, 3, now);
	if (sqlite3_step(s) != SQLITE_DONE)
		return SOMA_ERR_STORE;
	if (sqlite3_changes(c->db) == 0)
		return SOMA_ERR_CONFLICT;
	char at[CLOCK_RFC3339_LEN + 1];
	json_t *out = json_pack("{s:s, s:s, s:s, s:i}", "id", op->task_id, "name", field(op->row, "name"), "created_at",
				clock_rfc3339(now, at, sizeof(at)), "active_keys", 0);
	json_decref(op->row);
	op->row = out;
	return out ? SOMA_OK : SOMA_ERR_NOMEM;
}

static enum soma_err tenants_list(struct dbconn *c, struct store_op *op)
{
	sqlite3_stmt *s = dbconn_stmt(
		c, "SELECT t.id, t.name, t.created_ms, (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id "
		   "AND k.revoked_ms IS NULL) FROM tenants t WHERE t.id > ?1 ORDER BY t.id LIMIT ?2");
	if (!s)
		return SOMA_ERR_STORE;
	bind_text(s, 1, op->cursor);
	sqlite3_bind_int64(s, 2, op->limit + 1);
	op->rows = json_array();
	int rc;
	char at[CLOCK_RFC3339_LEN + 1];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)json_array_size(op->rows) == op->limit)
			break;
		const char *id = (const char *)sqlite3_column_text(s, 0);
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%s", id);
		json_array_append_new(op->rows, json_pack("{s:s, s:s, s:s, s:I}", "id", id, "name",
							  (const char *)sqlite3_column_text(s, 1), "created_at",
							  clock_rfc3339(sqlite3_column_int64(s, 2), at, sizeof(at)),
							  "active_keys", (json_int_t)sqlite3_column_int64(s, 3)));
	}
	if (rc == SQLITE_DONE)
		op->next_cursor[0] = '\0';
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sql_identity_read(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_KEYS_LIST:
		return keys_list(c, op);
	case STORE_OP_TENANTS_LIST:
		return tenants_list(c, op);
	default:
		return store_sql_audit_read(c, op);
	}
}

enum soma_err store_sql_identity_write(struct dbconn *c, struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_KEY_INSERT:
		return key_insert(c, op);
	case STORE_OP_KEY_REVOKE:
		return key_revoke(c, op);
	case STORE_OP_TENANT_CREATE:
		return tenant_create(c, op);
	default:
		return store_sql_audit_write(c, op);
	}
}
