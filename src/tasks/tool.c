/*
 * tool.c - the task soma.tool: runs one tool of src/tools for the task's tenant.
 *   kwargs {tool: name, args: {...}}; payload {subject, scopes, request_id?} as the gateway sent it
 *   SUCCESS result: the tool's JSON result; FAILURE error: the tool's message
 *
 * DESIGN: POST /v1/tools/{name}/run publishes it after policy tool.execute; a task published any
 * other way (POST /v1/tasks, a Celery producer, beat) reaches the same handler, so tool.execute is
 * asked again here, as the task's sender (policy_decide: this is a worker thread), with the same
 * input (tools_policy_input: resource tool:<name>, context {tool, args, host?}), and a deny fails
 * the task with the policy's reason. A disabled or unknown tool, arguments that do not fit its
 * schema, a deny and a tool's own error (a bad or refused URL, a 404 page) are the caller's
 * answer: FAILURE with the message and no dead letter (TASK_REJECT). Only a dependency that did
 * not answer (SOMA_ERR_UNAVAILABLE: SomaBrain, the page's server) or no memory is retried, and
 * dead-lettered after max_retries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/memory.h"
#include "policy/policy.h"
#include "tasks/tasks.h"
#include "tools/tools.h"

/* tool.execute for tool with args (checked) as the task's sender; false with t->error written on a deny. */
static bool allowed(struct task_ctx *t, const struct tool_def *tool, json_t *args)
{
	char resource[TOOLS_POLICY_RESOURCE_MAX];
	struct policy_input in = {.tenant = t->tenant,
				  .subject = json_string_value(json_object_get(t->payload, "subject")),
				  .persona_id = json_string_value(json_object_get(t->payload, "persona_id")),
				  .scopes = json_string_value(json_object_get(t->payload, "scopes")),
				  .somabrain_degraded = memory_degraded()};
	json_t *ctx = tools_policy_input(tool, args, resource, &in);
	struct policy_decision d;
	policy_decide(&in, &d);
	if (!d.allow) {
		char words[200];
		policy_denied_audit(&in, NULL, &d, NULL);
		snprintf(t->error, sizeof(t->error), "tool.execute denied by policy (%s): %s", d.reason,
			 policy_decision_words(&d, words, sizeof(words)));
	}
	json_decref(ctx);
	return d.allow;
}

enum task_outcome task_tool_run(struct task_ctx *t)
{
	json_t *kwargs = json_object_get(t->payload, "kwargs");
	const char *name = json_string_value(json_object_get(kwargs, "tool"));
	const struct tool_def *tool = tools_find(name);
	if (!tool) {
		snprintf(t->error, sizeof(t->error), "%s: no such tool is enabled here (GET /v1/tools lists them)",
			 name ? name : "kwargs.tool missing");
		return TASK_REJECT;
	}
	json_t *args = json_object_get(kwargs, "args");
	char err[TOOL_ERROR_MAX];
	if (!tools_args_check(tool, args, err, sizeof(err))) {
		snprintf(t->error, sizeof(t->error), "%.40s: %.460s", name, err);
		return TASK_REJECT;
	}
	if (!allowed(t, tool, args))
		return TASK_REJECT;
	struct tool_ctx ctx = {.tenant = t->tenant,
			       .session_id = t->session_id,
			       .request_id = json_string_value(json_object_get(t->payload, "request_id")),
			       .subject = json_string_value(json_object_get(t->payload, "subject")),
			       .scopes = json_string_value(json_object_get(t->payload, "scopes")),
			       .persona_id = json_string_value(json_object_get(t->payload, "persona_id")),
			       .store = t->store};
	char *text = NULL;
	enum soma_err e = tools_run(tool, &ctx, args, &text, err, sizeof(err));
	if (e != SOMA_OK) {
		snprintf(t->error, sizeof(t->error), "%.40s: %.460s", name, err);
		return e == SOMA_ERR_UNAVAILABLE || e == SOMA_ERR_NOMEM ? TASK_RETRY : TASK_REJECT;
	}
	t->result = json_loads(text, 0, NULL);
	free(text);
	if (!t->result) {
		snprintf(t->error, sizeof(t->error), "%s returned no valid JSON", name);
		return TASK_FAIL;
	}
	return TASK_DONE;
}
