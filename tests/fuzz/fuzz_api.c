/*
 * fuzz_api.c - libFuzzer harness: arbitrary bytes as the JSON body of every endpoint that reads
 * one (messages, actions, pause, tasks, the LLM endpoints, keys, tenants, memory), through the real pipeline and
 * handlers. The first byte picks the endpoint; the rest is the body.
 * Invariants: no crash, no leak, no sanitizer report; every answer is HTTP/1.1, and every 4xx
 * carries the JSON error envelope.
 * DESIGN: the harness provides its own gw_store and gateway_store (the handlers' ways into the
 * store, kept in src/gateway/store_bridge.c so that they can be replaced here): a request that passes
 * validation gets a 202 and its op is freed, so every parser and op builder runs without a store.
 * The LLM has no key, so valid LLM requests end in a 503 before any provider call. Not here:
 * /v1/memory/recall, whose valid requests go to a pool thread that answers through the io
 * thread's loop (there is none in a harness); its body checks are the e2e tests'.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "gateway/gateway.h"

struct store *gateway_store(void)
{
	return NULL; /* only the event stream and uploads use it: not fuzzed here */
}

void gw_store(struct http_req *req, struct store_op *op, gw_store_done_fn fn)
{
	(void)fn;
	store_op_free(op);
	http_respond_json(req, 202, json_pack("{s:s}", "status", "accepted by the fuzz harness"));
}

enum soma_err gw_store_try(struct http_req *req, struct store_op *op, gw_store_done_fn fn)
{
	gw_store(req, op, fn);
	return SOMA_OK;
}

void gw_store_refused(struct http_req *req, enum soma_err err)
{
	(void)req, (void)err;
}

static const char *const endpoints[] = {
	"/v1/session/message",	"/v1/session/action",  "/v1/sessions/s1/pause", "/v1/tasks",
	"/v1/chat/completions", "/v1/llm/invoke",      "/v1/llm/invoke/stream", "/v1/keys",
	"/v1/tenants",		"/v1/memory/remember",
};
#define NENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))

static struct http_pipeline *pipeline(void)
{
	static struct http_pipeline *p;
	if (p)
		return p;
	static const char *const sets[] = {"llm.api_key=", "llm.provider=custom", "llm.base_url=http://127.0.0.1:9/v1",
					   "llm.model=m"};
	static char *const no_env[] = {NULL};
	struct cfg_load_opts o = {.config_path = "/dev/null", .sets = sets, .nsets = 4, .env = no_env};
	struct cfg_errors errs;
	struct http_router *r = http_router_new();
	if (cfg_load(&o, &errs) != SOMA_OK || !r || gateway_chat_routes(r) != SOMA_OK ||
	    gateway_session_routes(r) != SOMA_OK || gateway_task_routes(r) != SOMA_OK ||
	    gateway_llm_routes(r) != SOMA_OK || gateway_admin_routes(r) != SOMA_OK ||
	    gateway_memory_routes(r) != SOMA_OK || gateway_control_routes(r) != SOMA_OK)
		abort();
	struct http_auth_opts auth = {.anonymous_allowed = true, .default_tenant = "default", .admin_token = ""};
	p = http_pipeline_new(r, &auth);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct http_pipeline *p = pipeline();
	struct arena arena;
	arena_init(&arena, 4096, 1 << 20);
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			 endpoints[data[0] % NENDPOINTS], size - 1);
	struct http_req req = {.arena = &arena, .content_length = -1};
	const char *why;
	char *copy = arena_alloc(&arena, (size_t)n + 1);
	char *body = arena_alloc(&arena, size);
	if (!copy || !body)
		abort();
	memcpy(copy, head, (size_t)n + 1);
	memcpy(body, data + 1, size - 1);
	if (http_parse_head(copy, (size_t)n, &req, &arena, &why) != HTTP_PARSE_OK)
		abort();
	req.body = body;
	req.body_len = size - 1;
	req.out = evbuffer_new();
	http_pipeline_run(p, &req);
	size_t len = evbuffer_get_length(req.out);
	char *out = (char *)evbuffer_pullup(req.out, -1);
	if (len < 12 || memcmp(out, "HTTP/1.1 ", 9) != 0)
		abort();
	if (out[9] == '4' && !memmem(out, len, "{\"error\":{\"code\":", 17))
		abort(); /* a 4xx without the envelope */
	evbuffer_free(req.out);
	arena_deinit(&arena);
	return 0;
}
