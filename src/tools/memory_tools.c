/*
 * memory_tools.c - memory_recall {query, top_k?} and memory_remember {key?, text}: the memory
 * HTTP API's two calls (gateway/memory_api.c) as tools, for the context's tenant only.
 *
 * DESIGN: the same functions and the same policy as the API: memory.recall (context {namespace,
 * query}) before memory_recall(), memory.write (context {namespace}) before a remember, which is a
 * STORE_OP_MEMORY_REMEMBER outbox row ({content: text} as the value, the default namespace, the
 * session when there is one), committed before the tool answers and delivered by the memory relay
 * (woken after). Policy is decided here (policy_decide may ask OPA: worker threads only), with
 * the identity the context carries; a deny is audited as the gateway's are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/ids.h"
#include "memory/memory.h"
#include "policy/policy.h"
#include "store/store.h"
#include "tools/tools_int.h"

static bool allowed(const struct tool_ctx *ctx, const char *action, json_t *pctx, char *err, size_t cap)
{
	struct policy_input in = {.tenant = ctx->tenant,
				  .subject = ctx->subject,
				  .persona_id = ctx->persona_id,
				  .scopes = ctx->scopes,
				  .action = action,
				  .resource = "memory",
				  .context = pctx,
				  .somabrain_degraded = memory_degraded()};
	struct policy_decision d;
	policy_decide(&in, &d);
	if (d.allow)
		return true;
	char words[200];
	policy_denied_audit(&in, NULL, &d, ctx->request_id);
	snprintf(err, cap, "%s denied by policy (%s): %s", action, d.reason,
		 policy_decision_words(&d, words, sizeof(words)));
	return false;
}

static enum soma_err dump(json_t *out, char **result, char *err, size_t cap)
{
	*result = out ? json_dumps(out, JSON_COMPACT) : NULL;
	json_decref(out);
	if (*result)
		return SOMA_OK;
	snprintf(err, cap, "the server ran out of memory; retry later");
	return SOMA_ERR_NOMEM;
}

enum soma_err tool_memory_recall(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap)
{
	const char *query = json_string_value(json_object_get(args, "query"));
	json_t *k = json_object_get(args, "top_k");
	int top_k = k ? (int)json_integer_value(k) : (int)cfg_int(CFG_MEMORY_RECALL_TOP_K);
	json_t *pctx = json_pack("{s:s, s:s}", "namespace", "", "query", query);
	bool ok = allowed(ctx, POLICY_MEMORY_RECALL, pctx, err, cap);
	json_decref(pctx);
	if (!ok)
		return SOMA_ERR_FORBIDDEN;
	json_t *results = NULL;
	bool degraded = false;
	if (memory_recall(ctx->store, ctx->tenant, "", query, top_k > 0 ? top_k : 3, ctx->session_id, ctx->request_id,
			  NULL, &results, &degraded) != SOMA_OK) {
		snprintf(err, cap, "the memory could not be searched now; try again later");
		return SOMA_ERR_UNAVAILABLE;
	}
	return dump(json_pack("{s:o, s:b}", "results", results, "degraded", degraded), result, err, cap);
}

/* The memory API's key rule: 1..200 of [A-Za-z0-9._:/-]. */
static bool key_ok(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-", s[i]))
			return false;
	return n > 0 && n <= 200;
}

enum soma_err tool_memory_remember(const struct tool_ctx *ctx, json_t *args, char **result, char *err, size_t cap)
{
	const char *key = json_string_value(json_object_get(args, "key"));
	char gen[IDS_UUID_LEN + 1];
	if (key && !key_ok(key)) {
		snprintf(err, cap, "args.key must be 1 to 200 of [A-Za-z0-9._:/-]");
		return SOMA_ERR_INVALID;
	}
	if (!key) {
		ids_uuid7(gen);
		key = gen;
	}
	json_t *pctx = json_pack("{s:s}", "namespace", "");
	bool ok = allowed(ctx, POLICY_MEMORY_WRITE, pctx, err, cap);
	json_decref(pctx);
	if (!ok)
		return SOMA_ERR_FORBIDDEN;
	struct store_op *op = store_op_new(STORE_OP_MEMORY_REMEMBER, ctx->tenant);
	if (!op || !(op->row = json_pack("{s:s, s:s, s:s?, s:{s:O}}", "key", key, "namespace", "", "session_id",
					 ctx->session_id, "value", "content", json_object_get(args, "text")))) {
		store_op_free(op);
		snprintf(err, cap, "the server ran out of memory; retry later");
		return SOMA_ERR_NOMEM;
	}
	enum soma_err e = store_op_wait(ctx->store, op);
	store_op_free(op);
	if (e != SOMA_OK) {
		snprintf(err, cap, "the memory could not be written now (%s); try again later", soma_err_str(e));
		return SOMA_ERR_UNAVAILABLE;
	}
	memory_relay_wake();
	return dump(json_pack("{s:s, s:s}", "key", key, "status", "queued"), result, err, cap);
}
