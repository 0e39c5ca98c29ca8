/*
 * test_chunk_scan.c - a streamed chunk read without a tree (src/llm/chunk_scan.c) must give the
 * fields jansson gives for the same text, and must hand back (false) what it cannot read that way.
 *
 * DESIGN: each chunk is read by llm_chunk_scan and by jansson (the fields call.c's fallback
 * takes); when the scan accepts, every field must be equal.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "llm/chunk_scan.h"

static void str_same(const char *got, const char *want, const char *what, const char *text)
{
	if (!want)
		cr_assert_null(got, "%s: %s should be absent", text, what);
	else {
		cr_assert_not_null(got, "%s: %s missing", text, what);
		cr_assert_str_eq(got, want, "%s: %s", text, what);
	}
}

/* Scans text; when scanned is expected, compares with jansson's reading. */
static void check(const char *text, bool scanned)
{
	char buf[256];
	struct llm_chunk f;
	bool ok = llm_chunk_scan(text, strlen(text), buf, sizeof(buf), &f);
	cr_assert_eq(ok, scanned, "%s: scanned %d", text, ok);
	if (!ok)
		return;
	json_t *j = json_loads(text, 0, NULL);
	cr_assert_not_null(j, "%s: the scan read what jansson refuses", text);
	json_t *usage = json_object_get(j, "usage"), *groq = json_object_get(json_object_get(j, "x_groq"), "usage");
	json_t *counted = json_is_object(usage) ? usage : groq,
	       *choice = json_array_get(json_object_get(j, "choices"), 0);
	json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
	json_t *in = json_object_get(counted, "prompt_tokens"), *out = json_object_get(counted, "completion_tokens");
	str_same(f.model, json_string_value(json_object_get(j, "model")), "model", text);
	str_same(f.content, json_string_value(content), "content", text);
	if (f.content)
		cr_assert_eq(f.content_len, json_string_length(content), "%s: content length", text);
	str_same(f.finish, json_string_value(json_object_get(choice, "finish_reason")), "finish_reason", text);
	cr_assert_eq(f.usage, json_is_object(usage), "%s: usage", text);
	json_t *choices = json_object_get(j, "choices");
	cr_assert_eq(f.no_choices, json_is_array(choices) && json_array_size(choices) == 0, "%s: no_choices", text);
	cr_assert_eq(f.has_in, json_is_object(counted) && json_is_integer(in), "%s: prompt_tokens", text);
	cr_assert_eq(f.has_out, json_is_object(counted) && json_is_integer(out), "%s: completion_tokens", text);
	if (f.has_in)
		cr_assert_eq(f.in_tokens, json_integer_value(in));
	if (f.has_out)
		cr_assert_eq(f.out_tokens, json_integer_value(out));
	json_decref(j);
}

Test(chunk_scan, same_fields_as_jansson)
{
	check("{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{"
	      "\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}",
	      true);
	check("{\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}",
	      true);
	check("{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", true);
	check("{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}", true);
	check("{\"choices\":[ \n ],\"usage\":{}}", true);
	check("{\"choices\":[[]]}", true);
	check("{\"usage\":{\"prompt_tokens\":5.5,\"completion_tokens\":\"2\"}}", true);
	check("{\"usage\":null,\"model\":7,\"choices\":{\"delta\":{\"content\":\"x\"}}}", true);
	check("{\"choices\":[{\"delta\":{\"content\":\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00 \xc3\xa9\"}}]}", true);
	check("{\"choices\":[{\"delta\":{\"content\":\"first\",\"content\":\"last\"},\"finish_reason\":\"length\"}]}",
	      true);
	check(" \n{\"choices\":[{\"delta\":{\"content\":null}},{\"delta\":{\"content\":\"second\"}}]} ", true);
	check("{\"choices\":[[1],{\"delta\":{\"content\":\"x\"}}]}", true);
	check("{\"model\":\"\",\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"\"}]}", true);
}

/* Groq gives the usage in x_groq.usage of the last chunk (interop.md 2.5): counted, though the
 * chunk is no usage chunk; a top-level usage is taken before it */
Test(chunk_scan, groq_usage_in_x_groq)
{
	static const char groq[] =
		"{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\","
		"\"usage\":{\"queue_time\":0.01,\"prompt_tokens\":11,\"completion_tokens\":4}}}";
	char buf[256];
	struct llm_chunk f;
	cr_assert(llm_chunk_scan(groq, strlen(groq), buf, sizeof(buf), &f));
	cr_assert(f.has_in && f.has_out && f.in_tokens == 11 && f.out_tokens == 4);
	cr_assert(!f.usage && !f.no_choices, "not a usage chunk: relayed as any other");
	check(groq, true);
	check("{\"x_groq\":{\"id\":\"req_1\"},\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", true);
	check("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"x_groq\":{\"usage\":{\"prompt_tokens\":9}}}",
	      true);
	check("{\"x_groq\":{\"usage\":[1]}}", true);
	check("{\"x_groq\":7}", true);
	cr_assert(llm_chunk_peek(groq, strlen(groq)) & LLM_PEEK_USAGE, "a relay reads the chunk");
}

Test(chunk_scan, hands_back_what_it_cannot_read)
{
	check("[\"not an object\"]", false);
	check("{\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"escaped key\"}}]}", false);
	check("{\"mod\\u0065l\":\"escaped top key\"}", false);
	check("{\"choices\":[{\"delta\":{\"content\":\"cut", false);
	check("{\"choices\":[{\"delta\":{\"content\":\"\\u0000\"}}]}", false);
	check("not json", false);
	check("", false);
	char big[400];
	memset(big, 'x', sizeof(big));
	memcpy(big, "{\"choices\":[{\"delta\":{\"content\":\"", 33);
	memcpy(big + sizeof(big) - 8, "\"}}]}", 6);
	check(big, false); /* content longer than the 256-byte buffer */
}

/* Strings of random bytes among those the check looks at (quotes, escapes, controls, UTF-8 leads
 * and continuations, long plain runs): the scan reads a chunk exactly when jansson does, with the
 * same fields. */
Test(chunk_scan, random_strings_are_read_as_jansson_reads_them)
{
	static const char *const atoms[] = {"a",
					    "plain text run ",
					    "\"",
					    "\\",
					    "\\\"",
					    "\\n",
					    "\\u00e9",
					    "\\ud83d\\ude00",
					    "\\ud83d",
					    "\\u0000",
					    "\\x",
					    "\x01",
					    "\x7f",
					    "\xc3\xa9",
					    "\xc3",
					    "\xa9",
					    "\xe2\x82\xac",
					    "\xed\xa0\x80",
					    "\xc0\xaf",
					    "\xf0\x9f\x8c\x8d",
					    "\xf4\x90\x80\x80",
					    "\t"};
	srand(1128);
	for (int round = 0; round < 20000; round++) {
		char text[200];
		int n = snprintf(text, sizeof(text), "{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"");
		for (int a = rand() % 8; a > 0; a--) {
			const char *s = atoms[rand() % (sizeof(atoms) / sizeof(atoms[0]))];
			n += snprintf(text + n, sizeof(text) - (size_t)n, "%s", s);
		}
		snprintf(text + n, sizeof(text) - (size_t)n, "\"}}]}");
		char buf[256];
		struct llm_chunk f;
		bool ok = llm_chunk_scan(text, strlen(text), buf, sizeof(buf), &f);
		json_t *j = json_loads(text, 0, NULL);
		cr_assert_eq(ok, j != NULL, "round %d: scanned %d, jansson %d: %s", round, ok, j != NULL, text);
		json_decref(j);
		if (ok)
			check(text, true);
	}
}

/* What a relay's byte search finds (llm_chunk_peek): usage with an object, a finish reason with a
 * string, however spaced; a content that talks about those keys (its quotes escaped), a value that
 * is the word itself, or a null finish reason finds nothing. */
Test(chunk_scan, peek)
{
	const struct {
		const char *chunk;
		unsigned want;
	} cases[] = {
		{"{\"choices\":[],\"usage\":{\"prompt_tokens\":5}}", LLM_PEEK_USAGE},
		{"{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}", LLM_PEEK_FINISH},
		{"{\"choices\":[{\"delta\":{},\"finish_reason\" : \n \"tool_calls\"}]}", LLM_PEEK_FINISH},
		{"{\"choices\":[{\"finish_reason\":null},{\"finish_reason\":\"length\"}]}", LLM_PEEK_FINISH},
		{"{\"choices\":[{\"finish_reason\":\"stop\"}],\"usage\" :{}}", LLM_PEEK_USAGE | LLM_PEEK_FINISH},
		{"{\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}", 0},
		{"{\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"x\":\"finish_reason\"}", 0},
		{"{\"choices\":[{\"delta\":{\"content\":\"say \\\"usage\\\":{ or \\\"finish_reason\\\":\\\"x\\\"\"}}]}",
		 0},
		{"{\"choices\":[],\"usage\":null}", 0},
		{"{\"choices\":[{\"delta\":{},\"finish_reason\"", 0},
		{"{\"choices\":[{\"delta\":{},\"finish_reason\":", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(llm_chunk_peek(cases[i].chunk, strlen(cases[i].chunk)), cases[i].want, "%s",
			     cases[i].chunk);
}
