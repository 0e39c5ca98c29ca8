/*
 * fuzz_http.c - libFuzzer harness: arbitrary bytes as a request head, through the parser and,
 * when it parses, through the whole pipeline (request id, routing, auth) into a response.
 * Invariants: no crash, no leak, no sanitizer report; every response starts with "HTTP/1.1 ".
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

static void ok_handler(struct http_req *req, void *arg)
{
	(void)arg;
	struct str id = http_req_param(req, "id"), q;
	(void)http_req_query(req, "limit", &q);
	http_respond(req, 200, "text/plain", id.p, id.p ? id.len : 0);
}

static struct http_pipeline *pipeline(void)
{
	static struct http_pipeline *p;
	if (p)
		return p;
	struct http_router *r = http_router_new();
	if (http_route_add(r, "GET", "/v1/health", ok_handler, NULL, HTTP_ROUTE_PUBLIC) != SOMA_OK ||
	    http_route_add(r, "GET", "/v1/sessions/{id}/events", ok_handler, NULL, 0) != SOMA_OK ||
	    http_route_add(r, "POST", "/v1/admin/{id}", ok_handler, NULL, HTTP_ROUTE_ADMIN) != SOMA_OK)
		abort();
	struct http_auth_opts auth = {.anonymous_allowed = true, .default_tenant = "default", .admin_token = ""};
	p = http_pipeline_new(r, &auth);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct arena arena;
	arena_init(&arena, 4096, 1 << 20);
	char *head = arena_alloc(&arena, size + 1);
	if (!head)
		goto out;
	memcpy(head, data, size);
	head[size] = '\0';
	struct http_req req = {.arena = &arena, .content_length = -1};
	const char *why;
	if (http_parse_head(head, size, &req, &arena, &why) != HTTP_PARSE_OK)
		goto out;
	req.out = evbuffer_new();
	http_pipeline_run(pipeline(), &req);
	size_t n = evbuffer_get_length(req.out);
	if (n < 9 || memcmp(evbuffer_pullup(req.out, 9), "HTTP/1.1 ", 9) != 0)
		abort();
	evbuffer_free(req.out);
out:
	arena_deinit(&arena);
	return 0;
}
