/*
 * llm_flow.c - backpressure for a streamed LLM proxy reply (see llm_flow.h): pause the provider
 * call while the client lags by more than stream.max_buffer, resume when it has read what waited,
 * cut a client that reads nothing for llm.proxy_stall_s.
 */
#include "gateway/llm_flow.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>

#include "core/clock.h"
#include "core/log.h"

static void look(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct llm_flow *f = arg;
	size_t pending = evbuffer_get_length(f->req->out);
	uint64_t now = clock_mono_ns();
	if (pending < f->seen) /* the client read some: it is slow, not gone */
		f->since_ns = now;
	f->seen = pending;
	if (now - f->since_ns >= (uint64_t)f->stall_s * 1000000000u) {
		log_warn("llm",
			 "request %s: the client read nothing of the %zu bytes waiting for it (stream.max_buffer "
			 "%zu) for %d s (llm.proxy_stall_s): the call is stopped",
			 f->req->request_id, pending, f->max_pending, f->stall_s);
		f->on_stall(f->ctx);
		return;
	}
	struct timeval tv = {1, 0};
	evtimer_add(f->timer, &tv);
}

void llm_flow_wrote(struct llm_flow *f, struct llm_async *call, size_t pending)
{
	if (pending <= f->max_pending || f->paused)
		return;
	if (!f->timer && !(f->timer = evtimer_new(http_thread_base(f->req->thread), look, f)))
		return; /* no memory for the watch: read on (the client is not cut for our lack) */
	f->paused = true;
	f->seen = pending;
	f->since_ns = clock_mono_ns();
	f->req->on_drain = f->on_drain;
	llm_async_pause(call);
	struct timeval tv = {1, 0};
	evtimer_add(f->timer, &tv);
}

void llm_flow_drained(struct llm_flow *f, struct llm_async *call)
{
	f->req->on_drain = NULL;
	if (!f->paused)
		return;
	f->paused = false;
	evtimer_del(f->timer);
	llm_async_resume(call);
}

void llm_flow_end_too_slow(struct llm_flow *f)
{
	struct http_req *req = f->req;
	req->on_abort = NULL;
	req->on_drain = NULL;
	char err[400];
	int n = snprintf(
		err, sizeof(err),
		"data: {\"error\":{\"code\":\"llm_client_too_slow\",\"type\":\"proxy_error\",\"message\":\"the "
		"client read nothing of the stream for %d s while more than stream.max_buffer (%zu bytes) "
		"waited for it; the reply was stopped\",\"param\":null,\"request_id\":\"%s\"}}\n\n",
		f->stall_s, f->max_pending, req->request_id);
	if (n > 0 && (size_t)n < sizeof(err))
		http_stream_write(req, err, (size_t)n);
	http_stream_write(req, "data: [DONE]\n\n", 14);
	http_stream_end(req);
}

void llm_flow_free(struct llm_flow *f)
{
	if (f->timer)
		event_free(f->timer);
	f->timer = NULL;
}
