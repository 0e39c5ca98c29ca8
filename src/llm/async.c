/*
 * async.c - chat completions driven by an io thread's event loop (llm_async_start, see llm.h).
 *
 * DESIGN: each thread that starts a call gets one libcurl multi handle bound to its event_base
 * (created on first use, freed when the thread exits). libcurl tells us which sockets to watch
 * (on_socket) and when to call it back (on_timer); we map that onto libevent events of the same
 * loop and call curl_multi_socket_action from them. So the provider's bytes are read, parsed and
 * relayed to the client by the thread that owns the client's connection, with no other thread
 * woken, and the multi's connection cache keeps provider connections alive between calls.
 * An attempt is call.c's; when libcurl reports it done (check_done) it is either retried after
 * a backoff timer (before the first token, as llm_chat does) or reported through done().
 * Everything here runs on the owning thread; nothing is shared between threads.
 *
 * Setup: what is the same for every call (the parsed provider URL, the header lists: call.c's
 * llm_setup) is built once per loop and rebuilt when the settings change. Spare easy handles keep
 * the options of the loop's current setup, not reset between calls: an attempt on one only sets
 * what is its own (body, callbacks' data). A handle set up for an older setup is freed when it
 * comes back, and the spares go when the setup changes; each call holds a reference to its setup.
 *
 * Bursts: the chunks of one provider read reach the caller one by one (on_chunk), or a run of
 * plain events at once (on_events); a call that
 * saw any is put on its loop's flush list, and once curl_multi_socket_action returns each call
 * still on the list gets cb.on_flush, so a proxy can send the whole burst in one write. A call
 * that ended in that action is off the list (its done wrote the end). libcurl's "call me now"
 * (a 0 ms timeout, e.g. a transfer just added) activates the timer event for this loop turn
 * instead of arming it, which would cost one more epoll_wait before the request goes out; inside
 * an action it is armed as usual, so libcurl cannot keep the loop from polling.
 *
 * Drains and backpressure: async_drain.c.
 *
 * Parked sockets: libcurl stops watching a provider connection when a transfer ends and asks
 * for it again when the next call reuses it: as epoll_ctl DEL and ADD, two syscalls per call.
 * Instead the watch of a kept connection stays registered, parked (up to MAX_PARKED per loop),
 * and is taken back as it is when libcurl asks for the same socket and events. A parked socket
 * that turns readable (the provider closed it) is only unregistered (libcurl does not know it
 * any more; it finds the connection dead on its next use). libcurl closes sockets through
 * on_close, which frees the parked watch first, so a watch never outlives its descriptor.
 */
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "llm/async_int.h"

static pthread_key_t loop_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static bool key_ok;
static _Thread_local struct llm_loop *tl_loop;

static void watch_free(struct sock_watch *w)
{
	event_free(w->ev);
	free(w);
}

/* Takes the parked watch of fd off the list; NULL when there is none. */
static struct sock_watch *unpark(struct llm_loop *L, curl_socket_t fd)
{
	for (int i = 0; i < L->nparked; i++) {
		struct sock_watch *w = L->parked[i];
		if (w->fd == fd) {
			L->parked[i] = L->parked[--L->nparked];
			w->parked = false;
			return w;
		}
	}
	return NULL;
}

static void loop_free(void *arg)
{
	struct llm_loop *L = arg;
	const struct curl_api *curl = curl_api_get(NULL);
	while (L->drains)
		llm_drain_end(L->drains, false);
	for (int i = 0; i < L->nspare; i++)
		curl->easy_cleanup(L->spare[i]);
	llm_setup_unref(L->setup);
	if (L->multi)
		curl->multi_cleanup(L->multi); /* closes cached connections (on_close frees their watches) */
	while (L->nparked)
		watch_free(L->parked[--L->nparked]);
	if (L->timer)
		event_free(L->timer);
	h1_pool_free(L->h1);
	free(L);
	tl_loop = NULL;
}

static void make_key(void)
{
	key_ok = pthread_key_create(&loop_key, loop_free) == 0;
}

static void check_done(struct llm_loop *L);

void llm_async_flush(struct llm_loop *L)
{
	while (L->flush) {
		struct llm_async *a = L->flush;
		L->flush = a->flush_next;
		a->flush_pending = false;
		a->cb.on_flush(a->cb.ctx);
	}
}

/* Runs libcurl on fd (or its timeouts), reports ended calls, then flushes the bursts. */
void llm_async_after_curl(struct llm_loop *L)
{
	check_done(L);
	llm_async_detach_early(L);
	llm_async_flush(L);
}

static void action(struct llm_loop *L, curl_socket_t fd, int mask)
{
	int running;
	L->in_action = true;
	curl_api_get(NULL)->multi_socket_action(L->multi, fd, mask, &running);
	L->in_action = false;
	llm_async_after_curl(L);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
	struct sock_watch *w = arg;
	if (w->parked) { /* the provider closed an idle connection: stop polling it */
		event_del(w->ev);
		w->flags = 0;
		return;
	}
	int mask = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	action(w->loop, fd, mask);
}

/* libcurl closes a socket: its parked watch goes first (a descriptor number is reused). */
static int on_close(void *clientp, curl_socket_t fd)
{
	struct llm_loop *L = clientp;
	struct sock_watch *w = unpark(L, fd);
	if (w)
		watch_free(w);
	return close(fd);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	action(arg, CURL_SOCKET_TIMEOUT, 0);
}

/* The attempt's hooks: the caller's, noting that a burst has chunks to flush. */
static void burst_noted(struct llm_async *a)
{
	if (a->cb.on_flush && !a->flush_pending) {
		a->flush_pending = true;
		a->flush_next = a->loop->flush;
		a->loop->flush = a;
	}
}

static bool chunk_seen(void *ctx, const char *json, size_t len, bool usage_only)
{
	struct llm_async *a = ctx;
	if (!a->first_ns)
		a->first_ns = clock_mono_ns();
	burst_noted(a);
	return a->cb.on_chunk(a->cb.ctx, json, len, usage_only);
}

static bool events_seen(void *ctx, const char *sse, size_t len, size_t count)
{
	struct llm_async *a = ctx;
	if (!a->first_ns)
		a->first_ns = clock_mono_ns();
	burst_noted(a);
	return a->cb.on_events(a->cb.ctx, sse, len, count);
}

static bool delta_seen(void *ctx, const char *text, size_t len)
{
	struct llm_async *a = ctx;
	if (!a->first_ns)
		a->first_ns = clock_mono_ns();
	return a->cb.on_delta(a->cb.ctx, text, len);
}

/* libcurl: watch s for what (or stop watching); sockp is our watch of s, if any. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *sockp)
{
	(void)e;
	struct llm_loop *L = userp;
	struct sock_watch *w = sockp;
	if (what == CURL_POLL_REMOVE) {
		if (w && L->nparked < MAX_PARKED) {
			w->parked = true; /* still registered: see Parked */
			L->parked[L->nparked++] = w;
		} else if (w) {
			watch_free(w);
		}
		return 0;
	}
	short flags = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (!w && (w = unpark(L, s)) != NULL)
		curl_api_get(NULL)->multi_assign(L->multi, s, w);
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (w)
			w->ev = event_new(L->base, s, flags, on_sock, w);
		if (!w || !w->ev) {
			free(w);
			return -1;
		}
		*w = (struct sock_watch){.loop = L, .ev = w->ev, .fd = s};
		curl_api_get(NULL)->multi_assign(L->multi, s, w);
	}
	if (w->flags == flags)
		return 0; /* registered as asked: a reused connection's watch */
	if (w->flags)
		event_del(w->ev);
	event_assign(w->ev, L->base, s, flags, on_sock, w);
	if (event_add(w->ev, NULL) != 0)
		return -1;
	w->flags = flags;
	return 0;
}

/* libcurl: call socket_action(CURL_SOCKET_TIMEOUT) after ms (-1: never). */
static int on_timer(CURLM *multi, long ms, void *userp)
{
	(void)multi;
	struct llm_loop *L = userp;
	if (ms < 0) {
		evtimer_del(L->timer);
		return 0;
	}
	if (ms == 0 && !L->in_action) { /* this turn, without another epoll_wait (see Bursts) */
		evtimer_del(L->timer);
		event_active(L->timer, EV_TIMEOUT, 0);
		return 0;
	}
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(L->timer, &tv);
	return 0;
}

/* This thread's multi, bound to base; NULL on OOM or when the thread already uses another base. */
static struct llm_loop *loop_get(struct event_base *base)
{
	if (tl_loop)
		return tl_loop->base == base ? tl_loop : NULL;
	pthread_once(&key_once, make_key);
	const struct curl_api *curl = curl_api_get(NULL);
	struct llm_loop *L = key_ok ? calloc(1, sizeof(*L)) : NULL;
	if (!L)
		return NULL;
	L->base = base;
	L->multi = curl->multi_init();
	L->timer = evtimer_new(base, on_timeout, L);
	if (!L->multi || !L->timer || pthread_setspecific(loop_key, L) != 0) {
		loop_free(L);
		return NULL;
	}
	curl->multi_setopt(L->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl->multi_setopt(L->multi, CURLMOPT_SOCKETDATA, L);
	curl->multi_setopt(L->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl->multi_setopt(L->multi, CURLMOPT_TIMERDATA, L);
	tl_loop = L;
	return L;
}

/* The loop's setup for cfg (a new reference), rebuilt when the settings changed; NULL on OOM. */
static struct llm_setup *setup_get(struct llm_loop *L, const struct llm_config *cfg)
{
	if (!L->setup || !llm_setup_matches(L->setup, cfg)) {
		struct llm_setup *s = llm_setup_new(cfg);
		if (!s)
			return NULL;
		while (L->nspare) /* set up with the old one */
			curl_api_get(NULL)->easy_cleanup(L->spare[--L->nspare]);
		llm_setup_unref(L->setup);
		L->setup = s;
	}
	L->setup->refs++;
	return L->setup;
}

/* A handle for an attempt of a; *fresh when it is not set up with a's setup yet. */
static CURL *take_handle(struct llm_async *a, bool *fresh)
{
	struct llm_loop *L = a->loop;
	*fresh = !(L->nspare && a->setup == L->setup);
	return *fresh ? curl_api_get(NULL)->easy_init() : L->spare[--L->nspare];
}

void llm_async_give_back(struct llm_loop *L, struct llm_setup *setup, CURL *h, bool set_up)
{
	if (!set_up || setup != L->setup || L->nspare == SPARE_HANDLES) {
		curl_api_get(NULL)->easy_cleanup(h);
		return;
	}
	L->spare[L->nspare++] = h;
}

static void give_handle(struct llm_async *a, CURL *h, bool set_up)
{
	llm_async_give_back(a->loop, a->setup, h, set_up);
}

/* Starts the next attempt; false when it could not be set up (OOM). */
static bool start_attempt(struct llm_async *a)
{
	const struct curl_api *curl = curl_api_get(NULL);
	a->res->attempts++;
	if (a->setup->direct)
		return llm_async_start_direct(a);
	bool fresh;
	a->easy = take_handle(a, &fresh);
	if (!a->easy)
		return false;
	a->call.on_finished = llm_async_reply_whole;
	if (llm_call_prepare(&a->call, a->setup, fresh, a->body, a->easy)) {
		curl->easy_setopt(a->easy, CURLOPT_PRIVATE, (char *)a);
		if (fresh) {
			curl->easy_setopt(a->easy, CURLOPT_CLOSESOCKETFUNCTION, on_close);
			curl->easy_setopt(a->easy, CURLOPT_CLOSESOCKETDATA, a->loop);
		}
		if (curl->multi_add_handle(a->loop->multi, a->easy) == CURLM_OK)
			return true;
		llm_call_finish(&a->call, CURLE_FAILED_INIT);
	}
	give_handle(a, a->easy, false); /* maybe half set up */
	a->easy = NULL;
	return false;
}

static void async_free(struct llm_async *a)
{
	for (struct llm_async **p = &a->loop->flush; a->flush_pending && *p; p = &(*p)->flush_next) {
		if (*p == a) {
			*p = a->flush_next;
			break;
		}
	}
	for (struct llm_async **p = &a->loop->early; a->early_pending && *p; p = &(*p)->early_next) {
		if (*p == a) {
			*p = a->early_next;
			break;
		}
	}
	if (a->retry)
		event_free(a->retry);
	llm_setup_unref(a->setup);
	free(a->body);
	free(a);
}

static void finish(struct llm_async *a, enum llm_error e)
{
	a->res->error = e;
	llm_metrics_call(a->req.kind, a->res, a->call.started_ns, a->first_ns);
	a->done(a->cb.ctx, a->res);
	async_free(a);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct llm_async *a = arg;
	event_free(a->retry);
	a->retry = NULL;
	if (!start_attempt(a))
		finish(a, LLM_ERR_PROTOCOL);
}

void llm_async_after_attempt(struct llm_async *a, enum llm_error e)
{
	long ms = e != LLM_OK ? llm_call_retry_ms(&a->call, e, &a->cfg, &a->delay_ms) : -1;
	if (ms >= 0) {
		struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
		a->retry = evtimer_new(a->loop->base, on_retry, a);
		if (a->retry && evtimer_add(a->retry, &tv) == 0)
			return;
	}
	finish(a, e);
}

/* libcurl finished an attempt of a with rc. */
static void attempt_ended(struct llm_async *a, CURLcode rc)
{
	curl_api_get(NULL)->multi_remove_handle(a->loop->multi, a->easy);
	enum llm_error e = llm_call_finish(&a->call, rc);
	give_handle(a, a->easy, true);
	a->easy = NULL;
	llm_async_after_attempt(a, e);
}

static void check_done(struct llm_loop *L)
{
	const struct curl_api *curl = curl_api_get(NULL);
	CURLMsg *m;
	int left;
	while ((m = curl->multi_info_read(L->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = m->data.result; /* m dies with the handle's removal */
		char *priv = NULL;
		curl->easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		struct llm_drain *d = llm_drain_of(L, priv);
		if (d)
			llm_drain_end(d, rc == CURLE_OK);
		else
			attempt_ended((struct llm_async *)priv, rc);
	}
}

enum soma_err llm_async_start(struct event_base *base, const struct llm_config *cfg, const struct llm_request *req,
			      const struct llm_callbacks *cb, llm_done_fn done, struct llm_result *res,
			      struct llm_async **out)
{
	*out = NULL;
	enum soma_err err = llm_call_begin(cfg, res);
	if (err != SOMA_OK)
		return err;
	struct llm_loop *L = loop_get(base);
	struct llm_async *a = L ? calloc(1, sizeof(*a)) : NULL;
	if (!a) {
		res->error = LLM_ERR_PROTOCOL;
		snprintf(res->detail, sizeof(res->detail), "out of memory setting up the provider call");
		return SOMA_ERR_NOMEM;
	}
	a->loop = L;
	a->cfg = *cfg;
	a->req = *req;
	a->req.messages = NULL;
	a->req.model = NULL; /* only read by the body, built below */
	/* borrowed for llm_chat only: a retry here would read it after the caller returned */
	a->req.traceparent = NULL;
	a->cb = *cb;
	a->cb.should_cancel = NULL;
	a->done = done;
	a->res = res;
	a->hooks = (struct llm_callbacks){.on_chunk = cb->on_chunk ? chunk_seen : NULL,
					  .on_events = cb->on_events ? events_seen : NULL,
					  .on_delta = cb->on_delta ? delta_seen : NULL,
					  .ctx = a};
	a->call = (struct llm_call){.req = &a->req, .cb = &a->hooks, .res = res, .started_ns = clock_mono_ns()};
	a->delay_ms = cfg->backoff_ms > 0 ? cfg->backoff_ms : 500;
	a->body = llm_request_body(cfg, req);
	a->setup = a->body ? setup_get(L, cfg) : NULL;
	if (!a->setup || !start_attempt(a)) {
		async_free(a);
		res->error = LLM_ERR_PROTOCOL;
		snprintf(res->detail, sizeof(res->detail), "out of memory setting up the provider call");
		return SOMA_ERR_NOMEM;
	}
	*out = a;
	return SOMA_OK;
}

void llm_async_cancel(struct llm_async *a)
{
	if (!a)
		return;
	if (a->h1x) {
		h1_xfer_cancel(a->h1x);
		llm_call_finish(&a->call, CURLE_ABORTED_BY_CALLBACK);
	}
	if (a->easy) {
		curl_api_get(NULL)->multi_remove_handle(a->loop->multi, a->easy);
		llm_call_finish(&a->call, CURLE_ABORTED_BY_CALLBACK);
		give_handle(a, a->easy, true);
	}
	struct llm_result seen = *a->res; /* counted as cancelled; the caller's res is left as it is */
	seen.error = LLM_ERR_CANCELLED;
	llm_metrics_call(a->req.kind, &seen, a->call.started_ns, a->first_ns);
	async_free(a);
}
