/*
 * conversation_prep.c - what conversation.process prepares before the LLM call (see
 * conversation_int.h): the messages from the stored turns, the policy recheck as the sender, and
 * the memories recalled for the message. Worker thread of the task; no state of its own.
 */
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
#include "store/memory_rows.h"
#include "tasks/conversation_int.h"

/* Length of at most max bytes of s that ends on a UTF-8 character boundary. */
size_t conv_utf8_prefix(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

/* {k1: v1, k2: v2} of strings (owned; NULL when a value is not UTF-8 or memory ran out), what
 * json_pack("{s:s, s:s}") builds, without reading a format per message. */
static json_t *pair(const char *k1, const char *v1, const char *k2, const char *v2)
{
	json_t *o = json_object();
	if (o && json_object_set_new_nocheck(o, k1, json_string(v1)) == 0 &&
	    json_object_set_new_nocheck(o, k2, json_string(v2)) == 0)
		return o;
	json_decref(o);
	return NULL;
}

/* The OpenAI message of a stored turn: role and content only (a provider refuses members it does
 * not know). A turn that is one ({role, content}), or carries one ("msg": the SQLite store's turns,
 * which carry their event id too), is shared, not copied: nothing changes it. */
static json_t *turn_message(json_t *row)
{
	json_t *msg = json_object_get(row, "msg");
	if (msg || json_object_size(row) == 2)
		return json_incref(msg ? msg : row);
	json_t *o = json_object();
	if (o && (json_object_set_nocheck(o, "role", json_object_get(row, "role")) != 0 ||
		  json_object_set_nocheck(o, "content", json_object_get(row, "content")) != 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The message of the newest turn (msg, consumed) cut to max characters, the cut marked so the
 * model knows it reads a beginning; the marker is counted in max (at least 1024 characters of
 * the message are kept, as before). Owned; NULL when memory ran out. */
static json_t *cut_newest(json_t *msg, int64_t max)
{
	const char *text = json_string_value(json_object_get(msg, "content"));
	size_t len = json_string_length(json_object_get(msg, "content"));
	const char *fmt = "\n[Cut: only the first %zu of %zu characters of this message are included "
			  "(llm.max_context_tokens)]";
	int mark = snprintf(NULL, 0, fmt, len, len); /* the longest it can be: the kept part is shorter */
	int64_t room = max - mark;
	size_t keep = conv_utf8_prefix(text, len, room > 1024 ? (size_t)room : 1024);
	char *marker = malloc((size_t)mark + 1);
	json_t *cut = NULL;
	if (marker) {
		snprintf(marker, (size_t)mark + 1, fmt, keep, len);
		cut = json_pack("{s:s, s:s%+}", "role", json_string_value(json_object_get(msg, "role")), "content",
				text, keep, marker);
	}
	free(marker);
	json_decref(msg);
	return cut;
}

/* The message of an older turn with attachments that fits in budget: whole (its files' text at
 * most share bytes), else with its files named only, else without its own text either; NULL
 * when none fits (the window ends) or memory ran out. Owned. */
static json_t *older_attached(json_t *row, int64_t budget, size_t share, conv_turn_fn turn, void *ctx)
{
	static const struct {
		bool files, text;
	} tries[] = {{true, true}, {false, true}, {false, false}};
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		json_t *msg = turn(ctx, row, tries[i].files ? share : 0, tries[i].text);
		if (!msg || (int64_t)json_string_length(json_object_get(msg, "content")) <= budget)
			return msg;
		json_decref(msg);
	}
	return NULL;
}

/* OpenAI messages from the stored turns (rows newest first, {role, content, id?, msg?,
 * attachments?}): the system prompt, then the most recent turns that fit the budget (estimated
 * at 4 characters a token, every message counted at its length in bytes), as one contiguous
 * window. Each turn's message is built as the window reaches it (a turn with attachments by turn,
 * its files' text counted with it). The files' text of a turn takes at most share bytes: half of
 * what the budget leaves after the system prompt, reserved and the newest turn's own text, so a
 * large file never leaves the newest turn without room, nor pushes out every older turn. An
 * older turn with files that does not fit whole is kept smaller rather than dropped
 * (older_attached). The newest turn is always sent, cut to the budget and the cut marked if it
 * alone is larger. The caller's reserved holds the room for the tool rounds (conv_tool_room). */
json_t *conv_build_messages(json_t *rows, size_t reserved, conv_turn_fn turn, void *ctx)
{
	int64_t budget = cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS) * 4;
	const char *system = cfg_str(CFG_LLM_SYSTEM_PROMPT);
	budget -= (int64_t)strlen(system) + (int64_t)reserved;
	int64_t free_room = budget - (int64_t)json_string_length(json_object_get(json_array_get(rows, 0), "content"));
	size_t share = free_room > 0 ? (size_t)(free_room / 2) : 0;
	/* the window first (newest first in picked), then the turns appended oldest first */
	json_t *picked = json_array(), *turns = json_array();
	size_t n = json_array_size(rows);
	for (size_t k = 0; k < n && picked; k++) {
		json_t *row = json_array_get(rows, k), *msg = NULL;
		bool files = turn && json_array_size(json_object_get(row, "attachments"));
		if (files && k > 0) {
			if (!(msg = older_attached(row, budget, share, turn, ctx)))
				break; /* older turns would leave a gap: the window ends here */
		} else if (files) {
			msg = turn(ctx, row, share, true);
		}
		if (!msg && !(msg = turn_message(row)))
			break;
		size_t len = json_string_length(json_object_get(msg, "content"));
		if ((int64_t)len > budget && k > 0) {
			json_decref(msg);
			break; /* older turns would leave a gap: the window ends here */
		}
		if ((int64_t)len > budget) { /* the newest turn alone is over the budget: its beginning */
			if (!(msg = cut_newest(msg, budget)))
				break;
			len = json_string_length(json_object_get(msg, "content"));
		}
		budget -= (int64_t)len;
		json_array_append_new(picked, msg);
	}
	if (system[0])
		json_array_append_new(turns, pair("role", "system", "content", system));
	for (size_t i = json_array_size(picked); i-- > 0;)
		json_array_append(turns, json_array_get(picked, i));
	json_decref(picked);
	return turns;
}

/* ---- policy and limits (issue 6): queued work is asked again, as its sender, before the LLM ----
 * The message was allowed when it was accepted; policy (or the tenant's budget) may have changed
 * since. conversation.send and llm.invoke (with the model that will be used) are asked here, on
 * the worker thread (OPA may be called), while the context is read. A deny is audited and its
 * policy.denied event is committed instead of a reply; a spent token budget commits an
 * assistant.error. The audit waits for the context read: a copy of a task that already has its
 * outcome writes nothing (recheck_outcome(..., false)). */

void conv_recheck_ask(struct task_ctx *t, const struct llm_config *cfg, struct recheck *rk)
{
	const char *subject = json_string_value(json_object_get(t->payload, "subject"));
	size_t n = str_copy(rk->session, sizeof(rk->session), "session:");
	str_copy(rk->session + n, sizeof(rk->session) - n, t->session_id);
	n = str_copy(rk->model, sizeof(rk->model), "model:");
	str_copy(rk->model + n, sizeof(rk->model) - n, cfg->model);
	/* {queued: true} and {model, stream: true}, as json_pack built them */
	rk->send_ctx = json_object();
	if (json_object_set_new_nocheck(rk->send_ctx, "queued", json_true()) != 0) {
		json_decref(rk->send_ctx);
		rk->send_ctx = NULL;
	}
	rk->llm_ctx = json_object();
	if (json_object_set_new_nocheck(rk->llm_ctx, "model", json_string(cfg->model)) != 0 ||
	    json_object_set_new_nocheck(rk->llm_ctx, "stream", json_true()) != 0) {
		json_decref(rk->llm_ctx);
		rk->llm_ctx = NULL;
	}
	rk->in = (struct policy_input){.tenant = t->tenant,
				       .subject = subject ? subject : "",
				       .persona_id = json_string_value(json_object_get(t->payload, "persona_id")),
				       .scopes = json_string_value(json_object_get(t->payload, "scopes")),
				       .action = POLICY_CONVERSATION_SEND,
				       .resource = rk->session,
				       .context = rk->send_ctx};
	policy_decide(&rk->in, &rk->d);
	if (rk->d.allow) {
		rk->in.action = POLICY_LLM_INVOKE;
		rk->in.resource = rk->model;
		rk->in.context = rk->llm_ctx;
		policy_decide(&rk->in, &rk->d);
	}
	int64_t retry;
	rk->budget = rk->d.allow && limits_tokens_available(t->tenant, &retry);
}

/* Frees rk's contexts; with outcome, audits a deny and returns the event that replaces the reply
 * (policy.denied, or the budget's assistant.error), NULL when the reply may be generated. */
json_t *conv_recheck_outcome(struct task_ctx *t, struct recheck *rk, bool outcome)
{
	json_t *ev = NULL;
	if (outcome && !rk->d.allow) {
		log_info("conversation", "session %s: %s denied by policy (%s); no reply", t->session_id, rk->in.action,
			 rk->d.reason);
		policy_denied_audit(&rk->in, NULL, &rk->d, NULL);
		ev = policy_denied_event(t->session_id, &rk->in, &rk->d);
	}
	json_decref(rk->send_ctx);
	json_decref(rk->llm_ctx);
	rk->send_ctx = rk->llm_ctx = NULL;
	if (!outcome || ev || rk->budget)
		return ev;
	return conv_budget_event(t);
}

json_t *conv_budget_event(struct task_ctx *t)
{
	json_t *meta =
		json_pack("{s:s, s:{s:s, s:s, s:i}, s:s}", "status", "error", "error", "code", "llm_budget_exceeded",
			  "detail", "limits.llm_tokens_per_day reached", "http_status", 429, "generation_id", t->id);
	return chat_event_new(t->session_id, "assistant", "assistant.error",
			      "This tenant has used its LLM tokens for today; the budget renews at 00:00 UTC.", NULL,
			      meta);
}

/* ---- memory (issue 5): recalled memories in the context, the memory state in the reply ----
 * The top memory.recall_top_k memories for the user's newest message (fewer when degraded, none
 * when down: memory_recall applies the rule) go into one system message after the prompt,
 * except those already in the context (the message itself, once delivered, is a memory too).
 * Returns what the reply's metadata carries: {somabrain_state, somabrain_reason,
 * memory:{recalled, top_k, degraded}}; owned by the caller. */
static bool in_context(json_t *rows, const char *text) /* NULL text: nothing to add, as if it were */
{
	for (size_t i = 0; text && i < json_array_size(rows); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(rows, i), "content")) ?: "", text) == 0)
			return true;
	return !text;
}

/* What a recall brought: results (owned; NULL when there was none), whether it was partial. */

/* Recalls up to top_k + 1 memories for query (the +1: the message itself may be one of them). */
void conv_recall(struct task_ctx *t, const char *query, struct recalled *out)
{
	int top_k = (int)cfg_int(CFG_MEMORY_RECALL_TOP_K);
	out->asked = true;
	if (query && top_k > 0 &&
	    memory_recall(t->store, t->tenant, "", query, top_k + 1, t->session_id, NULL, NULL, &out->results,
			  &out->degraded) != SOMA_OK)
		out->results = NULL;
}

json_t *conv_recall_memories(struct task_ctx *t, json_t *rows, struct recalled *rc, json_t **message)
{
	int top_k = (int)cfg_int(CFG_MEMORY_RECALL_TOP_K), n = 0;
	const char *query = NULL;
	for (size_t i = 0; !rc->asked && !query && i < json_array_size(rows); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(rows, i), "role")) ?: "", "user") == 0)
			query = json_string_value(json_object_get(json_array_get(rows, i), "content"));
	if (!rc->asked) /* the task did not carry its message: the newest user message of the context */
		conv_recall(t, query, rc);
	json_t *results = rc->results, *r;
	bool degraded = rc->degraded;
	char *text = NULL;
	size_t len = 0, i;
	FILE *f = NULL; /* opened at the first memory to write: most messages recall none */
	json_array_foreach(results, i, r)
	{
		/* the text the search found it by (a value without content is shown by its text, or
		 * as JSON), not only value.content */
		char *content = n < top_k ? memory_value_text(json_object_get(r, "payload")) : NULL;
		if (!in_context(rows, content) && (f || (f = open_memstream(&text, &len)))) {
			fprintf(f, "%s- %.*s",
				n ? "\n" : "Memories from earlier conversations (use them if relevant):\n",
				(int)conv_utf8_prefix(content, strlen(content), 1000), content);
			n++;
		}
		free(content);
	}
	if (f)
		fclose(f);
	*message = n && text ? pair("role", "system", "content", text) : NULL;
	free(text);
	json_decref(results);
	rc->results = NULL;
	struct memory_status st;
	memory_snapshot(&st);
	/* built member by member: what json_pack built, without reading a format per reply */
	json_t *out = json_object(), *memory = json_object();
	bool ok = out && memory &&
		  json_object_set_new_nocheck(out, "somabrain_state", json_string(memory_state_name(st.state))) == 0 &&
		  json_object_set_new_nocheck(out, "somabrain_reason", json_string(st.reason)) == 0 &&
		  json_object_set_nocheck(out, "memory", memory) == 0 &&
		  json_object_set_new_nocheck(memory, "recalled", json_integer(n)) == 0 &&
		  json_object_set_new_nocheck(memory, "top_k", json_integer(top_k)) == 0 &&
		  json_object_set_new_nocheck(memory, "degraded", json_boolean(degraded)) == 0;
	json_decref(memory);
	if (!ok) {
		json_decref(out);
		out = NULL;
	}
	return out;
}

void conv_insert_memories(json_t *messages, json_t *memories)
{
	const char *first = json_string_value(json_object_get(json_array_get(messages, 0), "role"));
	if (memories) /* after the system prompt when there is one */
		json_array_insert(messages, first && strcmp(first, "system") == 0 ? 1 : 0, memories);
}
