/*
 * parser.c - HTTP/1.1 request-head parser (RFC 9112), strict where leniency enables request
 * smuggling (obs-fold, conflicting Content-Length, Transfer-Encoding with Content-Length).
 * Pure function of its input: no I/O, no globals; fuzzed by tests/fuzz/fuzz_http.c.
 */
#include <string.h>

#include "http/http.h"

static bool is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Visible ASCII or obs-text (>= 0x80) or space/tab: what a header value may hold. */
static bool is_value_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Splits off the next line, which must end in CRLF, starting at *pos; false at the end or on a
 * bare LF. Bare LF is refused rather than tolerated: the connection finds the end of a head by
 * CRLF CRLF, and a parser that ended heads elsewhere would let one request hide another. */
static bool next_line(char *head, size_t len, size_t *pos, struct str *line)
{
	if (*pos >= len)
		return false;
	char *start = head + *pos;
	char *nl = memchr(start, '\n', len - *pos);
	if (!nl)
		return false;
	size_t n = (size_t)(nl - start);
	if (n == 0 || start[n - 1] != '\r')
		return false;
	n--;
	*line = (struct str){start, n};
	*pos = (size_t)(nl - head) + 1;
	return true;
}

static enum http_parse_status parse_request_line(struct str line, struct http_req *req, const char **why)
{
	const char *sp1 = memchr(line.p, ' ', line.len);
	if (!sp1 || sp1 == line.p) {
		*why = "the request line must be METHOD SP target SP HTTP/1.1";
		return HTTP_PARSE_BAD_REQUEST;
	}
	req->method = (struct str){line.p, (size_t)(sp1 - line.p)};
	for (size_t i = 0; i < req->method.len; i++) {
		if (!is_tchar((unsigned char)req->method.p[i])) {
			*why = "the method holds characters a method may not contain";
			return HTTP_PARSE_BAD_REQUEST;
		}
	}
	const char *rest = sp1 + 1, *end = line.p + line.len;
	const char *sp2 = memchr(rest, ' ', (size_t)(end - rest));
	if (!sp2 || sp2 == rest || rest[0] != '/') {
		*why = "the request target must be an absolute path such as /v1/health";
		return HTTP_PARSE_BAD_REQUEST;
	}
	req->target = (struct str){rest, (size_t)(sp2 - rest)};
	for (size_t i = 0; i < req->target.len; i++) {
		unsigned char c = (unsigned char)req->target.p[i];
		if (c <= 0x20 || c >= 0x7f) {
			*why = "the request target holds spaces, control or non-ASCII characters; percent-encode them";
			return HTTP_PARSE_BAD_REQUEST;
		}
	}
	struct str version = {sp2 + 1, (size_t)(end - sp2 - 1)};
	if (version.len != 8 || memcmp(version.p, "HTTP/1.", 7) != 0 || (version.p[7] != '0' && version.p[7] != '1')) {
		*why = version.len >= 5 && memcmp(version.p, "HTTP/", 5) == 0 ? "only HTTP/1.0 and HTTP/1.1 are served"
									      : "the request line must end in HTTP/1.1";
		return version.len >= 5 && memcmp(version.p, "HTTP/", 5) == 0 ? HTTP_PARSE_BAD_VERSION
									      : HTTP_PARSE_BAD_REQUEST;
	}
	req->minor_version = version.p[7] - '0';
	const char *q = memchr(req->target.p, '?', req->target.len);
	if (q) {
		req->path = (struct str){req->target.p, (size_t)(q - req->target.p)};
		req->query = (struct str){q + 1, req->target.len - req->path.len - 1};
	} else {
		req->path = req->target;
		req->query = (struct str){req->target.p + req->target.len, 0};
	}
	return HTTP_PARSE_OK;
}

static bool parse_content_length(struct str v, int64_t *out)
{
	if (v.len == 0 || v.len > 18)
		return false;
	int64_t n = 0;
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
		n = n * 10 + (v.p[i] - '0');
	}
	*out = n;
	return true;
}

/* Applies the headers that shape message framing and connection handling. */
static enum http_parse_status apply_header(struct http_req *req, const struct http_header *h, bool *chunked,
					   const char **why)
{
	if (str_ieq_cstr(h->name, "content-length")) {
		int64_t n;
		if (!parse_content_length(h->value, &n) || (req->content_length >= 0 && req->content_length != n)) {
			*why = "Content-Length must be one non-negative integer";
			return HTTP_PARSE_BAD_REQUEST;
		}
		req->content_length = n;
	} else if (str_ieq_cstr(h->name, "transfer-encoding")) {
		*chunked = true;
	} else if (str_ieq_cstr(h->name, "connection")) {
		/* a token list; "close" and "keep-alive" are the ones that matter */
		for (size_t i = 0; i + 5 <= h->value.len; i++) {
			if (strncasecmp(h->value.p + i, "close", 5) == 0)
				req->keep_alive = false;
		}
		for (size_t i = 0; i + 10 <= h->value.len; i++) {
			if (strncasecmp(h->value.p + i, "keep-alive", 10) == 0 && req->minor_version == 0)
				req->keep_alive = true;
		}
	} else if (str_ieq_cstr(h->name, "host")) {
		if (http_req_header(req, "host").p) { /* the new header is not counted yet */
			*why = "more than one Host header";
			return HTTP_PARSE_BAD_REQUEST;
		}
	} else if (str_ieq_cstr(h->name, "expect")) {
		/* RFC 9110 10.1.1: a 1.0 client's 100-continue is ignored (it would not expect a 1xx) */
		req->expect_continue = req->minor_version >= 1 && str_ieq_cstr(h->value, "100-continue");
	}
	return HTTP_PARSE_OK;
}

static enum http_parse_status parse_header_line(struct str line, struct http_header *h, const char **why)
{
	if (line.p[0] == ' ' || line.p[0] == '\t') {
		*why = "folded header lines (obs-fold) are not accepted";
		return HTTP_PARSE_BAD_REQUEST;
	}
	const char *colon = memchr(line.p, ':', line.len);
	if (!colon || colon == line.p) {
		*why = "a header line must be Name: value";
		return HTTP_PARSE_BAD_REQUEST;
	}
	h->name = (struct str){line.p, (size_t)(colon - line.p)};
	for (size_t i = 0; i < h->name.len; i++) {
		if (!is_tchar((unsigned char)h->name.p[i])) {
			*why = "a header name holds characters a name may not contain";
			return HTTP_PARSE_BAD_REQUEST;
		}
	}
	const char *v = colon + 1, *end = line.p + line.len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	for (const char *p = v; p < end; p++) {
		if (!is_value_char((unsigned char)*p)) {
			*why = "a header value holds control characters";
			return HTTP_PARSE_BAD_REQUEST;
		}
	}
	h->value = (struct str){v, (size_t)(end - v)};
	return HTTP_PARSE_OK;
}

enum http_parse_status http_parse_head(char *head, size_t len, struct http_req *req, struct arena *arena,
				       const char **why)
{
	size_t pos = 0;
	struct str line;
	*why = "malformed request";
	req->content_length = -1;
	req->nheaders = 0;
	req->headers = NULL;
	/* RFC 9112 2.2: ignore empty lines before the request line */
	do {
		if (!next_line(head, len, &pos, &line))
			return HTTP_PARSE_BAD_REQUEST;
	} while (line.len == 0);
	enum http_parse_status st = parse_request_line(line, req, why);
	if (st != HTTP_PARSE_OK)
		return st;
	req->keep_alive = req->minor_version == 1;

	/* room for as many headers as there are lines left (bounded), not always the maximum: a
	 * long-lived request (a stream) keeps its arena, so this is memory per open stream */
	size_t lines = 0;
	for (const char *q = head + pos; q && (q = memchr(q, '\n', len - (size_t)(q - head))); q++)
		lines++;
	size_t slots = lines < HTTP_MAX_HEADERS ? lines + 1 : HTTP_MAX_HEADERS;
	req->headers = arena_alloc(arena, sizeof(*req->headers) * slots);
	if (!req->headers)
		return HTTP_PARSE_TOO_MANY_HEADERS;
	bool chunked = false, ended = false;
	while (next_line(head, len, &pos, &line)) {
		if (line.len == 0) {
			ended = true;
			break;
		}
		if (req->nheaders == slots) {
			*why = "more than 100 header fields";
			return HTTP_PARSE_TOO_MANY_HEADERS;
		}
		struct http_header *h = &req->headers[req->nheaders];
		st = parse_header_line(line, h, why);
		if (st == HTTP_PARSE_OK)
			st = apply_header(req, h, &chunked, why);
		if (st != HTTP_PARSE_OK)
			return st;
		req->nheaders++;
	}
	if (!ended) {
		*why = "the request head does not end with an empty line";
		return HTTP_PARSE_BAD_REQUEST;
	}
	if (chunked) {
		*why = req->content_length >= 0 ? "Transfer-Encoding and Content-Length together are not accepted"
						: "chunked request bodies are not accepted; send Content-Length";
		return req->content_length >= 0 ? HTTP_PARSE_BAD_REQUEST : HTTP_PARSE_NO_LENGTH;
	}
	if (req->minor_version == 1 && !http_req_header(req, "host").p) {
		*why = "HTTP/1.1 requests must carry a Host header";
		return HTTP_PARSE_BAD_REQUEST;
	}
	return HTTP_PARSE_OK;
}
