/*
 * llm_flow.h - backpressure for a streamed LLM proxy reply (llm_proxy.c): the provider is read no
 * faster than the client takes the relayed stream.
 *
 * DESIGN: once more than stream.max_buffer bytes wait for the client, the provider call is paused
 * (llm_async_pause: libcurl stops reading the provider's socket, as the direct path does) and the
 * request's on_drain is set; when the client has read all that waited, the call resumes. A client
 * that reads nothing of what waits for llm.proxy_stall_s is cut: the owner's on_stall stops the
 * call (the provider connection closes, the slot frees) and ends the stream with the in-band
 * llm_client_too_slow error (llm_flow_end_too_slow). A provider that writes in bursts faster than
 * a steady client parses thus costs at most about stream.max_buffer, never the reply.
 * Everything runs on the request's io thread.
 */
#ifndef SOMA_GATEWAY_LLM_FLOW_H
#define SOMA_GATEWAY_LLM_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "llm/llm.h"

struct llm_flow {
	struct http_req *req; /* the client's request (borrowed) */
	size_t max_pending;   /* stream.max_buffer */
	int stall_s;	      /* llm.proxy_stall_s */
	bool paused;	      /* the provider call is paused */
	size_t seen;	      /* bytes waiting at the last look */
	uint64_t since_ns;    /* when the client last read any of them */
	struct event *timer;  /* looks once a second while paused; owned (llm_flow_free) */
	/* the client read nothing for stall_s while paused: the owner stops the call and ends the
	 * stream (the flow is freed with it) */
	void (*on_stall)(void *ctx);
	/* the request's on_drain while paused: the owner calls llm_flow_drained with its call */
	void (*on_drain)(struct http_req *req);
	void *ctx;
};

/* A write left pending bytes for the client: past max_pending the call is paused. */
void llm_flow_wrote(struct llm_flow *f, struct llm_async *call, size_t pending);
/* The client read all that waited (the request's on_drain): the call resumes. It may end
 * (its done runs) before this returns: the caller touches nothing of it afterwards. */
void llm_flow_drained(struct llm_flow *f, struct llm_async *call);
/* Ends the stream of a cut client: the in-band llm_client_too_slow error, then [DONE]. */
void llm_flow_end_too_slow(struct llm_flow *f);
/* Frees what f holds (its timer); f itself is the owner's. */
void llm_flow_free(struct llm_flow *f);

#endif
