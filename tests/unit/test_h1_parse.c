/*
 * test_h1_parse.c - the HTTP/1.1 response reader (src/llm/h1_parse.c) and the direct client's URL
 * check (h1_target_parse, src/llm/h1_conn.c).
 *
 * DESIGN: each response is fed whole, one byte at a time and split at every point in two; every
 * way must give the same status, header lines, body and end. Broken framings must be refused.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "llm/h1_conn.h"
#include "llm/h1_parse.h"

struct seen {
	char headers[1024]; /* header lines joined by '|' */
	char body[4096];    /* body bytes */
	size_t body_len;
	int stop_at_body; /* return false once body_len reaches this (0: never) */
};

static bool on_header(void *ctx, const char *line, size_t len)
{
	struct seen *s = ctx;
	size_t at = strlen(s->headers);
	cr_assert_lt(at + len + 2, sizeof(s->headers));
	memcpy(s->headers + at, line, len);
	s->headers[at + len] = '|';
	s->headers[at + len + 1] = '\0';
	return true;
}

static bool on_body(void *ctx, const char *data, size_t len)
{
	struct seen *s = ctx;
	cr_assert_lt(s->body_len + len, sizeof(s->body));
	memcpy(s->body + s->body_len, data, len);
	s->body_len += len;
	return !(s->stop_at_body && s->body_len >= (size_t)s->stop_at_body);
}

struct outcome {
	enum h1_result res;
	size_t used; /* bytes consumed in all */
	struct seen seen;
	int status;
	bool keep_alive;
	bool eof_ok;
};

/* Feeds text in pieces that end at cut1 and cut2 (0: none), stopping at the first result other
 * than H1_MORE. */
static struct outcome feed(const char *text, size_t len, size_t cut1, size_t cut2, bool bytewise)
{
	static struct h1_response r;
	struct outcome o = {0};
	struct h1_hooks hooks = {.on_header = on_header, .on_body = on_body, .ctx = &o.seen};
	h1_response_init(&r);
	size_t at = 0;
	o.res = H1_MORE;
	while (at < len && o.res == H1_MORE) {
		size_t end = bytewise ? at + 1 : cut1 > at ? cut1 : cut2 > at ? cut2 : len;
		size_t used = 0;
		o.res = h1_response_feed(&r, text + at, end - at, &hooks, &used);
		cr_assert_leq(used, end - at);
		if (o.res == H1_MORE)
			cr_assert_eq(used, end - at, "H1_MORE must use every byte");
		at += used;
	}
	o.used = at;
	o.status = r.status;
	o.keep_alive = r.keep_alive;
	o.eof_ok = h1_response_eof_ok(&r);
	return o;
}

/* The outcome of text fed every way is the same as fed whole; returns it. */
static struct outcome feed_every_way(const char *text)
{
	size_t len = strlen(text);
	struct outcome whole = feed(text, len, 0, 0, false);
	struct outcome bytes = feed(text, len, 0, 0, true);
	cr_assert_eq(bytes.res, whole.res, "byte by byte: result %d, whole %d", bytes.res, whole.res);
	cr_assert_str_eq(bytes.seen.headers, whole.seen.headers);
	cr_assert_eq(bytes.seen.body_len, whole.seen.body_len);
	cr_assert(memcmp(bytes.seen.body, whole.seen.body, whole.seen.body_len) == 0);
	for (size_t cut = 1; cut < len; cut++) {
		struct outcome two = feed(text, len, cut, 0, false);
		cr_assert_eq(two.res, whole.res, "cut at %zu: result %d, whole %d", cut, two.res, whole.res);
		cr_assert_str_eq(two.seen.headers, whole.seen.headers, "cut at %zu", cut);
		cr_assert_eq(two.seen.body_len, whole.seen.body_len, "cut at %zu", cut);
		cr_assert(memcmp(two.seen.body, whole.seen.body, whole.seen.body_len) == 0, "cut at %zu", cut);
		if (whole.res != H1_BAD) /* where a broken answer broke is not kept */
			cr_assert_eq(two.used, whole.used, "cut at %zu", cut);
	}
	return whole;
}

Test(h1_parse, content_length_body_and_headers)
{
	struct outcome o = feed_every_way("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
					  "Retry-After: 3\r\nContent-Length: 11\r\n\r\n{\"e\":\"rl\"}\nEXTRA");
	cr_assert_eq(o.res, H1_COMPLETE);
	cr_assert_eq(o.status, 429);
	cr_assert_str_eq(o.seen.headers, "Content-Type: application/json|Retry-After: 3|Content-Length: 11|");
	cr_assert_eq(o.seen.body_len, 11);
	cr_assert(memcmp(o.seen.body, "{\"e\":\"rl\"}\n", 11) == 0);
	cr_assert(o.keep_alive);
	cr_assert_eq(o.used,
		     strlen("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
			    "Retry-After: 3\r\nContent-Length: 11\r\n\r\n{\"e\":\"rl\"}\n"),
		     "bytes after the response are left");
}

Test(h1_parse, chunked_with_extensions_and_trailers)
{
	struct outcome o =
		feed_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "6;name=v\r\ndata: \r\nC\r\n{\"x\":\"\xc3\xa9\"}\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n");
	cr_assert_eq(o.res, H1_COMPLETE);
	cr_assert_eq(o.status, 200);
	cr_assert_eq(o.seen.body_len, 18);
	cr_assert(memcmp(o.seen.body, "data: {\"x\":\"\xc3\xa9\"}\n\n", 18) == 0);
	cr_assert(o.keep_alive);
}

Test(h1_parse, chunked_with_bare_line_feeds)
{
	struct outcome o = feed_every_way("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n");
	cr_assert_eq(o.res, H1_COMPLETE);
	cr_assert_eq(o.seen.body_len, 3);
	cr_assert(memcmp(o.seen.body, "abc", 3) == 0);
}

Test(h1_parse, body_up_to_the_close)
{
	struct outcome o = feed_every_way("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
					  "Connection: close\r\n\r\ndata: a\n\ndata: b\n\n");
	cr_assert_eq(o.res, H1_MORE);
	cr_assert_eq(o.seen.body_len, 18);
	cr_assert_not(o.keep_alive);
	cr_assert(o.eof_ok, "the close ends a body that has no length");
}

Test(h1_parse, interim_heads_are_skipped)
{
	struct outcome o = feed_every_way("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
					  "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	cr_assert_eq(o.res, H1_COMPLETE);
	cr_assert_eq(o.status, 200);
	cr_assert_str_eq(o.seen.headers, "Content-Length: 2|", "interim headers are not the answer's");
	cr_assert_eq(o.seen.body_len, 2);
}

Test(h1_parse, keep_alive_rules)
{
	cr_assert_not(feed_every_way("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
	cr_assert(feed_every_way("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").keep_alive);
	cr_assert_not(
		feed_every_way("HTTP/1.1 200 OK\r\nConnection: x, close\r\nContent-Length: 0\r\n\r\n").keep_alive);
	struct outcome both =
		feed_every_way("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
			       "1\r\nz\r\n0\r\n\r\n");
	cr_assert_eq(both.res, H1_COMPLETE, "chunked wins over a length");
	cr_assert_not(both.keep_alive, "a response with both is not trusted with another request");
	struct outcome none = feed_every_way("HTTP/1.1 204 No Content\r\n\r\n");
	cr_assert_eq(none.res, H1_COMPLETE);
	cr_assert(none.keep_alive);
}

Test(h1_parse, cut_answers_are_not_complete)
{
	cr_assert_not(feed_every_way("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").eof_ok);
	cr_assert_not(feed_every_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").eof_ok);
	cr_assert_not(feed_every_way("HTTP/1.1 200 OK\r\nContent-Le").eof_ok);
}

Test(h1_parse, broken_answers_are_refused)
{
	const char *bad[] = {
		"this is not HTTP\r\n\r\n",
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(feed_every_way(bad[i]).res, H1_BAD, "accepted: %s", bad[i]);
}

Test(h1_parse, oversized_head_is_refused)
{
	static char text[H1_HEAD_MAX + 64];
	size_t n = (size_t)snprintf(text, sizeof(text), "HTTP/1.1 200 OK\r\nX-Big: ");
	memset(text + n, 'a', sizeof(text) - n - 1);
	text[sizeof(text) - 1] = '\0';
	cr_assert_eq(feed(text, strlen(text), 0, 0, false).res, H1_BAD);
}

Test(h1_parse, a_hook_stops_the_body)
{
	struct h1_response *r = malloc(sizeof(*r));
	struct seen seen = {.stop_at_body = 2};
	struct h1_hooks hooks = {.on_header = on_header, .on_body = on_body, .ctx = &seen};
	const char *text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
	size_t used;
	h1_response_init(r);
	cr_assert_eq(h1_response_feed(r, text, strlen(text), &hooks, &used), H1_STOP);
	free(r);
}

Test(h1_target, literal_http_addresses_only)
{
	struct h1_target t;
	cr_assert(h1_target_parse("http://127.0.0.1:8080/v1/chat/completions", &t));
	cr_assert_str_eq(t.authority, "127.0.0.1:8080");
	cr_assert_str_eq(t.path, "/v1/chat/completions");
	const struct sockaddr_in *v4 = (const struct sockaddr_in *)&t.addr;
	cr_assert_eq(v4->sin_family, AF_INET);
	cr_assert_eq(ntohs(v4->sin_port), 8080);
	cr_assert(h1_target_parse("HTTP://localhost:11434/v1/chat/completions", &t));
	cr_assert_eq(((const struct sockaddr_in *)&t.addr)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	cr_assert(h1_target_parse("http://[::1]:9000/x", &t));
	cr_assert_eq(((const struct sockaddr_in6 *)&t.addr)->sin6_family, AF_INET6);
	cr_assert_str_eq(t.authority, "[::1]:9000");
	cr_assert(h1_target_parse("http://10.0.0.7", &t));
	cr_assert_str_eq(t.path, "/");
	cr_assert_eq(ntohs(((const struct sockaddr_in *)&t.addr)->sin_port), 80);
	const char *others[] = {
		"https://127.0.0.1/v1",	       /* TLS: libcurl */
		"http://api.example.com/v1",   /* a name to resolve: libcurl */
		"http://user:pw@127.0.0.1/v1", /* user info */
		"http://127.0.0.1:0/v1",
		"http://127.0.0.1:65536/v1",
		"http://127.0.0.1:80a/v1",
		"http://127.0.0.1/v 1",
		"http://127.0.0.1/v1#frag",
		"http://[::1/v1",
		"http://::1/v1",
		"http:///v1",
		"ftp://127.0.0.1/",
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		cr_assert_not(h1_target_parse(others[i], &t), "taken: %s", others[i]);
}
