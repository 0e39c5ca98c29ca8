/*
 * test_llm_ask.c - a /v1/chat/completions body read from its text (src/gateway/llm_ask.c): what it
 * reads as the tree path would (llm_routes.c), and which bodies it leaves to the tree path.
 *
 * DESIGN: each body is read into a bare request (only its body set); a body the text reader takes
 * must give the values the tree path takes from it, and the provider's body it writes must be the
 * JSON the client asked for, with our defaults where the client left them to us.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/llm_ask.h"

static enum llm_ask_result read_body(const char *text, struct llm_ask *a)
{
	struct http_req req;
	memset(&req, 0, sizeof(req));
	req.body = text;
	req.body_len = strlen(text);
	return llm_ask_read(&req, a);
}

/* The provider's body for text (read on the text path), as a tree. */
static json_t *upstream(const char *text)
{
	struct llm_ask a;
	cr_assert_eq(read_body(text, &a), LLM_ASK_OK, "%s: not read from its text", text);
	char *out = llm_ask_upstream(&a, "configured-model");
	cr_assert_not_null(out);
	json_t *j = json_loads(out, JSON_REJECT_DUPLICATES, NULL);
	cr_assert_not_null(j, "not JSON: %s", out);
	free(out);
	return j;
}

#define M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

Test(llm_ask, an_empty_or_null_model_asks_for_the_configured_one)
{
	const char *bodies[] = {"{" M "}", "{" M ",\"model\":null}", "{" M ",\"model\":\"\"}"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		json_t *j = upstream(bodies[i]);
		cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "configured-model", "%s", bodies[i]);
		json_decref(j);
	}
	json_t *j = upstream("{" M ",\"model\":\"m\\u00e9\"}");
	cr_assert_str_eq(json_string_value(json_object_get(j, "model")), "m\xc3\xa9");
	json_decref(j);
}

Test(llm_ask, a_persona_is_read_as_the_tree_reads_it)
{
	/* the tree path: json_string_value - a string ("" too) is a persona, anything else none */
	struct {
		const char *body;
		bool has;
		const char *id;
	} cases[] = {{"{" M "}", false, ""},
		     {"{" M ",\"persona_id\":\"\"}", true, ""},
		     {"{" M ",\"persona_id\":\"p\\u0031\"}", true, "p1"},
		     {"{" M ",\"persona_id\":7}", false, ""},
		     {"{" M ",\"persona_id\":null}", false, ""}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct llm_ask a;
		cr_assert_eq(read_body(cases[i].body, &a), LLM_ASK_OK, "%s", cases[i].body);
		cr_assert_eq(a.has_persona, cases[i].has, "%s", cases[i].body);
		cr_assert_str_eq(a.persona_id, cases[i].id, "%s", cases[i].body);
	}
}

Test(llm_ask, a_body_that_fails_a_check_is_left_to_the_tree_path)
{
	/* the tree path answers each: which fault it names first is its own (a repeated key anywhere
	 * is its 400, before the 422 of an earlier bad message) */
	const char *bodies[] = {
		"{\"messages\":[{\"role\":\"bad\",\"content\":\"\"},{\"role\":\"user\",\"role\":\"user\",\"content\":"
		"\"\"}]}",
		"{" M ",\"stream\":1,\"stream_options\":{\"a\":1,\"a\":2}}",
		"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"type\":\"text\"}]}],"
		"\"temperature\":5}",
		"{\"messages\":[]}",
		"{\"messages\":[1]}",
		"{" M ",\"stream\":\"yes\"}",
		"{" M ",\"max_tokens\":0}",
		"{" M ",\"model\":7}",
		"{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct llm_ask a;
		cr_assert_eq(read_body(bodies[i], &a), LLM_ASK_USE_TREE, "%s", bodies[i]);
	}
}

Test(llm_ask, a_long_conversation_is_read_from_its_text)
{
	/* 4096 messages, ~160 KB: the most the tree path takes, all on the text path */
	size_t n = 4096, cap = n * 40 + 64, at = 0;
	char *body = malloc(cap);
	at += (size_t)snprintf(body + at, cap - at, "{\"messages\":[");
	for (size_t i = 0; i < n; i++)
		at += (size_t)snprintf(body + at, cap - at, "%s{\"role\":\"user\",\"content\":\"m%zu\"}", i ? "," : "",
				       i);
	snprintf(body + at, cap - at, "]}");
	struct llm_ask a;
	cr_assert_eq(read_body(body, &a), LLM_ASK_OK);
	/* one more: the tree path's limit, its answer */
	size_t end = strlen(body) - 2;
	snprintf(body + end, cap - end, ",{\"role\":\"user\",\"content\":\"x\"}]}");
	cr_assert_eq(read_body(body, &a), LLM_ASK_USE_TREE);
	free(body);
}
