/*
 * test_llm_tool_calls.c - a streamed reply's tool calls (src/llm/tool_calls.c, gathered by
 * call.c's event handler when llm_request.tool_calls asks): the same calls whole, wherever the
 * provider's reads are cut, with arguments split across chunks (inside strings and escapes),
 * two calls interleaved by index, ids and names repeated, and a bound on their number.
 *
 * DESIGN: a stream in OpenAI's wire format is fed to llm_call_body whole, split at every byte,
 * and byte by byte, and res.tool_calls compared with the calls it carries.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/llm_int.h"
#include "llm/tool_calls.h"

#define HEAD     \
	"data: " \
	"{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
#define TAIL "}]}\n\n"

static const char *STREAM = HEAD
	"{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null" TAIL HEAD
	"{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"echo\","
	"\"arguments\":\"\"}}]},\"finish_reason\":null" TAIL HEAD
	"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"te\"}}]},\"finish_reason\":null" TAIL HEAD
	"{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"now\","
	"\"arguments\":\"{}\"}}]},\"finish_reason\":null" TAIL HEAD
	"{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"echo\",\"arguments\":\"xt\\\":"
	" \\\"a\\\\\\\"b \\u00e9\"}}]},\"finish_reason\":null" TAIL HEAD
	"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"}\"}}]},\"finish_reason\":null" TAIL HEAD
	"{},\"finish_reason\":\"tool_calls\"" TAIL
	"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n"
	"data: [DONE]\n\n";

static const char *WANT = "[{\"id\": \"call_a\", \"type\": \"function\", \"function\": {\"name\": \"echo\", "
			  "\"arguments\": \"{\\\"text\\\": \\\"a\\\\\\\"b \\u00e9\\\"}\"}}, "
			  "{\"id\": \"call_b\", \"type\": \"function\", \"function\": {\"name\": \"now\", "
			  "\"arguments\": \"{}\"}}]";

/* Feeds text to a call in pieces of step bytes after a first piece of first bytes; res filled. */
static void feed(const char *text, size_t first, size_t step, bool gather, struct llm_result *res)
{
	struct llm_request req = {.stream = true, .tool_calls = gather};
	struct llm_callbacks cb = {0};
	memset(res, 0, sizeof(*res));
	struct llm_call c = {.req = &req, .cb = &cb, .res = res};
	cr_assert(llm_call_reset(&c));
	c.status = 200;
	size_t len = strlen(text), at = 0;
	for (size_t n = first; at < len; n = step) {
		size_t k = n < len - at ? n : len - at;
		llm_call_body(&c, text + at, k);
		at += k;
	}
	cr_assert(c.done, "the stream was read to its end");
	sse_parser_deinit(&c.sse);
}

static void same_calls(const struct llm_result *res, const char *how)
{
	json_t *want = json_loads(WANT, 0, NULL);
	cr_assert_not_null(want);
	char *got = res->tool_calls ? json_dumps(res->tool_calls, JSON_COMPACT) : NULL;
	cr_assert(json_equal(res->tool_calls, want), "%s: got %s", how, got ? got : "(none)");
	free(got);
	json_decref(want);
	cr_assert_str_eq(res->finish_reason, "tool_calls");
	cr_assert_eq(res->output_tokens, 7);
	cr_assert_eq(res->content_len, 0, "a tool call has no text");
}

Test(llm_tool_calls, gathered_whole_wherever_the_stream_is_cut)
{
	struct llm_result res;
	feed(STREAM, strlen(STREAM), 1, true, &res);
	same_calls(&res, "whole");
	llm_result_free(&res);
	feed(STREAM, 1, 1, true, &res);
	same_calls(&res, "byte by byte");
	llm_result_free(&res);
	for (size_t cut = 1; cut < strlen(STREAM); cut += 7) {
		char how[32];
		snprintf(how, sizeof(how), "cut at %zu", cut);
		feed(STREAM, cut, strlen(STREAM), true, &res);
		same_calls(&res, how);
		llm_result_free(&res);
	}
}

Test(llm_tool_calls, not_gathered_unless_asked)
{
	struct llm_result res;
	feed(STREAM, strlen(STREAM), 1, false, &res);
	cr_assert_null(res.tool_calls);
	cr_assert_str_eq(res.finish_reason, "tool_calls");
	llm_result_free(&res);
}

Test(llm_tool_calls, a_call_past_the_bound_stops_the_reply)
{
	struct llm_result res = {0};
	char chunk[256];
	snprintf(chunk, sizeof(chunk),
		 "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"x\","
		 "\"function\":{\"name\":\"echo\",\"arguments\":\"{}\"}}]}}]}",
		 LLM_TOOL_CALLS_MAX - 1);
	cr_assert(llm_tool_calls_in(chunk, strlen(chunk)));
	cr_assert(llm_tool_calls_feed(&res, chunk, strlen(chunk)));
	cr_assert_eq(json_array_size(res.tool_calls), LLM_TOOL_CALLS_MAX, "the calls before it are made empty");
	snprintf(chunk, sizeof(chunk),
		 "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"y\"}]}}]}",
		 LLM_TOOL_CALLS_MAX);
	cr_assert_not(llm_tool_calls_feed(&res, chunk, strlen(chunk)));
	llm_result_free(&res);
}
