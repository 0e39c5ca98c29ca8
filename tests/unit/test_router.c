/*
 * test_router.c - method + path routing (src/http/router.c) and the request accessors that
 * depend on it (http_req_param, http_req_query in src/http/response.c).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "http/http.h"

static struct http_router *router;
static struct arena arena;
static struct http_req req;
static char allow[128];
static int calls[8];

static void handler(struct http_req *r, void *arg)
{
	(void)r;
	calls[(int)(long)arg]++;
}

static void setup(void)
{
	router = http_router_new();
	cr_assert_not_null(router);
	arena_init(&arena, 1024, 1 << 16);
	memset(calls, 0, sizeof(calls));
}

static void teardown(void)
{
	http_router_free(router);
	arena_deinit(&arena);
}

TestSuite(router, .init = setup, .fini = teardown);

static void add(const char *method, const char *pattern, long id)
{
	cr_assert_eq(http_route_add(router, method, pattern, handler, (void *)id, 0), SOMA_OK, "%s %s", method,
		     pattern);
}

/* Matches method and target (which may carry a ?query) against the router. */
static enum http_match match(const char *method, const char *target)
{
	memset(&req, 0, sizeof(req));
	req.arena = &arena;
	req.method = str_from(method);
	req.target = str_from(target);
	const char *q = strchr(target, '?');
	req.path = (struct str){target, q ? (size_t)(q - target) : strlen(target)};
	req.query = q ? str_from(q + 1) : (struct str){target + strlen(target), 0};
	allow[0] = '\0';
	return http_router_match(router, &req, allow, sizeof(allow));
}

static void assert_str(struct str s, const char *want)
{
	cr_assert_not_null(s.p, "got no string, expected \"%s\"", want);
	cr_assert(str_eq_cstr(s, want), "got \"%.*s\", expected \"%s\"", (int)s.len, s.p, want);
}

Test(router, literal_route_matches_and_invokes)
{
	cr_assert_eq(http_route_add(router, "GET", "/v1/health", handler, (void *)1L, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(match("GET", "/v1/health"), HTTP_MATCH_OK);
	cr_assert_not_null(req.route);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/health");
	cr_assert_eq(http_route_flags(req.route), HTTP_ROUTE_PUBLIC);
	http_route_invoke(req.route, &req);
	cr_assert_eq(calls[1], 1);
	cr_assert_eq(match("GET", "/v1/healthz"), HTTP_MATCH_NOT_FOUND);
	cr_assert_null(req.route);
	cr_assert_eq(match("GET", "/v1"), HTTP_MATCH_NOT_FOUND);
	cr_assert_eq(match("GET", "/v1/health/more"), HTTP_MATCH_NOT_FOUND);
}

Test(router, root_route)
{
	add("GET", "/", 1);
	cr_assert_eq(match("GET", "/"), HTTP_MATCH_OK);
	cr_assert_eq(match("GET", "/x"), HTTP_MATCH_NOT_FOUND);
}

Test(router, param_route_fills_params)
{
	add("GET", "/v1/sessions/{id}/events", 1);
	cr_assert_eq(match("GET", "/v1/sessions/abc-123/events"), HTTP_MATCH_OK);
	assert_str(req.params[0], "abc-123");
	assert_str(http_req_param(&req, "id"), "abc-123");
	cr_assert_null(http_req_param(&req, "nope").p, "an unknown parameter name gives STR_NULL");
	cr_assert_eq(match("GET", "/v1/sessions/abc/other"), HTTP_MATCH_NOT_FOUND);
}

Test(router, several_params_in_route_order)
{
	add("PUT", "/t/{tenant}/items/{item}", 1);
	cr_assert_eq(match("PUT", "/t/acme/items/42"), HTTP_MATCH_OK);
	assert_str(http_req_param(&req, "tenant"), "acme");
	assert_str(http_req_param(&req, "item"), "42");
}

Test(router, literal_beats_param_registered_first)
{
	add("GET", "/v1/sessions/{id}", 1);
	add("GET", "/v1/sessions/export", 2);
	cr_assert_eq(match("GET", "/v1/sessions/export"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/sessions/export");
	cr_assert_eq(match("GET", "/v1/sessions/s1"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/sessions/{id}");
}

Test(router, literal_beats_param_registered_last)
{
	add("GET", "/v1/sessions/export", 2);
	add("GET", "/v1/sessions/{id}", 1);
	cr_assert_eq(match("GET", "/v1/sessions/export"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/sessions/export");
	cr_assert_eq(match("GET", "/v1/sessions/s1"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/sessions/{id}");
}

Test(router, earlier_literal_segment_weighs_more)
{
	add("GET", "/a/{x}/c", 1);
	add("GET", "/a/b/{y}", 2);
	add("GET", "/{p}/{q}/{r}", 3);
	cr_assert_eq(match("GET", "/a/b/c"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/a/b/{y}");
	cr_assert_eq(match("GET", "/a/z/c"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/a/{x}/c");
	cr_assert_eq(match("GET", "/q/r/s"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/{p}/{q}/{r}");
}

Test(router, wrong_method_gives_405_with_allow)
{
	add("GET", "/v1/health", 1);
	cr_assert_eq(match("POST", "/v1/health"), HTTP_MATCH_BAD_METHOD);
	cr_assert_str_eq(allow, "GET, HEAD", "GET implies HEAD");
	cr_assert_null(req.route);
	cr_assert_eq(match("POST", "/v1/other"), HTTP_MATCH_NOT_FOUND, "an unknown path is 404, not 405");
}

Test(router, allow_lists_every_method_of_the_path)
{
	add("GET", "/v1/keys/{id}", 1);
	add("DELETE", "/v1/keys/{id}", 2);
	add("POST", "/v1/keys", 3);
	cr_assert_eq(match("PATCH", "/v1/keys/k1"), HTTP_MATCH_BAD_METHOD);
	cr_assert_str_eq(allow, "GET, HEAD, DELETE");
	cr_assert_eq(match("GET", "/v1/keys"), HTTP_MATCH_BAD_METHOD);
	cr_assert_str_eq(allow, "POST", "POST alone does not imply HEAD");
	cr_assert_eq(match("HEAD", "/v1/keys"), HTTP_MATCH_BAD_METHOD);
}

Test(router, allow_lists_each_method_once)
{
	add("GET", "/x/{id}", 1);
	add("GET", "/x/special", 2);
	add("HEAD", "/x/special", 3);
	cr_assert_eq(match("POST", "/x/special"), HTTP_MATCH_BAD_METHOD);
	cr_assert_str_eq(allow, "GET, HEAD");
}

Test(router, allow_lists_each_method_once_when_head_comes_first)
{
	add("HEAD", "/y", 1);
	add("GET", "/y", 2);
	cr_assert_eq(match("POST", "/y"), HTTP_MATCH_BAD_METHOD);
	int heads = 0;
	for (const char *p = allow; (p = strstr(p, "HEAD")); p += 4)
		heads++;
	cr_assert_eq(heads, 1, "Allow: %s", allow);
}

Test(router, head_is_served_by_get)
{
	add("GET", "/v1/health", 1);
	cr_assert_eq(match("HEAD", "/v1/health"), HTTP_MATCH_OK);
	cr_assert_str_eq(http_route_pattern(req.route), "/v1/health");
	http_route_invoke(req.route, &req);
	cr_assert_eq(calls[1], 1);
}

Test(router, methods_are_case_sensitive)
{
	add("GET", "/z", 1);
	cr_assert_eq(match("get", "/z"), HTTP_MATCH_BAD_METHOD);
}

Test(router, duplicate_route_is_rejected)
{
	add("GET", "/v1/keys", 1);
	cr_assert_eq(http_route_add(router, "GET", "/v1/keys", handler, NULL, 0), SOMA_ERR_INVALID);
	add("POST", "/v1/keys", 2); /* same path, other method: fine */
	cr_assert_eq(match("GET", "/v1/keys"), HTTP_MATCH_OK);
	http_route_invoke(req.route, &req);
	cr_assert_eq(calls[1], 1, "the first registration still serves");
}

Test(router, same_shape_with_other_param_name_is_a_duplicate)
{
	/* /v1/keys/{name} could never be matched: /v1/keys/{id} takes every request first */
	add("GET", "/v1/keys/{id}", 1);
	cr_assert_eq(http_route_add(router, "GET", "/v1/keys/{name}", handler, NULL, 0), SOMA_ERR_INVALID);
}

Test(router, malformed_patterns_are_rejected)
{
	static const char *const bad[] = {
		"",	"v1/health", "/a/{",  "/a/{}",	 "/a/x{y}",  "/a/{b}c",
		"/a/}", "/a/{b{c}",  "/a/b}", "/{a}{b}", "/a/{b}/}", "{id}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(http_route_add(router, "GET", bad[i], handler, NULL, 0), SOMA_ERR_INVALID,
			     "pattern \"%s\" was accepted", bad[i]);
}

Test(router, limits_on_segments_params_and_method)
{
	char pattern[256] = "";
	size_t used = 0;
	for (int i = 0; i < 17; i++)
		used += (size_t)snprintf(pattern + used, sizeof(pattern) - used, "/s%d", i);
	cr_assert_eq(http_route_add(router, "GET", pattern, handler, NULL, 0), SOMA_ERR_INVALID, "17 segments");
	cr_assert_eq(http_route_add(router, "GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", handler, NULL, 0),
		     SOMA_ERR_INVALID, "9 parameters");
	add("GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", 1);
	cr_assert_eq(http_route_add(router, "ABCDEFGHIJKLMNOPQ", "/m", handler, NULL, 0), SOMA_ERR_INVALID);
}

Test(router, too_many_request_segments_is_404)
{
	add("GET", "/{a}", 1);
	cr_assert_eq(match("GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"), HTTP_MATCH_NOT_FOUND);
}

Test(router, param_is_percent_decoded)
{
	add("GET", "/files/{name}", 1);
	cr_assert_eq(match("GET", "/files/a%20b%2Fc%41+d"), HTTP_MATCH_OK);
	assert_str(req.params[0], "a%20b%2Fc%41+d"); /* raw in params */
	assert_str(http_req_param(&req, "name"), "a b/cA+d");
	cr_assert_eq(match("GET", "/files/bad%zz%4"), HTTP_MATCH_OK);
	assert_str(http_req_param(&req, "name"), "bad%zz%4");
	cr_assert_eq(match("GET", "/files/%e2%82%ac"), HTTP_MATCH_OK);
	assert_str(http_req_param(&req, "name"), "\xe2\x82\xac");
	/* a NUL would cut the C string: /sessions/<id>%00zz answered as the session <id> */
	cr_assert_eq(match("GET", "/files/id%00zz"), HTTP_MATCH_OK);
	assert_str(http_req_param(&req, "name"), "id%00zz");
}

Test(router, param_without_match_is_null)
{
	memset(&req, 0, sizeof(req));
	req.arena = &arena;
	cr_assert_null(http_req_param(&req, "id").p);
}

Test(router, query_values_are_decoded)
{
	add("GET", "/search", 1);
	cr_assert_eq(match("GET", "/search?q=a+b%41&empty=&flag&plus=%2B&x=1&x=2"), HTTP_MATCH_OK);
	struct str v;
	cr_assert(http_req_query(&req, "q", &v));
	assert_str(v, "a bA");
	cr_assert(http_req_query(&req, "empty", &v));
	cr_assert_eq(v.len, 0);
	cr_assert(http_req_query(&req, "flag", &v), "a name without = is present with an empty value");
	cr_assert_eq(v.len, 0);
	cr_assert(http_req_query(&req, "plus", &v));
	assert_str(v, "+");
	cr_assert(http_req_query(&req, "x", &v));
	assert_str(v, "1"); /* the first occurrence wins */
	cr_assert_eq(match("GET", "/search?q=a%00b"), HTTP_MATCH_OK);
	cr_assert(http_req_query(&req, "q", &v));
	assert_str(v, "a%00b");
}

Test(router, absent_query_param)
{
	add("GET", "/search", 1);
	struct str v = STR_NULL;
	cr_assert_eq(match("GET", "/search?query=1&fla=2"), HTTP_MATCH_OK);
	cr_assert_not(http_req_query(&req, "q", &v), "a prefix of a name does not match");
	cr_assert_not(http_req_query(&req, "flag", &v));
	cr_assert_not(http_req_query(&req, "", &v));
	cr_assert_eq(match("GET", "/search"), HTTP_MATCH_OK);
	cr_assert_not(http_req_query(&req, "q", &v), "no query at all");
}

Test(router, free_accepts_null)
{
	http_router_free(NULL);
}
