/*
 * conversation.c - the task conversation.process: a user message in, the assistant's reply out.
 *
 * Flow: read the session's recent events (context; policy and the memory recall run meanwhile)
 * -> publish assistant.thinking -> stream the LLM reply, publishing each delta as
 * assistant.delta (ephemeral: live and kept for resume, not history) -> commit assistant.final with model and usage, or
 * assistant.error with words a user understands, in the same transaction as the task's ack. A deleted session stops the
 * generation (cancel); a shutdown requeues the task instead of finishing it.
 * One reply per task, however often it is delivered (at-least-once: the relay publishes a task
 * again when a crash lost its delete, a reservation can run out): the outcome event is stored with
 * the task's id (store op outcome_of, unique in the store). The context read says whether the task
 * already has its outcome - then this copy publishes, audits and stores nothing and is acked - and
 * when two copies race, the second commit is refused (SOMA_ERR_CONFLICT) and its reply dropped.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus.h"
#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "limits/limits.h"
#include "llm/llm.h"
#include "memory/memory.h"
#include "policy/policy.h"
#include "queue/queue.h"
#include "tasks/tasks.h"

struct generation {
	struct task_ctx *task;	   /* the running task */
	int64_t base_seq;	   /* last committed seq when the generation started */
	int64_t stream_index;	   /* deltas published so far */
	char bus_key[BUS_KEY_MAX]; /* where its events go live */
};

static void publish(struct generation *g, json_t *event)
{
	char *text = json_dumps(event, JSON_COMPACT);
	if (text)
		bus_publish_ephemeral(g->bus_key, g->base_seq, text, strlen(text), NULL);
	free(text);
	json_decref(event);
}

static bool on_delta(void *ctx, const char *text, size_t len)
{
	struct generation *g = ctx;
	json_t *meta =
		json_pack("{s:I, s:s}", "stream_index", (json_int_t)g->stream_index++, "generation_id", g->task->id);
	json_t *ev = chat_event_new(g->task->session_id, "assistant", "assistant.delta", "", NULL, meta);
	json_object_set_new(ev, "message", json_stringn(text, len));
	publish(g, ev);
	return !g->task->cancel;
}

/* Polled by the LLM client while it waits (at least once a second): also keeps the task's
 * reservation alive through long replies. */
static bool should_cancel(void *ctx)
{
	struct generation *g = ctx;
	queue_task_heartbeat(g->task);
	return g->task->cancel;
}

/* Length of at most max bytes of s that ends on a UTF-8 character boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

/* OpenAI messages from the stored turns (rows newest first, {role, content}): the system
 * prompt, then the most recent turns that fit the budget (estimated at 4 characters a token),
 * as one contiguous window. The newest turn is always sent, cut to the budget if it alone is
 * larger. */
static json_t *build_messages(json_t *rows)
{
	int64_t budget = cfg_int(CFG_LLM_MAX_CONTEXT_TOKENS) * 4;
	const char *system = cfg_str(CFG_LLM_SYSTEM_PROMPT);
	json_t *turns = json_array();
	budget -= (int64_t)strlen(system);
	bool newest = true;
	for (size_t i = 0; i < json_array_size(rows); i++) {
		json_t *row = json_array_get(rows, i);
		const char *role = json_string_value(json_object_get(row, "role"));
		const char *msg = json_string_value(json_object_get(row, "content"));
		size_t len = json_string_length(json_object_get(row, "content"));
		bool fits = (int64_t)len <= budget;
		if (!fits && !newest)
			break; /* older turns would leave a gap: the window ends here */
		if (!fits)     /* the newest turn alone is over the budget: keep its beginning */
			len = utf8_prefix(msg, len, budget > 1024 ? (size_t)budget : 1024);
		budget -= (int64_t)len;
		newest = false;
		if (fits) /* the row is already {role, content}: shared, not copied (nothing changes it) */
			json_array_insert(turns, 0, row);
		else
			json_array_insert_new(turns, 0, json_pack("{s:s, s:s%}", "role", role, "content", msg, len));
	}
	if (system[0])
		json_array_insert_new(turns, 0, json_pack("{s:s, s:s}", "role", "system", "content", system));
	return turns;
}

/* status: "completed", or "cancelled" when the user stopped the reply (content = the part
 * generated until then). */
static json_t *final_event(struct generation *g, const struct llm_result *res, const struct llm_config *cfg,
			   const char *status)
{
	json_t *usage =
		json_pack("{s:I, s:I}", "input_tokens", (json_int_t)(res->input_tokens > 0 ? res->input_tokens : 0),
			  "output_tokens", (json_int_t)(res->output_tokens > 0 ? res->output_tokens : 0));
	json_t *meta = json_pack("{s:s, s:s, s:o, s:s, s:s, s:I}", "status", status, "model",
				 res->model[0] ? res->model : cfg->model, "usage", usage, "finish_reason",
				 res->finish_reason[0] ? res->finish_reason : "stop", "generation_id", g->task->id,
				 "deltas", (json_int_t)g->stream_index);
	json_t *ev = chat_event_new(g->task->session_id, "assistant", "assistant.final", "", NULL, meta);
	json_object_set_new(ev, "message", json_stringn(res->content ? res->content : "", res->content_len));
	return ev;
}

static json_t *error_event(struct generation *g, const struct llm_result *res)
{
	json_t *meta = json_pack("{s:s, s:{s:s, s:s, s:i}, s:s}", "status", "error", "error", "code",
				 llm_error_code(res->error), "detail", res->detail, "http_status", res->http_status,
				 "generation_id", g->task->id);
	return chat_event_new(g->task->session_id, "assistant", "assistant.error", llm_error_message(res->error), NULL,
			      meta);
}

/* The user message the task answers (the payload's event_id): the store refuses a context read or
 * a reply once a session reset has erased it (SOMA_ERR_NOT_FOUND, as for a deleted session). */
static void reply_to(const struct task_ctx *t, struct store_op *op)
{
	const char *id = json_string_value(json_object_get(t->payload, "event_id"));
	if (id && strlen(id) < sizeof(op->reply_to))
		snprintf(op->reply_to, sizeof(op->reply_to), "%s", id);
}

/* Commits the reply (or the error) and the task's ack in one transaction. */
static enum task_outcome commit(struct task_ctx *t, json_t *event)
{
	struct store_op *op = store_op_new(STORE_OP_EVENT_APPEND, t->tenant);
	if (!op) {
		json_decref(event);
		snprintf(t->error, sizeof(t->error), "out of memory");
		return TASK_RETRY;
	}
	snprintf(op->session_id, sizeof(op->session_id), "%s", t->session_id);
	if (t->store_ack) /* local queue: the task row is acked in this commit (redis: by the worker) */
		snprintf(op->task_id, sizeof(op->task_id), "%s", t->id);
	if (t->store_ack && t->queue && !t->shutdown) { /* reserve this worker's next task in the same commit */
		snprintf(op->queue, sizeof(op->queue), "%s", t->queue);
		snprintf(op->worker, sizeof(op->worker), "%s", t->worker);
		op->delay_ms = t->visibility_ms;
	}
	op->event = event;
	snprintf(op->outcome_of, sizeof(op->outcome_of), "%s", t->id); /* one outcome per task */
	reply_to(t, op);
	enum soma_err err = store_op_wait(t->store, op);
	if (err == SOMA_OK) {
		t->next_task = op->session;
		op->session = NULL;
	}
	store_op_free(op);
	if (err == SOMA_ERR_NOT_FOUND) {
		log_info("conversation", "session %s was deleted during the reply; dropping it", t->session_id);
		return TASK_DONE; /* nothing to keep */
	}
	if (err == SOMA_ERR_CONFLICT) { /* another copy of this task committed its outcome first */
		log_info("conversation", "task %s already has its reply in session %s: this copy's is dropped", t->id,
			 t->session_id);
		return TASK_DONE;
	}
	if (err != SOMA_OK) {
		snprintf(t->error, sizeof(t->error), "cannot store the reply: %s", soma_err_str(err));
		return TASK_RETRY;
	}
	return TASK_ACKED;
}

/* ---- policy and limits (issue 6): queued work is asked again, as its sender, before the LLM ----
 * The message was allowed when it was accepted; policy (or the tenant's budget) may have changed
 * since. conversation.send and llm.invoke (with the model that will be used) are asked here, on
 * the worker thread (OPA may be called), while the context is read. A deny is audited and its
 * policy.denied event is committed instead of a reply; a spent token budget commits an
 * assistant.error. The audit waits for the context read: a copy of a task that already has its
 * outcome writes nothing (recheck_outcome(..., false)). */
struct recheck {
	char session[80], model[160];
	json_t *send_ctx, *llm_ctx; /* owned until recheck_outcome */
	struct policy_input in;	    /* points into this struct, t and cfg */
	struct policy_decision d;
	bool budget; /* the tenant has LLM tokens left (asked when policy allows) */
};

static void recheck_ask(struct task_ctx *t, const struct llm_config *cfg, struct recheck *rk)
{
	const char *subject = json_string_value(json_object_get(t->payload, "subject"));
	snprintf(rk->session, sizeof(rk->session), "session:%s", t->session_id);
	snprintf(rk->model, sizeof(rk->model), "model:%s", cfg->model);
	rk->send_ctx = json_pack("{s:b}", "queued", 1);
	rk->llm_ctx = json_pack("{s:s, s:b}", "model", cfg->model, "stream", 1);
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
static json_t *recheck_outcome(struct task_ctx *t, struct recheck *rk, bool outcome)
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
static bool in_context(json_t *rows, const char *text)
{
	for (size_t i = 0; text && i < json_array_size(rows); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(rows, i), "content")) ?: "", text) == 0)
			return true;
	return !text;
}

/* What a recall brought: results (owned; NULL when there was none), whether it was partial. */
struct recalled {
	json_t *results; /* [{score, payload, source}] or NULL */
	bool degraded;	 /* memory_recall's *degraded */
	bool asked;	 /* a recall was made (else the query comes from the context) */
};

/* Recalls up to top_k + 1 memories for query (the +1: the message itself may be one of them). */
static void recall(struct task_ctx *t, const char *query, struct recalled *out)
{
	int top_k = (int)cfg_int(CFG_MEMORY_RECALL_TOP_K);
	out->asked = true;
	if (query && top_k > 0 &&
	    memory_recall(t->store, t->tenant, "", query, top_k + 1, t->session_id, NULL, &out->results,
			  &out->degraded) != SOMA_OK)
		out->results = NULL;
}

static json_t *recall_memories(struct task_ctx *t, json_t *rows, json_t *messages, struct recalled *rc)
{
	int top_k = (int)cfg_int(CFG_MEMORY_RECALL_TOP_K), n = 0;
	const char *query = NULL;
	for (size_t i = 0; !rc->asked && !query && i < json_array_size(rows); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(rows, i), "role")) ?: "", "user") == 0)
			query = json_string_value(json_object_get(json_array_get(rows, i), "content"));
	if (!rc->asked) /* the task did not carry its message: the newest user message of the context */
		recall(t, query, rc);
	json_t *results = rc->results, *r;
	bool degraded = rc->degraded;
	char *text = NULL;
	size_t len = 0, i;
	FILE *f = open_memstream(&text, &len);
	json_array_foreach(results, i, r)
	{
		const char *content = json_string_value(json_object_get(json_object_get(r, "payload"), "content"));
		if (!f || n >= top_k || in_context(rows, content))
			continue;
		fprintf(f, "%s- %.*s", n ? "\n" : "Memories from earlier conversations (use them if relevant):\n",
			(int)utf8_prefix(content, strlen(content), 1000), content);
		n++;
	}
	if (f)
		fclose(f);
	const char *first = json_string_value(json_object_get(json_array_get(messages, 0), "role"));
	if (n && text) /* after the system prompt when there is one */
		json_array_insert_new(messages, first && strcmp(first, "system") == 0 ? 1 : 0,
				      json_pack("{s:s, s:s}", "role", "system", "content", text));
	free(text);
	json_decref(results);
	rc->results = NULL;
	struct memory_status st;
	memory_snapshot(&st);
	return json_pack("{s:s, s:s, s:{s:i, s:i, s:b}}", "somabrain_state", memory_state_name(st.state),
			 "somabrain_reason", st.reason, "memory", "recalled", n, "top_k", top_k, "degraded", degraded);
}

/* ---- the context read, on a store reader while this thread asks policy and SomaBrain ---- */
struct context_read {
	pthread_mutex_t lock; /* guards done */
	pthread_cond_t cv;    /* signalled when done */
	bool done;	      /* the op completed */
};

static void context_done(struct store_op *op)
{
	struct context_read *c = op->arg;
	pthread_mutex_lock(&c->lock);
	c->done = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
}

static void context_wait(struct context_read *c)
{
	pthread_mutex_lock(&c->lock);
	while (!c->done)
		pthread_cond_wait(&c->cv, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* The reply event with the memory metadata merged in (takes both). */
static json_t *with_memory(json_t *event, json_t *meta)
{
	json_object_update(json_object_get(event, "metadata"), meta);
	json_decref(meta);
	return event;
}

/* The context (recent events, newest first) is read on a store reader while this thread asks
 * policy again and, when the task carries its message (recall_query), recalls memories for it:
 * the recall's round trip to SomaBrain overlaps the read instead of following it. */
enum task_outcome task_conversation_process(struct task_ctx *t)
{
	if (!t->session_id)
		return snprintf(t->error, sizeof(t->error), "conversation.process needs a session"), TASK_FAIL;
	struct store_op *op = store_op_new(STORE_OP_CONTEXT, t->tenant);
	if (!op)
		return TASK_RETRY;
	struct context_read cr = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	snprintf(op->session_id, sizeof(op->session_id), "%s", t->session_id);
	snprintf(op->outcome_of, sizeof(op->outcome_of), "%s", t->id); /* has this task replied already? */
	reply_to(t, op);
	op->limit = cfg_int(CFG_LLM_CONTEXT_EVENTS);
	op->done = context_done;
	op->arg = &cr;
	enum soma_err err = store_submit(t->store, op);
	if (err != SOMA_OK) { /* not taken: still ours */
		store_op_free(op);
		snprintf(t->error, sizeof(t->error), "cannot read the conversation: %s", soma_err_str(err));
		return TASK_RETRY;
	}
	struct llm_config cfg;
	llm_config_from_settings(&cfg);
	struct recheck rk = {0};
	recheck_ask(t, &cfg, &rk); /* issue 6 */
	struct recalled rc = {0};
	const char *query = json_string_value(json_object_get(t->payload, "recall_query"));
	if (rk.budget && query) /* issue 5 */
		recall(t, query, &rc);
	context_wait(&cr);
	err = op->err;
	/* a copy of a task that already has its reply (delivered twice: relayed again after a crash,
	 * or its reservation ran out): nothing is published, audited or stored again */
	bool again = err == SOMA_OK && op->has_outcome;
	json_t *refused = recheck_outcome(t, &rk, err == SOMA_OK && !again);
	if (err != SOMA_OK || refused || again) {
		store_op_free(op);
		json_decref(rc.results);
		if (again) {
			log_info("conversation", "task %s already has its reply in session %s: this copy is dropped",
				 t->id, t->session_id);
			return TASK_DONE;
		}
		if (err == SOMA_OK)
			return commit(t, refused);
		if (err == SOMA_ERR_NOT_FOUND) {
			log_info("conversation",
				 "task %s: session %s or its message is gone (deleted or reset): "
				 "nothing to answer",
				 t->id, t->session_id);
			return TASK_DONE;
		}
		snprintf(t->error, sizeof(t->error), "cannot read the conversation: %s", soma_err_str(err));
		return TASK_RETRY;
	}
	struct generation g = {.task = t, .base_seq = op->seq};
	bus_key(g.bus_key, t->tenant, t->session_id);
	json_t *messages = build_messages(op->rows);
	json_t *memory = recall_memories(t, op->rows, messages, &rc); /* issue 5 */
	store_op_free(op);
	publish(&g, chat_event_new(t->session_id, "assistant", "assistant.thinking", "", NULL,
				   json_pack("{s:s}", "generation_id", t->id)));

	struct llm_request req = {.messages = messages, .temperature = -1, .stream = true};
	struct llm_callbacks cb = {.on_delta = on_delta, .should_cancel = should_cancel, .ctx = &g};
	struct llm_result res;
	llm_chat(&cfg, &req, &cb, &res);
	limits_tokens_add(t->tenant, (res.input_tokens > 0 ? res.input_tokens : 0) +
					     (res.output_tokens > 0 ? res.output_tokens : 0)); /* issue 6 */
	json_decref(messages);
	enum task_outcome outcome;
	if (res.error == LLM_ERR_CANCELLED && t->shutdown) {
		snprintf(t->error, sizeof(t->error), "interrupted by shutdown");
		outcome = TASK_RETRY; /* runs again on the next start; the user sees the reply then */
	} else if (res.error == LLM_ERR_CANCELLED && t->keep_partial) {
		log_info("conversation", "session %s: stopped by the user after %lld deltas", t->session_id,
			 (long long)g.stream_index);
		outcome = commit(t, with_memory(final_event(&g, &res, &cfg, "cancelled"), json_incref(memory)));
	} else if (res.error == LLM_ERR_CANCELLED) {
		log_info("conversation", "session %s: generation cancelled", t->session_id);
		bus_forget(g.bus_key); /* the session is gone: drop what its stream could replay */
		outcome = TASK_DONE;
	} else {
		if (res.error != LLM_OK)
			log_warn("conversation", "session %s: %s (%s)", t->session_id, llm_error_code(res.error),
				 res.detail);
		outcome = commit(t, with_memory(res.error == LLM_OK ? final_event(&g, &res, &cfg, "completed")
								    : error_event(&g, &res),
						json_incref(memory)));
	}
	bus_generation_end(g.bus_key);
	json_decref(memory);
	memory_relay_wake(); /* the reply's memory was committed with it */
	llm_result_free(&res);
	return outcome;
}
