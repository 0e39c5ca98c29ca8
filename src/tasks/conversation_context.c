/*
 * conversation_context.c - the context read of conversation.process (conversation.c): the
 * session's recent turns, read on a store reader while the worker asks policy and recalls.
 *
 * DESIGN: the read is a store op the worker submits and waits for (conv_context_submit, then
 * conv_context_wait). Handed over early (task_ctx.gate), the first read may come before the
 * user's message commits: it only probes for the message (store_op.reply_probe), and
 * conv_context_take adds the message as the newest turn when the read missed it, or finds that
 * the session or the message is gone (deleted, reset) when the read came after the commit. Every
 * later read (after the commit) requires the message (conv_context_reread). Worker thread.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/str_copy.h"
#include "queue/handoff.h"
#include "tasks/conversation_int.h"

/* The user message the task answers (the payload's event_id): the store refuses a context read or
 * a reply once a session reset has erased it (SOMA_ERR_NOT_FOUND, as for a deleted session). */
void conv_reply_to(const struct task_ctx *t, struct store_op *op)
{
	const char *id = json_string_value(json_object_get(t->payload, "event_id"));
	if (id && strlen(id) < sizeof(op->reply_to))
		str_copy(op->reply_to, sizeof(op->reply_to), id);
}

static void context_done(struct store_op *op)
{
	struct context_read *c = op->arg;
	pthread_mutex_lock(&c->lock);
	c->done = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
}

void conv_context_wait(struct context_read *c)
{
	pthread_mutex_lock(&c->lock);
	while (!c->done)
		pthread_cond_wait(&c->cv, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* Submits the context read of t (done: cr is signalled). probe: the read may come before the
 * message commits (early start), so the message is only looked for; else a read that does not
 * find it says the message is gone (SOMA_ERR_NOT_FOUND). NULL when it could not (t->error says). */
struct store_op *conv_context_submit(struct task_ctx *t, struct context_read *cr, bool probe)
{
	struct store_op *op = store_op_new(STORE_OP_CONTEXT, t->tenant);
	if (!op)
		return NULL;
	str_copy(op->session_id, sizeof(op->session_id), t->session_id);
	str_copy(op->outcome_of, sizeof(op->outcome_of), t->id); /* has this task replied already? */
	conv_reply_to(t, op);
	op->reply_probe = probe;
	int64_t seq;
	/* not committed yet: a cached context without the message holds every turn before it */
	op->reply_absent = probe && t->gate && commit_gate_state(t->gate, &seq) == GATE_PENDING;
	op->limit = cfg_int(CFG_LLM_CONTEXT_EVENTS);
	op->done = context_done;
	op->arg = cr;
	enum soma_err err = store_submit(t->store, op);
	if (err == SOMA_OK)
		return op;
	store_op_free(op); /* not taken: still ours */
	snprintf(t->error, sizeof(t->error), "cannot read the conversation: %s", soma_err_str(err));
	return NULL;
}

/* Takes the finished read's rows into *rows (owned). Early start: a read that came before the
 * message's commit gets the message added as the newest turn. A read that finds no session of
 * this tenant waits for the commit before anything goes to the provider: the message may create
 * the session (then its context is empty), or the store refuses it (another tenant's session, a
 * deleted one) - and a refused message must cost no provider call. A read that came after the
 * commit (its seq is not behind the message's) and found no session or no message means the
 * session was deleted or reset meanwhile: SOMA_ERR_NOT_FOUND, as a read again (no probe) says too.
 * Returns the read's error. */
enum soma_err conv_context_take(struct generation *g, struct store_op *op, json_t **rows)
{
	struct task_ctx *t = g->task;
	const char *text = json_string_value(json_object_get(t->task, "message"));
	int64_t seq = 0;
	enum gate_state gs = t->gate ? commit_gate_state(t->gate, &seq) : GATE_COMMITTED;
	*rows = NULL;
	g->appended = false;
	if (op->err == SOMA_ERR_NOT_FOUND && t->gate && gs == GATE_PENDING)
		gs = commit_gate_wait(t->gate, &seq); /* no session yet: nothing early */
	if (op->err == SOMA_ERR_NOT_FOUND && op->reply_probe && gs == GATE_COMMITTED && seq == 1) {
		g->read_seq = 0; /* the message created the session (else it was there before: gone now) */
		*rows = json_array();
	} else if (op->err == SOMA_OK && op->reply_probe && op->reply_to[0] && !op->has_outcome && !op->reply_seen &&
		   gs == GATE_COMMITTED && op->seq >= seq) {
		return SOMA_ERR_NOT_FOUND; /* read after the commit, without the message: a reset erased it */
	} else if (op->err == SOMA_OK) {   /* (no rows when the task already has its outcome) */
		g->read_seq = op->seq;
		*rows = op->rows ? op->rows : json_array();
		op->rows = NULL;
	}
	if (!*rows)
		return op->err == SOMA_OK ? SOMA_ERR_NOMEM : op->err;
	g->base_seq = g->read_seq;
	/* not when the read saw it already (committed, the gate not settled yet): twice means a redo */
	if (t->gate && text && !op->reply_seen && (gs == GATE_PENDING || g->read_seq < seq)) {
		/* the rows may be the store's context cache's own array (shared, never changed in
		 * place: other workers read it): the message joins a copy of it */
		json_t *own = json_copy(*rows);
		json_decref(*rows);
		*rows = own;
		if (!own ||
		    json_array_insert_new(own, 0, json_pack("{s:s, s:s}", "role", "user", "content", text)) != 0) {
			json_decref(own); /* nothing is handed back on an error (a redo's caller keeps none) */
			*rows = NULL;
			return SOMA_ERR_NOMEM;
		}
		g->appended = true;
	}
	return SOMA_OK;
}

/* Reads the context again after the message committed (early start, redo): *rows (owned). */
enum soma_err conv_context_reread(struct generation *g, json_t **rows)
{
	struct context_read cr = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	struct store_op *op = conv_context_submit(g->task, &cr, false); /* committed: it must be there */
	if (!op)
		return SOMA_ERR_UNAVAILABLE;
	conv_context_wait(&cr);
	enum soma_err err = conv_context_take(g, op, rows);
	store_op_free(op);
	return err;
}
