/*
 * test_conv_delta.c - the assistant.delta and assistant.thinking texts written directly
 * (src/tasks/conversation_delta.c)
 * must be the bytes the event built by chat_event_new and dumped by json_out had: same members in
 * the same order, same escapes, an empty message for text that is not UTF-8, and no event for an
 * session id that is not UTF-8. Only event_id and created_at differ between two builds; they are checked
 * for their form and then taken from the reference.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/json_out.h"
#include "tasks/conversation_int.h"

/* The delta (index >= 0) or thinking (index < 0) as conversation.c built it before
 * conversation_delta.c (the reference). */
static char *reference(const char *sid, const char *gid, int64_t index, const char *text, size_t len, json_t **event)
{
	json_t *meta = index >= 0 ? json_pack("{s:I, s:s}", "stream_index", (json_int_t)index, "generation_id", gid)
				  : json_pack("{s:s}", "generation_id", gid);
	json_t *ev =
		chat_event_new(sid, "assistant", index >= 0 ? "assistant.delta" : "assistant.thinking", "", NULL, meta);
	if (ev)
		json_object_set_new(ev, "message", json_stringn(text, len));
	*event = ev;
	return ev ? json_out(ev, 0, NULL) : NULL;
}

static void same(const char *sid, const char *gid, int64_t index, const char *text, size_t len)
{
	json_t *want_ev = NULL;
	char *want = reference(sid, gid, index, text, len, &want_ev);
	size_t got_len = 0;
	char *got = conv_event_text(sid, index >= 0 ? "assistant.delta" : "assistant.thinking", gid, index, text, len,
				    &got_len);
	if (!want) {
		cr_assert_null(got, "the reference made no event, conv_delta_text made %s", got);
		return;
	}
	cr_assert_not_null(got, "conv_delta_text refused what the reference wrote: %s", want);
	cr_assert_eq(got_len, strlen(got));
	json_t *got_ev = json_loads(got, JSON_ALLOW_NUL, NULL);
	cr_assert_not_null(got_ev, "not JSON: %s", got);
	const char *id = json_string_value(json_object_get(got_ev, "event_id"));
	const char *created = json_string_value(json_object_get(got_ev, "created_at"));
	cr_assert(id && strlen(id) == 36, "event_id: %s", got);
	cr_assert(created && strlen(created) == 24 && created[23] == 'Z', "created_at: %s", got);
	/* same position, the reference's values: the rest must then be byte for byte the same */
	json_object_set(got_ev, "event_id", json_object_get(want_ev, "event_id"));
	json_object_set(got_ev, "created_at", json_object_get(want_ev, "created_at"));
	char *again = json_out(got_ev, 0, NULL);
	cr_assert_str_eq(again, want);
	free(again);
	json_decref(got_ev);
	json_decref(want_ev);
	free(want);
	free(got);
}

Test(conv_delta, plain_text_is_the_reference_event)
{
	same("s1", "0193a0e0-0000-7000-8000-000000000001", 0, "Hello ", 6);
	same("session_with-dash", "g", 41, "world.", 6);
	same("s1", "g", 10, "x", 1);
	same("s1", "g", INT64_MAX, "x", 1);
}

Test(conv_delta, escapes_and_utf8_as_the_reference)
{
	const char text[] = "quote \" backslash \\ / newline \n tab \t cr \r ctl \x01\x1f del \x7f "
			    "é € 😀";
	same("s1", "g1", 7, text, sizeof(text) - 1);
	same("s1", "g1", 8, "a\0b", 3); /* a NUL inside the chunk */
	same("s1", "g1", 9, "", 0);
}

Test(conv_delta, text_that_is_not_utf8_gives_an_empty_message)
{
	same("s1", "g1", 1, "\xff\xfe ok", 5);
	same("s1", "g1", 2, "\xe2\x82", 2); /* a cut multi-byte character */
	char *got = conv_event_text("s1", "assistant.delta", "g1", 1, "\xff", 1, NULL);
	json_t *ev = json_loads(got, 0, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(ev, "message")), "");
	json_decref(ev);
	free(got);
}

Test(conv_delta, ids_with_escapes_or_not_utf8)
{
	same("s\"1\\", "g\n1", 3, "x", 1);
	same("s\xff", "g1", 3, "x", 1); /* no event, as the reference */
	/* (ids come from the task's JSON, so they are UTF-8; one that is not gives no event here,
	 * where the reference published the delta with empty metadata) */
	cr_assert_null(conv_event_text("s1", "assistant.delta", "g\xff", 0, "x", 1, NULL));
	cr_assert_null(conv_event_text(NULL, "assistant.delta", "g1", 0, "x", 1, NULL));
	cr_assert_null(conv_event_text("s1", "assistant.delta", NULL, 0, "x", 1, NULL));
}

Test(conv_delta, thinking_is_the_reference_event)
{
	same("s1", "0193a0e0-0000-7000-8000-000000000001", -1, "", 0);
	same("s\"2", "g\t", -1, "", 0);
}

/* assistant.final's metadata as the json_pack of commit c0993bb built it: same text, and NULL
 * where it failed (a model name cut inside a UTF-8 character). */
static void final_meta_same(const char *status, const char *model, const char *finish, int64_t deltas, int64_t in,
			    int64_t out)
{
	json_t *want =
		json_pack("{s:s, s:s, s:o, s:s, s:s, s:I}", "status", status, "model", model, "usage",
			  json_pack("{s:I, s:I}", "input_tokens", (json_int_t)in, "output_tokens", (json_int_t)out),
			  "finish_reason", finish, "generation_id", "gen-1", "deltas", (json_int_t)deltas);
	json_t *got = conv_final_meta(status, model, finish, "gen-1", deltas, in, out);
	if (!want) {
		cr_assert_null(got, "%s: metadata where json_pack failed", model);
		return;
	}
	char *w = json_out(want, 0, NULL), *g = got ? json_out(got, 0, NULL) : NULL;
	cr_assert_not_null(g, "%s: no metadata", model);
	cr_assert_str_eq(g, w);
	free(w);
	free(g);
	json_decref(want);
	json_decref(got);
}

Test(conv_delta, final_metadata_is_the_packed_one)
{
	final_meta_same("completed", "bench", "stop", 2, 5, 7);
	final_meta_same("cancelled", "m\xc3\xa9 \"q\"", "length", 0, 0, 0);
	final_meta_same("completed", "cut \xc3", "stop", 1, 1, 1);
	final_meta_same("completed", "", "", INT64_MAX, INT64_MAX, 0);
}
