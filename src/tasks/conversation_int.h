/*
 * conversation_int.h - the parts of conversation.process (conversation.c) that prepare its LLM
 * call (conversation_prep.c): the messages from the stored turns, the policy recheck, the
 * memory recall; its context read (conversation_context.c); and its tool rounds
 * (conversation_tools.c). Worker thread of the task.
 */
#ifndef SOMA_TASKS_CONVERSATION_INT_H
#define SOMA_TASKS_CONVERSATION_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bus/bus.h"
#include "core/trace.h"
#include "llm/llm.h"
#include "policy/policy.h"
#include "queue/queue.h"
#include "store/store.h"

/* Length of at most max bytes of s that ends on a UTF-8 character boundary. */
size_t conv_utf8_prefix(const char *s, size_t len, size_t max);
/* The OpenAI message to send for a stored turn that names attachments (row borrowed), showing at
 * most file_max bytes of its files' text (0: the files named only), with the turn's own text or,
 * without with_text, a note that it is left out; NULL for the turn's own message (out of memory).
 * Caller owns. */
typedef json_t *(*conv_turn_fn)(void *ctx, json_t *row, size_t file_max, bool with_text);
/* OpenAI messages from the stored turns (rows newest first, {role, content, msg?, attachments?};
 * borrowed): the system prompt, then the most recent turns that fit llm.max_context_tokens, less
 * reserved characters (the memories', and conv_tool_room() when tools are offered). A turn with
 * attachments is sent as turn(ctx, row, ...) builds it (when turn is not NULL), counted at its
 * length: its files' text takes at most half of the budget left after the system prompt,
 * reserved and the newest turn's own text; an older one that does not fit so is sent with its
 * files named only, then without its text, before the window ends there. The newest turn is
 * always sent; cut to the budget, the cut marked, if it alone is larger. Caller owns. */
json_t *conv_build_messages(json_t *rows, size_t reserved, conv_turn_fn turn, void *ctx);

/* ---- attached files (conversation_attach.c) ---- */
/* What a user turn says of one attached file. */
enum conv_file_state {
	CONV_FILE_TEXT,	      /* text-like and read: text[0..len) shown */
	CONV_FILE_OTHER,      /* not text: named only */
	CONV_FILE_MISSING,    /* its row is there, its bytes are gone from data.dir */
	CONV_FILE_GONE,	      /* no row of the tenant names it any more (deleted) */
	CONV_FILE_UNREADABLE, /* the store could not be read */
};
struct conv_file {
	const char *id, *name, *mime; /* borrowed; name and mime NULL unless the row was read */
	int64_t size;		      /* bytes, as stored */
	enum conv_file_state state;
	const char *text;   /* CONV_FILE_TEXT: the text shown (UTF-8; borrowed) */
	size_t len;	    /* its length */
	size_t shown;	    /* bytes of the file it shows (less than size: cut) */
	const char *cut_by; /* the setting that bounded the text shown (NULL: llm.attachment_max_bytes) */
};
/* Whether a stored type is text-like: any text/ type, application/json, xml, yaml, csv, scripts, and any
 * application/...+json or +xml (parameters ignored, case-insensitive). */
bool conv_mime_is_text(const char *mime);
/* Writes cf's note (its name, type and size; its text when shown; a cut marked) to f. */
void conv_attachment_write(FILE *f, const struct conv_file *cf);
/* conv_turn_fn of a task (ctx: its struct task_ctx): the user turn's text, then a note per
 * attached file, read as the task's tenant, with at most llm.attachment_max_bytes (or file_max
 * when smaller) of their text. */
json_t *conv_attached_turn(void *ctx, json_t *row, size_t file_max, bool with_text);

/* The policy recheck (issue 6): conversation.send and llm.invoke asked again as the sender. */
struct recheck {
	char session[80], model[160];
	json_t *send_ctx, *llm_ctx; /* owned until recheck_outcome */
	struct policy_input in;	    /* points into this struct, t and cfg */
	struct policy_decision d;
	bool budget; /* the tenant has LLM tokens left (asked when policy allows) */
};

/* Asks policy and the token budget for t (fills rk; release it with conv_recheck_outcome). */
void conv_recheck_ask(struct task_ctx *t, const struct llm_config *cfg, struct recheck *rk);
/* Frees rk's contexts; with outcome, audits a deny and returns the event that replaces the reply
 * (policy.denied, or the budget's assistant.error; caller owns), NULL when the reply may be made. */
json_t *conv_recheck_outcome(struct task_ctx *t, struct recheck *rk, bool outcome);

/* What a recall brought (issue 5). */
struct recalled {
	json_t *results; /* [{score, payload, source}] or NULL */
	bool degraded;	 /* memory_recall's *degraded */
	bool asked;	 /* a recall was made (else the query comes from the context) */
};

/* Recalls up to memory.recall_top_k + 1 memories for query into out. */
void conv_recall(struct task_ctx *t, const char *query, struct recalled *out);
/* The recalled memories not already in rows (recalling now for the newest user message of rows
 * when the task carried none) as one system message in *message (caller owns; NULL: none), and
 * returns what the reply's metadata carries: {somabrain_state, somabrain_reason, memory:{recalled,
 * top_k, degraded}} (caller owns). Consumes rc's results. */
json_t *conv_recall_memories(struct task_ctx *t, json_t *rows, struct recalled *rc, json_t **message);
/* Inserts the memories message (borrowed; NULL: nothing) after the system prompt of messages. */
void conv_insert_memories(json_t *messages, json_t *memories);

/* The event of type (a literal needing no escape: "assistant.thinking", "assistant.delta") of the
 * reply generation_id with message text (len bytes; not UTF-8: an empty message, as before) and
 * metadata {stream_index (left out when < 0), generation_id}, as json_out writes chat_event_new's
 * event (conversation_delta.c). Malloc'd text (caller frees) and its length in *out_len (may be
 * NULL); NULL when an id is not UTF-8 or memory ran out. */
/* assistant.final's metadata {status, model, usage:{input_tokens, output_tokens}, finish_reason,
 * generation_id, deltas} (owned by the caller); NULL when a string is not UTF-8 or memory ran out,
 * as json_pack gave it. */
json_t *conv_final_meta(const char *status, const char *model, const char *finish, const char *generation_id,
			int64_t deltas, int64_t input_tokens, int64_t output_tokens);
/* ---- a long reply's deltas merged (conversation_delta.c) ---- */
/* A session's resume log holds BUS_LOG_MAX (4096) entries: a reply publishes its first
 * CONV_DELTA_EACH chunks one delta each (short replies are unchanged), then merges the chunks
 * that come within CONV_DELTA_FAST_MS of the last delta into one, and after CONV_DELTA_SLOW deltas
 * within CONV_DELTA_SLOW_MS: 1024 + 2048 deltas cover 200 s of a fast provider and the last 1024
 * another 17 minutes, so a stream resumed anywhere in a long reply finds all of it. */
#define CONV_DELTA_EACH	   1024	 /* deltas published one per provider chunk */
#define CONV_DELTA_SLOW	   3072	 /* deltas after which merged ones go out once a second */
#define CONV_DELTA_FAST_MS 100	 /* time between merged deltas, before CONV_DELTA_SLOW */
#define CONV_DELTA_SLOW_MS 1000	 /* time between merged deltas, after it */
#define CONV_DELTA_BYTES   65536 /* held text is published when the next chunk would pass this */

/* Text of a generation's reply not yet published (merged deltas). */
struct conv_held {
	char *text;	  /* the held bytes (CONV_DELTA_BYTES allocated on first use; owned) */
	size_t len;	  /* bytes held */
	uint64_t last_ns; /* clock_mono_ns() of the last delta published (once CONV_DELTA_EACH are near) */
};
/* Milliseconds between two deltas once `published` were published: 0 (each chunk at once) below
 * CONV_DELTA_EACH, then CONV_DELTA_FAST_MS, from CONV_DELTA_SLOW on CONV_DELTA_SLOW_MS. */
int64_t conv_delta_interval_ms(int64_t published);
/* Whether h's held text is due (some is held and the interval since the last delta passed). */
bool conv_held_due(const struct conv_held *h, int64_t published, uint64_t now_ns);
/* Appends len bytes to h; false (nothing added) when they do not fit in CONV_DELTA_BYTES with what
 * is held or memory ran out. */
bool conv_held_add(struct conv_held *h, const char *text, size_t len);
/* Frees h's buffer (h itself is the caller's). */
void conv_held_free(struct conv_held *h);

struct generation;
/* A content chunk of g's reply (borrowed): published as one assistant.delta now, or held to be
 * merged with the next ones (see CONV_DELTA_EACH). Worker thread of the task. */
void conv_delta_add(struct generation *g, const char *text, size_t len);
/* Publishes g's held text as one assistant.delta (nothing when none is held): before anything
 * else of the generation is published or committed, and when it is due (conv_held_due). */
void conv_delta_flush(struct generation *g);

/* ---- traces (conversation_trace.c) ---- */
/* conversation.process itself (conversation.c); task_conversation_process runs it inside its
 * CONSUMER span. */
enum task_outcome conv_process(struct task_ctx *t);
/* Starts the CLIENT span of one LLM call (a child of the task's span) in *span; returns the
 * traceparent to send (in tp) or NULL when tracing is off. */
const char *conv_llm_span_start(struct trace_span *span, const struct llm_config *cfg, char tp[TRACEPARENT_LEN + 1]);
/* Ends it with the call's outcome (no-op when it did not start). */
void conv_llm_span_end(struct trace_span *span, const struct llm_result *res);
char *conv_event_text(const char *session_id, const char *type, const char *generation_id, int64_t stream_index,
		      const char *text, size_t len, size_t *out_len);

/* ---- one reply and its context read (conversation.c, conversation_context.c) ---- */
#define MAX_REDO 8 /* early start: provider calls for one task before it runs again later */

struct generation {
	struct task_ctx *task;	   /* the running task */
	int64_t base_seq;	   /* last committed seq when the generation started */
	int64_t stream_index;	   /* deltas published so far */
	struct conv_held held;	   /* reply text not yet published: merged deltas (conversation_delta.c) */
	char bus_key[BUS_KEY_MAX]; /* where its events go live */
	int64_t read_seq;	   /* the session's last seq as the context read saw it */
	bool appended;		   /* early start: the message was added to a context read before its commit */
	bool opened;		   /* thinking is published: deltas may follow */
	bool redo;		   /* early start: the read missed events before the message: read and call again */
	bool dropped;		   /* early start: the message did not commit: publish and store nothing */
	enum soma_err reread;	   /* early start: the error of the second context read (SOMA_OK: none) */
	char *thinking;		   /* early start: assistant.thinking, formatted before the call (owned) */
	bool early_opened;	   /* early start: the gate's hook published it (read after a gate wait) */
	bool budget_spent;	   /* tool rounds: the token budget ran out before a later call */
	bool context_full;	   /* tool rounds: the calls and results no longer fit the context */
};

/* A context read in flight: the worker waits on it (the op's done signals). */
struct context_read {
	pthread_mutex_t lock; /* guards done */
	pthread_cond_t cv;    /* signalled when done */
	bool done;	      /* the op completed */
};

/* Submits the context read of t (done: cr is signalled). probe: the read may come before the
 * message commits (early start), so the message is only looked for; else a read that does not
 * find it says the message is gone (SOMA_ERR_NOT_FOUND). NULL when it could not (t->error says). */
struct store_op *conv_context_submit(struct task_ctx *t, struct context_read *cr, bool probe);
/* Waits until the read of cr is done. */
void conv_context_wait(struct context_read *cr);
/* Takes the finished read op's rows into *rows (owned) for g (see conversation_context.c);
 * returns the read's error. */
enum soma_err conv_context_take(struct generation *g, struct store_op *op, json_t **rows);
/* Reads the context again after the message committed (early start, redo): *rows (owned). */
enum soma_err conv_context_reread(struct generation *g, json_t **rows);
/* The user message the task answers (the payload's event_id) into op->reply_to: the store refuses
 * a context read or a reply once a session reset has erased it (SOMA_ERR_NOT_FOUND). */
void conv_reply_to(const struct task_ctx *t, struct store_op *op);

/* ---- function calling (conversation_tools.c) ---- */
/* "tools":[..],"tool_choice":"auto" for llm_request.extra (static, made on first use; never
 * freed), or NULL: llm.tools is off, or no tool is enabled. Any thread. */
const char *conv_tools_extra(void);
/* The tool rounds of g's reply, after its first call (req, cb) gave res with tool calls: runs
 * them, appends the assistant's and the tools' messages to messages (borrowed) and calls again,
 * up to llm.max_tool_rounds, the last call without tools. res ends as the last call's outcome
 * with the text of all rounds and the usage summed. Returns SOMA_OK, or the store's error when a
 * tool event could not be committed (SOMA_ERR_NOT_FOUND: the session is gone). */
enum soma_err conv_tool_rounds(struct generation *g, const struct llm_config *cfg, struct llm_request *req,
			       const struct llm_callbacks *cb, json_t *messages, struct llm_result *res);

/* ---- bounds of function calling (conversation_bounds.c) ---- */
/* v (borrowed) when its compact JSON text is at most max bytes (a new reference), else a smaller
 * value that fits, marked "truncated":true with a "truncated_note" naming
 * llm.max_tool_result_chars: an object keeps its members with its longest strings cut (on a UTF-8
 * boundary); anything else is {"partial": the start of its JSON text}. Caller owns; NULL on OOM. */
json_t *conv_bound_value(const json_t *v, size_t max);
enum conv_fit {
	CONV_FITS,	/* the messages fit llm.max_context_tokens */
	CONV_DROPPED,	/* they fit once older turns of the history were dropped */
	CONV_LEFT_OUT,	/* they fit once some of the round's tool results were left out */
	CONV_TOO_LARGE, /* they do not fit even without the history and the round's results */
};
/* Measures messages (every content and tool call's arguments, 4 bytes a token) against
 * llm.max_context_tokens; when over, first removes the oldest turns between the leading system
 * messages and the reply's own user message (the last user message before index round_from),
 * whole turns, then replaces the contents of the tool messages from round_from on, largest
 * first, with a "left out: no room" error until they fit. The reply's own messages are kept. */
enum conv_fit conv_fit_messages(json_t *messages, size_t round_from);
/* The bytes the context read leaves for the tool rounds: none when no tools are offered, else
 * llm.max_tool_result_chars and 1 KB, at most a quarter of llm.max_context_tokens*4. */
size_t conv_tool_room(void);
/* The assistant.error of a spent token budget (limits.llm_tokens_per_day) for t. Caller owns. */
json_t *conv_budget_event(struct task_ctx *t);
/* The assistant.error llm_context_exceeded of a reply whose tool calls and results no longer fit
 * llm.max_context_tokens. Caller owns. */
json_t *conv_context_event(struct task_ctx *t);

#endif
