/*
 * test_memory_rows.c - the memory rows of chat events (src/store/memory_rows.c).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "store/memory_rows.h"

/* ---- the memory body of a chat event (src/store/memory_rows.c), built member by member: the
 * bytes json_pack's format gave */
static json_t *ref_event_row(const char *tenant, const char *session_id, json_t *event)
{
	json_t *persona = json_object_get(event, "persona_id");
	return json_pack("{s:{s:s, s:s, s:O, s:O, s:s, s:O, s:{s:s}, s:O}, s:[s]}", "value", "id",
			 json_string_value(json_object_get(event, "event_id")), "type", "conversation_event", "role",
			 json_object_get(event, "role"), "content", json_object_get(event, "message"), "session_id",
			 session_id, "persona_id", persona ? persona : json_null(), "metadata", "tenant", tenant,
			 "created_at", json_object_get(event, "created_at"), "tags", "conversation");
}

static void same_event_row(const char *event_json)
{
	json_t *event = json_loads(event_json, 0, NULL), *body = NULL;
	cr_assert_not_null(event, "%s", event_json);
	const char *key = NULL;
	enum soma_err err = memory_event_row("t\xc3\xa9", "s-1", event, &body, &key);
	json_t *want = ref_event_row("t\xc3\xa9", "s-1", event);
	if (!want) { /* json_pack refused it (a member missing): so does the builder */
		cr_assert_eq(err, SOMA_ERR_NOMEM, "%s", event_json);
		cr_assert_null(body);
	} else {
		cr_assert_eq(err, SOMA_OK, "%s", event_json);
		char *a = json_dumps(want, JSON_COMPACT), *b = json_dumps(body, JSON_COMPACT);
		cr_assert_str_eq(b, a, "%s", event_json);
		cr_assert_str_eq(key, json_string_value(json_object_get(event, "event_id")));
		free(a), free(b);
	}
	json_decref(want), json_decref(body), json_decref(event);
}

Test(memory_rows, a_chat_events_memory_body_is_what_json_pack_built)
{
	same_event_row("{\"event_id\":\"e1\",\"type\":\"user\",\"role\":\"user\",\"message\":\"hi \\u00e9 \\\"q\\\"\","
		       "\"persona_id\":null,\"created_at\":\"2026-11-29T03:00:00.000Z\",\"metadata\":{}}");
	same_event_row(
		"{\"event_id\":\"e2\",\"type\":\"user\",\"role\":\"user\",\"message\":\"x\",\"persona_id\":\"p\","
		"\"created_at\":\"2026-11-29T03:00:00.000Z\"}");
	same_event_row("{\"event_id\":\"e3\",\"type\":\"user\",\"role\":\"user\",\"message\":\"no persona member\","
		       "\"created_at\":\"2026-11-29T03:00:00.000Z\"}");
	same_event_row("{\"event_id\":\"e4\",\"type\":\"assistant.final\",\"role\":\"assistant\",\"message\":\"done\","
		       "\"created_at\":\"c\",\"metadata\":{\"status\":\"completed\"}}");
	same_event_row("{\"event_id\":\"e5\",\"type\":\"user\",\"role\":\"user\",\"message\":\"no created_at\"}");
	/* not memories: a stopped reply, other event types */
	const char *none[] = {
		"{\"event_id\":\"e6\",\"type\":\"assistant.final\",\"role\":\"assistant\",\"message\":\"m\","
		"\"created_at\":\"c\",\"metadata\":{\"status\":\"stopped\"}}",
		"{\"event_id\":\"e7\",\"type\":\"assistant.delta\",\"role\":\"assistant\",\"message\":\"m\"}"};
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		json_t *event = json_loads(none[i], 0, NULL), *body = NULL;
		const char *key = NULL;
		cr_assert_eq(memory_event_row("t", "s", event, &body, &key), SOMA_OK);
		cr_assert_null(body, "%s", none[i]);
		json_decref(event);
	}
}

/* ---- the text a memory is found by and shown by (memory_value_text) */
Test(memory_rows, value_text)
{
	static const char *const cases[][2] = {
		{"{\"content\":\"c\",\"text\":\"t\"}", "c"},
		{"{\"text\":\"the secret code word is pumpernickel\"}", "the secret code word is pumpernickel"},
		{"{\"content\":7,\"text\":\"t\"}", "t"},
		{"{\"word\":\"zwieback\",\"kind\":\"code word\"}", "{\"word\":\"zwieback\",\"kind\":\"code word\"}"},
		{"\"a string\"", "\"a string\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = json_loads(cases[i][0], JSON_DECODE_ANY, NULL);
		char *got = memory_value_text(v);
		cr_assert_str_eq(got, cases[i][1], "%s", cases[i][0]);
		free(got);
		json_decref(v);
	}
	cr_assert_null(memory_value_text(NULL));
}
