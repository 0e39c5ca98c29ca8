/*
 * test_context_cache.c - the conversation context kept in memory (src/store/context_cache.c):
 * the cache alone (fill, the writer's notes, refused fills, limits), then through the store's
 * threads on a real SQLite database, where a context answered from memory must equal what the
 * database holds after messages, replies, a reset and a delete.
 *
 * DESIGN: the first part drives ctx_cache_* with hand-made ops, as exec.c does; the second
 * submits STORE_OP_MESSAGE / EVENT_APPEND / SESSION_RESET / SESSION_DELETE / CONTEXT ops and
 * reads the cache's counters to know whether an answer came from memory.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "helpers.h"
#include "memory/memory.h"
#include "store/context_cache.h"
#include "store/store.h"
#include "store/store_int.h"

static json_t *turn(const char *role, const char *content)
{
	return json_pack("{s:s, s:s}", "role", role, "content", content);
}

/* An op as the writer holds it after committing an event of type at seq. */
static struct store_op *event_op(const char *session, int64_t seq, const char *type, const char *message)
{
	struct store_op *op = store_op_new(STORE_OP_EVENT_APPEND, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	op->event = json_pack("{s:s, s:s}", "type", type, "message", message);
	op->event_text = strdup("{}");
	op->seq = seq;
	return op;
}

static void note_event(struct ctx_cache *c, const char *session, int64_t seq, const char *type, const char *message)
{
	struct store_op *op = event_op(session, seq, type, message);
	ctx_cache_note(c, op);
	store_op_free(op);
}

static void note_kind(struct ctx_cache *c, enum store_op_kind kind, const char *session)
{
	struct store_op *op = store_op_new(kind, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "%s", session);
	ctx_cache_note(c, op);
	store_op_free(op);
}

/* s1 filled with two turns at seq 2 (read with limit 10). */
static struct ctx_cache *filled(void)
{
	struct ctx_cache *c = ctx_cache_new();
	cr_assert_not_null(c);
	json_t *rows = json_pack("[o, o]", turn("assistant", "hi"), turn("user", "hello"));
	uint64_t mark = ctx_cache_mark(c, "t1", "s1");
	ctx_cache_fill(c, mark, "t1", "s1", 10, rows, 2);
	json_decref(rows);
	return c;
}

static const char *content_at(json_t *rows, size_t i)
{
	return json_string_value(json_object_get(json_array_get(rows, i), "content"));
}

Test(context_cache, a_fill_is_served_and_other_sessions_and_tenants_miss)
{
	struct ctx_cache *c = filled();
	json_t *rows = NULL;
	int64_t seq = 0;
	cr_assert(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	cr_assert_eq(seq, 2);
	cr_assert_eq(json_array_size(rows), 2);
	cr_assert_str_eq(content_at(rows, 0), "hi");
	json_decref(rows);
	cr_assert_not(ctx_cache_get(c, "t2", "s1", 10, NULL, false, &rows, &seq,
				    NULL)); /* another tenant's session of that id */
	cr_assert_not(ctx_cache_get(c, "t1", "s2", 10, NULL, false, &rows, &seq, NULL));
	ctx_cache_free(c);
}

Test(context_cache, the_next_event_adds_its_turn_and_other_types_only_count)
{
	struct ctx_cache *c = filled();
	note_event(c, "s1", 3, "user", "third");
	note_event(c, "s1", 4, "assistant.thinking_note", "not a turn");
	note_event(c, "s1", 5, "assistant.final", "fifth");
	json_t *rows = NULL;
	int64_t seq = 0;
	cr_assert(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	cr_assert_eq(seq, 5);
	cr_assert_eq(json_array_size(rows), 4);
	cr_assert_str_eq(content_at(rows, 0), "fifth");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "role")), "assistant");
	cr_assert_str_eq(content_at(rows, 1), "third");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 1), "role")), "user");
	json_decref(rows);
	ctx_cache_free(c);
}

/* Turns are kept as they commit and joined to the entry's rows when it is read (or once cap of
 * them wait): the answer is the newest cap turns, newest first, whatever the reads in between. */
Test(context_cache, turns_beyond_the_cap_keep_the_newest_whether_read_between_or_not)
{
	struct ctx_cache *c = ctx_cache_new();
	cr_assert_not_null(c);
	json_t *rows = json_pack("[o, o]", turn("assistant", "m2"), turn("user", "m1"));
	ctx_cache_fill(c, ctx_cache_mark(c, "t1", "s1"), "t1", "s1", 3, rows, 2);
	json_decref(rows);
	char text[16];
	for (int i = 3; i <= 9; i++) { /* 7 turns, no read: more than the cap of 3 wait */
		snprintf(text, sizeof(text), "m%d", i);
		note_event(c, "s1", i, i % 2 ? "user" : "assistant.final", text);
	}
	int64_t seq = 0;
	cr_assert(ctx_cache_get(c, "t1", "s1", 3, NULL, false, &rows, &seq, NULL));
	cr_assert_eq(seq, 9);
	cr_assert_eq(json_array_size(rows), 3);
	cr_assert_str_eq(content_at(rows, 0), "m9");
	cr_assert_str_eq(content_at(rows, 1), "m8");
	cr_assert_str_eq(content_at(rows, 2), "m7");
	json_decref(rows);
	note_event(c, "s1", 10, "assistant.final", "m10"); /* one, then a read */
	cr_assert(ctx_cache_get(c, "t1", "s1", 2, NULL, false, &rows, &seq, NULL));
	cr_assert_eq(seq, 10);
	cr_assert_eq(json_array_size(rows), 2);
	cr_assert_str_eq(content_at(rows, 0), "m10");
	cr_assert_str_eq(content_at(rows, 1), "m9");
	json_decref(rows);
	ctx_cache_free(c);
}

Test(context_cache, a_held_answer_does_not_change_when_a_turn_is_added)
{
	struct ctx_cache *c = filled();
	json_t *before = NULL, *after = NULL;
	int64_t seq = 0;
	cr_assert(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &before, &seq, NULL));
	note_event(c, "s1", 3, "user", "third");
	cr_assert_eq(json_array_size(before), 2);
	cr_assert(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &after, &seq, NULL));
	cr_assert_eq(json_array_size(after), 3);
	json_decref(before);
	json_decref(after);
	ctx_cache_free(c);
}

Test(context_cache, a_gap_in_seqs_a_reset_or_a_delete_drops_the_entry)
{
	json_t *rows = NULL;
	int64_t seq = 0;
	struct ctx_cache *c = filled();
	note_event(c, "s1", 4, "user", "an event the cache did not see came before this one");
	cr_assert_not(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	ctx_cache_free(c);

	c = filled();
	note_kind(c, STORE_OP_SESSION_RESET, "s1"); /* a reset keeps last_seq: seq 3 would follow */
	note_event(c, "s1", 3, "user", "after the reset");
	cr_assert_not(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	ctx_cache_free(c);

	c = filled();
	note_kind(c, STORE_OP_SESSION_DELETE, "s1");
	cr_assert_not(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	ctx_cache_free(c);
}

Test(context_cache, a_failed_op_changes_nothing)
{
	struct ctx_cache *c = filled();
	struct store_op *op = event_op("s1", 3, "user", "rolled back");
	op->err = SOMA_ERR_STORE;
	ctx_cache_note(c, op);
	store_op_free(op);
	json_t *rows = NULL;
	int64_t seq = 0;
	cr_assert(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &rows, &seq, NULL));
	cr_assert_eq(seq, 2);
	json_decref(rows);
	ctx_cache_free(c);
}

Test(context_cache, a_fill_after_a_commit_it_may_have_missed_is_refused)
{
	struct ctx_cache *c = ctx_cache_new();
	uint64_t mark = ctx_cache_mark(c, "t1", "s1");
	note_event(c, "s1", 3, "user", "committed while the read ran"); /* no entry yet: only counted */
	json_t *rows = json_pack("[o]", turn("user", "hello"));
	ctx_cache_fill(c, mark, "t1", "s1", 10, rows, 2);
	json_decref(rows);
	json_t *got = NULL;
	int64_t seq = 0;
	cr_assert_not(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &got, &seq, NULL),
		      "a fill that misses seq 3 was kept");
	ctx_cache_free(c);
}

Test(context_cache, a_larger_limit_misses_unless_the_entry_holds_every_turn)
{
	struct ctx_cache *c = ctx_cache_new();
	json_t *rows = json_pack("[o, o]", turn("assistant", "b"), turn("user", "a"));
	ctx_cache_fill(c, ctx_cache_mark(c, "t1", "full"), "t1", "full", 2, rows, 2); /* 2 of maybe more */
	ctx_cache_fill(c, ctx_cache_mark(c, "t1", "all"), "t1", "all", 5, rows, 2);   /* all of them */
	json_decref(rows);
	json_t *got = NULL;
	int64_t seq = 0;
	cr_assert_not(ctx_cache_get(c, "t1", "full", 3, NULL, false, &got, &seq, NULL));
	cr_assert(ctx_cache_get(c, "t1", "all", 50, NULL, false, &got, &seq, NULL));
	cr_assert_eq(json_array_size(got), 2);
	json_decref(got);
	cr_assert(ctx_cache_get(c, "t1", "full", 1, NULL, false, &got, &seq,
				NULL)); /* a smaller limit: the newest only */
	cr_assert_eq(json_array_size(got), 1);
	cr_assert_str_eq(content_at(got, 0), "b");
	json_decref(got);
	note_event(c, "full", 3, "user", "c"); /* at its cap, the oldest turn leaves */
	cr_assert(ctx_cache_get(c, "t1", "full", 2, NULL, false, &got, &seq, NULL));
	cr_assert_eq(json_array_size(got), 2);
	cr_assert_str_eq(content_at(got, 0), "c");
	cr_assert_str_eq(content_at(got, 1), "b");
	json_decref(got);
	ctx_cache_free(c);
}

Test(context_cache, entries_are_bounded_least_recently_used_first)
{
	struct ctx_cache *c = ctx_cache_new();
	json_t *rows = json_pack("[o]", turn("user", "x"));
	char id[32];
	for (int i = 0; i <= CTX_CACHE_MAX_ENTRIES; i++) {
		snprintf(id, sizeof(id), "s%d", i);
		ctx_cache_fill(c, ctx_cache_mark(c, "t1", id), "t1", id, 10, rows, 1);
		if (i == CTX_CACHE_MAX_ENTRIES - 1) { /* s0 used again: s1 is now the least recently used */
			json_t *got = NULL;
			int64_t seq;
			cr_assert(ctx_cache_get(c, "t1", "s0", 10, NULL, false, &got, &seq, NULL));
			json_decref(got);
		}
	}
	json_decref(rows);
	int64_t entries, hits, misses;
	ctx_cache_stats(c, &entries, &hits, &misses);
	cr_assert_eq(entries, CTX_CACHE_MAX_ENTRIES);
	json_t *got = NULL;
	int64_t seq;
	cr_assert(ctx_cache_get(c, "t1", "s0", 10, NULL, false, &got, &seq, NULL));
	json_decref(got);
	cr_assert_not(ctx_cache_get(c, "t1", "s1", 10, NULL, false, &got, &seq, NULL));
	ctx_cache_free(c);
}

static json_t *turn_id(const char *role, const char *content, const char *id)
{
	return json_pack("{s:s, s:s, s:s}", "role", role, "content", content, "id", id);
}

/* A task answers its own message: the context ends there, later turns left out (a reply to the
 * first of two quick messages answered the second) */
Test(context_cache, the_context_ends_at_the_message_answered)
{
	struct ctx_cache *c = ctx_cache_new();
	json_t *rows = json_pack("[o, o, o, o]", turn_id("user", "m3", "e4"), turn_id("assistant", "a1", "e3"),
				 turn_id("user", "m2", "e2"), turn_id("user", "m1", "e1"));
	ctx_cache_fill(c, ctx_cache_mark(c, "t1", "all"), "t1", "all", 10, rows, 4);  /* every turn */
	ctx_cache_fill(c, ctx_cache_mark(c, "t1", "some"), "t1", "some", 4, rows, 9); /* 4 of more */
	json_decref(rows);
	json_t *got = NULL;
	int64_t seq = 0;
	bool seen = false;
	cr_assert(ctx_cache_get(c, "t1", "all", 10, "e2", false, &got, &seq, &seen));
	cr_assert(seen);
	cr_assert_eq(json_array_size(got), 2);
	cr_assert_str_eq(content_at(got, 0), "m2");
	cr_assert_str_eq(content_at(got, 1), "m1");
	cr_assert_eq(seq, 4, "the session's last seq, whatever the rows end at");
	json_decref(got);
	cr_assert(ctx_cache_get(c, "t1", "all", 1, "e3", false, &got, &seq, &seen)); /* the limit from there */
	cr_assert_eq(json_array_size(got), 1);
	cr_assert_str_eq(content_at(got, 0), "a1");
	json_decref(got);
	cr_assert_not(ctx_cache_get(c, "t1", "all", 10, "e9", false, &got, &seq, &seen),
		      "a message not among the turns: the database tells whether it is gone");
	cr_assert(ctx_cache_get(c, "t1", "all", 10, "e9", true, &got, &seq, &seen), "not committed yet: all turns");
	cr_assert_not(seen);
	cr_assert_eq(json_array_size(got), 4);
	json_decref(got);
	cr_assert(ctx_cache_get(c, "t1", "some", 2, "e3", false, &got, &seq, &seen));
	cr_assert_eq(json_array_size(got), 2);
	cr_assert_str_eq(content_at(got, 1), "m2");
	json_decref(got);
	cr_assert_not(ctx_cache_get(c, "t1", "some", 4, "e3", false, &got, &seq, &seen),
		      "older turns than the entry holds would be needed");
	cr_assert(ctx_cache_get(c, "t1", "some", 4, "e9", true, &got, &seq, &seen), "not committed yet: the newest");
	cr_assert_eq(json_array_size(got), 4);
	json_decref(got);
	ctx_cache_free(c);
}

/* ---- through the store's threads, on SQLite ----------------------------------------------- */

static char dir[64];
static struct store *st;

static void setup(void)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {"memory.driver=builtin"}; /* the turns' memories go in with them */
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env};
	struct cfg_errors errs = {0};
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
	char why[256] = "";
	cr_assert_eq(memory_init(why, sizeof(why)), SOMA_OK, "%s", why);
	st = store_test_open(dir, sizeof(dir));
	cr_assert_not_null(st->ctx, "SQLite keeps contexts");
}

static void teardown(void)
{
	store_test_close(st, dir);
	cfg_unload();
}

static int next_event;

static void write_event(enum store_op_kind kind, const char *type, const char *message)
{
	struct store_op *op = store_op_new(kind, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	snprintf(op->subject, sizeof(op->subject), "u1");
	char id[32];
	snprintf(id, sizeof(id), "ev-%d", next_event++);
	op->event = json_pack("{s:s, s:s, s:s, s:s}", "event_id", id, "type", type, "message", message, "role",
			      type[0] == 'u' ? "user" : "assistant");
	enum soma_err err = store_op_wait(st, op);
	cr_assert_eq(err, SOMA_OK, "%s %s: %s %s", type, message, soma_err_str(err), op->error_text);
	store_op_free(op);
}

static void control(enum store_op_kind kind)
{
	struct store_op *op = store_op_new(kind, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	cr_assert_eq(store_op_wait(st, op), SOMA_OK);
	store_op_free(op);
}

/* The context of s1 as the store answers it: its turns' contents newest first, joined by '|';
 * *hit tells whether it came from memory. */
static enum soma_err context_to(const char *reply_to, char *out, size_t cap, int64_t *seq, bool *hit);

static enum soma_err context(char *out, size_t cap, int64_t *seq, bool *hit)
{
	return context_to("", out, cap, seq, hit);
}

/* The same, ending at the message reply_to (its event id; "" for the newest turns). */
static enum soma_err context_to(const char *reply_to, char *out, size_t cap, int64_t *seq, bool *hit)
{
	int64_t e, h0, h1, m;
	ctx_cache_stats(st->ctx, &e, &h0, &m);
	struct store_op *op = store_op_new(STORE_OP_CONTEXT, "t1");
	snprintf(op->session_id, sizeof(op->session_id), "s1");
	op->limit = 50;
	snprintf(op->reply_to, sizeof(op->reply_to), "%s", reply_to);
	enum soma_err err = store_op_wait(st, op);
	out[0] = '\0';
	for (size_t i = 0; err == SOMA_OK && i < json_array_size(op->rows); i++)
		snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "|" : "", content_at(op->rows, i));
	*seq = op->seq;
	store_op_free(op);
	ctx_cache_stats(st->ctx, &e, &h1, &m);
	*hit = h1 > h0;
	return err;
}

TestSuite(context_cache_store, .init = setup, .fini = teardown, .timeout = 60);

Test(context_cache_store, answers_from_memory_equal_the_database_through_reset_and_delete)
{
	char text[256];
	int64_t seq;
	bool hit;
	write_event(STORE_OP_MESSAGE, "user", "one");
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert_not(hit, "the first read fills the cache");
	cr_assert_str_eq(text, "one");
	write_event(STORE_OP_EVENT_APPEND, "assistant.final", "two");
	write_event(STORE_OP_EVENT_APPEND, "assistant.error", "not a turn");
	write_event(STORE_OP_MESSAGE, "user", "four");
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert(hit, "kept current by the writer");
	cr_assert_str_eq(text, "four|two|one");
	cr_assert_eq(seq, 4);

	control(STORE_OP_SESSION_RESET); /* events gone, last_seq kept */
	write_event(STORE_OP_MESSAGE, "user", "after reset");
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert_str_eq(text, "after reset", "the turns from before the reset came back");
	cr_assert_eq(seq, 5);

	control(STORE_OP_SESSION_DELETE); /* a new session of the same id starts at seq 1 */
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_ERR_NOT_FOUND);
	write_event(STORE_OP_MESSAGE, "user", "a new session");
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert_str_eq(text, "a new session");
	cr_assert_eq(seq, 1);
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert(hit);
	cr_assert_str_eq(text, "a new session");
}

/* Two quick messages: the first one's task reads after the second committed. Its context ends at
 * its own message, from the database and from memory alike. */
Test(context_cache_store, the_context_ends_at_the_message_answered)
{
	char text[256];
	int64_t seq;
	bool hit;
	next_event = 0;
	write_event(STORE_OP_MESSAGE, "user", "zero");			/* ev-0 */
	write_event(STORE_OP_EVENT_APPEND, "assistant.final", "reply"); /* ev-1 */
	write_event(STORE_OP_MESSAGE, "user", "first");			/* ev-2 */
	write_event(STORE_OP_MESSAGE, "user", "second");		/* ev-3 */
	cr_assert_eq(context_to("ev-2", text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert_str_eq(text, "first|reply|zero", "the database read gave a later message");
	cr_assert_eq(seq, 4);
	cr_assert_eq(context(text, sizeof(text), &seq, &hit), SOMA_OK); /* fills the cache */
	cr_assert_str_eq(text, "second|first|reply|zero");
	cr_assert_eq(context_to("ev-2", text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert(hit);
	cr_assert_str_eq(text, "first|reply|zero", "the cached context gave a later message");
	cr_assert_eq(context_to("ev-3", text, sizeof(text), &seq, &hit), SOMA_OK);
	cr_assert(hit);
	cr_assert_str_eq(text, "second|first|reply|zero");
	cr_assert_eq(context_to("ev-9", text, sizeof(text), &seq, &hit), SOMA_ERR_NOT_FOUND, "a message gone");
}
