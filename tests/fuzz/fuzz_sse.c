/*
 * fuzz_sse.c - libFuzzer harness: arbitrary bytes as an LLM provider's event stream, fed to the
 * SSE parser in pieces cut where the input says (the first byte), with a small bound so the
 * limits are hit. Invariants: no crash, no sanitizer report; every event's data is
 * NUL-terminated, as long as reported, and within the bound; the same bytes fed whole give the
 * same events, and so do they when a relay takes the plain events at the start of each piece
 * itself (sse_parser_at_event_start, sse_plain_event) and feeds the parser the rest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/sse.h"

#define MAX 512

struct seen {
	unsigned long hash; /* of every event's data, in order */
	int n;		    /* events */
};

static bool on_event(void *ctx, const char *data, size_t len)
{
	struct seen *s = ctx;
	if (len > MAX || data[len] != '\0' || strlen(data) > len)
		abort();
	for (size_t i = 0; i < len; i++)
		s->hash = s->hash * 31 + (unsigned char)data[i];
	s->hash = s->hash * 31 + 0x100;
	s->n++;
	return true;
}

/* The plain events that b[0..n) begins with, as a relay takes them: returns the bytes taken. */
static size_t take_plain(struct sse_parser *p, const char *b, size_t n, struct seen *s)
{
	size_t at = 0, k, len;
	const char *v;
	if (!sse_parser_at_event_start(p, b, n))
		return 0;
	while ((k = sse_plain_event(b + at, n - at, MAX, &v, &len)) > 0) {
		if (v[len] != '\n') /* the value ends at its line end (the parser would give it NUL-ended) */
			abort();
		for (size_t i = 0; i < len; i++)
			s->hash = s->hash * 31 + (unsigned char)v[i];
		s->hash = s->hash * 31 + 0x100;
		s->n++;
		at += k;
	}
	return at;
}

static enum soma_err feed(const uint8_t *data, size_t size, size_t piece, bool plain, struct seen *s)
{
	struct sse_parser p;
	if (sse_parser_init(&p, MAX) != SOMA_OK)
		abort();
	enum soma_err err = SOMA_OK;
	for (size_t at = 0; at < size && err == SOMA_OK; at += piece) {
		size_t n = size - at < piece ? size - at : piece;
		const char *b = (const char *)data + at;
		size_t taken = plain ? take_plain(&p, b, n, s) : 0;
		err = sse_parser_feed(&p, b + taken, n - taken, on_event, s);
	}
	sse_parser_deinit(&p);
	return err;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] % 17 + 1;
	struct seen cut = {0}, whole = {0}, relayed = {0};
	enum soma_err a = feed(data + 1, size - 1, piece, false, &cut);
	enum soma_err b = feed(data + 1, size - 1, size, false, &whole);
	enum soma_err c = feed(data + 1, size - 1, piece, true, &relayed);
	struct seen relayed_whole = {0};
	enum soma_err d = feed(data + 1, size - 1, size, true, &relayed_whole);
	if (a != b || cut.n != whole.n || cut.hash != whole.hash)
		abort(); /* where the stream is cut must not change what it says */
	if (c != b || relayed.n != whole.n || relayed.hash != whole.hash || d != b || relayed_whole.n != whole.n ||
	    relayed_whole.hash != whole.hash)
		abort(); /* nor which events a relay takes whole */
	return 0;
}
