/*
 * fuzz_h1.c - libFuzzer harness: arbitrary bytes as a plain-HTTP provider's answer, fed to the
 * HTTP/1.1 response reader (src/llm/h1_parse.c) in pieces cut where the input says (the first
 * byte). Invariants: no crash, no sanitizer report; a result other than H1_MORE uses no more
 * bytes than it was given and H1_MORE uses all; the same bytes fed whole give the same result,
 * status, header lines and body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/h1_parse.h"

struct seen {
	unsigned long headers, body; /* hashes, in order */
	size_t body_len;
};

static unsigned long mix(unsigned long h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = h * 31 + (unsigned char)p[i];
	return h;
}

static bool on_header(void *ctx, const char *line, size_t len)
{
	struct seen *s = ctx;
	if (memchr(line, '\n', len))
		abort(); /* a header line never holds its line end */
	s->headers = mix(s->headers, line, len) * 31 + 0x100;
	return true;
}

static bool on_body(void *ctx, const char *data, size_t len)
{
	struct seen *s = ctx;
	if (!len)
		abort();		   /* no empty pieces */
	s->body = mix(s->body, data, len); /* where a piece ends must not matter */
	s->body_len += len;
	return true;
}

static enum h1_result feed(const uint8_t *data, size_t size, size_t piece, struct seen *s, int *status)
{
	static struct h1_response r;
	struct h1_hooks hooks = {.on_header = on_header, .on_body = on_body, .ctx = s};
	enum h1_result res = H1_MORE;
	h1_response_init(&r);
	for (size_t at = 0; at < size && res == H1_MORE;) {
		size_t n = size - at < piece ? size - at : piece, used = 0;
		res = h1_response_feed(&r, (const char *)data + at, n, &hooks, &used);
		if (used > n || (res == H1_MORE && used != n))
			abort();
		at += used;
	}
	*status = r.status;
	(void)h1_response_eof_ok(&r);
	return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)data[0] % 17 + 1;
	struct seen cut = {0}, whole = {0};
	int cut_status, whole_status;
	enum h1_result a = feed(data + 1, size - 1, piece, &cut, &cut_status);
	enum h1_result b = feed(data + 1, size - 1, size, &whole, &whole_status);
	if (a != b || cut_status != whole_status || cut.headers != whole.headers || cut.body != whole.body ||
	    cut.body_len != whole.body_len)
		abort(); /* where the answer is cut must not change what it says */
	return 0;
}
