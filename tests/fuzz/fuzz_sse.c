/*
 * fuzz_sse.c - libFuzzer harness: arbitrary bytes as an LLM provider's event stream, fed to the
 * SSE parser in pieces cut where the input says (the first byte), with a small bound so the
 * limits are hit. Invariants: no crash, no sanitizer report; every event's data is
 * NUL-terminated, as long as reported, and within the bound; the same bytes fed whole give the
 * same events.
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

static enum soma_err feed(const uint8_t *data, size_t size, size_t piece, struct seen *s)
{
	struct sse_parser p;
	if (sse_parser_init(&p, MAX) != SOMA_OK)
		abort();
	enum soma_err err = SOMA_OK;
	for (size_t at = 0; at < size && err == SOMA_OK; at += piece) {
		size_t n = size - at < piece ? size - at : piece;
		err = sse_parser_feed(&p, (const char *)data + at, n, on_event, s);
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
	struct seen cut = {0}, whole = {0};
	enum soma_err a = feed(data + 1, size - 1, piece, &cut);
	enum soma_err b = feed(data + 1, size - 1, size, &whole);
	if (a != b || cut.n != whole.n || cut.hash != whole.hash)
		abort(); /* where the stream is cut must not change what it says */
	return 0;
}
