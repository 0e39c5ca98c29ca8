/*
 * test_bus_redis.c - the redis bus driver (src/bus/redis*.c) against a real redis-server that
 * each test spawns on a free loopback port: two nodes (this process and a forked child) see
 * each other's messages in one order, resume from Redis after a node restart, expiry after the
 * resume window, a Redis restart (degraded local delivery, gap marker, reconnect), and a quick
 * throughput comparison with the local driver.
 *
 * DESIGN: subscribers need io threads, so a node is a real HTTP server with two io threads on
 * an ephemeral port (nobody connects) plus the bus; calls that must run on an io thread are
 * posted there and waited for (on_thread). bus_deinit() drains the publisher queue into Redis,
 * so "deinit, init again" is both a flush and a node restart that forgot everything local.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"
#include "core/clock.h"
#include "http/server_int.h"

/* ---- redis-server ------------------------------------------------------------------------------ */

static pid_t redis_pid;
static int redis_port;
static char redis_url[64];

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void redis_start(void)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", redis_port);
	redis_pid = fork();
	cr_assert(redis_pid >= 0);
	if (redis_pid == 0) {
		freopen("/dev/null", "w", stdout);
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
		       "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = redisConnect("127.0.0.1", redis_port);
		bool up = c && !c->err;
		redisFree(c);
		if (up)
			return;
		sleep_ms(10);
	}
	cr_assert_fail("redis-server did not start on port %d", redis_port);
}

static void redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
	}
	redis_pid = 0;
}

/* ---- a node: io threads + the bus with the redis driver ---------------------------------------- */

static struct http_router *router;
static struct http_pipeline *pipeline;
static struct http_server *srv;

static void node_up(int64_t window_ms, bool redis, bool subscribe)
{
	cr_assert_eq(bus_init(window_ms), SOMA_OK);
	char why[256] = "";
	if (redis)
		cr_assert_eq(bus_redis_start(redis_url, subscribe, why, sizeof(why)), SOMA_OK, "%s", why);
	if (srv)
		return;
	struct http_server_opts opts = {.host = "127.0.0.1", .io_threads = 2, .max_body = 1024, .max_header = 1024};
	opts.request_timeout_s = opts.idle_timeout_s = 5;
	opts.max_connections = 16;
	struct http_auth_opts auth = {.anonymous_allowed = true, .default_tenant = "default", .admin_token = ""};
	router = http_router_new();
	pipeline = http_pipeline_new(router, &auth);
	cr_assert(router && pipeline);
	cr_assert_eq(http_server_new(&opts, pipeline, &srv, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(http_server_start(srv), SOMA_OK);
}

static void setup(void)
{
	redis_port = free_port();
	snprintf(redis_url, sizeof(redis_url), "redis://127.0.0.1:%d/0", redis_port);
	redis_start();
}

static void teardown(void)
{
	bus_deinit();
	http_server_free(srv);
	http_pipeline_free(pipeline);
	http_router_free(router);
	srv = NULL;
	redis_kill();
}

TestSuite(bus_redis, .init = setup, .fini = teardown, .timeout = 60);

/* ---- subscribers ------------------------------------------------------------------------------- */

#define KEEP 512

struct rec {
	const char *key;		 /* what it follows */
	struct io_thread *thr;		 /* where it lives */
	struct bus_sub *sub;		 /* subscription (its thread only) */
	long n, gaps;			 /* messages and gap markers (under rec_lock) */
	bool disorder;			 /* a cursor was not above the one before */
	struct bus_cursor last;		 /* last cursor */
	char texts[KEEP][16];		 /* the first KEEP texts */
	struct bus_cursor cursors[KEEP]; /* and cursors */
};

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_msg(void *ctx, const struct bus_msg *msg)
{
	struct rec *r = ctx;
	pthread_mutex_lock(&rec_lock);
	if (bus_msg_is_gap(msg)) {
		r->gaps++;
	} else {
		if (r->n > 0 && bus_cursor_cmp(msg->cursor, r->last) <= 0)
			r->disorder = true;
		r->last = msg->cursor;
		if (r->n < KEEP) {
			snprintf(r->texts[r->n], sizeof(r->texts[0]), "%.*s", (int)msg->len, msg->text);
			r->cursors[r->n] = msg->cursor;
		}
		r->n++;
	}
	pthread_mutex_unlock(&rec_lock);
}

struct call {
	void (*fn)(void *arg); /* what to run on the io thread */
	void *arg;	       /* its argument */
	_Atomic bool done;     /* set there when fn returned */
};

static void run_call(void *arg)
{
	struct call *c = arg;
	c->fn(c->arg);
	c->done = true;
}

static void on_thread(struct io_thread *thr, void (*fn)(void *), void *arg)
{
	struct call c = {fn, arg, false};
	cr_assert_eq(http_thread_post(thr, run_call, &c), SOMA_OK);
	for (int i = 0; i < 500 && !c.done; i++)
		sleep_ms(10);
	cr_assert(c.done, "the io thread did not run the posted call");
}

static void do_subscribe(void *arg)
{
	struct rec *r = arg;
	r->sub = bus_subscribe(r->key, r->thr, on_msg, r);
}

static void do_unsubscribe(void *arg)
{
	struct rec *r = arg;
	bus_unsubscribe(r->sub);
	r->sub = NULL;
}

static void subscribe(struct rec *r, const char *key, int thread)
{
	r->key = key;
	r->thr = &srv->threads[thread];
	on_thread(r->thr, do_subscribe, r);
	cr_assert_not_null(r->sub);
}

static long count(struct rec *r, long *gaps)
{
	pthread_mutex_lock(&rec_lock);
	long n = r->n;
	if (gaps)
		*gaps = r->gaps;
	pthread_mutex_unlock(&rec_lock);
	return n;
}

/* Waits up to ms for r to hold n messages; returns the count. */
static long wait_count(struct rec *r, long n, int ms)
{
	for (int t = 0; t < ms && count(r, NULL) < n; t += 5)
		sleep_ms(5);
	return count(r, NULL);
}

static void eph(const char *key, int64_t base, const char *text)
{
	bus_publish_ephemeral(key, base, text, strlen(text), NULL);
}

/* ---- two nodes --------------------------------------------------------------------------------- */

#define PER_NODE 60

/* One node's part: subscribe, say ready, wait for go, publish PER_NODE deltas (a committed event
 * among them on the parent), wait for everything, check the order; the sequence of texts goes
 * into seq. 0 when every check passed, else a number saying which failed. */
static int node_run(bool parent, int rd, int wr, char *seq, size_t cap)
{
	node_up(60000, true, true);
	static struct rec r;
	subscribe(&r, "t/s", parent ? 0 : 1);
	char go = 0; /* the child says it follows the session, then the parent says go */
	if (parent ? read(rd, &go, 1) != 1 || write(wr, "G", 1) != 1 : write(wr, "R", 1) != 1 || read(rd, &go, 1) != 1)
		return 1;
	for (int i = 0; i < PER_NODE; i++) {
		char text[16];
		snprintf(text, sizeof(text), "%c%d", parent ? 'a' : 'b', i);
		eph("t/s", 0, text);
		if (parent && i == PER_NODE / 2)
			bus_publish_committed("t/s", 1, "c1", 2);
	}
	if (wait_count(&r, 2 * PER_NODE + 1, 10000) != 2 * PER_NODE + 1)
		return 2;
	sleep_ms(100);
	if (count(&r, NULL) != 2 * PER_NODE + 1 || r.disorder)
		return 3; /* more than once, or out of cursor order */
	int next_a = 0, next_b = 0;
	size_t at = 0;
	for (long i = 0; i < r.n; i++) {
		const char *t = r.texts[i];
		if (t[0] == 'a' && strtol(t + 1, NULL, 10) != next_a++)
			return 4; /* a node's own deltas keep their publish order */
		if (t[0] == 'b' && strtol(t + 1, NULL, 10) != next_b++)
			return 5;
		if (t[0] == 'c' && (r.cursors[i].seq != 1 || r.cursors[i].minor != 0))
			return 6;
		at += (size_t)snprintf(seq + at, cap - at, "%s@%lld.%lld ", t, (long long)r.cursors[i].seq,
				       (long long)r.cursors[i].minor);
	}
	on_thread(r.thr, do_unsubscribe, &r);
	return 0;
}

Test(bus_redis, two_nodes_see_each_others_messages_in_one_order)
{
	int up[2], down[2], result[2];
	cr_assert(pipe(up) == 0 && pipe(down) == 0 && pipe(result) == 0);
	pid_t child = fork();
	cr_assert(child >= 0);
	if (child == 0) {
		static char seq[8192];
		int rc = node_run(false, down[0], up[1], seq, sizeof(seq));
		if (rc == 0 && write(result[1], seq, strlen(seq)) < 0)
			rc = 9;
		_exit(rc);
	}
	static char mine[8192], theirs[8192];
	int rc = node_run(true, up[0], down[1], mine, sizeof(mine));
	int status = 0;
	waitpid(child, &status, 0);
	cr_assert_eq(rc, 0, "this node: check %d failed", rc);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child node: check %d failed",
		  WEXITSTATUS(status));
	close(result[1]);
	size_t got = 0;
	for (ssize_t k; (k = read(result[0], theirs + got, sizeof(theirs) - 1 - got)) > 0;)
		got += (size_t)k;
	theirs[got] = '\0';
	cr_assert_str_eq(mine, theirs, "the two nodes saw different orders");
}

/* ---- resume from Redis, expiry --------------------------------------------------------------- */

/* Checks the snapshot of key after `after` against the texts of want ('|'-separated, "" for
 * none) and their cursors; returns the published seq. */
static int64_t check_snapshot(const char *key, struct bus_cursor after, const char *want,
			      const struct bus_cursor *cursors)
{
	struct bus_msg **msgs;
	size_t n;
	int64_t published = -7;
	cr_assert_eq(bus_snapshot(key, after, &msgs, &n, &published), SOMA_OK);
	char got[512] = "";
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		at += (size_t)snprintf(got + at, sizeof(got) - at, "%s%s", i ? "|" : "", msgs[i]->text);
		if (cursors)
			cr_assert(msgs[i]->cursor.seq == cursors[i].seq && msgs[i]->cursor.minor == cursors[i].minor,
				  "entry %zu has cursor %lld.%lld", i, (long long)msgs[i]->cursor.seq,
				  (long long)msgs[i]->cursor.minor);
		bus_msg_release(msgs[i]);
	}
	free(msgs);
	cr_assert_str_eq(got, want);
	return published;
}

static void node_restart(int64_t window_ms)
{
	bus_deinit(); /* drains the publisher queue into Redis, then forgets everything local */
	node_up(window_ms, true, false);
}

Test(bus_redis, resume_from_redis_after_a_cursor_on_a_restarted_node)
{
	node_up(60000, true, false);
	for (int i = 1; i <= 5; i++) {
		char text[8];
		snprintf(text, sizeof(text), "e%d", i);
		eph("t/s", 3, text); /* 3.1 .. 3.5 */
	}
	bus_publish_committed("t/s", 4, "{\"seq\":4}", 9);
	eph("t/s", 3, "e6"); /* after the committed 4: 4.1, although the producer knew only 3 */
	eph("t/s", 4, "e7"); /* 4.2 */
	node_restart(60000);
	const struct bus_cursor c[] = {{3, 3}, {3, 4}, {3, 5}, {4, 1}, {4, 2}};
	cr_assert_eq(check_snapshot("t/s", (struct bus_cursor){3, 2}, "e3|e4|e5|e6|e7", c), 4);
	check_snapshot("t/s", (struct bus_cursor){4, 1}, "e7", c + 4);
	check_snapshot("t/s", (struct bus_cursor){4, 2}, "", NULL);
	cr_assert_eq(check_snapshot("t/other", (struct bus_cursor){0, 0}, "", NULL), -1);
	eph("t/s", 3, "e8"); /* the new node continues the session's cursors from Redis */
	node_restart(60000);
	const struct bus_cursor c8[] = {{4, 3}};
	check_snapshot("t/s", (struct bus_cursor){4, 2}, "e8", c8);
}

static long long pttl(const char *key)
{
	redisContext *c = redisConnect("127.0.0.1", redis_port);
	cr_assert(c && !c->err);
	redisReply *r = redisCommand(c, "PTTL %s", key);
	long long v = r ? r->integer : -9;
	freeReplyObject(r);
	redisFree(c);
	return v;
}

Test(bus_redis, deltas_expire_a_window_after_the_generation_ends)
{
	node_up(1500, true, false);
	eph("t/s", 0, "d1");
	eph("t/s", 0, "d2");
	node_restart(1500); /* (a flush: the first node's generation never ended) */
	sleep_ms(1800);
	check_snapshot("t/s", (struct bus_cursor){0, 0}, "d1|d2", NULL); /* running: kept past the window */
	cr_assert_gt(pttl("soma:bus:t/s:l"), 1500 + 500000, "a running generation's log lives window + 10 min");
	bus_publish_committed("t/u", 1, "{}", 2);
	eph("t/u", 1, "u1");
	bus_generation_end("t/u");
	node_restart(1500);
	check_snapshot("t/u", (struct bus_cursor){0, 0}, "u1", NULL); /* inside the window */
	long long ttl = pttl("soma:bus:t/u:l");
	cr_assert(ttl > 0 && ttl <= 1500, "ended: the log expires after the window (PTTL %lld)", ttl);
	sleep_ms(1700);
	cr_assert_eq(check_snapshot("t/u", (struct bus_cursor){0, 0}, "", NULL), 1, "expired; the seq stays");
}

/* ---- Redis restart ------------------------------------------------------------------------------ */

static bool wait_status(bool want, int ms, char *detail, size_t cap)
{
	for (int t = 0; t < ms; t += 20) {
		if (bus_status(detail, cap) == want)
			return true;
		sleep_ms(20);
	}
	return false;
}

Test(bus_redis, redis_restart_degrades_to_local_delivery_then_reconnects)
{
	node_up(60000, true, true);
	static struct rec r;
	subscribe(&r, "t/s", 0);
	char detail[512];
	cr_assert(bus_status(detail, sizeof(detail)), "%s", detail);
	eph("t/s", 0, "one");
	cr_assert_eq(wait_count(&r, 1, 5000), 1);
	redis_kill();
	eph("t/s", 0, "two"); /* Redis is gone: this node's streams still get it */
	cr_assert_eq(wait_count(&r, 2, 5000), 2);
	cr_assert(r.cursors[1].seq == 0 && r.cursors[1].minor == 2, "continued from the floor");
	cr_assert(wait_status(false, 5000, detail, sizeof(detail)), "still ok while Redis is down: %s", detail);
	cr_assert(strstr(detail, "unreachable"), "%s", detail);
	redis_start(); /* same port, no data */
	cr_assert(wait_status(true, 15000, detail, sizeof(detail)), "not recovered: %s", detail);
	long gaps = 0;
	for (int t = 0; t < 5000 && (count(&r, &gaps), gaps == 0); t += 10)
		sleep_ms(10);
	cr_assert_gt(gaps, 0, "no gap marker after the reconnect");
	eph("t/s", 0, "three");
	cr_assert_eq(wait_count(&r, 3, 5000), 3);
	cr_assert_str_eq(r.texts[2], "three");
	cr_assert(r.cursors[2].seq == 0 && r.cursors[2].minor == 3, "Redis lost its data; the floor kept the order");
	cr_assert_not(r.disorder);
	on_thread(r.thr, do_unsubscribe, &r);
}

/* ---- cost ---------------------------------------------------------------------------------------- */

#define BENCH_N 20000

/* Publishes BENCH_N deltas of ~200 bytes to one subscriber; deltas per second, end to end, and
 * the publisher's own cost (what a worker thread spends per delta) in *publish_us. */
static double bench(double *publish_us)
{
	static struct rec r;
	memset(&r, 0, sizeof(r));
	subscribe(&r, "t/bench", 1);
	char text[200];
	memset(text, 'x', sizeof(text));
	uint64_t t0 = clock_mono_ns();
	for (int i = 0; i < BENCH_N; i++)
		bus_publish_ephemeral("t/bench", 0, text, sizeof(text), NULL);
	*publish_us = (double)(clock_mono_ns() - t0) / 1e3 / BENCH_N;
	long got = wait_count(&r, BENCH_N, 30000);
	double s = (double)(clock_mono_ns() - t0) / 1e9;
	cr_assert_eq(got, BENCH_N);
	cr_assert_not(r.disorder);
	on_thread(r.thr, do_unsubscribe, &r);
	return BENCH_N / s;
}

Test(bus_redis, throughput_side_by_side_with_the_local_driver)
{
	node_up(60000, false, false);
	double local_us, redis_us, local = bench(&local_us);
	bus_deinit();
	node_up(60000, true, true);
	double redis = bench(&redis_us);
	fprintf(stderr,
		"bus throughput, %d deltas of 200 bytes to one subscriber, end to end: local %.0f/s, redis %.0f/s; "
		"publish call: local %.2f us, redis %.2f us\n",
		BENCH_N, local, redis, local_us, redis_us);
	cr_assert_gt(redis, 1000.0);
}
