/*
 * sqlite_audit.c - SQL of the audit trail (see src/audit/audit.h): append a row, list rows newest
 * first with an id cursor. The table refuses UPDATE and DELETE (migration 0004).
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "store/store_int.h"

static const char *field(json_t *row, const char *name)
{
	return json_string_value(json_object_get(row, name));
}

static enum soma_err audit_insert(struct dbconn *c, json_t *row)
{
	sqlite3_stmt *s = dbconn_stmt(c, "INSERT INTO audit(tenant, subject, key_id, action, resource, decision, "
					 "request_id, detail, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
	if (!s)
		return SOMA_ERR_STORE;
	static const char *const names[] = {"tenant",	"subject",  "key_id",	  "action",
					    "resource", "decision", "request_id", "detail"};
	for (int i = 0; i < 8; i++) {
		const char *v = field(row, names[i]);
		if (v && v[0])
			bind_text(s, i + 1, v);
	}
	sqlite3_bind_int64(s, 9, clock_wall_ms());
	enum soma_err err = sqlite3_step(s) == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
	sqlite3_reset(s);
	return err;
}

enum soma_err sqlite_audit_insert_now(struct store *st, json_t *row)
{
	return audit_insert(&st->main, row);
}

/* Newest first; the cursor is the id of the last row served (rows with smaller ids follow). */
static enum soma_err audit_list(struct dbconn *c, struct store_op *op)
{
	char *end = NULL;
	long long before = op->cursor[0] ? strtoll(op->cursor, &end, 10) : INT64_MAX;
	if (op->cursor[0] && (*end != '\0' || before <= 0))
		return SOMA_ERR_INVALID;
	sqlite3_stmt *s = dbconn_stmt(c, "SELECT id, tenant, subject, key_id, action, resource, decision, request_id, "
					 "detail, created_ms FROM audit WHERE id < ?1 AND (?2 OR tenant = ?3) "
					 "ORDER BY id DESC LIMIT ?4");
	if (!s)
		return SOMA_ERR_STORE;
	sqlite3_bind_int64(s, 1, before);
	sqlite3_bind_int(s, 2, op->all_tenants);
	bind_text(s, 3, op->tenant);
	sqlite3_bind_int64(s, 4, op->limit + 1);
	op->rows = json_array();
	op->next_cursor[0] = '\0';
	int rc;
	char at[CLOCK_RFC3339_LEN + 1];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)json_array_size(op->rows) == op->limit)
			break; /* one more exists: the page ends at the last row served */
		long long id = sqlite3_column_int64(s, 0);
		snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld", id);
		json_array_append_new(op->rows,
				      json_pack("{s:I, s:s, s:s, s:s?, s:s, s:s?, s:s, s:s?, s:s?, s:s}", "id",
						(json_int_t)id, "tenant", (const char *)sqlite3_column_text(s, 1),
						"subject", (const char *)sqlite3_column_text(s, 2), "key_id",
						(const char *)sqlite3_column_text(s, 3), "action",
						(const char *)sqlite3_column_text(s, 4), "resource",
						(const char *)sqlite3_column_text(s, 5), "decision",
						(const char *)sqlite3_column_text(s, 6), "request_id",
						(const char *)sqlite3_column_text(s, 7), "detail",
						(const char *)sqlite3_column_text(s, 8), "at",
						clock_rfc3339(sqlite3_column_int64(s, 9), at, sizeof(at))));
	}
	if (rc == SQLITE_DONE)
		op->next_cursor[0] = '\0';
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SOMA_OK : SOMA_ERR_STORE;
}

enum soma_err store_sql_audit_read(struct dbconn *c, struct store_op *op)
{
	return op->kind == STORE_OP_AUDIT_LIST ? audit_list(c, op) : store_sql_memory_read(c, op);
}

enum soma_err store_sql_audit_write(struct dbconn *c, struct store_op *op)
{
	return op->kind == STORE_OP_AUDIT_APPEND ? audit_insert(c, op->row) : store_sql_memory_write(c, op);
}
