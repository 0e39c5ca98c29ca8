/*
 * pg_todo.c - PLACEHOLDERS, NOT AN IMPLEMENTATION: the entry points of the PostgreSQL files that
 * are still being written (pg_task_admin.c, pg_identity.c, pg_audit.c, pg_memory.c,
 * pg_memory_search.c; see pg_int.h). Each answers "not implemented" (logged, SOMA_ERR_INTERNAL)
 * so that the driver links and the chat and queue ops work meanwhile. When one of those files
 * lands, its functions are deleted from here (and this file with the last of them).
 */
#include "core/log.h"
#include "store/pg_int.h"

static enum soma_err todo(const char *what, const struct store_op *op)
{
	log_error("store", "PostgreSQL driver: %s (op %d) is not implemented yet", what, op ? (int)op->kind : -1);
	return SOMA_ERR_INTERNAL;
}

enum soma_err pg_sql_task_admin_read(struct pgconn *c, struct store_op *op)
{
	(void)c;
	return todo("the task API", op);
}

enum soma_err pg_sql_task_admin_write(struct pgconn *c, struct store_op *op, bool *enqueued)
{
	(void)c, (void)enqueued;
	return todo("the task API", op);
}

enum soma_err pg_audit_insert_now(struct pgconn *c, json_t *row)
{
	(void)c, (void)row;
	return todo("the audit trail", NULL);
}

/* no outbox row yet: memory writes of chat turns are not recorded until pg_memory.c lands */
enum soma_err pg_sql_memory_event(struct pgconn *c, const char *tenant, const char *session_id, json_t *event)
{
	(void)c, (void)tenant, (void)session_id, (void)event;
	return SOMA_OK;
}
