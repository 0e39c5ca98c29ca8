/*
 * test_parser.c - the HTTP/1.1 request-head parser (src/http/parser.c): request line, headers,
 * framing (Content-Length, Transfer-Encoding), connection handling, and the strict rejections
 * that keep request smuggling out.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"

static struct arena arena;
static struct http_req req;
static char head[64 * 1024];
static const char *why;

static void setup(void)
{
	arena_init(&arena, 4096, 1 << 20);
	memset(&req, 0, sizeof(req));
	why = NULL;
}

static void teardown(void)
{
	arena_deinit(&arena);
}

TestSuite(parser, .init = setup, .fini = teardown);

/* Parses text (copied into head, which outlives req). */
static enum http_parse_status parse(const char *text)
{
	size_t len = strlen(text);
	cr_assert(len < sizeof(head));
	memcpy(head, text, len);
	memset(&req, 0, sizeof(req));
	return http_parse_head(head, len, &req, &arena, &why);
}

#define assert_parse(text, status)                                                                               \
	do {                                                                                                     \
		enum http_parse_status st_ = parse(text);                                                        \
		cr_assert_eq(st_, (status), "parse of %s gave %d (%s), expected %d", #text, st_, why ? why : "", \
			     (status));                                                                          \
	} while (0)

static void assert_str(struct str s, const char *want)
{
	cr_assert(str_eq_cstr(s, want), "got \"%.*s\", expected \"%s\"", (int)s.len, s.p ? s.p : "", want);
}

Test(parser, valid_get_with_headers)
{
	assert_parse("GET /v1/health HTTP/1.1\r\nHost: example.com\r\nX-Thing:   spaced value \t\r\n"
		     "Accept: */*\r\n\r\n",
		     HTTP_PARSE_OK);
	assert_str(req.method, "GET");
	assert_str(req.target, "/v1/health");
	assert_str(req.path, "/v1/health");
	cr_assert_eq(req.query.len, 0);
	cr_assert_eq(req.minor_version, 1);
	cr_assert_eq(req.nheaders, 3);
	assert_str(req.headers[0].name, "Host");
	assert_str(req.headers[0].value, "example.com");
	assert_str(req.headers[1].value, "spaced value");
	assert_str(http_req_header(&req, "HOST"), "example.com");
	assert_str(http_req_header(&req, "accept"), "*/*");
	cr_assert_null(http_req_header(&req, "missing").p);
	cr_assert_eq(req.content_length, -1);
	cr_assert(req.keep_alive);
	cr_assert_not(req.expect_continue);
}

Test(parser, post_with_content_length)
{
	assert_parse("POST /v1/things HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n", HTTP_PARSE_OK);
	assert_str(req.method, "POST");
	cr_assert_eq(req.content_length, 42);
	assert_parse("POST /x HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n", HTTP_PARSE_OK);
	cr_assert_eq(req.content_length, 0);
}

Test(parser, query_is_split_from_path)
{
	assert_parse("GET /a/b?x=1&y=two HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_OK);
	assert_str(req.path, "/a/b");
	assert_str(req.query, "x=1&y=two");
	assert_str(req.target, "/a/b?x=1&y=two");
	assert_parse("GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_OK);
	assert_str(req.path, "/a");
	cr_assert_eq(req.query.len, 0);
	assert_parse("GET /a?b?c HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_OK);
	assert_str(req.path, "/a");
	assert_str(req.query, "b?c");
}

Test(parser, http10_closes_unless_keep_alive)
{
	assert_parse("GET / HTTP/1.0\r\n\r\n", HTTP_PARSE_OK); /* no Host needed on 1.0 */
	cr_assert_eq(req.minor_version, 0);
	cr_assert_not(req.keep_alive);
	assert_parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", HTTP_PARSE_OK);
	cr_assert(req.keep_alive);
}

Test(parser, connection_close)
{
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", HTTP_PARSE_OK);
	cr_assert_not(req.keep_alive);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n", HTTP_PARSE_OK);
	cr_assert_not(req.keep_alive);
	assert_parse("GET / HTTP/1.0\r\nConnection: close\r\n\r\n", HTTP_PARSE_OK);
	cr_assert_not(req.keep_alive);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", HTTP_PARSE_OK);
	cr_assert(req.keep_alive);
}

Test(parser, leading_empty_lines_are_ignored)
{
	assert_parse("\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_OK);
	assert_str(req.path, "/x");
}

Test(parser, empty_or_unterminated_heads_are_rejected)
{
	assert_parse("", HTTP_PARSE_BAD_REQUEST);
	assert_parse("\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / HTTP/1.1", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, bad_method)
{
	assert_parse("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "method"), "why: %s", why);
	assert_parse("GE\"T / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse(" / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, target_must_be_an_absolute_path)
{
	assert_parse("GET http://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "absolute path"), "why: %s", why);
	assert_parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, control_and_non_ascii_chars_in_target)
{
	assert_parse("GET /a\x01z HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "percent-encode"), "why: %s", why);
	assert_parse("GET /a\x7fz HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, versions)
{
	assert_parse("GET / HTTP/2.0\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_VERSION);
	cr_assert_not_null(strstr(why, "HTTP/1.0 and HTTP/1.1"), "why: %s", why);
	assert_parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_VERSION);
	assert_parse("GET / HTTP/1.10\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_VERSION);
	assert_parse("GET / FOO/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / http/1.1\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / garbage\r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / \r\nHost: h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, host_is_required_on_http11)
{
	assert_parse("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "Host"), "why: %s", why);
	assert_parse("GET / HTTP/1.1\r\nhOsT: h\r\n\r\n", HTTP_PARSE_OK);
}

Test(parser, more_than_one_host_is_rejected)
{
	/* RFC 9112 3.2: a request with more than one Host field line gets 400 */
	assert_parse("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, obs_fold_is_rejected)
{
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nX-Long: part one\r\n  part two\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "obs-fold"), "why: %s", why);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nX-Long: one\r\n\ttwo\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, malformed_header_lines)
{
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "Name: value"), "why: %s", why);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\n: empty name\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / HTTP/1.1\r\nHost : h\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01"
		     "b\r\n\r\n",
		     HTTP_PARSE_BAD_REQUEST);
}

Test(parser, header_value_may_be_empty)
{
	assert_parse("GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n\r\n", HTTP_PARSE_OK);
	struct str v = http_req_header(&req, "x-empty");
	cr_assert_not_null(v.p);
	cr_assert_eq(v.len, 0);
}

Test(parser, conflicting_content_length)
{
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		     HTTP_PARSE_BAD_REQUEST);
	cr_assert_not_null(strstr(why, "Content-Length"), "why: %s", why);
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", HTTP_PARSE_OK);
	cr_assert_eq(req.content_length, 5);
}

Test(parser, non_numeric_content_length)
{
	static const char *const bad[] = {"abc", "-1", "+5", "1 2", "5, 5", "0x10", "", "1234567890123456789"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[256];
		snprintf(text, sizeof(text), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %s\r\n\r\n", bad[i]);
		cr_assert_eq(parse(text), HTTP_PARSE_BAD_REQUEST, "Content-Length \"%s\" was accepted", bad[i]);
	}
}

Test(parser, transfer_encoding_alone_needs_length)
{
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_PARSE_NO_LENGTH);
	cr_assert_not_null(strstr(why, "Content-Length"), "why: %s", why);
}

Test(parser, transfer_encoding_with_content_length_is_bad)
{
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		     HTTP_PARSE_BAD_REQUEST);
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
		     HTTP_PARSE_BAD_REQUEST);
}

static void build_headers(char *buf, size_t cap, int n)
{
	size_t used = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 1; i < n; i++)
		used += (size_t)snprintf(buf + used, cap - used, "X-H%d: v\r\n", i);
	snprintf(buf + used, cap - used, "\r\n");
}

Test(parser, header_count_limit)
{
	static char text[16 * 1024];
	build_headers(text, sizeof(text), HTTP_MAX_HEADERS);
	cr_assert_eq(parse(text), HTTP_PARSE_OK, "exactly %d headers are fine: %s", HTTP_MAX_HEADERS, why);
	cr_assert_eq(req.nheaders, HTTP_MAX_HEADERS);
	build_headers(text, sizeof(text), HTTP_MAX_HEADERS + 1);
	cr_assert_eq(parse(text), HTTP_PARSE_TOO_MANY_HEADERS);
	cr_assert_not_null(strstr(why, "100"), "why: %s", why);
}

Test(parser, expect_continue)
{
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", HTTP_PARSE_OK);
	cr_assert(req.expect_continue);
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nexpect: 100-Continue\r\n\r\n", HTTP_PARSE_OK);
	cr_assert(req.expect_continue);
	assert_parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: something-else\r\n\r\n",
		     HTTP_PARSE_OK);
	cr_assert_not(req.expect_continue);
}

/* Bare LF is refused: the connection ends a head at CRLF CRLF, and a parser that ended it at
 * LF LF could hide a second request inside the first (request smuggling / desync). */
Test(parser, lf_only_line_endings_are_refused)
{
	assert_parse("GET /lf?q=1 HTTP/1.1\nHost: h\nX-A: b\n\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET /lf HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", HTTP_PARSE_BAD_REQUEST);
	assert_parse("GET /lf HTTP/1.1\r\nHost: h\r\n\n", HTTP_PARSE_BAD_REQUEST);
}

Test(parser, nul_byte_in_header_value_is_rejected)
{
	char text[] = "GET / HTTP/1.1\r\nHost: h\r\nX-A: a?b\r\n\r\n";
	char *q = strchr(text + 28, '?');
	cr_assert_not_null(q);
	*q = '\0';
	size_t len = sizeof(text) - 1;
	memcpy(head, text, len);
	cr_assert_eq(http_parse_head(head, len, &req, &arena, &why), HTTP_PARSE_BAD_REQUEST);
}

Test(parser, arena_too_small_for_headers)
{
	struct arena tiny;
	arena_init(&tiny, 64, 64);
	char text[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
	enum http_parse_status st = http_parse_head(text, sizeof(text) - 1, &req, &tiny, &why);
	arena_deinit(&tiny);
	cr_assert_neq(st, HTTP_PARSE_OK, "a parse that could not store its headers must fail");
}
