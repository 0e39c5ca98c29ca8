/*
 * pg_audit.c - SQL of the audit trail on PostgreSQL (see src/audit/audit.h, and sqlite_audit.c):
 * append a row, list rows newest first with an id cursor.
 *
 * DESIGN: the table refuses UPDATE, DELETE and TRUNCATE with triggers (migration
 * postgres/0002), as SQLite's migration 0004 does, so no code path rewrites history. Ids come
 * from an identity column: with several nodes they are unique and increasing per node, but not
 * in commit order across nodes, which the list (newest first by id) does not need.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "store/pg_int.h"

static enum soma_err audit_insert(struct pgconn *c, json_t *row)
{
	static const char *const names[] = {"tenant",	"subject",  "key_id",	  "action",
					    "resource", "decision", "request_id", "detail"};
	struct pg_params p = {0};
	for (int i = 0; i < 8; i++) {
		const char *v = json_string_value(json_object_get(row, names[i]));
		pg_param_text(&p, v && v[0] ? v : NULL);
	}
	pg_param_int(&p, clock_wall_ms());
	return pg_run(c,
		      "INSERT INTO audit(tenant, subject, key_id, action, resource, decision, request_id, detail, "
		      "created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		      &p, NULL);
}

enum soma_err pg_audit_insert_now(struct pgconn *c, json_t *row)
{
	return audit_insert(c, row);
}

/* Newest first; the cursor is the id of the last row served (rows with smaller ids follow). */
static enum soma_err audit_list(struct pgconn *c, struct store_op *op)
{
	char *end = NULL;
	long long before = op->cursor[0] ? strtoll(op->cursor, &end, 10) : INT64_MAX;
	if (op->cursor[0] && (*end != '\0' || before <= 0))
		return SOMA_ERR_INVALID;
	struct pg_params p = {0};
	pg_param_int(&p, before);
	pg_param_bool(&p, op->all_tenants);
	pg_param_text(&p, op->tenant);
	pg_param_int(&p, op->limit + 1);
	enum soma_err err;
	PGresult *r = pg_exec(c,
			      "SELECT id, tenant, subject, key_id, action, resource, decision, request_id, detail, "
			      "created_ms FROM audit WHERE id < $1 AND ($2 OR tenant = $3) ORDER BY id DESC LIMIT $4",
			      &p, &err);
	if (!r)
		return err;
	op->rows = json_array();
	op->next_cursor[0] = '\0';
	int n = PQntuples(r);
	char at[CLOCK_RFC3339_LEN + 1];
	for (int i = 0; i < n && i < op->limit; i++) {
		long long id = pg_int(r, i, 0);
		if (n > op->limit) /* one more exists: the page ends at the last row served */
			snprintf(op->next_cursor, sizeof(op->next_cursor), "%lld", id);
		json_array_append_new(op->rows,
				      json_pack("{s:I, s:s, s:s, s:s?, s:s, s:s?, s:s, s:s?, s:s?, s:s}", "id",
						(json_int_t)id, "tenant", pg_text(r, i, 1), "subject", pg_text(r, i, 2),
						"key_id", pg_text(r, i, 3), "action", pg_text(r, i, 4), "resource",
						pg_text(r, i, 5), "decision", pg_text(r, i, 6), "request_id",
						pg_text(r, i, 7), "detail", pg_text(r, i, 8), "at",
						clock_rfc3339(pg_int(r, i, 9), at, sizeof(at))));
	}
	PQclear(r);
	return SOMA_OK;
}

enum soma_err pg_sql_audit_read(struct pgconn *c, struct store_op *op)
{
	return op->kind == STORE_OP_AUDIT_LIST ? audit_list(c, op) : pg_sql_memory_read(c, op);
}

enum soma_err pg_sql_audit_write(struct pgconn *c, struct store_op *op)
{
	return op->kind == STORE_OP_AUDIT_APPEND ? audit_insert(c, op->row) : pg_sql_memory_write(c, op);
}
