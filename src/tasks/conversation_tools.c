/*
 * conversation_tools.c - function calling in conversation.process: the reply's tool calls run,
 * their results given back to the model, and the model called again (llm.tools,
 * llm.max_tool_rounds).
 *
 * DESIGN: the request offers tools_openai_json() with tool_choice auto (conv_tools_extra). A reply
 * that ends with tool calls (llm_result.tool_calls, gathered from the stream by the LLM client)
 * starts a round: for each call, in order, a committed tool.start (role tool, metadata {tool,
 * call_id, args, generation_id}), policy tool.execute asked as the task's sender (a deny is
 * audited and commits a policy.denied event; its reason is the call's result), the arguments
 * parsed and checked against the tool's schema, the tool run on this worker thread with the
 * task's tenant, session and identity, and a committed tool.result (metadata {tool, call_id, ok,
 * result | error, generation_id}). Every failure (unknown tool, arguments that are no JSON or do
 * not fit, a deny, the tool's own error) is the call's answer to the model, not the task's
 * failure. Then the model is called again with the assistant's message (its text and tool_calls)
 * and one tool message per call (tool_call_id, content: the result's JSON text, or
 * {"error": sentence}); its deltas stream on as the same generation (stream_index goes on,
 * assistant.thinking is not repeated). After llm.max_tool_rounds rounds the model is called once
 * more without tools, so the reply ends with text. assistant.final carries the text of all rounds
 * and the usage summed over them; its finish_reason is the last call's.
 * History: the context read takes user and assistant.final events only, so tool.start and
 * tool.result are shown and kept but not replayed into later turns' contexts: the final answer
 * carries what the model took from them.
 * At-least-once: a task that runs again after a crash (its tool events committed, its reply not)
 * calls the model again from the start, and a tool call it makes then runs again (committed
 * tool events are not matched to a new run's calls: a provider gives new call ids). Tools with
 * effects (memory_write) may therefore run twice in that case; their events show it.
 * A deleted session or a stop (cancel) stops before the next tool and before the next call, and
 * interrupts a running fetch_page (tool_ctx.cancel): a call a stop interrupted commits its
 * tool.result {ok: false, error: "stopped"} (the UI's "Running" line gets its outcome), one a
 * delete interrupted none.
 * Bounds (conversation_bounds.c): each result and the args shown in tool.start are cut to
 * llm.max_tool_result_chars; before each later call the token budget is asked (spent: the reply is
 * assistant.error llm_budget_exceeded) and the messages measured against llm.max_context_tokens
 * (the older turns dropped first, then the round's largest results left out to fit, that call
 * then the last, without tools; no fit even so: assistant.error llm_context_exceeded); the context
 * read leaves room for the rounds (conv_tool_room). The provider gets the calls' real arguments.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/str_copy.h"
#include "limits/limits.h"
#include "memory/memory.h"
#include "policy/policy.h"
#include "tasks/conversation_int.h"
#include "tools/tools.h"

/* The offer's text, made once: the enabled tools and their schemas are fixed at start, and
 * building it (a tree and its dump) cost a quarter of a reply's instructions when made per call. */
static pthread_once_t extra_once = PTHREAD_ONCE_INIT;
static char *extra_text; /* NULL: none to offer, or memory ran out at start */

static void extra_make(void)
{
	if (!cfg_bool(CFG_LLM_TOOLS) || tools_count() == 0)
		return;
	json_t *tools = tools_openai_json();
	char *text = tools ? json_dumps(tools, JSON_COMPACT) : NULL;
	json_decref(tools);
	if (!text)
		return;
	size_t n = strlen(text) + 48;
	extra_text = malloc(n);
	if (extra_text)
		snprintf(extra_text, n, "\"tools\":%s,\"tool_choice\":\"auto\"", text);
	free(text);
}

const char *conv_tools_extra(void)
{
	pthread_once(&extra_once, extra_make);
	return extra_text;
}

/* Commits event (taken) into the task's session, after the text held back (it came before);
 * the generation's deltas follow it. */
static enum soma_err commit_event(struct generation *g, json_t *event)
{
	struct task_ctx *t = g->task;
	conv_delta_flush(g);
	struct store_op *op = event ? store_op_new(STORE_OP_EVENT_APPEND, t->tenant) : NULL;
	if (!op) {
		json_decref(event);
		return SOMA_ERR_NOMEM;
	}
	str_copy(op->session_id, sizeof(op->session_id), t->session_id);
	op->event = event;
	conv_reply_to(t, op);
	enum soma_err err = store_op_wait(t->store, op);
	if (err == SOMA_OK && op->seq > g->base_seq)
		g->base_seq = op->seq;
	store_op_free(op);
	return err;
}

/* tool.execute for a run of tool with args (schema-checked) as the task's sender, with the same
 * policy input as the tools API and the soma.tool task (tools_policy_input: {tool, args, host}),
 * so a rule on fetch_page's host holds for the model's calls too; on a deny, its policy.denied
 * event is committed (*err: the commit's outcome) and why holds the reason. */
static bool allowed(struct generation *g, const struct tool_def *tool, const json_t *args, char *why, size_t cap,
		    enum soma_err *err)
{
	struct task_ctx *t = g->task;
	char resource[TOOLS_POLICY_RESOURCE_MAX];
	const char *subject = json_string_value(json_object_get(t->payload, "subject"));
	struct policy_input in = {.tenant = t->tenant,
				  .subject = subject ? subject : "",
				  .persona_id = json_string_value(json_object_get(t->payload, "persona_id")),
				  .scopes = json_string_value(json_object_get(t->payload, "scopes")),
				  .somabrain_degraded = memory_degraded()};
	json_t *ctx = tools_policy_input(tool, args, resource, &in);
	struct policy_decision d;
	policy_decide(&in, &d);
	if (!d.allow) {
		char words[200];
		policy_denied_audit(&in, NULL, &d, NULL);
		snprintf(why, cap, "tool.execute denied by policy (%s): %s", d.reason,
			 policy_decision_words(&d, words, sizeof(words)));
		*err = commit_event(g, policy_denied_event(t->session_id, &in, &d));
	}
	json_decref(ctx);
	return d.allow;
}

/* Runs one call; *result (owned) is the tool's JSON result, or NULL with why written. */
static enum soma_err run_call(struct generation *g, const char *name, json_t *args, json_t **result, char *why,
			      size_t cap)
{
	struct task_ctx *t = g->task;
	const struct tool_def *tool = tools_find(name);
	enum soma_err err = SOMA_OK;
	*result = NULL;
	if (!tool) {
		snprintf(why, cap, "%s: no such tool is enabled here", name);
		return SOMA_OK;
	}
	if (!json_is_object(args)) {
		snprintf(why, cap, "%s: the arguments are not a JSON object", name);
		return SOMA_OK;
	}
	if (!tools_args_check(tool, args, why, cap) || !allowed(g, tool, args, why, cap, &err))
		return err;
	struct tool_ctx ctx = {.tenant = t->tenant,
			       .session_id = t->session_id,
			       .request_id = json_string_value(json_object_get(t->payload, "request_id")),
			       .subject = json_string_value(json_object_get(t->payload, "subject")),
			       .scopes = json_string_value(json_object_get(t->payload, "scopes")),
			       .persona_id = json_string_value(json_object_get(t->payload, "persona_id")),
			       .store = t->store,
			       .cancel = &t->cancel};
	char *text = NULL, msg[TOOL_ERROR_MAX];
	queue_task_heartbeat(t);
	if (tools_run(tool, &ctx, args, &text, msg, sizeof(msg)) != SOMA_OK || t->cancel)
		snprintf(why, cap, "%.40s: %.460s", name, msg);
	else if (!(*result = json_loads(text, 0, NULL)))
		snprintf(why, cap, "%s returned no valid JSON", name);
	free(text);
	queue_task_heartbeat(t);
	return SOMA_OK;
}

/* One call of the reply: its events committed, its tool message appended to messages. */
static enum soma_err one_call(struct generation *g, json_t *call, size_t i, json_t *messages)
{
	json_t *f = json_object_get(call, "function");
	const char *name = json_string_value(json_object_get(f, "name"));
	const char *text = json_string_value(json_object_get(f, "arguments"));
	char id[64];
	if (json_string_length(json_object_get(call, "id")) > 0)
		str_copy(id, sizeof(id), json_string_value(json_object_get(call, "id")));
	else
		snprintf(id, sizeof(id), "call_%zu", i); /* a provider that names none */
	json_t *args = text && *text ? json_loads(text, JSON_DECODE_ANY, NULL) : json_object();
	char line[160];
	snprintf(line, sizeof(line), "Running tool %.60s", name && *name ? name : "(unnamed)");
	size_t max = (size_t)cfg_int(CFG_LLM_MAX_TOOL_RESULT_CHARS);
	json_t *as_text = args ? NULL : json_string(text ? text : ""); /* not JSON: the text as it came */
	json_t *shown = args || as_text ? conv_bound_value(args ? args : as_text, max) : NULL;
	json_decref(as_text);
	json_t *meta = json_pack("{s:s, s:s, s:o, s:s}", "tool", name ? name : "", "call_id", id, "args", shown,
				 "generation_id", g->task->id);
	enum soma_err err =
		commit_event(g, chat_event_new(g->task->session_id, "tool", "tool.start", line, NULL, meta));
	json_t *result = NULL;
	char why[TOOL_ERROR_MAX + 64] = "";
	if (err == SOMA_OK && !args)
		snprintf(why, sizeof(why), "%.60s: the arguments are not valid JSON", name ? name : "tool");
	else if (err == SOMA_OK)
		err = run_call(g, name ? name : "", args, &result, why, sizeof(why));
	json_decref(args);
	if (err != SOMA_OK || g->task->cancel) { /* stopped or deleted while it ran */
		json_decref(result);
		if (err != SOMA_OK || !g->task->keep_partial)
			return err; /* deleted: nothing more is kept */
		snprintf(line, sizeof(line), "%.60s stopped", name && *name ? name : "(unnamed)");
		meta = json_pack("{s:s, s:s, s:b, s:s, s:s}", "tool", name ? name : "", "call_id", id, "ok", 0, "error",
				 "stopped", "generation_id", g->task->id);
		return commit_event(g, chat_event_new(g->task->session_id, "tool", "tool.result", line, NULL, meta));
	}
	if (result) { /* what the model and the event get: at most llm.max_tool_result_chars */
		json_t *kept = conv_bound_value(result, max);
		json_decref(result);
		if (!(result = kept))
			return SOMA_ERR_NOMEM;
	}
	snprintf(line, sizeof(line), "%.60s %s", name && *name ? name : "(unnamed)", result ? "done" : "failed");
	meta = result ? json_pack("{s:s, s:s, s:b, s:O, s:s}", "tool", name ? name : "", "call_id", id, "ok", 1,
				  "result", result, "generation_id", g->task->id)
		      : json_pack("{s:s, s:s, s:b, s:s, s:s}", "tool", name ? name : "", "call_id", id, "ok", 0,
				  "error", why, "generation_id", g->task->id);
	err = commit_event(g, chat_event_new(g->task->session_id, "tool", "tool.result", line, NULL, meta));
	json_t *answer = result ? json_incref(result) : json_pack("{s:s}", "error", why);
	char *content = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
	json_decref(answer);
	json_decref(result);
	json_t *msg =
		content ? json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", id, "content", content) : NULL;
	free(content);
	if (!msg || json_array_append_new(messages, msg) != 0)
		return err == SOMA_OK ? SOMA_ERR_NOMEM : err;
	return err;
}

/* The assistant's message of a round: its text (null when none) and its calls as the model
 * wrote them, with the ids the tool messages answer. */
static json_t *assistant_message(const struct llm_result *res, size_t from)
{
	json_t *calls = json_array(), *call;
	size_t i;
	json_array_foreach(res->tool_calls, i, call)
	{
		json_t *f = json_object_get(call, "function");
		char id[64];
		if (json_string_length(json_object_get(call, "id")) > 0)
			str_copy(id, sizeof(id), json_string_value(json_object_get(call, "id")));
		else
			snprintf(id, sizeof(id), "call_%zu", i);
		json_array_append_new(calls, json_pack("{s:s, s:s, s:{s:O, s:O}}", "id", id, "type", "function",
						       "function", "name", json_object_get(f, "name"), "arguments",
						       json_object_get(f, "arguments")));
	}
	json_t *content =
		res->content_len > from ? json_stringn(res->content + from, res->content_len - from) : json_null();
	return json_pack("{s:s, s:o, s:o}", "role", "assistant", "content", content, "tool_calls", calls);
}

/* Adds what the round's call res cost to the sums and to the tenant's budget. */
static void count(struct generation *g, const struct llm_result *res, json_t *messages, int64_t sum[2])
{
	size_t prompt = res->input_tokens < 0 ? json_dumpb(messages, NULL, 0, JSON_COMPACT) : 0;
	limits_tokens_add(g->task->tenant, llm_tokens_used(res, prompt, 0));
	sum[0] += res->input_tokens > 0 ? res->input_tokens : 0;
	sum[1] += res->output_tokens > 0 ? res->output_tokens : 0;
}

/* Appends the text of one round (next's content) to the reply's text in res. */
static void join_text(struct llm_result *res, struct llm_result *next)
{
	if (!next->content_len)
		return;
	char *both = realloc(res->content, res->content_len + next->content_len + 1);
	if (!both)
		return;
	memcpy(both + res->content_len, next->content, next->content_len);
	res->content_len += next->content_len;
	both[res->content_len] = '\0';
	res->content = both;
}

enum soma_err conv_tool_rounds(struct generation *g, const struct llm_config *cfg, struct llm_request *req,
			       const struct llm_callbacks *cb, json_t *messages, struct llm_result *res)
{
	int64_t sum[2] = {res->input_tokens > 0 ? res->input_tokens : 0,
			  res->output_tokens > 0 ? res->output_tokens : 0};
	int rounds = (int)cfg_int(CFG_LLM_MAX_TOOL_ROUNDS);
	size_t from = 0; /* the round's own text starts here in res->content */
	enum soma_err err = SOMA_OK;
	/* (a provider that calls tools it was not offered, after the last round, is not answered) */
	for (int round = 1; round <= rounds && res->error == LLM_OK && json_array_size(res->tool_calls) > 0; round++) {
		size_t round_from = json_array_size(messages);
		json_array_append_new(messages, assistant_message(res, from));
		json_t *call;
		size_t i;
		json_array_foreach(res->tool_calls, i, call)
		{
			if (g->task->cancel)
				break;
			if ((err = one_call(g, call, i, messages)) != SOMA_OK)
				return err;
		}
		json_decref(res->tool_calls);
		res->tool_calls = NULL;
		if (g->task->cancel) {
			res->error = LLM_ERR_CANCELLED;
			break;
		}
		int64_t retry;
		if (!limits_tokens_available(g->task->tenant, &retry)) { /* asked before every call */
			log_info("conversation", "task %s: token budget spent after tool round %d", g->task->id, round);
			g->budget_spent = true;
			res->error = LLM_ERR_RATE_LIMITED; /* the reply is conv_budget_event's error */
			str_copy(res->detail, sizeof(res->detail), "limits.llm_tokens_per_day reached");
			break;
		}
		enum conv_fit fit = conv_fit_messages(messages, round_from);
		if (fit == CONV_TOO_LARGE) {
			log_info("conversation", "task %s: tool round %d no longer fits llm.max_context_tokens",
				 g->task->id, round);
			g->context_full = true;
			res->error = LLM_ERR_BAD_REQUEST; /* the reply is conv_context_event's error */
			str_copy(res->detail, sizeof(res->detail), "the tool rounds exceed llm.max_context_tokens");
			break;
		}
		if (round >= rounds || fit == CONV_LEFT_OUT) { /* the last call offers no tools: it ends with text */
			req->extra = NULL;
			req->tool_calls = false;
			rounds = round;
		}
		log_debug("conversation", "task %s: tool round %d done; calling the model again", g->task->id, round);
		struct llm_result next;
		struct trace_span span;
		char tp[TRACEPARENT_LEN + 1];
		req->messages = messages;
		req->traceparent = conv_llm_span_start(&span, cfg, tp);
		llm_chat(cfg, req, cb, &next);
		conv_llm_span_end(&span, &next);
		count(g, &next, messages, sum);
		from = res->content_len;
		join_text(res, &next);
		res->error = next.error;
		res->http_status = next.http_status;
		res->tool_calls = next.tool_calls;
		next.tool_calls = NULL;
		if (next.model[0])
			str_copy(res->model, sizeof(res->model), next.model);
		str_copy(res->finish_reason, sizeof(res->finish_reason), next.finish_reason);
		str_copy(res->detail, sizeof(res->detail), next.detail);
		llm_result_free(&next);
	}
	res->input_tokens = sum[0];
	res->output_tokens = sum[1];
	return err;
}
