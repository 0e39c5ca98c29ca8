/*
 * test_conv_bounds.c - conv_bound_value (src/tasks/conversation_bounds.c): a value within the cap
 * is the same value; a larger object keeps its members with its longest string cut on a UTF-8
 * boundary and marked truncated; anything else becomes {partial, truncated, truncated_note}; every
 * outcome fits the cap. conv_fit_messages: over llm.max_context_tokens, the oldest whole turns of
 * the history go first (the system messages, the reply's user message and its rounds kept), then
 * the round's largest results are left out, and only calls that can never fit are too large.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "tasks/conversation_int.h"

static size_t len_of(const json_t *v)
{
	return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

Test(conv_bounds, small_value_is_kept)
{
	json_t *v = json_pack("{s:s}", "text", "short");
	json_t *out = conv_bound_value(v, 1000);
	cr_assert(out == v);
	json_decref(out);
	json_decref(v);
}

Test(conv_bounds, object_string_cut_on_a_character_boundary)
{
	size_t n = 50000;
	char *big = malloc(2 * n + 1);
	for (size_t i = 0; i < n; i++)
		memcpy(big + 2 * i, "\xC3\xA9", 2); /* e acute */
	big[2 * n] = '\0';
	json_t *v = json_pack("{s:s, s:i}", "text", big, "status", 200);
	for (size_t max = 1000; max < 1010; max++) {
		json_t *out = conv_bound_value(v, max);
		cr_assert_not_null(out); /* jansson refuses strings that are not UTF-8 */
		cr_assert_leq(len_of(out), max);
		cr_assert(json_is_true(json_object_get(out, "truncated")));
		cr_assert_eq(json_integer_value(json_object_get(out, "status")), 200);
		const char *t = json_string_value(json_object_get(out, "text"));
		cr_assert_gt(strlen(t), 300);
		cr_assert(strncmp(t, big, strlen(t)) == 0);
		cr_assert_not_null(
			strstr(json_string_value(json_object_get(out, "truncated_note")), "llm.max_tool_result_chars"));
		json_decref(out);
	}
	json_decref(v);
	free(big);
}

Test(conv_bounds, array_and_escapes_become_partial)
{
	json_t *arr = json_array();
	for (int i = 0; i < 2000; i++)
		json_array_append_new(arr, json_string("\"\x01\""));
	json_t *out = conv_bound_value(arr, 1500);
	cr_assert_not_null(out);
	cr_assert_leq(len_of(out), 1500);
	cr_assert(json_is_true(json_object_get(out, "truncated")));
	cr_assert_gt(json_string_length(json_object_get(out, "partial")), 100);
	json_decref(out);
	json_t *obj = json_pack("{s:o}", "items", arr); /* an object of no long string: partial too */
	out = conv_bound_value(obj, 1500);
	cr_assert_leq(len_of(out), 1500);
	cr_assert_not_null(json_object_get(out, "partial"));
	json_decref(out);
	json_decref(obj);
}

static void tokens(const char *set)
{
	static char *const no_env[] = {NULL};
	const char *sets[] = {set};
	struct cfg_load_opts o = {.sets = sets, .nsets = 1, .env = no_env};
	struct cfg_errors errs = {0};
	cfg_unload();
	cr_assert_eq(cfg_load(&o, &errs), SOMA_OK, "%s", errs.count ? errs.lines[0] : "");
}

/* {role, content: n bytes of c} */
static json_t *msg(const char *role, char c, size_t n)
{
	char *text = malloc(n + 1);
	memset(text, c, n);
	text[n] = '\0';
	json_t *m = json_pack("{s:s, s:s}", "role", role, "content", text);
	free(text);
	return m;
}

static json_t *call(size_t args)
{
	json_t *m = msg("assistant", 'c', 1);
	char *text = malloc(args + 1);
	memset(text, 'x', args);
	text[args] = '\0';
	json_object_set_new(m, "tool_calls",
			    json_pack("[{s:s, s:s, s:{s:s, s:s}}]", "id", "c1", "type", "function", "function", "name",
				      "echo", "arguments", text));
	free(text);
	return m;
}

/* the first letters of the messages' contents (a tool call's: 'c') */
static void assert_left(json_t *messages, const char *want)
{
	char got[32] = "";
	json_t *m;
	size_t i;
	json_array_foreach(messages, i, m) got[i] = json_string_value(json_object_get(m, "content"))[0];
	cr_assert_str_eq(got, want);
}

/* system S, memories M, turns 1/A and 2/B (800 bytes each), the user's message U (500), this
 * reply's call and its result T (n bytes); budget 4000 bytes */
static json_t *conversation(size_t args, size_t result)
{
	json_t *m = json_array();
	json_array_append_new(m, msg("system", 'S', 100));
	json_array_append_new(m, msg("system", 'M', 100));
	json_array_append_new(m, msg("user", '1', 800));
	json_array_append_new(m, msg("assistant", 'A', 800));
	json_array_append_new(m, msg("user", '2', 800));
	json_array_append_new(m, msg("assistant", 'B', 800));
	json_array_append_new(m, msg("user", 'U', 500));
	json_array_append_new(m, call(args));
	json_array_append_new(m, msg("tool", 'T', result));
	return m;
}

Test(conv_bounds, the_oldest_turns_give_way_first)
{
	tokens("llm.max_context_tokens=1000");
	json_t *m = conversation(100, 200); /* 4204 bytes: one turn goes */
	cr_assert_eq(conv_fit_messages(m, 7), CONV_DROPPED);
	assert_left(m, "SM2BUcT");
	json_decref(m);
	m = conversation(100, 1900); /* the whole history goes, the result stays */
	cr_assert_eq(conv_fit_messages(m, 7), CONV_DROPPED);
	assert_left(m, "SMUcT");
	json_decref(m);
	cfg_unload();
}

Test(conv_bounds, then_the_results_are_left_out)
{
	tokens("llm.max_context_tokens=1000");
	json_t *m = conversation(100, 3500);
	cr_assert_eq(conv_fit_messages(m, 7), CONV_LEFT_OUT);
	assert_left(m, "SMUc{");
	cr_assert_not_null(strstr(json_string_value(json_object_get(json_array_get(m, 4), "content")), "no room"));
	json_decref(m);
	m = conversation(5000, 10); /* the call's own arguments can never fit */
	cr_assert_eq(conv_fit_messages(m, 7), CONV_TOO_LARGE);
	json_decref(m);
	cfg_unload();
}

Test(conv_bounds, the_earlier_rounds_of_the_reply_are_kept)
{
	tokens("llm.max_context_tokens=1000");
	json_t *m = conversation(100, 200);
	json_array_append_new(m, call(100));
	json_array_append_new(m, msg("tool", 'R', 600)); /* round 2: 4904 bytes */
	cr_assert_eq(conv_fit_messages(m, 9), CONV_DROPPED);
	assert_left(m, "SM2BUcTcR");
	json_decref(m);
	m = json_array(); /* no history: nothing to drop, the result left out */
	json_array_append_new(m, msg("user", 'U', 3000));
	json_array_append_new(m, call(100));
	json_array_append_new(m, msg("tool", 'T', 1000));
	cr_assert_eq(conv_fit_messages(m, 1), CONV_LEFT_OUT);
	assert_left(m, "Uc{");
	json_decref(m);
	cfg_unload();
}
