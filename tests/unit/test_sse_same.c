/*
 * test_sse_same.c - the SSE parser (src/llm/sse.c, a line at a time) gives what the parser it
 * replaced (a byte at a time, kept here as ref_feed) gave: the same events, the same lengths,
 * the same result, for random streams of the bytes that matter (line ends, "data", colons,
 * spaces, BOM bytes) fed in random pieces under random bounds.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/sse.h"

/* ---- the byte-at-a-time parser of commit c0993bb, unchanged but for its names ---- */
struct ref {
	char line[4096], data[4096];
	size_t line_len, data_len, max, fed;
	bool last_cr, has_data;
};

static enum soma_err ref_line_done(struct ref *p, sse_event_fn fn, void *ctx)
{
	char *l = p->line;
	size_t n = p->line_len;
	p->line_len = 0;
	if (n == 0) {
		if (!p->has_data)
			return SOMA_OK;
		p->has_data = false;
		if (p->data_len && p->data[p->data_len - 1] == '\n')
			p->data_len--;
		p->data[p->data_len] = '\0';
		size_t len = p->data_len;
		p->data_len = 0;
		return fn(ctx, p->data, len) ? SOMA_OK : SOMA_ERR_CONFLICT;
	}
	if (l[0] == ':')
		return SOMA_OK;
	char *colon = memchr(l, ':', n);
	size_t name_len = colon ? (size_t)(colon - l) : n;
	if (name_len != 4 || memcmp(l, "data", 4) != 0)
		return SOMA_OK;
	const char *v = colon ? colon + 1 : l + n;
	size_t vlen = colon ? n - name_len - 1 : 0;
	if (vlen && *v == ' ') {
		v++;
		vlen--;
	}
	if (p->data_len + vlen + 1 > p->max)
		return SOMA_ERR_LIMIT;
	memcpy(p->data + p->data_len, v, vlen);
	p->data_len += vlen;
	p->data[p->data_len++] = '\n';
	p->has_data = true;
	return SOMA_OK;
}

static enum soma_err ref_feed(struct ref *p, const char *bytes, size_t n, sse_event_fn fn, void *ctx)
{
	static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
	for (size_t i = 0; i < n; i++) {
		char c = bytes[i];
		if (p->fed < 3) {
			size_t at = p->fed++;
			if ((unsigned char)c == bom[at] && p->line_len == at) {
				p->line[p->line_len++] = c;
				if (at == 2)
					p->line_len = 0;
				continue;
			}
			p->fed = 3;
		}
		if (c == '\n' && p->last_cr) {
			p->last_cr = false;
			continue;
		}
		p->last_cr = c == '\r';
		if (c == '\n' || c == '\r') {
			enum soma_err err = ref_line_done(p, fn, ctx);
			if (err != SOMA_OK)
				return err;
			continue;
		}
		if (p->line_len >= p->max)
			return SOMA_ERR_LIMIT;
		p->line[p->line_len++] = c;
	}
	return SOMA_OK;
}

/* ---- the comparison ---- */
struct log {
	char text[16384];  /* every event's length and data, one after the other */
	size_t len;	   /* bytes in text */
	int n, stop_after; /* events seen; stop (return false) at this one (1-based), 0: never */
};

static bool record(void *ctx, const char *data, size_t len)
{
	struct log *l = ctx;
	cr_assert_eq(data[len], '\0');
	cr_assert_lt(l->len + len + 24, sizeof(l->text));
	l->len += (size_t)snprintf(l->text + l->len, 24, "[%zu]", len);
	memcpy(l->text + l->len, data, len);
	l->len += len;
	return ++l->n != l->stop_after;
}

Test(sse_same, random_streams_in_random_pieces_give_the_old_events)
{
	static const char *const atoms[] = {"data", "data:",	    "data: ", ":",    " ",	  "x",	  "yz",
					    "\n",   "\r",	    "\r\n",   "\n\n", "event: e", "\xEF", "\xBB",
					    "\xBF", "\xEF\xBB\xBF", "[DONE]"};
	srand(20261128);
	for (int round = 0; round < 20000; round++) {
		char text[600];
		size_t len = 0;
		int natoms = rand() % 40;
		for (int a = 0; a < natoms; a++) {
			const char *s = atoms[rand() % (sizeof(atoms) / sizeof(atoms[0]))];
			size_t k = strlen(s);
			memcpy(text + len, s, k);
			len += k;
		}
		size_t max = round % 3 ? 4 + (size_t)(rand() % 40) : 1024;
		int stop = rand() % 4 == 0 ? 1 + rand() % 3 : 0;
		struct log want = {.stop_after = stop}, got = {.stop_after = stop};
		struct ref r = {.max = max};
		struct sse_parser p;
		cr_assert_eq(sse_parser_init(&p, max), SOMA_OK);
		enum soma_err we = SOMA_OK, ge = SOMA_OK;
		for (size_t at = 0; at < len;) {
			size_t piece = rand() % 3 == 0 ? len - at : 1 + (size_t)(rand() % 8);
			piece = piece > len - at ? len - at : piece;
			if (we == SOMA_OK)
				we = ref_feed(&r, text + at, piece, record, &want);
			if (ge == SOMA_OK)
				ge = sse_parser_feed(&p, text + at, piece, record, &got);
			at += piece;
		}
		sse_parser_deinit(&p);
		cr_assert_eq(ge, we, "round %d: result %d, the old parser's %d", round, ge, we);
		cr_assert_eq(got.n, want.n, "round %d: %d events, the old parser's %d", round, got.n, want.n);
		cr_assert(got.len == want.len && memcmp(got.text, want.text, got.len) == 0, "round %d: other events",
			  round);
	}
}
