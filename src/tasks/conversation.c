/*
 * conversation.c - the task conversation.process: a user message in, the assistant's reply out.
 *
 * Flow: read the session's recent events (context; policy and the memory recall run meanwhile)
 * -> publish assistant.thinking -> stream the LLM reply, publishing each delta as
 * assistant.delta (ephemeral: live and kept for resume, not history) -> when the reply is tool calls (llm.tools), run
 * them and call again (conversation_tools.c: tool.start / tool.result committed on the way, deltas of every round
 * streamed as one reply) -> commit assistant.final with model and usage, or
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
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/event.h"
#include "core/log.h"
#include "core/str_copy.h"
#include "limits/limits.h"
#include "llm/llm.h"
#include "memory/memory.h"
#include "queue/handoff.h"
#include "tasks/conversation_int.h"
#include "tasks/tasks.h"

/* The reply's assistant.thinking event's text (malloc'd; NULL when memory ran out), its length
 * in *len (may be NULL). */
static char *thinking_text(const struct generation *g, size_t *len)
{
	return conv_event_text(g->task->session_id, "assistant.thinking", g->task->id, -1, "", 0, len);
}

/* Publishes an event's text (taken; NULL: nothing) live. */
static void publish(struct generation *g, char *text, size_t len)
{
	if (text)
		bus_publish_ephemeral(g->bus_key, g->base_seq, text, len, NULL);
	free(text);
}

/* Early start (handoff.h): whether the LLM was given the context a read after the message's
 * commit (seq) would give: a read before the commit plus the message itself (the read saw
 * exactly seq - 1), or a read that already saw it. */
static bool context_right(const struct generation *g, int64_t seq)
{
	return g->appended ? g->read_seq == seq - 1 : g->read_seq >= seq;
}

/* Before the first publication: waits for the message's commit (early start), then publishes
 * assistant.thinking. False when nothing may be published: the commit failed (dropped) or the
 * context must be read again (redo). */
static bool open_generation(struct generation *g)
{
	int64_t seq;
	if (g->opened)
		return true;
	if (g->task->gate) {
		if (commit_gate_wait(g->task->gate, &seq) != GATE_COMMITTED)
			return !(g->dropped = true);
		if (!context_right(g, seq))
			return !(g->redo = true);
		g->base_seq = seq > g->base_seq ? seq : g->base_seq; /* after the user's event */
	}
	g->opened = true;
	if (g->early_opened) /* published by thinking_on_commit as the message committed */
		return true;
	bus_generation_begin(g->bus_key);
	if (g->thinking) {
		bus_publish_ephemeral(g->bus_key, g->base_seq, g->thinking, strlen(g->thinking), NULL);
	} else {
		size_t len = 0;
		char *text = thinking_text(g, &len);
		publish(g, text, len);
	}
	return true;
}

/* Early start: the gate's hook (queue/handoff.h), on the store thread that settles the message,
 * under the gate's lock, the moment it commits: publishes the prepared assistant.thinking there
 * (after the user's event: the commit hook published it first) while this worker waits for its
 * provider, so the first delta is then the only publication on its way. Not when the context
 * must be read again: open_generation then sets redo. */
static void thinking_on_commit(void *arg, int64_t seq)
{
	struct generation *g = arg;
	if (!context_right(g, seq))
		return;
	bus_generation_begin(g->bus_key);
	bus_publish_ephemeral(g->bus_key, seq > g->base_seq ? seq : g->base_seq, g->thinking, strlen(g->thinking),
			      NULL);
	g->early_opened = true;
}

/* Early start, before the first call: formats assistant.thinking and leaves it to be published
 * when the message commits (thinking_on_commit); when it has committed already, publishes it now,
 * before the call. Without memory for it, the first delta publishes it as before. */
static void thinking_prepare(struct generation *g)
{
	int64_t seq;
	g->thinking = thinking_text(g, NULL);
	if (g->thinking && !commit_gate_on_commit(g->task->gate, thinking_on_commit, g) &&
	    commit_gate_state(g->task->gate, &seq) == GATE_COMMITTED && context_right(g, seq))
		(void)open_generation(g); /* settled already: thinking goes out before the call */
}

static bool on_delta(void *ctx, const char *text, size_t len)
{
	struct generation *g = ctx;
	if (!open_generation(g))
		return false;	      /* stops the call */
	conv_delta_add(g, text, len); /* now, or merged with the next chunks (conversation_delta.c) */
	return !g->task->cancel;
}

/* Polled by the LLM client while it waits (at least once a second): also keeps the task's
 * reservation alive through long replies, and stops an early-started call whose message did not
 * commit, or whose context turned out to miss events. */
static bool should_cancel(void *ctx)
{
	struct generation *g = ctx;
	int64_t seq;
	enum gate_state gs = g->task->gate && !g->opened ? commit_gate_state(g->task->gate, &seq) : GATE_PENDING;
	if (gs == GATE_FAILED)
		g->dropped = true;
	else if (gs == GATE_COMMITTED && !context_right(g, seq))
		g->redo = true;
	queue_task_heartbeat(g->task);
	if (conv_held_due(&g->held, g->stream_index, clock_mono_ns())) /* a provider that pauses */
		conv_delta_flush(g);
	return g->task->cancel || g->dropped || g->redo;
}

/* status: "completed", or "cancelled" when the user stopped the reply (content = the part
 * generated until then). */
static json_t *final_event(struct generation *g, const struct llm_result *res, const struct llm_config *cfg,
			   const char *status)
{
	json_t *meta = conv_final_meta(status, res->model[0] ? res->model : cfg->model,
				       res->finish_reason[0] ? res->finish_reason : "stop", g->task->id,
				       g->stream_index, res->input_tokens > 0 ? res->input_tokens : 0,
				       res->output_tokens > 0 ? res->output_tokens : 0);
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

/* A retry because what failed with err; a store that did not answer is an outage, which does not
 * use up the task's max_retries (task_ctx.outage). */
static enum task_outcome retry_after(struct task_ctx *t, const char *what, enum soma_err err)
{
	snprintf(t->error, sizeof(t->error), "%s: %s", what, soma_err_str(err));
	t->outage = err == SOMA_ERR_UNAVAILABLE || err == SOMA_ERR_FULL; /* (not the task's fault) */
	return TASK_RETRY;
}

/* The reply event with the memory metadata merged in (takes both). */
static json_t *with_memory(json_t *event, json_t *meta)
{
	json_object_update(json_object_get(event, "metadata"), meta);
	json_decref(meta);
	return event;
}

/* One try of commit (event borrowed); *oom when no op could be made. */
static enum soma_err commit_once(struct task_ctx *t, json_t *event, bool *oom)
{
	struct store_op *op = store_op_new(STORE_OP_EVENT_APPEND, t->tenant);
	*oom = !op;
	if (!op)
		return SOMA_ERR_NOMEM;
	str_copy(op->session_id, sizeof(op->session_id), t->session_id);
	if (t->store_ack) /* local queue: the task row is acked in this commit (redis: by the worker) */
		str_copy(op->task_id, sizeof(op->task_id), t->id);
	if (t->store_ack && t->queue && !t->shutdown) { /* reserve this worker's next task in the same commit */
		str_copy(op->queue, sizeof(op->queue), t->queue);
		str_copy(op->worker, sizeof(op->worker), t->worker);
		op->delay_ms = t->visibility_ms;
	}
	/* the store sets session_id, created_at and seq in it: a try again must not find a seq, which
	 * would mean its text was made already (store_sql_prepare) */
	json_object_del(event, "seq");
	op->event = json_incref(event);
	str_copy(op->outcome_of, sizeof(op->outcome_of), t->id); /* one outcome per task */
	conv_reply_to(t, op);
	enum soma_err err = store_op_wait(t->store, op);
	if (err == SOMA_OK) {
		t->next_task = op->session;
		op->session = NULL;
	}
	store_op_free(op);
	return err;
}

/* Commits the reply (or the error) and the task's ack in one transaction (takes event). A full
 * disk or a failed store is tried again for a while, the reply kept (queue_commit_retry_wait). */
static enum task_outcome commit(struct task_ctx *t, json_t *event)
{
	bool oom = false;
	int64_t started = clock_wall_ms();
	int pause = 0;
	enum soma_err err;
	while ((err = commit_once(t, event, &oom)) != SOMA_OK && !oom) {
		if (!pause)
			log_warn("conversation",
				 "task %s: cannot store the reply in session %s (%s); trying again for up to %d s",
				 t->id, t->session_id, soma_err_str(err), QUEUE_COMMIT_RETRY_MS / 1000);
		if (!queue_commit_retry_wait(t, err, started, &pause))
			break;
	}
	json_decref(event);
	if (oom) {
		snprintf(t->error, sizeof(t->error), "out of memory");
		return TASK_RETRY;
	}
	if (err == SOMA_OK && pause)
		log_info("conversation", "task %s: its reply was stored after %.1f s of retries", t->id,
			 (double)(clock_wall_ms() - started) / 1000.0);
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
		return retry_after(t, "cannot store the reply", err);
	}
	return TASK_ACKED;
}

/* The messages for the LLM: the stored turns (with their attached files, read as t's tenant) and
 * the recalled memories (borrowed). Owned. */
static json_t *messages_for(struct task_ctx *t, json_t *rows, json_t *memories)
{
	/* the memories count against llm.max_context_tokens too: fewer turns make room for them; so
	 * do the tool rounds (a message that filled the context would leave a tool's result none) */
	size_t reserved = json_string_length(json_object_get(memories, "content")) + conv_tool_room();
	json_t *messages = conv_build_messages(rows, reserved, conv_attached_turn, t);
	conv_insert_memories(messages, memories);
	return messages;
}

/* Whether the task's message is still stored, after a delete or a reset of its session cancelled
 * the reply (a cancel without keep_partial): an early-started task's message may commit after
 * them, into the session made anew, and is then owed its reply. */
static bool message_kept(struct generation *g)
{
	json_t *rows = NULL;
	bool kept = g->task->gate && !g->task->limit_hit && conv_context_reread(g, &rows) == SOMA_OK;
	json_decref(rows);
	return kept;
}

/* Early start: the message did not commit; nothing of this task is kept (the worker drops it). */
static enum task_outcome dropped(struct task_ctx *t)
{
	log_info("conversation", "task %s: its message was not stored; the reply is dropped", t->id);
	snprintf(t->error, sizeof(t->error), "the message was not stored");
	return TASK_ACKED;
}

/* Streams the reply for rows (taken); early start: reads and calls again when the context missed
 * events (g->redo), stops when the message did not commit (g->dropped). */
static void generate(struct generation *g, const struct llm_config *cfg, json_t *rows, json_t *memories,
		     struct llm_result *res)
{
	if (g->task->gate && !g->opened)
		thinking_prepare(g);
	for (int call = 0;; call++) {
		/* a message refused meanwhile costs no call; a context that keeps missing events (the
		 * session changing under every read) runs again later instead of calling on and on */
		bool refused = g->task->gate && !g->opened && commit_gate_state(g->task->gate, NULL) == GATE_FAILED;
		if (refused || call == MAX_REDO) {
			json_decref(rows);
			memset(res, 0, sizeof(*res));
			g->dropped = refused;
			g->reread = refused ? SOMA_OK : SOMA_ERR_CONFLICT;
			return;
		}
		json_t *messages = messages_for(g->task, rows, memories);
		json_decref(rows);
		struct trace_span span;
		char tp[TRACEPARENT_LEN + 1];
		const char *tools = conv_tools_extra(); /* llm.tools */
		struct llm_request req = {.messages = messages,
					  .temperature = -1,
					  .stream = true,
					  .traceparent = conv_llm_span_start(&span, cfg, tp),
					  .extra = tools,
					  .tool_calls = tools != NULL};
		struct llm_callbacks cb = {.on_delta = on_delta, .should_cancel = should_cancel, .ctx = g};
		llm_chat(cfg, &req, &cb, res);
		conv_llm_span_end(&span, res);
		size_t prompt = res->input_tokens < 0 ? json_dumpb(messages, NULL, 0, JSON_COMPACT) : 0;
		limits_tokens_add(g->task->tenant, llm_tokens_used(res, prompt, 0)); /* issue 6 */
		if (!g->opened && !g->redo && !g->dropped && res->error != LLM_ERR_CANCELLED)
			(void)open_generation(g); /* no delta came: the commit is awaited here */
		else if (!g->opened && !g->redo && !g->dropped && g->task->gate &&
			 commit_gate_wait(g->task->gate, NULL) != GATE_COMMITTED)
			g->dropped = true;
		if (!g->redo && !g->dropped && g->opened && res->tool_calls) /* conversation_tools.c */
			g->reread = conv_tool_rounds(g, cfg, &req, &cb, messages, res);
		json_decref(messages);
		if (!g->redo || g->dropped)
			return;
		if (g->task->cancel) { /* stopped: what came was made on a context that missed events */
			llm_result_free(res);
			memset(res, 0, sizeof(*res));
			res->error = LLM_ERR_CANCELLED;
			return;
		}
		log_debug("conversation", "task %s: the context missed events before the message; calling again",
			  g->task->id);
		g->redo = false;
		llm_result_free(res);
		if ((g->reread = conv_context_reread(g, &rows)) != SOMA_OK) {
			memset(res, 0, sizeof(*res));
			return;
		}
	}
}

/* The context (recent events, newest first) is read on a store reader while this thread asks
 * policy again and, when the task carries its message (recall_query), recalls memories for it:
 * the recall's round trip to SomaBrain overlaps the read instead of following it. Handed over
 * early (t->gate), it also overlaps the message's commit; nothing is published, audited or
 * stored before that commit is confirmed. */
enum task_outcome conv_process(struct task_ctx *t)
{
	if (!t->session_id)
		return snprintf(t->error, sizeof(t->error), "conversation.process needs a session"), TASK_FAIL;
	struct context_read cr = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	struct store_op *op = conv_context_submit(t, &cr, t->gate != NULL); /* early: before the commit, maybe */
	if (!op)
		return t->gate && commit_gate_wait(t->gate, NULL) != GATE_COMMITTED ? dropped(t) : TASK_RETRY;
	struct llm_config cfg;
	llm_config_from_settings(&cfg);
	cfg.retry_wait_ms = LLM_BACKGROUND_RETRY_WAIT_MS; /* no client waits on the call: it may retry longer */
	struct recheck rk = {0};
	conv_recheck_ask(t, &cfg, &rk); /* issue 6 */
	struct recalled rc = {0};
	const char *query = json_string_value(json_object_get(t->payload, "recall_query"));
	if (rk.budget && query) /* issue 5 */
		conv_recall(t, query, &rc);
	conv_context_wait(&cr);
	struct generation g = {.task = t};
	bus_key(g.bus_key, t->tenant, t->session_id);
	json_t *rows = NULL;
	enum soma_err err = conv_context_take(&g, op, &rows);
	/* a copy of a task that already has its reply (delivered twice: relayed again after a crash,
	 * or its reservation ran out): nothing is published, audited or stored again */
	bool again = err == SOMA_OK && op->has_outcome;
	store_op_free(op);
	/* early: the message committed, but the read found no session or no message - a session another
	 * message created just before, not visible to that read, or one deleted or reset since: a read
	 * that requires the message tells which */
	if (err == SOMA_ERR_NOT_FOUND && t->gate && commit_gate_state(t->gate, NULL) == GATE_COMMITTED)
		err = conv_context_reread(&g, &rows);
	if (t->gate && (err != SOMA_OK || again || !rk.d.allow || !rk.budget) &&
	    commit_gate_wait(t->gate, NULL) != GATE_COMMITTED) { /* early start: an audit waits for the commit */
		(void)conv_recheck_outcome(t, &rk, false);
		json_decref(rc.results);
		json_decref(rows);
		return dropped(t);
	}
	json_t *refused = conv_recheck_outcome(t, &rk, err == SOMA_OK && !again);
	if (err != SOMA_OK || refused || again) {
		json_decref(rows);
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
		return retry_after(t, "cannot read the conversation", err);
	}
	json_t *memories = NULL;
	json_t *memory = conv_recall_memories(t, rows, &rc, &memories); /* issue 5 */
	if (!t->gate)
		(void)open_generation(&g); /* thinking at once, as the reply starts */
	struct llm_result res;
	generate(&g, &cfg, rows, memories, &res);
	conv_delta_flush(&g); /* the text held back goes out before the reply's end */
	conv_held_free(&g.held);
	if (t->gate) /* settled by now (generate waited for it): the hook is gone, or is removed here */
		(void)commit_gate_on_commit(t->gate, NULL, NULL);
	free(g.thinking);
	json_decref(memories);
	enum task_outcome outcome;
	if (g.dropped) {
		outcome = dropped(t);
	} else if (g.reread != SOMA_OK) { /* deleted meanwhile: nothing to do; else it runs again */
		outcome = g.reread == SOMA_ERR_NOT_FOUND ? TASK_DONE
							 : retry_after(t, "cannot read the conversation", g.reread);
	} else if (res.error == LLM_ERR_CANCELLED && t->shutdown) {
		snprintf(t->error, sizeof(t->error), "interrupted by shutdown");
		outcome = TASK_RETRY; /* runs again on the next start; the user sees the reply then */
	} else if (res.error == LLM_ERR_CANCELLED && t->keep_partial) {
		log_info("conversation", "session %s: stopped by the user after %lld deltas", t->session_id,
			 (long long)g.stream_index);
		outcome = commit(t, with_memory(final_event(&g, &res, &cfg, "cancelled"), json_incref(memory)));
	} else if (res.error == LLM_ERR_CANCELLED && message_kept(&g)) {
		/* early: the delete or reset that cancelled it committed before the message did */
		outcome = retry_after(t, "cancelled by a delete or reset of the session before its message",
				      SOMA_ERR_CONFLICT);
	} else if (res.error == LLM_ERR_CANCELLED) {
		log_info("conversation", "session %s: generation cancelled", t->session_id);
		bus_forget(g.bus_key); /* the session is gone: drop what its stream could replay */
		outcome = TASK_DONE;
	} else {
		if (res.error != LLM_OK)
			log_warn("conversation", "session %s: %s (%s)", t->session_id, llm_error_code(res.error),
				 res.detail);
		json_t *ev = res.error == LLM_OK ? final_event(&g, &res, &cfg, "completed")
			     : g.budget_spent	 ? conv_budget_event(t) /* the tool rounds ended it */
			     : g.context_full	 ? conv_context_event(t)
						 : error_event(&g, &res);
		outcome = commit(t, with_memory(ev, json_incref(memory)));
	}
	if (g.opened || g.early_opened) /* (thinking alone, by the gate's hook, opens it too) */
		bus_generation_end(g.bus_key);
	json_decref(memory);
	if (!g.dropped)
		memory_relay_wake(); /* the reply's memory was committed with it */
	llm_result_free(&res);
	return outcome;
}
