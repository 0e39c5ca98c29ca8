/*
 * test_jwt_http.c - JWTs in the auth middleware (mw_auth in src/http/middleware.c): a valid JWT
 * authenticates, admin routes need its admin scope, a refused JWT gets 401 with the reason and
 * RFC 6750's error="invalid_token", and no answer ever echoes the token.
 *
 * DESIGN: as in test_middleware.c, a request is parsed from text, run through the pipeline, and
 * its response read back from the evbuffer (helpers.h). No store is needed: JWTs never touch
 * the API-key cache.
 */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "helpers.h"
#include "http/http.h"
#include "jwt_helpers.h"

static struct arena arena;
static struct http_req req;
static char head[16384];
static struct evbuffer *out;
static struct http_router *router;
static struct http_pipeline *pipeline;
static struct test_resp resp;

static void on_response(struct http_req *r)
{
	(void)r;
}

static void whoami(struct http_req *r, void *arg)
{
	(void)arg;
	http_respond_json(r, 200,
			  json_pack("{s:s, s:s, s:s}", "tenant", r->ident.tenant, "subject", r->ident.subject, "scopes",
				    r->ident.scopes));
}

static void setup(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
	http_access_log_enable(false);
	arena_init(&arena, 4096, 1 << 20);
	out = evbuffer_new();
	router = http_router_new();
	cr_assert_eq(http_route_add(router, "GET", "/v1/me", whoami, NULL, 0), SOMA_OK);
	cr_assert_eq(http_route_add(router, "GET", "/v1/admin/config", whoami, NULL, HTTP_ROUTE_ADMIN), SOMA_OK);
	struct http_auth_opts o = {false, "default", ""};
	pipeline = http_pipeline_new(router, &o);
	struct jwt_config c = {.secret = TEST_SECRET,
			       .public_key_path = "",
			       .jwks_url = "",
			       .issuer = "",
			       .audience = "soma",
			       .leeway_s = 0,
			       .tenant_claims = "tenant"};
	char why[256] = "";
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_OK, "%s", why);
}

static void teardown(void)
{
	jwt_auth_deinit();
	test_resp_free(&resp);
	http_pipeline_free(pipeline);
	http_router_free(router);
	evbuffer_free(out);
	arena_deinit(&arena);
	metrics_reset();
}

TestSuite(jwt_http, .init = setup, .fini = teardown);

static void run_bearer(const char *path, const char *token)
{
	char text[12288];
	snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n", path, token);
	const char *why = NULL;
	size_t len = strlen(text);
	memcpy(head, text, len + 1);
	test_resp_free(&resp);
	arena_reset(&arena);
	memset(&req, 0, sizeof(req));
	cr_assert_eq(http_parse_head(head, len, &req, &arena, &why), HTTP_PARSE_OK, "%s", why);
	req.arena = &arena;
	req.out = out;
	req.on_response = on_response;
	req.start_ns = clock_mono_ns();
	http_pipeline_run(pipeline, &req);
	test_resp_take(out, &resp);
}

static const char *header(const char *name)
{
	static char value[512];
	return test_resp_header(&resp, name, value, sizeof(value)) ? value : NULL;
}

static char *token_with(const char *extra)
{
	char *claims = test_claims(extra);
	char *t = test_token("HS256", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
	free(claims);
	return t;
}

/* Asserts a 401 whose message contains want and never the token. */
static void assert_refused(const char *token, const char *want)
{
	cr_assert_eq(resp.status, 401, "%s", resp.raw);
	cr_assert_str_eq(header("WWW-Authenticate"), "Bearer error=\"invalid_token\"");
	cr_assert_not_null(memmem(resp.body, resp.body_len, want, strlen(want)), "%.*s", (int)resp.body_len, resp.body);
	const char *sig = strrchr(token, '.') + 1;
	cr_assert_null(memmem(resp.raw, strlen(resp.raw), token, strlen(token)), "the token is echoed");
	if (strlen(sig) > 8)
		cr_assert_null(memmem(resp.raw, strlen(resp.raw), sig, strlen(sig)), "the signature is echoed");
}

Test(jwt_http, valid_jwt_authenticates)
{
	char *t = token_with("{\"aud\": \"soma\", \"scope\": \"chat\"}");
	run_bearer("/v1/me", t);
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "tenant")), "acme");
	cr_assert_str_eq(json_string_value(json_object_get(j, "subject")), "jwt:alice");
	cr_assert_str_eq(json_string_value(json_object_get(j, "scopes")), "chat");
	json_decref(j);
	run_bearer("/v1/admin/config", t);
	cr_assert_eq(resp.status, 403, "no admin scope: %s", resp.raw);
	free(t);
	t = token_with("{\"aud\": \"soma\", \"scope\": \"chat admin\"}");
	run_bearer("/v1/admin/config", t);
	cr_assert_eq(resp.status, 200, "%s", resp.raw);
	free(t);
}

Test(jwt_http, refused_jwts_say_why)
{
	char *t = token_with("{\"aud\": \"other\"}");
	run_bearer("/v1/me", t);
	assert_refused(t, "audience");
	free(t);
	t = token_with("{\"aud\": \"soma\", \"exp\": 1000}");
	run_bearer("/v1/me", t);
	assert_refused(t, "expired");
	free(t);
	t = token_with("{\"aud\": \"soma\", \"tenant\": null}");
	run_bearer("/v1/me", t);
	assert_refused(t, "no tenant claim");
	free(t);
	char *claims = test_claims("{\"aud\": \"soma\"}");
	t = test_token("HS256", "wrong-wrong-wrong-wrong-wrong-wrong", 35, NULL, claims, NULL);
	run_bearer("/v1/me", t);
	assert_refused(t, "signature is invalid");
	free(t);
	free(claims);
}

Test(jwt_http, api_keys_still_take_the_key_path)
{
	run_bearer("/v1/me", "sa01_0123456789abcdef_0123456789012345678901234567890123456789");
	cr_assert_eq(resp.status, 401);
	cr_assert_str_eq(header("WWW-Authenticate"), "Bearer");
	cr_assert_not_null(memmem(resp.body, resp.body_len, "API key", 7));
}
