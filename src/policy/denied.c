/*
 * denied.c - what a deny leaves behind, wherever it happened (gateway, upload threads, workers):
 * words for the client, a policy.denied event on the session, an audit row.
 *
 * DESIGN: the event goes through the store like any other (EVENT_APPEND, submitted without
 * waiting; the commit hook publishes it, so stream subscribers see it live). A session that does
 * not exist gets nothing: the store answers not found and the op is dropped. The audit row is
 * audit_record_identity(who, "policy.denied:<action>", resource, "deny", request_id, reason).
 * Nothing here blocks; every function may be called from any thread.
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "core/event.h"
#include "identity/identity.h"
#include "policy/policy.h"

static const struct {
	const char *code, *words;
} reasons[] = {
	{"tenant_not_allowed", "this tenant has no entry in the policy and there is no \"*\" entry; ask an operator "
			       "to add one to policy.file"},
	{"admin_scope_required", "this action needs credentials with scope admin"},
	{"action_not_allowed", "the policy does not allow this action for this tenant; ask an operator to add it to "
			       "the tenant's actions"},
	{"model_not_allowed", "this model is not allowed for this tenant; use one of its models or ask an operator to "
			      "add it"},
	{"upload_type_not_allowed", "files of this type may not be uploaded by this tenant (policy upload_types)"},
	{"upload_too_large", "the upload is larger than this tenant may send (policy upload_max_bytes)"},
	{"tool_not_allowed", "this tool is not allowed for this tenant (policy tools)"},
	{"task_not_allowed", "this task is not allowed for this tenant (policy tasks)"},
	{"delegate_domain_not_allowed", "delegating to this domain is not allowed for this tenant (policy "
					"delegate_domains)"},
	{"policy_unavailable", "the policy engine is not loaded, so everything is denied; an operator can see why "
			       "in the policy service of /v1/health"},
	{"opa_unreachable", "the policy server (OPA) cannot be reached, so the request is denied (fail closed); "
			    "retry later"},
	{"opa_timeout", "the policy server (OPA) did not answer within policy.opa_timeout_ms, so the request is "
			"denied (fail closed); retry later"},
	{"opa_error", "the policy server (OPA) answered with an error, so the request is denied (fail closed)"},
	{"opa_undefined", "the policy server (OPA) has no decision for this request (rule soma.allow is undefined), "
			  "so it is denied"},
	{"opa_bad_result", "the policy server (OPA) answered something that is not a decision, so the request is "
			   "denied"},
	{"opa_overloaded", "too many policy decisions are waiting for the policy server; retry shortly"},
	{"denied", "the policy denied this request"},
};

const char *policy_reason_words(const char *reason, char *buf, size_t cap)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		if (strcmp(reasons[i].code, reason) == 0)
			return reasons[i].words;
	}
	snprintf(buf, cap, "the policy denied this request (%s)", reason);
	return buf;
}

const char *policy_decision_words(const struct policy_decision *d, char *buf, size_t cap)
{
	if (!d->unavailable)
		return policy_reason_words(d->reason, buf, cap);
	snprintf(buf, cap,
		 "the policy engine is unavailable (OPA failed moments ago: %s), so the request is denied at once "
		 "(fail closed); retry in a few seconds",
		 d->reason);
	return buf;
}

json_t *policy_denied_event(const char *session_id, const struct policy_input *in, const struct policy_decision *d)
{
	char buf[200], message[512];
	const char *action = in->action ? in->action : "";
	snprintf(message, sizeof(message), "%s was denied: %s", action, policy_decision_words(d, buf, sizeof(buf)));
	return chat_event_new(session_id, "system", "policy.denied", message, in->persona_id,
			      json_pack("{s:s, s:s}", "action", action, "reason", d->reason));
}

static struct store *events_store; /* set once at start (policy_denied_init), before other threads */

void policy_denied_init(struct store *st)
{
	events_store = st;
}

static void on_appended(struct store_op *op)
{
	store_op_free(op); /* not found (no such session) or done: nothing else to do */
}

void policy_denied_append(const char *tenant, const char *session_id, json_t *ev)
{
	struct store_op *op =
		events_store && ev && session_id && session_id[0] ? store_op_new(STORE_OP_EVENT_APPEND, tenant) : NULL;
	if (!op) {
		json_decref(ev);
		return;
	}
	snprintf(op->session_id, sizeof(op->session_id), "%s", session_id);
	op->event = ev;
	op->done = on_appended;
	if (store_submit(events_store, op) != SOMA_OK)
		store_op_free(op); /* a saturated store: the 403 and the audit row still say it */
}

void policy_denied_audit(const struct policy_input *in, const char *key_id, const struct policy_decision *d,
			 const char *request_id)
{
	struct identity who = {0};
	snprintf(who.tenant, sizeof(who.tenant), "%s", in->tenant ? in->tenant : "");
	snprintf(who.subject, sizeof(who.subject), "%s", in->subject ? in->subject : "");
	snprintf(who.key_id, sizeof(who.key_id), "%s", key_id ? key_id : "");
	snprintf(who.scopes, sizeof(who.scopes), "%s", in->scopes ? in->scopes : "");
	char action[96];
	snprintf(action, sizeof(action), "policy.denied:%s", in->action ? in->action : "");
	audit_record_identity(&who, action, in->resource && in->resource[0] ? in->resource : NULL, "deny", request_id,
			      d->reason);
}
