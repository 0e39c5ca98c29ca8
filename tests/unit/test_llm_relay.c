/*
 * test_llm_relay.c - a relay's streamed reply (src/llm/call.c, llm_call_body) passes the same bytes
 * on whether plain events go out whole (llm_callbacks.on_events) or chunk by chunk (on_chunk):
 * the same frames in the same order, the same usage, finish and relayed flags, wherever the
 * provider's reads are cut.
 *
 * DESIGN: a relay here writes what the proxy writes: on_chunk as `data: <chunk>\n\n` (a usage-only
 * chunk marked), on_events as it came. Each stream is fed whole, split at every point, and in
 * random pieces, with and without on_events, and the outputs compared.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "llm/llm_int.h"

struct relay {
	char out[16384];   /* what the client would get */
	size_t len;	   /* bytes in out */
	int chunks, whole; /* on_chunk calls, on_events calls */
	size_t events;	   /* events passed whole */
	int stop_at;	   /* on_events returns false at this call (1-based), 0: never */
};

static void put(struct relay *r, const char *s, size_t n)
{
	cr_assert_lt(r->len + n, sizeof(r->out));
	memcpy(r->out + r->len, s, n);
	r->len += n;
}

static bool on_chunk(void *ctx, const char *json, size_t len, bool usage_only)
{
	struct relay *r = ctx;
	r->chunks++;
	put(r, usage_only ? "usage: " : "data: ", usage_only ? 7 : 6);
	put(r, json, len);
	put(r, "\n\n", 2);
	return true;
}

static bool on_events(void *ctx, const char *sse, size_t len, size_t count)
{
	struct relay *r = ctx;
	if (++r->whole == r->stop_at)
		return false;
	size_t events = 0; /* count: the events in the piece */
	for (const char *p = sse; (p = memmem(p, (size_t)(sse + len - p), "\n\n", 2)) != NULL; p += 2)
		events++;
	cr_assert_eq(count, events);
	r->events += count;
	put(r, sse, len);
	return true;
}

struct outcome {
	struct relay r;
	bool ok, done, got_token, stopped;
	int64_t in_tokens, out_tokens;
};

/* Feeds text in the pieces that cuts (ascending offsets, ncuts of them) give. */
static void run(const char *text, const size_t *cuts, int ncuts, bool whole, int stop_at, struct outcome *o)
{
	memset(o, 0, sizeof(*o));
	o->r.stop_at = stop_at;
	struct llm_request req = {.stream = true};
	struct llm_callbacks cb = {.on_chunk = on_chunk, .on_events = whole ? on_events : NULL, .ctx = &o->r};
	struct llm_result res = {.input_tokens = -1, .output_tokens = -1};
	struct llm_call c = {.req = &req, .cb = &cb, .res = &res};
	cr_assert(llm_call_reset(&c));
	c.status = 200;
	size_t len = strlen(text), at = 0;
	o->ok = true;
	for (int i = 0; i <= ncuts && o->ok; i++) {
		size_t to = i < ncuts ? cuts[i] : len;
		o->ok = llm_call_body(&c, text + at, to - at);
		at = to;
	}
	sse_parser_deinit(&c.sse);
	o->done = c.done, o->got_token = c.got_token, o->stopped = c.stopped;
	o->in_tokens = res.input_tokens, o->out_tokens = res.output_tokens;
}

static void same(const struct outcome *a, const struct outcome *b, const char *what)
{
	cr_assert_eq(a->ok, b->ok, "%s: ok", what);
	cr_assert_eq(a->done, b->done, "%s: done", what);
	cr_assert_eq(a->got_token, b->got_token, "%s: relayed", what);
	cr_assert_eq(a->in_tokens, b->in_tokens, "%s: prompt tokens", what);
	cr_assert_eq(a->out_tokens, b->out_tokens, "%s: completion tokens", what);
	cr_assert(a->r.len == b->r.len && memcmp(a->r.out, b->r.out, a->r.len) == 0,
		  "%s: other bytes:\n%.*s\n---\n%.*s", what, (int)a->r.len, a->r.out, (int)b->r.len, b->r.out);
}

#define C "\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\""
/* What providers send: plain events, and events of other forms among them. */
static const char *const streams[] = {
	"data: {" C ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w\xc3\xb6rld\"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
	"data: {" C ",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
	"data: [DONE]\n\n",
	/* a comment, no space after the colon, CRLF line ends, a value over two lines, an event field */
	": keep-alive\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
	"data:{" C ",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\r\n\r\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"d\"}}]}\n\n"
	"data: {" C ",\ndata: \"choices\":[{\"delta\":{\"content\":\"e\"}}]}\n\n"
	"data: {" C ",\"choices\":[]\ndata: {\"x\":1}}\n\n"
	"event: x\ndata: {" C ",\"choices\":[{\"delta\":{\"content\":\"f\"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"g\"}}]}\r\r"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"h \\\"usage\\\": {}\"}}]}\n\n"
	"data: {" C ",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9},\"choices\":[{\"delta\":{},"
	"\"finish_reason\":\"length\"}]}\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"after\"}}]}\n\n",
	/* a BOM first, and an event that is not JSON */
	"\xef\xbb\xbf"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
	"data: not json\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"y\"}}]}\n\n",
	/* no events at all, then one cut short at the end */
	"\n\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"z\"}}]}\n\n"
	"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"cut",
};

Test(llm_relay, plain_events_relayed_whole_give_the_same_bytes_wherever_the_reads_are_cut)
{
	for (size_t s = 0; s < sizeof(streams) / sizeof(streams[0]); s++) {
		const char *text = streams[s];
		size_t len = strlen(text);
		struct outcome a, b;
		run(text, NULL, 0, false, 0, &a);
		run(text, NULL, 0, true, 0, &b);
		same(&a, &b, "fed whole");
		for (size_t cut = 1; cut < len; cut++) {
			run(text, &cut, 1, true, 0, &b);
			same(&a, &b, "split once");
		}
		srand(20261129 + (unsigned)s);
		for (int round = 0; round < 300; round++) {
			size_t cuts[64];
			int n = 0;
			for (size_t at = 0; n < 64;) {
				at += 1 + (size_t)(rand() % (round % 2 ? 40 : 300));
				if (at >= len)
					break;
				cuts[n++] = at;
			}
			run(text, cuts, n, true, 0, &b);
			same(&a, &b, "random pieces");
		}
	}
}

Test(llm_relay, a_read_of_plain_events_goes_out_in_one_piece)
{
	struct outcome o;
	run(streams[0], NULL, 0, true, 0, &o);
	cr_assert_eq(o.r.whole, 1, "the four plain events before the usage chunk: one piece");
	cr_assert_eq(o.r.events, 4);
	cr_assert_eq(o.r.chunks, 1, "only the usage chunk is read ([DONE] is the relay's own)");
	cr_assert(o.done && o.got_token);
	cr_assert_eq(o.in_tokens, 5);
	cr_assert_eq(o.out_tokens, 2);
	/* the finish inside the plain events ends the reply even with no [DONE] or usage after it */
	const char *finish = "data: {" C ",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
	run(finish, NULL, 0, true, 0, &o);
	cr_assert_eq(o.r.whole, 1);
	cr_assert(o.done);
	/* a string that mentions a key is content, not a finish */
	const char *mention =
		"data: {" C ",\"choices\":[{\"delta\":{\"content\":\"\\\"finish_reason\\\":\\\"x\\\"\"}}]}\n\n";
	run(mention, NULL, 0, true, 0, &o);
	cr_assert_eq(o.r.whole, 1);
	cr_assert_not(o.done);
}

Test(llm_relay, a_relay_that_stops_stops_the_transfer)
{
	struct outcome o;
	run(streams[0], NULL, 0, true, 1, &o);
	cr_assert_not(o.ok, "the transfer goes on after the relay said stop");
	cr_assert(o.stopped);
	cr_assert_eq(o.r.len, 0);
}

Test(llm_relay, a_new_attempt_starts_with_nothing_seen)
{
	struct llm_request req = {.stream = true};
	struct relay r = {0};
	struct llm_callbacks cb = {.on_chunk = on_chunk, .on_events = on_events, .ctx = &r};
	struct llm_result res = {.input_tokens = -1, .output_tokens = -1};
	struct llm_call c = {.req = &req, .cb = &cb, .res = &res};
	cr_assert(llm_call_reset(&c));
	c.status = 200;
	cr_assert(llm_call_body(&c, "data: [DONE]\n\n", 14));
	cr_assert(c.done);
	sse_parser_deinit(&c.sse); /* the attempt broke; the call retries */
	cr_assert(llm_call_reset(&c));
	cr_assert_not(c.done, "an earlier attempt's [DONE] would let a retry's cut stream pass as whole");
	sse_parser_deinit(&c.sse);
}
