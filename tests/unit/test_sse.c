/*
 * test_sse.c - the Server-Sent Events parser (src/llm/sse.c).
 *
 * DESIGN: every test feeds a stream and records the dispatched events in a struct events; a
 * stream cut into pieces anywhere (one byte at a time, every two-way split, CRLF cut in half)
 * must give exactly the events of the whole stream fed at once.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "llm/sse.h"

#define MAX_EVENTS 16

struct events {
	char data[MAX_EVENTS][256]; /* data of each dispatched event */
	size_t len[MAX_EVENTS];	    /* its length as reported */
	int n;			    /* events dispatched */
	int stop_after;		    /* return false on this event (1-based), 0: never */
};

static bool on_event(void *ctx, const char *data, size_t len)
{
	struct events *ev = ctx;
	cr_assert_lt(ev->n, MAX_EVENTS);
	cr_assert_lt(len, sizeof(ev->data[0]));
	cr_assert_eq(data[len], '\0', "event data is not NUL-terminated");
	cr_assert_eq(strlen(data), len, "reported length differs from the NUL-terminated text");
	memcpy(ev->data[ev->n], data, len + 1);
	ev->len[ev->n] = len;
	ev->n++;
	return ev->stop_after == 0 || ev->n < ev->stop_after;
}

/* Feeds the whole of text in pieces cut at the offsets in cuts (ascending, ncuts of them). */
static enum soma_err feed_cut(const char *text, const size_t *cuts, size_t ncuts, size_t max, struct events *ev)
{
	struct sse_parser p;
	cr_assert_eq(sse_parser_init(&p, max), SOMA_OK);
	size_t len = strlen(text), at = 0;
	enum soma_err err = SOMA_OK;
	for (size_t i = 0; i <= ncuts && err == SOMA_OK; i++) {
		size_t end = i < ncuts ? cuts[i] : len;
		err = sse_parser_feed(&p, text + at, end - at, on_event, ev);
		at = end;
	}
	sse_parser_deinit(&p);
	return err;
}

static enum soma_err feed_all(const char *text, size_t max, struct events *ev)
{
	return feed_cut(text, NULL, 0, max, ev);
}

static void assert_same(const struct events *a, const struct events *b, const char *how)
{
	cr_assert_eq(a->n, b->n, "%s: %d events instead of %d", how, b->n, a->n);
	for (int i = 0; i < a->n; i++) {
		cr_assert_eq(a->len[i], b->len[i], "%s: event %d length", how, i);
		cr_assert_str_eq(a->data[i], b->data[i], "%s: event %d", how, i);
	}
}

/* Several events, multi-byte UTF-8 (2, 3 and 4 bytes), a multi-line event, a comment and the
 * fields that do not matter. */
static const char *const stream_lf = "data: h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x8c\x8d\n"
				     "\n"
				     ": keep-alive comment\n"
				     "event: delta\n"
				     "id: 42\n"
				     "retry: 1000\n"
				     "data: first\n"
				     "data:second\n"
				     "data\n"
				     "\n"
				     "data: {\"choices\":[{\"delta\":{\"content\":\"\xe4\xb8\xad\"}}]}\n"
				     "\n"
				     "data: [DONE]\n"
				     "\n";

static void assert_stream_events(const struct events *ev)
{
	cr_assert_eq(ev->n, 4);
	cr_assert_str_eq(ev->data[0], "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x8c\x8d");
	cr_assert_str_eq(ev->data[1], "first\nsecond\n");
	cr_assert_str_eq(ev->data[2], "{\"choices\":[{\"delta\":{\"content\":\"\xe4\xb8\xad\"}}]}");
	cr_assert_str_eq(ev->data[3], "[DONE]");
}

/* Copies text into out with every "\n" replaced by eol. */
static void with_eol(const char *text, const char *eol, char *out, size_t cap)
{
	size_t o = 0, el = strlen(eol);
	for (const char *c = text; *c; c++) {
		const char *piece = *c == '\n' ? eol : c;
		size_t n = *c == '\n' ? el : 1;
		cr_assert_lt(o + n, cap);
		memcpy(out + o, piece, n);
		o += n;
	}
	out[o] = '\0';
}

Test(sse, whole_stream)
{
	struct events ev = {0};
	cr_assert_eq(feed_all(stream_lf, 1024, &ev), SOMA_OK);
	assert_stream_events(&ev);
}

static void check_every_split(const char *text)
{
	struct events whole = {0};
	cr_assert_eq(feed_all(text, 1024, &whole), SOMA_OK);
	size_t len = strlen(text);
	size_t cuts[2048];
	cr_assert_lt(len, sizeof(cuts) / sizeof(cuts[0]));
	for (size_t i = 0; i + 1 < len; i++)
		cuts[i] = i + 1;
	struct events bytes = {0};
	cr_assert_eq(feed_cut(text, cuts, len - 1, 1024, &bytes), SOMA_OK);
	assert_same(&whole, &bytes, "one byte at a time");
	for (size_t at = 0; at <= len; at++) {
		struct events split = {0};
		char how[64];
		snprintf(how, sizeof(how), "split at %zu", at);
		cr_assert_eq(feed_cut(text, &at, 1, 1024, &split), SOMA_OK, "%s", how);
		assert_same(&whole, &split, how);
	}
}

Test(sse, every_split_lf)
{
	check_every_split(stream_lf);
}

Test(sse, crlf_and_cr_line_endings_give_the_same_events)
{
	static const char *const eols[] = {"\r\n", "\r"};
	for (size_t i = 0; i < 2; i++) {
		char text[1024];
		with_eol(stream_lf, eols[i], text, sizeof(text));
		struct events ev = {0};
		cr_assert_eq(feed_all(text, 1024, &ev), SOMA_OK);
		assert_stream_events(&ev);
		check_every_split(text);
	}
}

Test(sse, mixed_line_endings)
{
	struct events ev = {0};
	cr_assert_eq(feed_all("data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r", 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 2);
	cr_assert_str_eq(ev.data[0], "a\nb\nc");
	cr_assert_str_eq(ev.data[1], "d");
}

Test(sse, crlf_split_between_feeds_is_one_line_end)
{
	/* a CR at the end of one feed and its LF at the start of the next must not make an empty
	 * line (which would dispatch "a" alone) */
	struct events ev = {0};
	size_t cut = strlen("data: a\r");
	cr_assert_eq(feed_cut("data: a\r\ndata: b\r\n\r\n", &cut, 1, 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 1);
	cr_assert_str_eq(ev.data[0], "a\nb");

	struct events ev2 = {0};
	size_t cuts[] = {strlen("data: x\r"), strlen("data: x\r\n"), strlen("data: x\r\n\r")};
	cr_assert_eq(feed_cut("data: x\r\n\r\n", cuts, 3, 64, &ev2), SOMA_OK);
	cr_assert_eq(ev2.n, 1);
	cr_assert_str_eq(ev2.data[0], "x");
}

Test(sse, cr_then_lf_in_next_feed_after_dispatch)
{
	/* "\r" then "\r" dispatches; the "\n" arriving later belongs to the second CR only */
	struct events ev = {0};
	size_t cut = strlen("data: a\r\r");
	cr_assert_eq(feed_cut("data: a\r\r\ndata: b\n\n", &cut, 1, 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 2);
	cr_assert_str_eq(ev.data[0], "a");
	cr_assert_str_eq(ev.data[1], "b");
}

Test(sse, data_values)
{
	struct events ev = {0};
	cr_assert_eq(feed_all("data:nospace\n\n"
			      "data:  two spaces\n\n"
			      "data: a:b: c\n\n"
			      "data:\n\n"
			      "data\n\n"
			      "data:\ndata:\n\n",
			      64, &ev),
		     SOMA_OK);
	cr_assert_eq(ev.n, 6);
	cr_assert_str_eq(ev.data[0], "nospace");
	cr_assert_str_eq(ev.data[1], " two spaces", "only one leading space is removed");
	cr_assert_str_eq(ev.data[2], "a:b: c");
	cr_assert_str_eq(ev.data[3], "", "an empty data field still makes an event");
	cr_assert_str_eq(ev.data[4], "");
	cr_assert_str_eq(ev.data[5], "\n", "two empty data lines join to one newline");
}

Test(sse, other_fields_and_comments_are_ignored)
{
	struct events ev = {0};
	cr_assert_eq(feed_all(": comment\n"
			      "event: x\n"
			      "id: 1\n"
			      "retry: 5\n"
			      "Data: upper case is another field\n"
			      "datax: a longer name\n"
			      "dat: shorter\n"
			      " data: leading space\n"
			      ":data: comment\n"
			      "data: kept\n"
			      "\n",
			      128, &ev),
		     SOMA_OK);
	cr_assert_eq(ev.n, 1);
	cr_assert_str_eq(ev.data[0], "kept");
}

Test(sse, events_without_data_are_not_dispatched)
{
	struct events ev = {0};
	cr_assert_eq(feed_all("event: ping\n\n: only a comment\n\nid: 3\n\n\n\n\n", 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 0);
	/* and an event's data does not leak into the next one */
	cr_assert_eq(feed_all("data: one\n\nevent: x\n\ndata: two\n\n", 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 2);
	cr_assert_str_eq(ev.data[0], "one");
	cr_assert_str_eq(ev.data[1], "two");
}

Test(sse, unterminated_event_is_not_dispatched)
{
	struct events ev = {0};
	cr_assert_eq(feed_all("data: a\n\ndata: half", 64, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 1);
	struct events ev2 = {0};
	cr_assert_eq(feed_all("data: whole line but no blank line\n", 64, &ev2), SOMA_OK);
	cr_assert_eq(ev2.n, 0);
}

Test(sse, line_longer_than_max_is_limit)
{
	struct events ev = {0};
	/* max 16: a line of exactly 16 bytes fits, 17 does not (even without its line end yet) */
	cr_assert_eq(feed_all("data: 0123456789\n\n", 16, &ev), SOMA_OK);
	cr_assert_eq(ev.n, 1);
	cr_assert_str_eq(ev.data[0], "0123456789");
	cr_assert_eq(feed_all(": 345678901234567", 16, &ev), SOMA_ERR_LIMIT);
	cr_assert_eq(feed_all(": a comment that is far too long\n", 16, &ev), SOMA_ERR_LIMIT);
	cr_assert_eq(ev.n, 1);
}

Test(sse, line_limit_holds_across_feeds)
{
	struct sse_parser p;
	struct events ev = {0};
	cr_assert_eq(sse_parser_init(&p, 16), SOMA_OK);
	enum soma_err err = SOMA_OK;
	for (int i = 0; i < 17 && err == SOMA_OK; i++)
		err = sse_parser_feed(&p, "x", 1, on_event, &ev);
	sse_parser_deinit(&p);
	cr_assert_eq(err, SOMA_ERR_LIMIT);
}

Test(sse, event_data_longer_than_max_is_limit)
{
	/* every line fits in 16 bytes, but together the data lines do not */
	struct events ev = {0};
	cr_assert_eq(feed_all("data: 0123456789\ndata: 0123456789\n\n", 16, &ev), SOMA_ERR_LIMIT);
	cr_assert_eq(ev.n, 0);
}

Test(sse, callback_false_stops_with_conflict)
{
	struct events ev = {.stop_after = 1};
	cr_assert_eq(feed_all("data: one\n\ndata: two\n\n", 64, &ev), SOMA_ERR_CONFLICT);
	cr_assert_eq(ev.n, 1, "the feed went on after the callback asked to stop");
	cr_assert_str_eq(ev.data[0], "one");

	struct events ev2 = {.stop_after = 2};
	cr_assert_eq(feed_all("data: one\n\ndata: two\n\ndata: three\n\n", 64, &ev2), SOMA_ERR_CONFLICT);
	cr_assert_eq(ev2.n, 2);
}

Test(sse, parser_is_reusable_after_each_event)
{
	struct sse_parser p;
	struct events ev = {0};
	cr_assert_eq(sse_parser_init(&p, 64), SOMA_OK);
	for (int i = 0; i < 10; i++) {
		char line[32];
		int n = snprintf(line, sizeof(line), "data: %d\n\n", i);
		cr_assert_eq(sse_parser_feed(&p, line, (size_t)n, on_event, &ev), SOMA_OK);
	}
	sse_parser_deinit(&p);
	sse_parser_deinit(&p); /* deinit twice is harmless (pointers are cleared) */
	cr_assert_eq(ev.n, 10);
	cr_assert_str_eq(ev.data[9], "9");
}

Test(sse, leading_bom_is_stripped)
{
	/* WHATWG 9.2.6: the stream is decoded with "UTF-8 decode", which strips one leading BOM,
	 * so the first line is the field "data", not "\xEF\xBB\xBF" "data" */
	struct events ev = {0};
	cr_assert_eq(feed_all("\xef\xbb\xbf"
			      "data: after bom\n\n",
			      64, &ev),
		     SOMA_OK);
	cr_assert_eq(ev.n, 1, "an event after a leading UTF-8 BOM was dropped");
	cr_assert_str_eq(ev.data[0], "after bom");
}

/* Records the length of each event and checks its bytes: `lines` data lines of 'x' joined by
 * newlines. */
struct big_event {
	size_t len; /* length of the last event */
	int n;	    /* events seen */
	bool ok;    /* every byte was as expected */
};

static bool on_big_event(void *ctx, const char *data, size_t len)
{
	struct big_event *b = ctx;
	b->n++;
	b->len = len;
	b->ok = data[len] == '\0';
	for (size_t i = 0; i < len && b->ok; i++)
		b->ok = data[i] == 'x' || data[i] == '\n';
	return true;
}

Test(sse, lines_and_events_grow_past_the_first_allocation)
{
	/* the buffers start at SSE_INITIAL_CAP and grow on demand up to max */
	size_t line = 3 * SSE_INITIAL_CAP / 2, max = 8 * SSE_INITIAL_CAP;
	char *text = malloc(3 * (line + 8) + 2);
	size_t at = 0;
	for (int l = 0; l < 3; l++) {
		memcpy(text + at, "data: ", 6);
		at += 6;
		memset(text + at, 'x', line);
		at += line;
		text[at++] = '\n';
	}
	text[at++] = '\n';
	struct sse_parser p;
	struct big_event b = {0};
	cr_assert_eq(sse_parser_init(&p, max), SOMA_OK);
	/* fed in small pieces, so each buffer grows several times */
	for (size_t i = 0; i < at; i += 1000)
		cr_assert_eq(sse_parser_feed(&p, text + i, at - i < 1000 ? at - i : 1000, on_big_event, &b), SOMA_OK);
	sse_parser_deinit(&p);
	free(text);
	cr_assert_eq(b.n, 1);
	cr_assert_eq(b.len, 3 * line + 2, "event of %zu bytes instead of %zu", b.len, 3 * line + 2);
	cr_assert(b.ok, "the event's bytes were damaged while the buffers grew");
}

/* A relay takes a plain event whole exactly when the parser would give it as an event: at the
 * bound the parser refuses the line, and the relay leaves it to the parser, which says so. */
Test(sse, a_plain_event_is_taken_whole_exactly_when_the_parser_reads_it)
{
	for (size_t max = 8; max < 40; max++) {
		for (size_t k = 0; k < 40; k++) {
			char text[64] = "data: {";
			memset(text + 7, 'x', k);
			memcpy(text + 7 + k, "}\n\n", 4);
			size_t n = strlen(text), len;
			const char *v;
			size_t taken = sse_plain_event(text, n, max, &v, &len);
			struct sse_parser p;
			struct events ev = {0};
			cr_assert_eq(sse_parser_init(&p, max), SOMA_OK);
			enum soma_err err = sse_parser_feed(&p, text, n, on_event, &ev);
			sse_parser_deinit(&p);
			cr_assert_eq(taken != 0, err == SOMA_OK && ev.n == 1,
				     "max %zu, value of %zu bytes: taken %zu, parser %d", max, k + 2, taken, err);
			if (taken) {
				cr_assert_eq(taken, n);
				cr_assert(len == ev.len[0] && memcmp(v, ev.data[0], len) == 0);
			}
		}
	}
}
