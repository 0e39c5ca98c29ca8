/*
 * async_int.h - what the event-loop client's two transports share (async.c: libcurl's multi;
 * async_direct.c: h1_conn.h for plain-HTTP providers at a literal address).
 *
 * DESIGN: a call (struct llm_async) runs its attempts on one thread's loop (struct llm_loop);
 * each attempt is either a libcurl easy handle on the loop's multi or a direct transfer on the
 * loop's h1 pool, chosen by the call's setup (llm_setup.direct). Both feed the same llm_call
 * (call.c), and both end an attempt through llm_async_after_attempt, which retries or reports.
 * Everything here belongs to the loop's thread.
 */
#ifndef SOMA_LLM_ASYNC_INT_H
#define SOMA_LLM_ASYNC_INT_H

#include <event2/event.h>

#include "llm/llm_int.h"

#define SPARE_HANDLES 8	 /* easy handles kept per thread for the next calls */
#define MAX_PARKED    16 /* watches of idle provider connections kept registered (see Parked) */

struct llm_loop;
struct llm_drain;

/* One provider socket watched for libcurl (its sockp). */
struct sock_watch {
	struct llm_loop *loop; /* owner */
	struct event *ev;      /* the registration; owned */
	curl_socket_t fd;      /* the socket (libcurl's) */
	short flags;	       /* events registered, 0 after a parked socket fired */
	bool parked;	       /* libcurl stopped watching it; in loop->parked */
};

struct llm_loop {
	struct event_base *base;	       /* the thread's loop (borrowed) */
	CURLM *multi;			       /* its transfers and connection cache; owned */
	struct event *timer;		       /* libcurl's timeout; owned */
	struct llm_setup *setup;	       /* the current settings' setup; a reference */
	CURL *spare[SPARE_HANDLES];	       /* handles set up with setup, for the next attempts; owned */
	int nspare;			       /* entries in spare */
	bool in_action;			       /* curl_multi_socket_action is on the stack */
	struct sock_watch *parked[MAX_PARKED]; /* kept connections' watches (see Parked) */
	int nparked;			       /* entries in parked */
	struct llm_async *flush;	       /* calls that got chunks in this action (see Bursts) */
	struct h1_pool *h1;		       /* direct connections (see Direct); owned, made on first use */
	struct llm_async *early;	       /* calls whose [DONE] came in this action (see Drains) */
	struct llm_drain *drains;	       /* transfers going on after their call ended (see Drains); owned */
};

struct llm_async {
	struct llm_loop *loop;	      /* the thread's multi */
	struct llm_config cfg;	      /* copied settings */
	struct llm_request req;	      /* copied request (messages NULL once the body is built) */
	struct llm_callbacks cb;      /* copied hooks */
	struct llm_callbacks hooks;   /* what the attempt calls: cb's, through chunk_seen */
	struct llm_async *flush_next; /* on loop->flush */
	bool flush_pending;	      /* on loop->flush */
	struct llm_async *early_next; /* on loop->early */
	bool early_pending;	      /* on loop->early */
	struct llm_call call;	      /* the attempt's state */
	struct llm_setup *setup;      /* what its attempts share with the loop's calls; a reference */
	llm_done_fn done;	      /* end of the call */
	struct llm_result *res;	      /* caller's storage for the outcome */
	char *body;		      /* request body; owned */
	CURL *easy;		      /* the attempt's handle, NULL between attempts */
	struct h1_xfer *h1x;	      /* or the attempt's direct transfer */
	struct event *retry;	      /* backoff timer; owned, NULL when not waiting */
	long delay_ms;		      /* next backoff */
	uint64_t first_ns;	      /* clock_mono_ns of the reply's first chunk, 0 before (metrics) */
};

/* A handle comes back (async.c): kept among the spares, with its options, when set up with the
 * loop's setup and set_up; else freed. */
void llm_async_give_back(struct llm_loop *L, struct llm_setup *setup, CURL *h, bool set_up);
/* After libcurl handed on bytes (an action, an unpause): ended calls reported, calls whose reply
 * is whole ended (their transfers drain), bursts flushed (async.c). */
void llm_async_after_curl(struct llm_loop *L);
/* ---- async_drain.c ---- */
/* call.c's llm_call.on_finished (ctx: the llm_async): the call ends after this action. */
void llm_async_reply_whole(void *ctx);
/* The calls whose reply is whole end now; their transfers go on as drains. */
void llm_async_detach_early(struct llm_loop *L);
/* The drain whose handle's CURLOPT_PRIVATE is priv, or NULL (a call's). */
struct llm_drain *llm_drain_of(struct llm_loop *L, void *priv);
/* A drain is over: clean (its handle back to the spares, its connection kept) or not (closed). */
void llm_drain_end(struct llm_drain *d, bool clean);

/* Sends the bursts of the calls that got chunks (see async.c, Bursts). */
void llm_async_flush(struct llm_loop *L);
/* An attempt of a ended as e: a retry is scheduled, or the call is reported and freed. */
void llm_async_after_attempt(struct llm_async *a, enum llm_error e);
/* Starts a's next attempt as a direct transfer (async_direct.c); false on OOM (the attempt's
 * llm_call is finished). */
bool llm_async_start_direct(struct llm_async *a);

#endif
