/*
 * context_cache.h - the conversation context kept in memory (SQLite store only): the last turns
 * of recently read sessions, so a conversation turn does not read them from the database again.
 * Store-internal (exec.c and sqlite_exec.c use it; callers see STORE_OP_CONTEXT only).
 *
 * DESIGN: an entry is filled from a STORE_OP_CONTEXT read on a reader thread, then kept equal to
 * what that read would return by the writer thread after every commit: an event of the session
 * whose seq follows the entry's seq is added to it (a turn: user or assistant.final) or only
 * counted (any other type); an event with any other seq, a reset or a delete drops the entry.
 * That holds as long as every event of the session is committed by this process's writer: true
 * on SQLite, where one process owns data.dir (store_tasks_recover relies on it too). PostgreSQL,
 * shared by many nodes, has no cache (its store's cache pointer stays NULL).
 *
 * A read races the writer: events committed after the read's snapshot and before its fill would
 * be missing from the entry. Each hash bucket counts the commits that touched one of its sessions
 * (its epoch); a fill is kept only if the bucket's epoch did not move since before the read
 * began (ctx_cache_mark). Then no event of the session can have been committed after the
 * snapshot yet have been noted before the entry existed.
 *
 * Rows are shared, never changed: an entry's array is replaced (not edited) when a turn is
 * added, and a reader of the cache gets a reference to it (jansson's reference counts are
 * atomic). Bounded: CTX_CACHE_MAX_ENTRIES sessions and CTX_CACHE_MAX_BYTES of text; the least
 * recently used entries go first. One mutex; the writer's part is a hash lookup per event.
 */
#ifndef SOMA_STORE_CONTEXT_CACHE_H
#define SOMA_STORE_CONTEXT_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#define CTX_CACHE_MAX_ENTRIES 4096	  /* sessions kept */
#define CTX_CACHE_MAX_BYTES   (32u << 20) /* text kept, with a per-turn overhead (64 bytes) */
#define CTX_CACHE_BUCKETS     8192	  /* power of two */

struct ctx_cache;

/* A new empty cache (NULL on OOM: the store then reads every context). Free with ctx_cache_free. */
struct ctx_cache *ctx_cache_new(void);
/* Frees the cache and drops its references to the rows. Accepts NULL. */
void ctx_cache_free(struct ctx_cache *c);

/* The context of (tenant, session) when the cache holds what a read would return: *rows gets a
 * new reference to the turns, newest first (the caller decrefs it and must not change it), *seq
 * the session's last seq. reply_to: the event id of the message the context ends at (turns
 * committed after it are left out: a task answers its own message, not a later one), or NULL or
 * "" for the newest turns. reply_absent: reply_to was not committed when the read was asked (an
 * early start), so an entry without it holds every turn before it. *seen: the rows hold reply_to.
 * False on a miss (the database reads it). Any thread; c may be NULL. */
bool ctx_cache_get(struct ctx_cache *c, const char *tenant, const char *session, int64_t limit, const char *reply_to,
		   bool reply_absent, json_t **rows, int64_t *seq, bool *seen);

/* A turn of a context as the SQLite store gives it: {role, content, id: its event id, msg: the
 * OpenAI message {role, content}, built once and shared by every reply that sends it,
 * attachments?: the user event's attachment ids, only when it names any (the conversation task
 * reads those files into the message it sends: tasks/conversation_attach.c)}. Takes content (a
 * string) and attachments (an array, or NULL); NULL when memory ran out. */
json_t *store_turn_row(const char *role, json_t *content, const char *event_id, json_t *attachments);

/* Before a context read: the mark to give ctx_cache_fill after it. Reader thread. */
uint64_t ctx_cache_mark(struct ctx_cache *c, const char *tenant, const char *session);

/* After a context read that began after `mark`: keeps rows (a reference is taken; nobody may
 * change rows from now on; each a store_turn_row) and seq, read with
 * `limit` and no turn left out after a message (store_op.context_cut), unless a commit touched
 * the session's bucket since `mark`. Reader thread. */
void ctx_cache_fill(struct ctx_cache *c, uint64_t mark, const char *tenant, const char *session, int64_t limit,
		    json_t *rows, int64_t seq);

/* After a commit, for each op of the batch: an appended event (op->err SOMA_OK, op->event_text,
 * op->seq) updates or drops its session's entry; a session reset or delete drops it. Writer
 * thread, in commit order, before the batch's ops complete. */
void ctx_cache_note(struct ctx_cache *c, const struct store_op *op);

/* Counters for tests and metrics: entries held, hits and misses so far. */
void ctx_cache_stats(struct ctx_cache *c, int64_t *entries, int64_t *hits, int64_t *misses);

#endif
