/*
 * builtin.c - the built-in memory driver: memories in the store's own table, recalled with
 * full-text search (SQLite FTS5, ranked by bm25 and recency; src/store/sqlite_memory.c).
 *
 * DESIGN: both calls block their caller (relay and worker threads only): a write is a store op
 * run with store_op_wait, a recall runs on the caller's own read connection
 * (store_memory_search_here: no round trip to a reader thread).
 * A batch of outbox rows is one STORE_OP_MEMORY_PUT (one commit); the (tenant, namespace, key)
 * uniqueness makes a replayed row a no-op, as SomaBrain's key does. Recall reads only the
 * caller's tenant's rows. A store failure is UNAVAILABLE (same rule as SomaBrain's outages).
 */
#include <stdio.h>

#include "memory/memory_int.h"

static void builtin_remember(struct store *st, const struct memory_item *items, size_t n, enum memory_call *results,
			     char (*err)[160])
{
	struct store_op *op = store_op_new(STORE_OP_MEMORY_PUT, "");
	enum soma_err e = SOMA_ERR_NOMEM;
	if (op && (op->row = json_array())) {
		for (size_t i = 0; i < n; i++)
			json_array_append_new(op->row,
					      json_pack("{s:s, s:s, s:s, s:s, s:O}", "key", items[i].key, "tenant",
							items[i].tenant, "namespace", items[i].ns, "session_id",
							items[i].session_id, "payload", items[i].value));
		e = store_op_wait(st, op);
	}
	store_op_free(op);
	for (size_t i = 0; i < n; i++) {
		results[i] = e == SOMA_OK ? MEMORY_CALL_OK : MEMORY_CALL_UNAVAILABLE;
		if (e != SOMA_OK)
			snprintf(err[i], sizeof(err[i]), "the store refused the memory: %s", soma_err_str(e));
	}
}

static enum memory_call builtin_recall(struct store *st, const char *tenant, const char *ns, const char *query,
				       int top_k, const char *session_id, const char *request_id,
				       const char *traceparent, json_t **out, bool *degraded, char *err, size_t cap)
{
	(void)traceparent; /* no remote call to trace */
	(void)session_id, (void)request_id, (void)degraded;
	struct store_op *op = store_op_new(STORE_OP_MEMORY_SEARCH, tenant);
	if (!op || !(op->row = json_pack("{s:s, s:s, s:i}", "query", query, "namespace", ns, "top_k", top_k))) {
		store_op_free(op);
		snprintf(err, cap, "out of memory");
		return MEMORY_CALL_UNAVAILABLE;
	}
	enum soma_err e = store_memory_search_here(st, op); /* on this thread: no reader round trip */
	if (e == SOMA_OK) {
		*out = op->rows;
		op->rows = NULL;
	} else {
		snprintf(err, cap, "built-in memory search failed: %s", soma_err_str(e));
	}
	store_op_free(op);
	return e == SOMA_OK ? MEMORY_CALL_OK : MEMORY_CALL_UNAVAILABLE;
}

static enum memory_call builtin_health(char *detail, size_t cap)
{
	snprintf(detail, cap, "ok");
	return MEMORY_CALL_OK;
}

const struct memory_driver memory_builtin_driver = {"builtin", builtin_remember, builtin_recall, builtin_health};
