/*
 * sse.c - see sse.h.
 *
 * DESIGN: the bytes are taken a line at a time, not a byte at a time: the next line end is found
 * with memchr (the position of the next LF is remembered, so a stream of CR-only line ends is
 * still scanned once), and a line that lies whole inside one feed is interpreted where it is,
 * without a copy; only a line cut by the end of a feed is kept in p->line until its end arrives.
 * The leading BOM is still looked at byte by byte (the first three bytes of a stream). Buffers are
 * allocated at their first use: most lines never need p->line.
 */
#include "llm/sse.h"

#include <stdlib.h>
#include <string.h>

enum soma_err sse_parser_init(struct sse_parser *p, size_t max)
{
	memset(p, 0, sizeof(*p));
	p->max = max;
	return SOMA_OK;
}

void sse_parser_deinit(struct sse_parser *p)
{
	free(p->line);
	free(p->data);
	p->line = p->data = NULL;
	p->line_cap = p->data_cap = 0;
}

/* Makes room for need bytes in *buf (need <= max + 1); false when out of memory. Starts small and
 * grows: a bound of 1 MiB allocated up front per call would come from mmap and cost a TLB
 * shootdown across cores when freed. */
static bool grow(char **buf, size_t *cap, size_t need, size_t max)
{
	if (need <= *cap && *buf)
		return true;
	size_t n = *cap ? *cap : SSE_INITIAL_CAP;
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

/* Interprets one complete line l[0..n); returns SOMA_ERR_CONFLICT when the callback stops. */
static enum soma_err line_done(struct sse_parser *p, const char *l, size_t n, sse_event_fn fn, void *ctx)
{
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
	const char *colon = memchr(l, ':', n);
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

/* Adds b[0..n) to the kept partial line. */
static enum soma_err keep(struct sse_parser *p, const char *b, size_t n)
{
	if (p->line_len + n > p->max)
		return SOMA_ERR_LIMIT; /* the line would pass max before its end */
	if (!grow(&p->line, &p->line_cap, p->line_len + n, p->max))
		return SOMA_ERR_NOMEM;
	memcpy(p->line + p->line_len, b, n);
	p->line_len += n;
	return SOMA_OK;
}

/* The first bytes of the stream: one leading BOM (WHATWG) is not part of it. Its bytes are held
 * in the line until they tell; returns how many of b[0..n) were taken. */
static size_t take_bom(struct sse_parser *p, const char *b, size_t n)
{
	static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
	size_t i = 0;
	while (i < n && p->fed < 3) {
		size_t at = p->fed++;
		if ((unsigned char)b[i] != bom[at] || p->line_len != at) {
			p->fed = 3;
			break;
		}
		if (at + 1 > p->max + 1 || !grow(&p->line, &p->line_cap, at + 1, p->max)) {
			p->fed = 3; /* no room for the tentative byte: the stream is read as it comes */
			break;
		}
		p->line[p->line_len++] = b[i++]; /* tentatively, in case it is not a BOM after all */
		if (at == 2)
			p->line_len = 0; /* a whole BOM: drop it */
	}
	return i;
}

enum soma_err sse_parser_feed(struct sse_parser *p, const char *bytes, size_t n, sse_event_fn fn, void *ctx)
{
	size_t i = p->fed < 3 ? take_bom(p, bytes, n) : 0;
	const char *end = bytes + n, *lf = NULL; /* the next LF at or after bytes + i, or end */
	while (i < n) {
		const char *s = bytes + i;
		if (*s == '\n' && p->last_cr) { /* the LF of a CRLF: the line ended at the CR */
			p->last_cr = false;
			i++;
			continue;
		}
		if (!lf || lf < s) {
			lf = memchr(s, '\n', n - i);
			if (!lf)
				lf = end;
		}
		const char *cr = memchr(s, '\r', (size_t)(lf - s));
		const char *eol = cr ? cr : lf;
		size_t run = (size_t)(eol - s);
		enum soma_err err;
		if (eol == end) { /* no line end in this feed: keep the start of the line */
			p->last_cr = false;
			return run ? keep(p, s, run) : SOMA_OK;
		}
		p->last_cr = *eol == '\r';
		if (p->line_len) { /* the line began in an earlier feed */
			if ((err = keep(p, s, run)) != SOMA_OK)
				return err;
			size_t len = p->line_len;
			p->line_len = 0;
			err = line_done(p, p->line, len, fn, ctx);
		} else {
			if (run > p->max)
				return SOMA_ERR_LIMIT;
			err = line_done(p, s, run, fn, ctx);
		}
		if (err != SOMA_OK)
			return err;
		i += run + 1;
	}
	return SOMA_OK;
}

bool sse_parser_at_event_start(struct sse_parser *p, const char *bytes, size_t n)
{
	if (p->fed < 3) { /* nothing read yet (a BOM's bytes would be held in the line) */
		if (p->line_len || n == 0 || (unsigned char)bytes[0] == 0xEF)
			return false;
		p->fed = 3;
	}
	return !p->line_len && !p->has_data && !p->last_cr;
}

size_t sse_plain_event(const char *b, size_t n, size_t max, const char **data, size_t *len)
{
	if (n < 9 || memcmp(b, "data: {", 7) != 0)
		return 0;
	const char *v = b + 6, *end = b + n;
	const char *lf = memchr(v, '\n', (size_t)(end - v));
	if (!lf || end - lf < 2 || lf[1] != '\n')
		return 0;
	size_t vlen = (size_t)(lf - v);
	if (vlen + 6 > max || memchr(v, '\r', vlen)) /* the parser's bound on the line */
		return 0;
	*data = v;
	*len = vlen;
	return (size_t)(lf + 2 - b);
}
