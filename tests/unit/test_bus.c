/*
 * test_bus.c - the live event bus (src/bus/bus.c): cursors, the ephemeral log and its resume
 * window, and delivery to subscribers on real io threads.
 *
 * DESIGN: delivery needs io threads, so the delivery tests start a real HTTP server with two io
 * threads on an ephemeral port (nothing ever connects to it) and reach its threads through
 * http/server_int.h. Subscribing, unsubscribing and publishing-from-an-io-thread run on those
 * threads through http_thread_post (on_thread waits for the posted call to finish); since each
 * thread runs its posted work in order, a no-op posted after a publish is a barrier: when it has
 * run, every delivery of that publish on that thread has run too.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus/bus.h"
#include "http/server_int.h"

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void fini(void)
{
	bus_deinit();
}

TestSuite(bus, .fini = fini);

/* ---- cursors -------------------------------------------------------------------------------- */

static void assert_cursor(struct bus_cursor c, int64_t seq, int64_t minor)
{
	cr_assert(c.seq == seq && c.minor == minor, "cursor %lld.%lld, expected %lld.%lld", (long long)c.seq,
		  (long long)c.minor, (long long)seq, (long long)minor);
}

/* ---- ephemeral log ---------------------------------------------------------------------------- */

static struct bus_cursor eph(const char *session, int64_t base, const char *text)
{
	struct bus_cursor c = {-7, -7};
	bus_publish_ephemeral(session, base, text, strlen(text), &c);
	return c;
}

/* The minor an ephemeral gets at a seq this process never published: 100 per ms since 2025, so a
 * reply begun again after a restart numbers its cursors above those of its first attempt. */
static int64_t fresh_minor(struct bus_cursor c)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t floor = ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - INT64_C(1735689600000)) * 100;
	cr_assert(c.minor > floor - 100000 && c.minor <= floor + 1, "minor %lld is no fresh start (%lld)",
		  (long long)c.minor, (long long)floor);
	return c.minor;
}

Test(bus, ephemeral_and_committed_cursors_order)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor c = eph("s", 0, "a");
	int64_t f = fresh_minor(c);
	assert_cursor(c, 0, f);
	assert_cursor(eph("s", 0, "b"), 0, f + 1);
	bus_publish_committed("s", 1, "{}", 2);
	assert_cursor(eph("s", 0, "c"), 1, 1); /* minor restarts at 1 after a committed publish of a higher seq */
	assert_cursor(eph("s", 1, "d"), 1, 2);
	bus_publish_committed("s", 1, "{}", 2); /* not higher: minor goes on */
	assert_cursor(eph("s", 1, "e"), 1, 3);
	c = eph("s", 5, "f"); /* a higher base_seq, not published here: a fresh start */
	int64_t g = fresh_minor(c);
	assert_cursor(c, 5, g);
	bus_publish_committed("s", 3, "{}", 2); /* lower than the known seq: ignored */
	assert_cursor(eph("s", 3, "g"), 5, g + 1);
	/* other sessions count on their own */
	c = eph("t", 0, "x");
	assert_cursor(c, 0, fresh_minor(c));
	bus_publish_ephemeral("s", 5, "h", 1, NULL); /* out may be NULL */
	assert_cursor(eph("s", 5, "i"), 5, g + 3);
}

/* A restarted process (the bus begun again) numbers the ephemerals of a seq above the cursors the
 * first one gave: a stream resumed with one of those gets the new attempt whole */
Test(bus, a_restart_numbers_above_the_cursors_before_it)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor before = {0, 0};
	for (int i = 0; i < 50; i++)
		before = eph("s", 3, "first attempt");
	bus_deinit();
	sleep_ms(2);
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor after = eph("s", 3, "second attempt");
	cr_assert(bus_cursor_cmp(after, before) > 0, "%lld.%lld is not after %lld.%lld", (long long)after.seq,
		  (long long)after.minor, (long long)before.seq, (long long)before.minor);
	char text[32];
	bus_cursor_format(after, text, sizeof(text));
	cr_assert(bus_cursor_parse(text, strlen(text), &before), "%s: a cursor a client can send back", text);
}

/* Takes a snapshot after `after`, checks its texts and order, releases everything; returns the
 * published seq it reported. */
static int64_t assert_snapshot(const char *session, struct bus_cursor after, const char *const *want, size_t nwant)
{
	struct bus_msg **msgs;
	size_t n;
	int64_t published = -7;
	cr_assert_eq(bus_snapshot(session, after, &msgs, &n, &published), SOMA_OK);
	cr_assert_eq(n, nwant, "snapshot of %s has %zu messages, expected %zu", session, n, nwant);
	for (size_t i = 0; i < n; i++) {
		cr_assert_str_eq(msgs[i]->text, want[i]);
		cr_assert_eq(msgs[i]->len, strlen(want[i]));
		cr_assert(i == 0 || bus_cursor_cmp(msgs[i - 1]->cursor, msgs[i]->cursor) < 0, "not in cursor order");
		bus_msg_release(msgs[i]);
	}
	free(msgs);
	return published;
}

Test(bus, base_seq_raises_published_seq)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	cr_assert_eq(assert_snapshot("s", (struct bus_cursor){0, 0}, NULL, 0), -1, "unknown session");
	eph("s", 4, "a");
	static const char *const a[] = {"a"};
	cr_assert_eq(assert_snapshot("s", (struct bus_cursor){0, 0}, a, 1), 4);
	bus_publish_committed("s", 6, "{}", 2);
	cr_assert_eq(assert_snapshot("s", (struct bus_cursor){9, 0}, NULL, 0), 6, "nothing after 9");
}

Test(bus, snapshot_returns_ephemerals_after_cursor)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor a = eph("s", 0, "a"); /* 0.f (a seq not published here) */
	eph("s", 0, "b");			/* 0.f+1 */
	bus_publish_committed("s", 1, "{}", 2); /* 1 */
	eph("s", 1, "c");			/* 1.1 */
	eph("s", 1, "d");			/* 1.2 */
	static const char *const all[] = {"a", "b", "c", "d"};
	assert_snapshot("s", (struct bus_cursor){0, 0}, all, 4);
	assert_snapshot("s", a, all + 1, 3);
	assert_snapshot("s", (struct bus_cursor){1, 0}, all + 2, 2);
	assert_snapshot("s", (struct bus_cursor){1, 1}, all + 3, 1);
	assert_snapshot("s", (struct bus_cursor){1, 2}, NULL, 0);
	assert_snapshot("s", (struct bus_cursor){7, 0}, NULL, 0);
	assert_snapshot("other", (struct bus_cursor){0, 0}, NULL, 0);
}

Test(bus, snapshot_messages_are_referenced)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor kept = eph("s", 0, "kept by the snapshot");
	struct bus_msg **msgs;
	size_t n;
	int64_t published;
	cr_assert_eq(bus_snapshot("s", (struct bus_cursor){0, 0}, &msgs, &n, &published), SOMA_OK);
	cr_assert_eq(n, 1);
	bus_deinit(); /* the bus lets go of its log; the snapshot's reference keeps the message */
	cr_assert_str_eq(msgs[0]->text, "kept by the snapshot");
	assert_cursor(msgs[0]->cursor, 0, kept.minor);
	bus_msg_release(msgs[0]);
	free(msgs);
}

Test(bus, ended_generation_expires_after_window)
{
	cr_assert_eq(bus_init(200), SOMA_OK);
	eph("s", 3, "old1");
	eph("s", 3, "old2");
	static const char *const old[] = {"old1", "old2"};
	sleep_ms(300);
	assert_snapshot("s", (struct bus_cursor){0, 0}, old, 2); /* a running generation never expires */
	bus_generation_end("s");
	assert_snapshot("s", (struct bus_cursor){0, 0}, old, 2); /* still inside the window */
	eph("s", 3, "new");					 /* next generation */
	sleep_ms(300);
	static const char *const fresh[] = {"new"};
	cr_assert_eq(assert_snapshot("s", (struct bus_cursor){0, 0}, fresh, 1), 3);
}

Test(bus, zero_window_expires_at_generation_end)
{
	cr_assert_eq(bus_init(0), SOMA_OK);
	eph("s", 0, "a");
	static const char *const a[] = {"a"};
	assert_snapshot("s", (struct bus_cursor){0, 0}, a, 1);
	bus_generation_end("s");
	assert_snapshot("s", (struct bus_cursor){0, 0}, NULL, 0);
	bus_generation_end("unknown session"); /* harmless */
}

Test(bus, log_keeps_at_most_log_max)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct bus_cursor first = {0, 0};
	for (int i = 0; i < BUS_LOG_MAX + 10; i++) {
		char text[16];
		int len = snprintf(text, sizeof(text), "%d", i);
		bus_publish_ephemeral("s", 0, text, (size_t)len, i ? NULL : &first);
	}
	struct bus_msg **msgs;
	size_t n;
	int64_t published;
	cr_assert_eq(bus_snapshot("s", (struct bus_cursor){0, 0}, &msgs, &n, &published), SOMA_OK);
	cr_assert_eq(n, BUS_LOG_MAX);
	cr_assert_str_eq(msgs[0]->text, "10", "the oldest entries go first");
	assert_cursor(msgs[0]->cursor, 0, first.minor + 10);
	cr_assert_str_eq(msgs[n - 1]->text, "4105");
	assert_cursor(msgs[n - 1]->cursor, 0, first.minor + BUS_LOG_MAX + 9);
	for (size_t i = 0; i < n; i++)
		bus_msg_release(msgs[i]);
	free(msgs);
}

/* ---- delivery on io threads ----------------------------------------------------------------- */

#define MAX_MSGS 16

struct rec {
	const char *session;		     /* what it follows */
	struct io_thread *thr;		     /* where it lives */
	struct bus_sub *sub;		     /* subscription (touched on thr only) */
	pthread_t tid;			     /* thr's pthread, seen at subscribe */
	bool unsub_in_callback;		     /* unsubscribe from inside the first delivery */
	int n;				     /* deliveries (under rec_lock) */
	bool wrong_thread;		     /* a delivery ran on another thread */
	char texts[MAX_MSGS][32];	     /* delivered texts (copied) */
	struct bus_cursor cursors[MAX_MSGS]; /* their cursors */
};

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_msg(void *ctx, const struct bus_msg *msg)
{
	struct rec *r = ctx;
	pthread_mutex_lock(&rec_lock);
	if (!pthread_equal(pthread_self(), r->tid))
		r->wrong_thread = true;
	if (r->n < MAX_MSGS) {
		snprintf(r->texts[r->n], sizeof(r->texts[0]), "%.*s", (int)msg->len, msg->text);
		r->cursors[r->n] = msg->cursor;
	}
	r->n++;
	pthread_mutex_unlock(&rec_lock);
	if (r->unsub_in_callback && r->sub) {
		bus_unsubscribe(r->sub);
		r->sub = NULL;
	}
}

struct call {
	void (*fn)(void *arg); /* what to run on the io thread */
	void *arg;	       /* its argument */
	bool done;	       /* set on the io thread when fn returned */
};

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t call_cv = PTHREAD_COND_INITIALIZER;

static void run_call(void *arg)
{
	struct call *c = arg;
	if (c->fn)
		c->fn(c->arg);
	pthread_mutex_lock(&call_lock);
	c->done = true;
	pthread_cond_broadcast(&call_cv);
	pthread_mutex_unlock(&call_lock);
}

/* Runs fn(arg) on thr and waits (at most 5 s) until it has run; fn NULL is a barrier. */
static void on_thread(struct io_thread *thr, void (*fn)(void *), void *arg)
{
	struct call c = {fn, arg, false};
	cr_assert_eq(http_thread_post(thr, run_call, &c), SOMA_OK);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&call_lock);
	while (!c.done && pthread_cond_timedwait(&call_cv, &call_lock, &until) == 0)
		;
	bool done = c.done;
	pthread_mutex_unlock(&call_lock);
	cr_assert(done, "the io thread did not run the posted call");
}

static void do_subscribe(void *arg)
{
	struct rec *r = arg;
	r->tid = pthread_self();
	r->sub = bus_subscribe(r->session, r->thr, on_msg, r);
}

static void do_unsubscribe(void *arg)
{
	struct rec *r = arg;
	bus_unsubscribe(r->sub);
	r->sub = NULL;
}

static struct http_router *router;
static struct http_pipeline *pipeline;
static struct http_server *srv;

static void server_up(void)
{
	cr_assert_eq(bus_init(60000), SOMA_OK);
	struct http_server_opts opts = {.host = "127.0.0.1", .io_threads = 2, .max_body = 1024, .max_header = 1024};
	opts.request_timeout_s = opts.idle_timeout_s = 5; /* port 0: any free port; nobody connects */
	opts.max_connections = 16;
	struct http_auth_opts auth = {.anonymous_allowed = true, .default_tenant = "default", .admin_token = ""};
	char why[256] = "";
	router = http_router_new();
	pipeline = http_pipeline_new(router, &auth);
	cr_assert(router && pipeline);
	cr_assert_eq(http_server_new(&opts, pipeline, &srv, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(http_server_start(srv), SOMA_OK);
}

static void server_down(void)
{
	http_server_free(srv);
	http_pipeline_free(pipeline);
	http_router_free(router);
	bus_deinit();
}

static void subscribe(struct rec *r, const char *session, int thread)
{
	r->session = session;
	r->thr = &srv->threads[thread];
	on_thread(r->thr, do_subscribe, r);
	cr_assert_not_null(r->sub);
}

static void barrier(void)
{
	on_thread(&srv->threads[0], NULL, NULL);
	on_thread(&srv->threads[1], NULL, NULL);
}

static int count(struct rec *r)
{
	pthread_mutex_lock(&rec_lock);
	int n = r->n;
	pthread_mutex_unlock(&rec_lock);
	return n;
}

TestSuite(bus_live, .init = server_up, .fini = server_down);

Test(bus_live, delivers_to_every_subscriber_of_the_session_on_its_thread)
{
	static struct rec a1, a2, b1, other;
	subscribe(&a1, "s", 0);
	subscribe(&a2, "s", 0);
	subscribe(&b1, "s", 1);
	subscribe(&other, "t", 1);
	cr_assert_eq(bus_subscribers(), 4);
	struct bus_cursor c1 = eph("s", 0, "delta one");
	bus_publish_committed("s", 1, "{\"seq\":1}", 9);
	struct bus_cursor c2 = eph("s", 1, "delta two");
	barrier();
	struct rec *recs[] = {&a1, &a2, &b1};
	for (int i = 0; i < 3; i++) {
		struct rec *r = recs[i];
		cr_assert_eq(count(r), 3, "subscriber %d got %d messages", i, count(r));
		cr_assert_not(r->wrong_thread, "delivered on another thread than the subscriber's");
		cr_assert_str_eq(r->texts[0], "delta one");
		cr_assert_eq(bus_cursor_cmp(r->cursors[0], c1), 0);
		cr_assert_str_eq(r->texts[1], "{\"seq\":1}");
		assert_cursor(r->cursors[1], 1, 0);
		cr_assert_str_eq(r->texts[2], "delta two");
		cr_assert_eq(bus_cursor_cmp(r->cursors[2], c2), 0);
	}
	cr_assert_eq(count(&other), 0, "a subscriber of another session got messages");
	struct rec *all[] = {&a1, &a2, &b1, &other};
	for (int i = 0; i < 4; i++)
		on_thread(all[i]->thr, do_unsubscribe, all[i]);
	cr_assert_eq(bus_subscribers(), 0);
}

Test(bus_live, committed_publish_without_subscribers_is_dropped)
{
	static struct rec a;
	bus_publish_committed("s", 1, "{}", 2); /* nobody listens yet */
	subscribe(&a, "s", 0);
	bus_publish_committed("s", 2, "two", 3);
	barrier();
	cr_assert_eq(count(&a), 1);
	cr_assert_str_eq(a.texts[0], "two");
	on_thread(a.thr, do_unsubscribe, &a);
}

Test(bus_live, no_delivery_after_unsubscribe)
{
	static struct rec a, b;
	subscribe(&a, "s", 0);
	subscribe(&b, "s", 1);
	eph("s", 0, "first");
	barrier();
	cr_assert_eq(count(&a), 1);
	on_thread(a.thr, do_unsubscribe, &a);
	cr_assert_eq(bus_subscribers(), 1);
	eph("s", 0, "second");
	bus_publish_committed("s", 1, "{}", 2);
	barrier();
	cr_assert_eq(count(&a), 1, "delivered after unsubscribe");
	cr_assert_eq(count(&b), 3);
	on_thread(b.thr, do_unsubscribe, &b);
	cr_assert_eq(bus_subscribers(), 0);
	bus_unsubscribe(NULL);
}

static void publish_then_unsubscribe(void *arg)
{
	struct rec *r = arg;
	eph("s", 0, "queued behind us");
	bus_unsubscribe(r->sub); /* the delivery is already posted to this very thread */
	r->sub = NULL;
}

Test(bus_live, delivery_already_posted_is_dropped_after_unsubscribe)
{
	static struct rec a;
	subscribe(&a, "s", 0);
	on_thread(a.thr, publish_then_unsubscribe, &a);
	barrier();
	cr_assert_eq(count(&a), 0, "a delivery ran after its subscriber unsubscribed");
}

Test(bus_live, callback_may_unsubscribe_itself)
{
	static struct rec a, b, c;
	subscribe(&a, "s", 0);
	subscribe(&b, "s", 0);
	subscribe(&c, "s", 0);
	b.unsub_in_callback = true;
	eph("s", 0, "one");
	eph("s", 0, "two");
	barrier();
	cr_assert_eq(count(&a), 2);
	cr_assert_eq(count(&b), 1, "delivered after unsubscribing in the callback");
	cr_assert_eq(count(&c), 2);
	cr_assert_null(b.sub);
	on_thread(a.thr, do_unsubscribe, &a);
	on_thread(c.thr, do_unsubscribe, &c);
	cr_assert_eq(bus_subscribers(), 0);
}

Test(bus_live, resubscribe_after_all_left)
{
	static struct rec a, b;
	subscribe(&a, "s", 1);
	on_thread(a.thr, do_unsubscribe, &a);
	subscribe(&b, "s", 1);
	bus_publish_committed("s", 4, "four", 4);
	barrier();
	cr_assert_eq(count(&a), 0);
	cr_assert_eq(count(&b), 1);
	on_thread(b.thr, do_unsubscribe, &b);
}
