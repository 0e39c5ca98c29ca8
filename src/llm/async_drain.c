/*
 * async_drain.c - the event-loop client's transfers that outlive their call, and backpressure
 * (see async.c and async_int.h).
 *
 * DESIGN: a streamed reply is whole at its [DONE] (call.c), and the call ends then (the relay's
 * client is answered at once), but libcurl's transfer still has the framing's end to read: cut
 * there, libcurl would close the connection, and every streamed call would pay a new connect and
 * TLS handshake. So the transfer goes on as a drain (struct llm_drain: the handle, its request
 * body, a setup reference), its bytes swallowed, for at most LLM_AFTER_DONE_MS; it then ends
 * cleanly (the handle goes back to the spares, its connection to the cache) or is removed (the
 * connection closes: a provider that hangs after [DONE]).
 *
 * Backpressure: llm_async_pause makes the next write callback return CURL_WRITEFUNC_PAUSE (libcurl
 * keeps those bytes and stops reading the socket), or stops a direct transfer's reads;
 * llm_async_resume unpauses, and what libcurl then hands on is handled as after an action.
 */
#include <event2/event.h>
#include <stdlib.h>

#include "llm/async_int.h"

struct llm_drain {
	struct llm_loop *loop;	 /* owner */
	CURL *h;		 /* the transfer, still on the multi; owned */
	struct llm_setup *setup; /* what h was set up with; a reference */
	char *body;		 /* the request body (CURLOPT_POSTFIELDS); owned */
	struct event *timer;	 /* LLM_AFTER_DONE_MS; owned */
	struct llm_drain *next;	 /* in loop->drains */
};

/* A drain is over: clean (its handle and connection kept) or not (the connection closes). */
void llm_drain_end(struct llm_drain *d, bool clean)
{
	struct llm_loop *L = d->loop;
	for (struct llm_drain **p = &L->drains; *p; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	curl_api_get(NULL)->multi_remove_handle(L->multi, d->h);
	llm_async_give_back(L, d->setup, d->h, clean);
	event_free(d->timer);
	llm_setup_unref(d->setup);
	free(d->body);
	free(d);
}

static void drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	llm_drain_end(arg, false);
}

/* The drain whose handle's CURLOPT_PRIVATE is priv, or NULL (a call's). */
struct llm_drain *llm_drain_of(struct llm_loop *L, void *priv)
{
	for (struct llm_drain *d = L->drains; d; d = d->next)
		if (d == priv)
			return d;
	return NULL;
}

/* call.c: a's [DONE] came while libcurl's transfer goes on: a ends after this action. */
void llm_async_reply_whole(void *ctx)
{
	struct llm_async *a = ctx;
	if (a->easy && !a->early_pending) {
		a->early_pending = true;
		a->early_next = a->loop->early;
		a->loop->early = a;
	}
}

/* The calls whose reply is whole end now; their transfers go on as drains (see Drains). */
void llm_async_detach_early(struct llm_loop *L)
{
	const struct curl_api *curl = curl_api_get(NULL);
	while (L->early) {
		struct llm_async *a = L->early;
		L->early = a->early_next;
		a->early_pending = false;
		struct llm_drain *d = calloc(1, sizeof(*d));
		if (d)
			d->timer = evtimer_new(L->base, drain_timeout, d);
		if (!d || !d->timer) { /* no memory for a drain: the transfer is stopped */
			free(d);
			curl->multi_remove_handle(L->multi, a->easy);
			enum llm_error e = llm_call_finish(&a->call, CURLE_OK);
			llm_async_give_back(L, a->setup, a->easy, true);
			a->easy = NULL;
			llm_async_after_attempt(a, e);
			continue;
		}
		*d = (struct llm_drain){.loop = L,
					.h = a->easy,
					.setup = a->setup,
					.body = a->body,
					.timer = d->timer,
					.next = L->drains};
		L->drains = d;
		a->setup->refs++;
		a->body = NULL; /* libcurl may still read it */
		curl->easy_setopt(d->h, CURLOPT_PRIVATE, (char *)d);
		curl->easy_setopt(d->h, CURLOPT_WRITEDATA, NULL); /* call.c swallows what comes */
		curl->easy_setopt(d->h, CURLOPT_HEADERDATA, NULL);
		struct timeval tv = {0, LLM_AFTER_DONE_MS * 1000};
		evtimer_add(d->timer, &tv);
		enum llm_error e = llm_call_finish(&a->call, CURLE_OK);
		a->easy = NULL;
		llm_async_after_attempt(a, e);
	}
}

void llm_async_pause(struct llm_async *a)
{
	if (!a || a->call.paused)
		return;
	a->call.paused = true; /* libcurl: the next write callback pauses the transfer (call.c) */
	h1_xfer_pause(a->h1x, true);
}

void llm_async_resume(struct llm_async *a)
{
	if (!a || !a->call.paused)
		return;
	a->call.paused = false;
	h1_xfer_pause(a->h1x, false);
	if (a->easy) {
		struct llm_loop *L = a->loop;
		/* libcurl hands on what it kept at once: handled as after an action (a may end) */
		curl_api_get(NULL)->easy_pause(a->easy, CURLPAUSE_CONT);
		llm_async_after_curl(L);
	}
}
