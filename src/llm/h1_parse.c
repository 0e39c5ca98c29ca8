/*
 * h1_parse.c - an HTTP/1.1 response read incrementally (see h1_parse.h).
 *
 * DESIGN: two phases. The head is gathered into r->head until its blank line, then read line by
 * line (read_head). The body is relayed in place: with Content-Length by counting, up to the
 * close as it comes, and chunked through a small state machine that walks the framing byte by
 * byte and hands each chunk's data on in one piece. Line ends are CRLF; a bare LF is accepted,
 * as most clients do. Any thread; the struct is the whole state.
 */
#include "llm/h1_parse.h"

#include <string.h>
#include <strings.h>

#define MAX_CHUNK_DIGITS 12 /* a chunk of up to 2^48 bytes: anything longer is garbage */

void h1_response_init(struct h1_response *r)
{
	r->status = 0;
	r->keep_alive = false;
	r->framing = H1_BODY_CLOSE;
	r->left = 0;
	r->chunk = CH_SIZE;
	r->chunk_digits = 0;
	r->trailer_empty = true;
	r->head_done = false;
	r->head_len = 0;
}

/* Whether the comma-separated list value (len bytes) has token, ignoring case. */
static bool has_token(const char *value, size_t len, const char *token)
{
	size_t k = strlen(token);
	for (size_t i = 0; i < len;) {
		while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
			i++;
		size_t start = i;
		while (i < len && value[i] != ',')
			i++;
		size_t end = i;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end - start == k && strncasecmp(value + start, token, k) == 0)
			return true;
	}
	return false;
}

/* Whether the last coding of a Transfer-Encoding value is chunked. */
static bool ends_chunked(const char *value, size_t len)
{
	while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	return len >= 7 && strncasecmp(value + len - 7, "chunked", 7) == 0 &&
	       (len == 7 || value[len - 8] == ',' || value[len - 8] == ' ' || value[len - 8] == '\t');
}

/* "HTTP/1.x SSS ...": the status, or 0 when the line is not one. Sets *minor. */
static int status_line(const char *line, size_t len, int *minor)
{
	if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
		return 0;
	*minor = line[7] - '0';
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (line[i] < '0' || line[i] > '9')
			return 0;
		status = status * 10 + (line[i] - '0');
	}
	return (len == 12 || line[12] == ' ') && status >= 100 ? status : 0;
}

/* Reads the gathered head (len bytes, ending in its blank line). Returns H1_MORE when it was an
 * interim (1xx) head to skip or a final head with a body to come, H1_COMPLETE for a final head
 * with no body, H1_BAD or H1_STOP. */
static enum h1_result read_head(struct h1_response *r, size_t len, const struct h1_hooks *hooks)
{
	const char *p = r->head, *end = r->head + len;
	int minor = 1;
	bool chunked = false, has_length = false, close = false, keep = false, other_coding = false;
	uint64_t length = 0;
	for (bool first = true; p < end; first = false) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)(nl - p); /* the head ends in a line end: nl is never NULL */
		size_t k = n && p[n - 1] == '\r' ? n - 1 : n;
		const char *line = p;
		p = nl + 1;
		if (first) {
			if (!(r->status = status_line(line, k, &minor)))
				return H1_BAD;
			continue;
		}
		if (k == 0)
			break; /* the blank line */
		const char *colon = memchr(line, ':', k);
		if (!colon || colon == line)
			return H1_BAD;
		size_t name = (size_t)(colon - line);
		const char *v = colon + 1, *ve = line + k;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = (size_t)(ve - v);
		if (r->status >= 200 && hooks->on_header && !hooks->on_header(hooks->ctx, line, k))
			return H1_STOP;
		if (name == 14 && strncasecmp(line, "content-length", 14) == 0) {
			uint64_t value = 0;
			size_t digits = 0;
			while (digits < vlen && v[digits] >= '0' && v[digits] <= '9' && digits < 16)
				value = value * 10 + (uint64_t)(v[digits++] - '0');
			while (digits < vlen && (v[digits] == ' ' || v[digits] == '\t'))
				digits++;
			if (!vlen || digits != vlen || (has_length && value != length))
				return H1_BAD;
			has_length = true, length = value;
		} else if (name == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
			chunked = ends_chunked(v, vlen);
			other_coding = !chunked;
		} else if (name == 10 && strncasecmp(line, "connection", 10) == 0) {
			close = close || has_token(v, vlen, "close");
			keep = keep || has_token(v, vlen, "keep-alive");
		}
	}
	if (r->status < 200) { /* interim: the final head follows */
		if (r->status == 101)
			return H1_BAD; /* we never ask to switch protocols */
		return H1_MORE;
	}
	r->head_done = true;
	r->keep_alive = !close && (minor == 1 || keep);
	if (r->status == 204 || r->status == 304) {
		r->framing = H1_BODY_NONE;
		return H1_COMPLETE;
	}
	if (chunked) {
		r->framing = H1_BODY_CHUNKED;
		r->keep_alive = r->keep_alive && !has_length; /* both: read as chunked, then close */
		return H1_MORE;
	}
	if (has_length && !other_coding) {
		r->framing = H1_BODY_LENGTH;
		r->left = length;
		return length ? H1_MORE : H1_COMPLETE;
	}
	r->framing = H1_BODY_CLOSE;
	r->keep_alive = false;
	return H1_MORE;
}

/* Gathers head bytes; on the final head's end, reads it. */
static enum h1_result feed_head(struct h1_response *r, const char *p, size_t n, const struct h1_hooks *hooks,
				size_t *used)
{
	size_t old = r->head_len, room = H1_HEAD_MAX - old, k = n < room ? n : room;
	memcpy(r->head + old, p, k);
	r->head_len += k;
	/* the blank line: "\n\r\n" or "\n\n", searched from where it could start */
	size_t from = old > 2 ? old - 2 : 0;
	for (size_t i = from; i < r->head_len; i++) {
		if (r->head[i] != '\n' || i == 0)
			continue;
		size_t end = 0;
		if (r->head[i - 1] == '\n')
			end = i + 1;
		else if (i >= 2 && r->head[i - 1] == '\r' && r->head[i - 2] == '\n')
			end = i + 1;
		if (!end)
			continue;
		*used = end - old;
		enum h1_result res = read_head(r, end, hooks);
		if (res == H1_MORE && !r->head_done)
			r->head_len = 0; /* an interim head: gather the next */
		return res;
	}
	*used = k;
	return r->head_len == H1_HEAD_MAX ? H1_BAD : H1_MORE;
}

/* The chunked framing from p: data handed on, framing walked. */
static enum h1_result feed_chunked(struct h1_response *r, const char *p, size_t n, const struct h1_hooks *hooks,
				   size_t *used)
{
	size_t i = 0;
	while (i < n) {
		char c = p[i];
		switch (r->chunk) {
		case CH_DATA: {
			size_t k = n - i < r->left ? n - i : (size_t)r->left;
			if (!hooks->on_body(hooks->ctx, p + i, k)) {
				*used = i + k;
				return H1_STOP;
			}
			i += k;
			r->left -= k;
			if (!r->left)
				r->chunk = CH_DATA_CR;
			continue;
		}
		case CH_SIZE: {
			int v = c >= '0' && c <= '9'			 ? c - '0'
				: (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10
									 : -1;
			if (v >= 0) {
				if (++r->chunk_digits > MAX_CHUNK_DIGITS)
					return H1_BAD;
				r->left = r->left * 16 + (uint64_t)v;
				break;
			}
			if (!r->chunk_digits)
				return H1_BAD;
			if (c == ';' || c == ' ' || c == '\t')
				r->chunk = CH_EXT;
			else if (c == '\r')
				r->chunk = CH_SIZE_LF;
			else if (c == '\n')
				r->chunk = r->left ? CH_DATA : CH_TRAILER;
			else
				return H1_BAD;
			break;
		}
		case CH_EXT:
			if (c == '\r')
				r->chunk = CH_SIZE_LF;
			else if (c == '\n')
				r->chunk = r->left ? CH_DATA : CH_TRAILER;
			break;
		case CH_SIZE_LF:
			if (c != '\n')
				return H1_BAD;
			r->chunk = r->left ? CH_DATA : CH_TRAILER;
			break;
		case CH_DATA_CR:
		case CH_DATA_LF:
			if (c == '\r' && r->chunk == CH_DATA_CR) {
				r->chunk = CH_DATA_LF;
				break;
			}
			if (c != '\n')
				return H1_BAD;
			r->chunk = CH_SIZE;
			r->chunk_digits = 0;
			r->left = 0;
			break;
		case CH_TRAILER:
		case CH_TRAILER_LF:
			if (c == '\r' && r->chunk == CH_TRAILER) {
				r->chunk = CH_TRAILER_LF;
				break;
			}
			if (r->chunk == CH_TRAILER_LF && c != '\n')
				return H1_BAD;
			if (c == '\n') {
				if (r->trailer_empty) {
					*used = i + 1;
					return H1_COMPLETE;
				}
				r->trailer_empty = true;
				r->chunk = CH_TRAILER;
			} else {
				r->trailer_empty = false;
			}
			break;
		}
		i++;
	}
	*used = n;
	return H1_MORE;
}

enum h1_result h1_response_feed(struct h1_response *r, const char *p, size_t n, const struct h1_hooks *hooks,
				size_t *used)
{
	size_t at = 0;
	*used = 0;
	while (!r->head_done) {
		if (at == n)
			return H1_MORE;
		size_t k = 0;
		enum h1_result res = feed_head(r, p + at, n - at, hooks, &k);
		at += k;
		*used = at;
		if (res != H1_MORE)
			return res;
	}
	size_t k = n - at;
	switch (r->framing) {
	case H1_BODY_NONE:
		return H1_COMPLETE;
	case H1_BODY_LENGTH:
		if (k > r->left)
			k = (size_t)r->left;
		r->left -= k;
		*used = at + k;
		if (k && !hooks->on_body(hooks->ctx, p + at, k))
			return H1_STOP;
		return r->left ? H1_MORE : H1_COMPLETE;
	case H1_BODY_CLOSE:
		*used = n;
		return k && !hooks->on_body(hooks->ctx, p + at, k) ? H1_STOP : H1_MORE;
	case H1_BODY_CHUNKED:
		break;
	}
	enum h1_result res = feed_chunked(r, p + at, k, hooks, &k);
	*used = at + k;
	return res;
}

bool h1_response_eof_ok(const struct h1_response *r)
{
	return r->head_done && (r->framing == H1_BODY_CLOSE || r->framing == H1_BODY_NONE ||
				(r->framing == H1_BODY_LENGTH && !r->left));
}
