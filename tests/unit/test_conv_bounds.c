/*
 * test_conv_bounds.c - conv_bound_value (src/tasks/conversation_bounds.c): a value within the cap
 * is the same value; a larger object keeps its members with its longest string cut on a UTF-8
 * boundary and marked truncated; anything else becomes {partial, truncated, truncated_note}; every
 * outcome fits the cap.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
