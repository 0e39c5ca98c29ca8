/*
 * test_middleware.c - the request pipeline (src/http/middleware.c) and response writing
 * (src/http/response.c): request ids, 404/405 envelopes, authentication modes, response framing.
 *
 * DESIGN: a request is parsed from text into a struct http_req whose .out is an evbuffer and
 * whose .arena is the test's arena, exactly as a connection would hand it over; the pipeline
 * writes the response into .out and the test parses those bytes back (helpers.h).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "helpers.h"
#include "http/http.h"

#define ADMIN_TOKEN "admin-0123456789abcdef0123456789abcdef"

static struct arena arena;
static struct http_req req;
static char head[16384];
static struct evbuffer *out;
static struct http_router *router;
static struct http_pipeline *pipeline;
static struct test_resp resp;
static int responses;
static char dir[64];
static struct store *st;

static void on_response(struct http_req *r)
{
	(void)r;
	responses++;
}

/* Answers with the caller's identity as JSON. */
static void whoami(struct http_req *r, void *arg)
{
	(void)arg;
	http_respond_json(r, 200,
			  json_pack("{s:s, s:s, s:s, s:b}", "tenant", r->ident.tenant, "subject", r->ident.subject,
				    "scopes", r->ident.scopes, "authenticated", r->authenticated));
}

static void health(struct http_req *r, void *arg)
{
	(void)arg;
	http_resp_header(r, "Cache-Control", "no-store");
	http_respond(r, 200, "text/plain", "ok\n", 3);
}

static void use_pipeline(bool anonymous, const char *admin_token)
{
	http_pipeline_free(pipeline);
	struct http_auth_opts o = {anonymous, "default", admin_token};
	pipeline = http_pipeline_new(router, &o);
	cr_assert_not_null(pipeline);
}

static void setup(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT); /* quiet: errors here are expected */
	http_access_log_enable(false);
	arena_init(&arena, 4096, 1 << 20);
	out = evbuffer_new();
	router = http_router_new();
	cr_assert(out && router);
	cr_assert_eq(http_route_add(router, "GET", "/v1/health", health, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/v1/things/{id}", whoami, NULL, 0), SOMA_OK);
	cr_assert_eq(http_route_add(router, "POST", "/v1/things/{id}", whoami, NULL, 0), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/v1/admin/config", whoami, NULL, HTTP_ROUTE_ADMIN), SOMA_OK);
	use_pipeline(false, ADMIN_TOKEN);
	responses = 0;
}

static void teardown(void)
{
	test_resp_free(&resp);
	http_pipeline_free(pipeline);
	pipeline = NULL;
	http_router_free(router);
	evbuffer_free(out);
	arena_deinit(&arena);
	if (st) {
		auth_cache_deinit();
		store_close(st);
		st = NULL;
		tmpdir_remove(dir);
	}
	metrics_reset();
}

TestSuite(middleware, .init = setup, .fini = teardown);

/* Parses text into req, runs the pipeline and takes the response into resp. */
static void run(const char *text)
{
	const char *why = NULL;
	size_t len = strlen(text);
	cr_assert(len < sizeof(head));
	memcpy(head, text, len);
	test_resp_free(&resp);
	arena_reset(&arena);
	memset(&req, 0, sizeof(req));
	cr_assert_eq(http_parse_head(head, len, &req, &arena, &why), HTTP_PARSE_OK, "%s", why);
	req.arena = &arena;
	req.out = out;
	req.on_response = on_response;
	req.start_ns = clock_mono_ns();
	int before = responses;
	http_pipeline_run(pipeline, &req);
	cr_assert_eq(responses, before + 1, "exactly one response per request");
	test_resp_take(out, &resp);
}

/* Runs METHOD path with extra header lines (each ending in \r\n). */
static void run_with(const char *method, const char *path, const char *headers)
{
	char text[4096];
	snprintf(text, sizeof(text), "%s %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", method, path, headers);
	run(text);
}

static void run_bearer(const char *path, const char *token)
{
	char h[512];
	snprintf(h, sizeof(h), "Authorization: Bearer %s\r\n", token);
	run_with("GET", path, h);
}

static const char *header(const char *name)
{
	static char value[512];
	if (!test_resp_header(&resp, name, value, sizeof(value)))
		return NULL;
	return value;
}

/* Parses the JSON body; the caller json_decref's it. */
static json_t *body_json(void)
{
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	cr_assert_not_null(j, "body is not JSON: %.*s", (int)resp.body_len, resp.body);
	return j;
}

static const char *jstr(json_t *j, const char *a, const char *b)
{
	json_t *v = json_object_get(j, a);
	return json_string_value(b ? json_object_get(v, b) : v);
}

/* Asserts the error envelope with this status and code, echoing the response's request id. */
static void assert_error(int status, const char *code)
{
	cr_assert_eq(resp.status, status, "response: %s", resp.raw);
	cr_assert_str_eq(header("Content-Type"), "application/json");
	json_t *j = body_json();
	cr_assert_str_eq(jstr(j, "error", "code"), code);
	cr_assert_not_null(jstr(j, "error", "message"));
	cr_assert_gt(strlen(jstr(j, "error", "message")), 10);
	cr_assert_str_eq(jstr(j, "error", "request_id"), header("X-Request-Id"));
	json_decref(j);
}

static bool is_uuid4(const char *s)
{
	if (!s || strlen(s) != 36 || s[14] != '4' || !strchr("89ab", s[19]))
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !(isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

/* Opens a store in a temporary directory. */
static void keys_setup(void)
{
	char why[256] = "";
	tmpdir_make(dir, sizeof(dir));
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, NULL), SOMA_OK);
}

/* Starts the auth cache on the store, after the test made its keys: the cache re-reads on
 * commits of other connections only (PRAGMA data_version), as the CLI makes them. */
static void cache_start(void)
{
	cr_assert_eq(auth_cache_init(st), SOMA_OK);
}

static void new_key(const char *tenant, const char *scopes, char token[IDENTITY_TOKEN_LEN + 1], struct store_key *k)
{
	cr_assert_eq(identity_key_create(st, tenant, scopes, "k", token, k), SOMA_OK);
}

/* ---- request ids ------------------------------------------------------------------------------ */

Test(middleware, request_id_is_echoed_when_valid)
{
	run_with("GET", "/v1/health", "X-Request-Id: abc-123_x.y:z\r\n");
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(header("X-Request-Id"), "abc-123_x.y:z");
	cr_assert_str_eq(req.request_id, "abc-123_x.y:z");
	char id[129], line[200];
	memset(id, 'r', 128);
	id[128] = '\0';
	snprintf(line, sizeof(line), "X-Request-Id: %s\r\n", id);
	run_with("GET", "/v1/health", line);
	cr_assert_str_eq(header("X-Request-Id"), id, "128 characters are still valid");
}

Test(middleware, request_id_is_generated_when_absent_or_invalid)
{
	run_with("GET", "/v1/health", "");
	cr_assert(is_uuid4(header("X-Request-Id")), "generated id: %s", header("X-Request-Id"));
	char first[64];
	snprintf(first, sizeof(first), "%.63s", header("X-Request-Id"));
	run_with("GET", "/v1/health", "");
	cr_assert_str_neq(header("X-Request-Id"), first, "ids differ per request");

	run_with("GET", "/v1/health", "X-Request-Id: has spaces in it\r\n");
	cr_assert(is_uuid4(header("X-Request-Id")), "replaced id: %s", header("X-Request-Id"));
	run_with("GET", "/v1/health", "X-Request-Id:\r\n");
	cr_assert(is_uuid4(header("X-Request-Id")));
	run_with("GET", "/v1/health", "X-Request-Id: a\"b<script>\r\n");
	cr_assert(is_uuid4(header("X-Request-Id")));
	char id[201], line[260];
	memset(id, 'x', 200);
	id[200] = '\0';
	snprintf(line, sizeof(line), "X-Request-Id: %s\r\n", id);
	run_with("GET", "/v1/health", line);
	cr_assert(is_uuid4(header("X-Request-Id")), "a 200-character id is replaced");
}

/* ---- routing errors --------------------------------------------------------------------------- */

Test(middleware, not_found_envelope)
{
	run_with("GET", "/v1/nothing-here", "X-Request-Id: rid-404\r\n");
	assert_error(404, "not_found");
	cr_assert_str_eq(header("X-Request-Id"), "rid-404");
	cr_assert_null(header("Allow"));
}

Test(middleware, method_not_allowed_envelope_with_allow)
{
	run_with("DELETE", "/v1/health", "");
	assert_error(405, "method_not_allowed");
	cr_assert_str_eq(header("Allow"), "GET, HEAD");
	run_with("PUT", "/v1/things/7", "");
	assert_error(405, "method_not_allowed");
	cr_assert_str_eq(header("Allow"), "GET, HEAD, POST");
	json_t *j = body_json();
	cr_assert_not_null(strstr(jstr(j, "error", "message"), "GET, HEAD, POST"), "the message names the methods");
	json_decref(j);
}

/* ---- authentication --------------------------------------------------------------------------- */

Test(middleware, public_route_needs_no_credentials)
{
	run_with("GET", "/v1/health", "");
	cr_assert_eq(resp.status, 200);
	cr_assert_eq(resp.body_len, 3);
	cr_assert(memcmp(resp.body, "ok\n", 3) == 0);
	cr_assert_str_eq(header("Cache-Control"), "no-store");
}

Test(middleware, missing_credentials_is_401)
{
	run_with("GET", "/v1/things/1", "");
	assert_error(401, "unauthorized");
	cr_assert_str_eq(header("WWW-Authenticate"), "Bearer");
}

Test(middleware, anonymous_allowed_without_keys)
{
	use_pipeline(true, "");
	run_with("GET", "/v1/things/1", "");
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
	json_t *j = body_json();
	cr_assert_str_eq(jstr(j, "tenant", NULL), "default");
	cr_assert_str_eq(jstr(j, "subject", NULL), "anonymous");
	cr_assert(json_is_true(json_object_get(j, "authenticated")));
	json_decref(j);
	run_with("GET", "/v1/admin/config", "");
	cr_assert_eq(resp.status, 200, "the single-user default may use admin routes");
}

Test(middleware, anonymous_refused_once_a_key_exists)
{
	keys_setup();
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	new_key("acme", "", token, &k);
	cache_start();
	use_pipeline(true, "");
	run_with("GET", "/v1/things/1", "");
	assert_error(401, "unauthorized");
	cr_assert_str_eq(header("WWW-Authenticate"), "Bearer");
}

Test(middleware, malformed_authorization_is_401)
{
	static const char *const bad[] = {"Authorization: Basic dXNlcjpwYXNz\r\n", "Authorization: Bearer\r\n",
					  "Authorization: Bearer \r\n", "Authorization: Token abc\r\n",
					  "Authorization: BearerXabcdef\r\n"};
	use_pipeline(true, ADMIN_TOKEN); /* a bad header is refused even where anonymous is allowed */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		run_with("GET", "/v1/things/1", bad[i]);
		assert_error(401, "unauthorized");
		cr_assert_str_eq(header("WWW-Authenticate"), "Bearer", "%s", bad[i]);
	}
}

Test(middleware, admin_token_grants_admin)
{
	run_bearer("/v1/admin/config", ADMIN_TOKEN);
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
	json_t *j = body_json();
	cr_assert_str_eq(jstr(j, "subject", NULL), "admin_token");
	cr_assert_str_eq(jstr(j, "tenant", NULL), "default");
	cr_assert_str_eq(jstr(j, "scopes", NULL), "admin");
	json_decref(j);
	run_with("GET", "/v1/admin/config", "Authorization: bearer " ADMIN_TOKEN "\r\n");
	cr_assert_eq(resp.status, 200, "the scheme is case-insensitive");
}

Test(middleware, near_miss_admin_token_is_401)
{
	run_bearer("/v1/admin/config", "admin-0123456789abcdef0123456789abcdeX");
	assert_error(401, "unauthorized");
	run_bearer("/v1/admin/config", "admin-0123456789abcdef0123456789abcde");
	assert_error(401, "unauthorized");
	use_pipeline(false, ""); /* an empty admin_token matches nothing */
	run_bearer("/v1/admin/config", "x");
	assert_error(401, "unauthorized");
}

Test(middleware, key_resolves_tenant_and_admin_needs_scope)
{
	keys_setup();
	char user[IDENTITY_TOKEN_LEN + 1], admin[IDENTITY_TOKEN_LEN + 1];
	struct store_key ku, ka;
	new_key("acme", "read write", user, &ku);
	new_key("ops", "admin", admin, &ka);
	cache_start();

	run_bearer("/v1/things/9", user);
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
	json_t *j = body_json();
	cr_assert_str_eq(jstr(j, "tenant", NULL), "acme");
	char subject[80];
	snprintf(subject, sizeof(subject), "key:%s", ku.id);
	cr_assert_str_eq(jstr(j, "subject", NULL), subject);
	cr_assert_str_eq(jstr(j, "scopes", NULL), "read write");
	json_decref(j);

	run_bearer("/v1/admin/config", user);
	assert_error(403, "forbidden");
	run_bearer("/v1/admin/config", admin);
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
}

Test(middleware, unknown_key_is_401)
{
	keys_setup();
	cache_start();
	run_bearer("/v1/things/1", "sa01_0123456789abcdef_0123456789012345678901234567890123456789");
	assert_error(401, "unauthorized");
	cr_assert_str_eq(header("WWW-Authenticate"), "Bearer");
}

Test(middleware, revoked_key_is_401_after_refresh)
{
	keys_setup();
	char token[IDENTITY_TOKEN_LEN + 1], why[256];
	struct store_key k;
	new_key("acme", "read", token, &k);
	cache_start();
	run_bearer("/v1/things/1", token);
	cr_assert_eq(resp.status, 200);

	struct store *cli; /* revoke as `somaagent keys revoke` does: another connection */
	cr_assert_eq(store_open(dir, &cli, why, sizeof(why)), SOMA_OK);
	cr_assert_eq(store_key_revoke(cli, k.id), SOMA_OK);
	store_close(cli);
	cr_assert_eq(auth_cache_refresh(), SOMA_OK);
	run_bearer("/v1/things/1", token);
	assert_error(401, "unauthorized");
	json_t *j = body_json();
	cr_assert_not_null(strstr(jstr(j, "error", "message"), "revoked"), "the message says why");
	json_decref(j);
}

/* ---- response framing --------------------------------------------------------------------------- */

Test(middleware, respond_sets_length_date_and_keeps_alive)
{
	run_with("GET", "/v1/health", "");
	cr_assert(strncmp(resp.raw, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", resp.raw);
	cr_assert_str_eq(header("Content-Length"), "3");
	cr_assert_str_eq(header("Content-Type"), "text/plain");
	cr_assert_not_null(header("Date"));
	cr_assert_null(header("Connection"), "HTTP/1.1 keeps the connection by default");
	cr_assert_eq(test_resp_header_count(&resp, "Content-Length"), 1);
	cr_assert_eq(req.status, 200);
	cr_assert_eq(req.resp_body_len, 3);
}

Test(middleware, json_content_length_matches_body)
{
	run_with("GET", "/v1/things/abc", "Authorization: Bearer " ADMIN_TOKEN "\r\n");
	char want[16];
	snprintf(want, sizeof(want), "%zu", resp.body_len);
	cr_assert_str_eq(header("Content-Length"), want);
	cr_assert_gt(resp.body_len, 0);
}

Test(middleware, head_has_no_body)
{
	run_with("HEAD", "/v1/health", "");
	cr_assert_eq(resp.status, 200);
	cr_assert_str_eq(header("Content-Length"), "3", "HEAD announces the GET body length");
	cr_assert_eq(resp.body_len, 0, "HEAD carries no body: %s", resp.raw);
}

Test(middleware, connection_close_when_not_keep_alive)
{
	run("GET /v1/health HTTP/1.0\r\n\r\n");
	cr_assert_str_eq(header("Connection"), "close");
	run_with("GET", "/v1/health", "Connection: close\r\n");
	cr_assert_str_eq(header("Connection"), "close");
}

static void big(struct http_req *r, void *arg)
{
	(void)arg;
	static char body[10000];
	memset(body, 'b', sizeof(body));
	r->close_after = true;
	http_respond(r, 201, "application/octet-stream", body, sizeof(body));
	http_respond(r, 500, "text/plain", "twice", 5); /* ignored: already responded */
}

Test(middleware, large_body_close_after_and_second_respond_ignored)
{
	cr_assert_eq(http_route_add(router, "POST", "/big", big, NULL, HTTP_ROUTE_PUBLIC), SOMA_OK);
	run_with("POST", "/big", "");
	cr_assert_eq(resp.status, 201);
	cr_assert_str_eq(header("Content-Length"), "10000");
	cr_assert_eq(resp.body_len, 10000, "the body is written once and whole");
	cr_assert_eq(resp.body[9999], 'b');
	cr_assert_str_eq(header("Connection"), "close");
	cr_assert_null(strstr(resp.raw, "twice"));
}

Test(middleware, status_texts)
{
	cr_assert_str_eq(http_status_text(404), "Not Found");
	cr_assert_str_eq(http_status_text(405), "Method Not Allowed");
	cr_assert_str_eq(http_status_text(431), "Request Header Fields Too Large");
	cr_assert_str_eq(http_status_text(599), "Unknown");
}

Test(middleware, completion_counts_requests_by_route)
{
	http_metrics_register();
	run_with("GET", "/v1/health", "");
	http_pipeline_complete(&req);
	run_with("GET", "/no/such/path", "");
	http_pipeline_complete(&req);
	char *text = NULL;
	size_t len;
	cr_assert_eq(metrics_render(&text, &len), SOMA_OK);
	cr_assert_not_null(
		strstr(text, "soma_http_requests_total{route=\"/v1/health\",method=\"GET\",status=\"200\"} 1\n"), "%s",
		text);
	cr_assert_not_null(
		strstr(text, "soma_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n"),
		"raw paths never become labels: %s", text);
	cr_assert_null(strstr(text, "/no/such/path"));
	cr_assert_not_null(strstr(text, "soma_http_request_duration_seconds_count{route=\"/v1/health\""));
	free(text);
}
