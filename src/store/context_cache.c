/*
 * context_cache.c - the conversation context kept in memory (see context_cache.h for the design:
 * who fills an entry, who keeps it current, why a fill can be refused).
 *
 * Layout: a fixed table of buckets, each with an epoch and a chain of entries; every entry is
 * also on one LRU list (most recent first) that eviction takes from the tail. An entry's rows
 * are a JSON array, newest turn first, that nobody changes once the entry holds it. A committed
 * turn joins the entry's own list of fresh turns (the writer thread's only work for it); the next
 * read of the entry makes the new array, sharing the older rows: building it at each commit copied
 * up to cap rows twice per message on the writer thread, which bounds ingest.
 */
#include "store/context_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/str.h"

#define ROW_OVERHEAD 64 /* bytes counted per turn besides its text (jansson's object, array slot) */

struct ctx_entry {
	struct ctx_entry *chain;	 /* next entry of the same bucket */
	struct ctx_entry *newer, *older; /* LRU list */
	uint32_t hash;			 /* of tenant and session */
	int64_t seq;			 /* the session's last seq the rows reflect */
	int64_t cap;			 /* the read's limit: rows holds at most cap turns */
	json_t *rows;			 /* [{role, content, id}] newest first; shared, never changed */
	json_t *fresh;			 /* turns newer than rows, oldest first; owned, or NULL */
	size_t bytes;			 /* text of the rows plus ROW_OVERHEAD each */
	char tenant[STORE_ID_MAX + 1];	 /* key */
	char session[STORE_ID_MAX + 1];	 /* key */
};

struct ctx_cache {
	pthread_mutex_t lock;			     /* guards everything below */
	struct ctx_entry *chains[CTX_CACHE_BUCKETS]; /* hash table */
	uint64_t epochs[CTX_CACHE_BUCKETS];	     /* commits that touched a session of the bucket */
	struct ctx_entry *newest, *oldest;	     /* LRU list ends */
	int64_t entries;			     /* entries held */
	size_t bytes;				     /* sum of the entries' bytes */
	int64_t hits, misses;			     /* counters (ctx_cache_stats) */
};

struct ctx_cache *ctx_cache_new(void)
{
	struct ctx_cache *c = calloc(1, sizeof(*c));
	if (c)
		pthread_mutex_init(&c->lock, NULL);
	return c;
}

void ctx_cache_free(struct ctx_cache *c)
{
	if (!c)
		return;
	for (struct ctx_entry *e = c->newest, *next; e; e = next) {
		next = e->older;
		json_decref(e->rows);
		json_decref(e->fresh);
		free(e);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static uint32_t key_hash(const char *tenant, const char *session)
{
	/* "\xff" between the parts: ("ab", "c") and ("a", "bc") differ */
	return str_hash_more(str_hash_more(str_hash(tenant), "\xff"), session);
}

static struct ctx_entry *find_locked(struct ctx_cache *c, uint32_t h, const char *tenant, const char *session)
{
	for (struct ctx_entry *e = c->chains[h & (CTX_CACHE_BUCKETS - 1)]; e; e = e->chain)
		if (e->hash == h && strcmp(e->session, session) == 0 && strcmp(e->tenant, tenant) == 0)
			return e;
	return NULL;
}

static void lru_unlink(struct ctx_cache *c, struct ctx_entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push(struct ctx_cache *c, struct ctx_entry *e)
{
	e->older = c->newest;
	e->newer = NULL;
	if (c->newest)
		c->newest->newer = e;
	c->newest = e;
	if (!c->oldest)
		c->oldest = e;
}

static void remove_locked(struct ctx_cache *c, struct ctx_entry *e)
{
	struct ctx_entry **p = &c->chains[e->hash & (CTX_CACHE_BUCKETS - 1)];
	while (*p != e)
		p = &(*p)->chain;
	*p = e->chain;
	lru_unlink(c, e);
	c->entries--;
	c->bytes -= e->bytes;
	json_decref(e->rows);
	json_decref(e->fresh);
	free(e);
}

static size_t row_bytes(const json_t *row)
{
	return json_string_length(json_object_get(row, "content")) + ROW_OVERHEAD;
}

/* Makes e->rows hold its fresh turns: the newest cap turns of both, newest first. The byte count
 * loses the turns that fall off at the cap (the kept ones are counted already). Lock held; false
 * when out of memory (the entry is unchanged). */
static bool merge_locked(struct ctx_cache *c, struct ctx_entry *e)
{
	if (!e->fresh)
		return true;
	size_t nf = json_array_size(e->fresh), n = json_array_size(e->rows), cap = (size_t)e->cap;
	size_t kept_fresh = nf < cap ? nf : cap, kept_old = n < cap - kept_fresh ? n : cap - kept_fresh;
	json_t *rows = json_array();
	bool ok = rows != NULL;
	for (size_t i = nf; ok && i > nf - kept_fresh; i--)
		ok = json_array_append(rows, json_array_get(e->fresh, i - 1)) == 0;
	for (size_t i = 0; ok && i < kept_old; i++)
		ok = json_array_append(rows, json_array_get(e->rows, i)) == 0;
	if (!ok) {
		json_decref(rows);
		return false;
	}
	size_t dropped = 0;
	for (size_t i = 0; i < nf - kept_fresh; i++)
		dropped += row_bytes(json_array_get(e->fresh, i));
	for (size_t i = kept_old; i < n; i++)
		dropped += row_bytes(json_array_get(e->rows, i));
	e->bytes -= dropped;
	c->bytes -= dropped;
	json_decref(e->rows);
	json_decref(e->fresh);
	e->rows = rows;
	e->fresh = NULL;
	return true;
}

json_t *store_turn_row(const char *role, json_t *content, const char *event_id, json_t *attachments)
{
	json_t *msg = json_object(), *row = json_object();
	bool ok = msg && row && content && json_object_set_new_nocheck(msg, "role", json_string(role)) == 0 &&
		  json_object_set_nocheck(msg, "content", content) == 0 &&
		  json_object_set_nocheck(row, "role", json_object_get(msg, "role")) == 0 &&
		  json_object_set_nocheck(row, "content", content) == 0 &&
		  json_object_set_new_nocheck(row, "id", json_string(event_id ? event_id : "")) == 0 &&
		  json_object_set_nocheck(row, "msg", msg) == 0 &&
		  (!json_array_size(attachments) || json_object_set_nocheck(row, "attachments", attachments) == 0);
	json_decref(msg);
	json_decref(content);
	json_decref(attachments);
	if (!ok) {
		json_decref(row);
		return NULL;
	}
	return row;
}

/* Where reply_to is among e's rows (newest first): its index, or -1. Lock held. */
static long reply_index(const struct ctx_entry *e, const char *reply_to)
{
	for (size_t i = 0; i < json_array_size(e->rows); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(e->rows, i), "id")) ?: "", reply_to) == 0)
			return (long)i;
	return -1;
}

bool ctx_cache_get(struct ctx_cache *c, const char *tenant, const char *session, int64_t limit, const char *reply_to,
		   bool reply_absent, json_t **rows, int64_t *seq, bool *seen)
{
	if (!c || limit < 1)
		return false;
	uint32_t h = key_hash(tenant, session);
	pthread_mutex_lock(&c->lock);
	struct ctx_entry *e = find_locked(c, h, tenant, session);
	if (e && !merge_locked(c, e)) { /* out of memory: the next read fills it again */
		remove_locked(c, e);
		e = NULL;
	}
	int64_t n = e ? (int64_t)json_array_size(e->rows) : 0;
	/* the context ends at the message answered: a read returns the turns up to it. Not among the
	 * rows: fine when it was not committed yet (nothing after it either), else the database says */
	long from = e && reply_to && *reply_to ? reply_index(e, reply_to) : 0;
	if (seen)
		*seen = e && reply_to && *reply_to && from >= 0;
	if (from < 0 && reply_absent)
		from = 0;
	/* it holds what a read would return: limit turns from there, or all of the session's (the
	 * entry has fewer than its cap) */
	if (!e || from < 0 || (n - from < limit && n >= e->cap)) {
		c->misses++;
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	if (from == 0 && limit >= n) {
		*rows = json_incref(e->rows);
	} else { /* a slice: from the message answered, or a smaller limit than the entry's */
		*rows = json_array();
		for (int64_t i = from; *rows && i < n && i < from + limit; i++)
			json_array_append(*rows, json_array_get(e->rows, (size_t)i));
	}
	*seq = e->seq;
	lru_unlink(c, e);
	lru_push(c, e);
	c->hits++;
	pthread_mutex_unlock(&c->lock);
	return *rows != NULL;
}

uint64_t ctx_cache_mark(struct ctx_cache *c, const char *tenant, const char *session)
{
	if (!c)
		return 0;
	uint32_t h = key_hash(tenant, session);
	pthread_mutex_lock(&c->lock);
	uint64_t epoch = c->epochs[h & (CTX_CACHE_BUCKETS - 1)];
	pthread_mutex_unlock(&c->lock);
	return epoch;
}

/* Drops the least recently used entries until the limits hold. Lock held. */
static void evict_locked(struct ctx_cache *c)
{
	while (c->oldest && (c->entries > CTX_CACHE_MAX_ENTRIES || c->bytes > CTX_CACHE_MAX_BYTES))
		remove_locked(c, c->oldest);
}

void ctx_cache_fill(struct ctx_cache *c, uint64_t mark, const char *tenant, const char *session, int64_t limit,
		    json_t *rows, int64_t seq)
{
	if (!c || !rows || limit < 1 || strlen(tenant) > STORE_ID_MAX || strlen(session) > STORE_ID_MAX)
		return;
	size_t bytes = 0;
	for (size_t i = 0; i < json_array_size(rows); i++)
		bytes += row_bytes(json_array_get(rows, i));
	uint32_t h = key_hash(tenant, session);
	pthread_mutex_lock(&c->lock);
	if (c->epochs[h & (CTX_CACHE_BUCKETS - 1)] != mark) { /* a commit may have been missed: no fill */
		pthread_mutex_unlock(&c->lock);
		return;
	}
	struct ctx_entry *e = find_locked(c, h, tenant, session);
	if (e) /* unchanged since the read began: this read is as new, and its limit may be larger */
		remove_locked(c, e);
	e = calloc(1, sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	*e = (struct ctx_entry){.hash = h, .seq = seq, .cap = limit, .rows = json_incref(rows), .bytes = bytes};
	memcpy(e->tenant, tenant, strlen(tenant) + 1);
	memcpy(e->session, session, strlen(session) + 1);
	struct ctx_entry **chain = &c->chains[h & (CTX_CACHE_BUCKETS - 1)];
	e->chain = *chain;
	*chain = e;
	lru_push(c, e);
	c->entries++;
	c->bytes += bytes;
	evict_locked(c);
	pthread_mutex_unlock(&c->lock);
}

/* The turn an event adds to the context, as the store's read builds it (store_turn_row: the
 * content being the event's message, "" without one; a user event's attachment ids), or NULL when the event is not a
 * turn. *unusable when it is a turn whose message a read would return differently (not a string). */
static json_t *turn_of(const json_t *event, bool *unusable)
{
	const char *type = json_string_value(json_object_get(event, "type"));
	*unusable = false;
	if (!type || (strcmp(type, "user") != 0 && strcmp(type, "assistant.final") != 0))
		return NULL;
	json_t *msg = json_object_get(event, "message");
	json_t *content;
	if (!msg || json_is_null(msg))
		content = json_string("");
	else if (!json_is_string(msg))
		return *unusable = true, NULL;
	else if (strlen(json_string_value(msg)) == json_string_length(msg))
		content = json_incref(msg); /* shared with the op's event: nobody changes it after the commit */
	else				    /* SQLite's text ends at the first NUL, as the read returns it */
		content = json_string(json_string_value(msg));
	json_t *att = json_object_get(event, "attachments"); /* shared too: nobody changes it */
	json_t *row = store_turn_row(type[0] == 'u' ? "user" : "assistant", content,
				     json_string_value(json_object_get(event, "event_id")),
				     type[0] == 'u' && json_is_array(att) ? json_incref(att) : NULL);
	*unusable = row == NULL;
	return row;
}

/* Adds the turn (or only the seq) of a committed event that follows the entry to its fresh turns;
 * past cap of them, they are merged into its rows here, so the list stays short for an entry
 * nobody reads. Lock held. */
static void append_locked(struct ctx_cache *c, struct ctx_entry *e, const struct store_op *op)
{
	bool unusable;
	json_t *row = turn_of(op->event, &unusable);
	if (unusable) {
		remove_locked(c, e);
		return;
	}
	e->seq = op->seq;
	if (!row)
		return;
	size_t bytes = row_bytes(row);
	if ((!e->fresh && !(e->fresh = json_array())) || json_array_append_new(e->fresh, row) != 0) {
		if (!e->fresh)
			json_decref(row);
		remove_locked(c, e);
		return;
	}
	e->bytes += bytes;
	c->bytes += bytes;
	if ((int64_t)json_array_size(e->fresh) >= e->cap && !merge_locked(c, e)) {
		remove_locked(c, e);
		return;
	}
	evict_locked(c);
}

void ctx_cache_note(struct ctx_cache *c, const struct store_op *op)
{
	bool event = op->event_text && op->event && op->seq > 0;
	bool gone = op->kind == STORE_OP_SESSION_DELETE || op->kind == STORE_OP_SESSION_RESET;
	if (!c || op->err != SOMA_OK || (!event && !gone))
		return;
	uint32_t h = key_hash(op->tenant, op->session_id);
	pthread_mutex_lock(&c->lock);
	c->epochs[h & (CTX_CACHE_BUCKETS - 1)]++;
	struct ctx_entry *e = find_locked(c, h, op->tenant, op->session_id);
	if (e && (gone || op->seq != e->seq + 1))
		remove_locked(c, e); /* reset, deleted, or an event it did not see: read it again */
	else if (e)
		append_locked(c, e, op);
	pthread_mutex_unlock(&c->lock);
}

void ctx_cache_stats(struct ctx_cache *c, int64_t *entries, int64_t *hits, int64_t *misses)
{
	*entries = *hits = *misses = 0;
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	*entries = c->entries;
	*hits = c->hits;
	*misses = c->misses;
	pthread_mutex_unlock(&c->lock);
}
