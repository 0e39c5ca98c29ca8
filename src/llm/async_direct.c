/*
 * async_direct.c - an attempt of an event-loop call sent without libcurl (see async_int.h and
 * h1_conn.h): for a plain-HTTP provider at a literal address, the request is the setup's head,
 * its Content-Length and the body, and the answer's status, headers and body go to the same
 * llm_call hooks libcurl's callbacks feed. How the transfer ended maps onto the libcurl code of
 * the same failure, so classification, error texts and retries are call.c's, alike for both.
 */
#include <stdio.h>
#include <string.h>

#include "llm/async_int.h"

static void got_status(void *ctx, int status)
{
	struct llm_async *a = ctx;
	a->call.status = status;
}

static bool got_header(void *ctx, const char *line, size_t len)
{
	struct llm_async *a = ctx;
	llm_call_head(&a->call, line, len);
	return true;
}

static bool got_body(void *ctx, const char *data, size_t len)
{
	struct llm_async *a = ctx;
	return llm_call_body(&a->call, data, len);
}

static void read_done(void *ctx)
{
	struct llm_async *a = ctx;
	llm_async_flush(a->loop);
}

static bool got_all(void *ctx)
{
	struct llm_async *a = ctx;
	return a->call.finished;
}

static void ended(void *ctx, enum h1_end end, const char *why)
{
	struct llm_async *a = ctx;
	a->h1x = NULL;
	if (end != H1_END_OK && why[0])
		snprintf(a->res->detail, sizeof(a->res->detail), "%s", why);
	llm_async_after_attempt(a, llm_call_finish(&a->call, llm_direct_curl_code(end)));
}

bool llm_async_start_direct(struct llm_async *a)
{
	static const struct h1_xfer_hooks hooks = {.on_status = got_status,
						   .on_header = got_header,
						   .on_body = got_body,
						   .after_read = read_done,
						   .body_over = got_all,
						   .on_end = ended};
	struct llm_loop *L = a->loop;
	if (!L->h1 && !(L->h1 = h1_pool_new(L->base)))
		return false;
	if (!llm_call_reset(&a->call))
		return false;
	const struct llm_setup *s = a->setup;
	bool stream = a->req.stream;
	char tail[200];
	size_t body_len = strlen(a->body);
	size_t n = llm_direct_tail(tail, sizeof(tail), NULL, body_len);
	struct iovec iov[] = {{s->h1_head[stream], s->h1_head_len[stream]}, {tail, n}, {a->body, body_len}};
	struct h1_xfer_hooks h = hooks;
	h.ctx = a;
	a->h1x = h1_xfer_start(L->h1, &s->target, iov, 3, s->cfg.connect_timeout_s, s->cfg.timeout_s, &h);
	if (a->h1x)
		return true;
	llm_call_finish(&a->call, CURLE_FAILED_INIT);
	return false;
}
