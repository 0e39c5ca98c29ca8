/*
 * audit.c - see audit.h. Rows go to the store writer as AUDIT_APPEND ops with a completion that
 * only checks the outcome: the caller never waits, and a failed append is logged with its
 * content (never a secret: callers pass ids and reasons, not tokens).
 */
#include "audit/audit.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "core/log.h"
#include "identity/identity.h"

static _Atomic(struct store *) audit_store;

void audit_init(struct store *st)
{
	atomic_store(&audit_store, st);
}

static json_t *entry_json(const struct audit_entry *e)
{
	return json_pack("{s:s, s:s, s:s?, s:s, s:s?, s:s, s:s?, s:s?}", "tenant", e->tenant ? e->tenant : "",
			 "subject", e->subject ? e->subject : "", "key_id", e->key_id, "action", e->action, "resource",
			 e->resource, "decision", e->decision ? e->decision : "done", "request_id", e->request_id,
			 "detail", e->detail);
}

static void on_appended(struct store_op *op)
{
	if (op->err != SOMA_OK) {
		char *row = json_dumps(op->row, JSON_COMPACT);
		log_error("audit", "an audit row could not be written (%s): %s", soma_err_str(op->err),
			  row ? row : "?");
		free(row);
	}
	store_op_free(op);
}

void audit_record(const struct audit_entry *e)
{
	struct store *st = atomic_load(&audit_store);
	struct store_op *op = st ? store_op_new(STORE_OP_AUDIT_APPEND, e->tenant) : NULL;
	if (op)
		op->row = entry_json(e);
	if (!op || !op->row) {
		log_error("audit", "an audit row was lost (%s): tenant %s subject %s action %s resource %s",
			  st ? "out of memory" : "no store", e->tenant ? e->tenant : "", e->subject ? e->subject : "",
			  e->action, e->resource ? e->resource : "");
		store_op_free(op);
		return;
	}
	op->done = on_appended;
	if (store_submit(st, op) != SOMA_OK) {
		op->err = SOMA_ERR_UNAVAILABLE;
		on_appended(op);
	}
}

enum soma_err audit_record_now(struct store *st, const struct audit_entry *e)
{
	json_t *row = entry_json(e);
	enum soma_err err = row ? store_audit_insert_now(st, row) : SOMA_ERR_NOMEM;
	json_decref(row);
	return err;
}

void audit_record_identity(const struct identity *who, const char *action, const char *resource, const char *decision,
			   const char *request_id, const char *detail)
{
	audit_record_change(who, NULL, action, resource, decision, request_id, detail);
}

void audit_record_change(const struct identity *who, const char *tenant, const char *action, const char *resource,
			 const char *decision, const char *request_id, const char *detail)
{
	struct audit_entry e = {.tenant = tenant && tenant[0] ? tenant : who->tenant,
				.subject = who->subject,
				.key_id = who->key_id[0] ? who->key_id : NULL,
				.action = action,
				.resource = resource,
				.decision = decision,
				.request_id = request_id,
				.detail = detail};
	audit_record(&e);
}
