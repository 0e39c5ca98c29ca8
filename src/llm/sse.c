/*
 * sse.c - see sse.h.
 */
#include "llm/sse.h"

#include <stdlib.h>
#include <string.h>

enum soma_err sse_parser_init(struct sse_parser *p, size_t max)
{
	memset(p, 0, sizeof(*p));
	p->max = max;
	/* start small and grow: a bound of 1 MiB allocated up front per call would come from mmap
	 * and cost a TLB shootdown across cores when freed */
	p->line_cap = p->data_cap = max < SSE_INITIAL_CAP ? max + 1 : SSE_INITIAL_CAP;
	p->line = malloc(p->line_cap);
	p->data = malloc(p->data_cap);
	if (!p->line || !p->data) {
		sse_parser_deinit(p);
		return SOMA_ERR_NOMEM;
	}
	return SOMA_OK;
}

void sse_parser_deinit(struct sse_parser *p)
{
	free(p->line);
	free(p->data);
	p->line = p->data = NULL;
}

/* Makes room for need bytes in *buf (need <= max + 1); false when out of memory. */
static bool grow(char **buf, size_t *cap, size_t need, size_t max)
{
	if (need <= *cap)
		return true;
	size_t n = *cap;
	while (n < need)
		n *= 2;
	if (n > max + 1)
		n = max + 1;
	char *bigger = realloc(*buf, n);
	if (!bigger)
		return false;
	*buf = bigger;
	*cap = n;
	return true;
}

/* Interprets one complete line; returns SOMA_ERR_CONFLICT when the callback stops. */
static enum soma_err line_done(struct sse_parser *p, sse_event_fn fn, void *ctx)
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
		return SOMA_OK; /* comment */
	char *colon = memchr(l, ':', n);
	size_t name_len = colon ? (size_t)(colon - l) : n;
	if (name_len != 4 || memcmp(l, "data", 4) != 0)
		return SOMA_OK; /* event, id, retry and unknown fields do not matter here */
	const char *v = colon ? colon + 1 : l + n;
	size_t vlen = colon ? n - name_len - 1 : 0;
	if (vlen && *v == ' ') {
		v++;
		vlen--;
	}
	if (p->data_len + vlen + 1 > p->max)
		return SOMA_ERR_LIMIT;
	if (!grow(&p->data, &p->data_cap, p->data_len + vlen + 2, p->max))
		return SOMA_ERR_NOMEM;
	memcpy(p->data + p->data_len, v, vlen);
	p->data_len += vlen;
	p->data[p->data_len++] = '\n';
	p->has_data = true;
	return SOMA_OK;
}

enum soma_err sse_parser_feed(struct sse_parser *p, const char *bytes, size_t n, sse_event_fn fn, void *ctx)
{
	static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
	for (size_t i = 0; i < n; i++) {
		char c = bytes[i];
		/* WHATWG: one leading BOM is not part of the stream; hold its bytes until they tell */
		if (p->fed < 3) {
			size_t at = p->fed++;
			if ((unsigned char)c == bom[at] && p->line_len == at) {
				p->line[p->line_len++] = c; /* tentatively, in case it is not a BOM after all */
				if (at == 2)
					p->line_len = 0; /* a whole BOM: drop it */
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
			enum soma_err err = line_done(p, fn, ctx);
			if (err != SOMA_OK)
				return err;
			continue;
		}
		if (p->line_len >= p->max)
			return SOMA_ERR_LIMIT;
		if (p->line_len == p->line_cap && !grow(&p->line, &p->line_cap, p->line_len + 1, p->max))
			return SOMA_ERR_NOMEM;
		p->line[p->line_len++] = c;
	}
	return SOMA_OK;
}
