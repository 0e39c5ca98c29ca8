/*
 * relay.c - the memory relay: one thread that delivers the memory outbox to the driver.
 *
 * DESIGN: the loop (1) probes SomaBrain's /health every memory.health_interval_ms, (2) reads the
 * outbox counts for health and metrics, (3) unless the state is down, claims a batch of ready
 * rows (the store marks them `sending`, in order per session, never a row whose session has an
 * earlier row `sending`; the first claim after a start also takes back rows a dead process left
 * `sending`), (4) delivers them, (5) settles the batch in one store op (delivered rows are
 * deleted; failures get an exponential backoff, or `failed` after memory.max_attempts). With
 * SomaBrain a batch goes out over LANES threads, each with its own kept-alive connection; all
 * rows of a session go to one lane, which sends them one by one in order: a session whose row
 * failed has its later rows released untried, and once the breaker opens the rest of the batch
 * is released without costing an attempt. One batch is in flight while the loop claims the
 * next (other sessions only, by the rule above) and settles the last, so the store's round
 * trips hide behind the SomaBrain calls. A token bucket holds deliveries to
 * memory.relay_rate_per_s (half while degraded), so a long backlog drains without flattening
 * SomaBrain. The thread sleeps on a condition variable: a committed write wakes it
 * (memory_relay_wake), else it looks again every POLL_MS. Only the relay and its lanes call the
 * driver's remember; the state they report goes through memory.c.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "memory/memory_int.h"

#define BATCH_MAX 256 /* rows per claim: two batches bound the replays after a crash */
#define LANES	  4   /* SomaBrain calls in flight at once (different sessions) */
#define POLL_MS	  250
#define STATS_MS  250

static struct {
	pthread_mutex_t lock; /* guards wake, stop */
	pthread_cond_t cv;    /* signalled by wake and stop */
	bool wake;	      /* a write was committed since the last look */
	bool stop;	      /* the thread should finish */
	bool running;	      /* the thread exists */
	pthread_t tid;	      /* the relay */
	struct store *st;     /* where the outbox is */
} r = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static bool stopping(void)
{
	pthread_mutex_lock(&r.lock);
	bool s = r.stop;
	pthread_mutex_unlock(&r.lock);
	return s;
}

/* With the built-in driver both stores write a memory as its row in the event's own transaction
 * (sqlite_memory.c, pg_memory.c): a commit leaves nothing for the relay, whose polls still
 * deliver rows left in the outbox by an earlier run with SomaBrain. A wake would only cost the
 * writer a claim per reply. */
void memory_relay_wake(void)
{
	if (memory_cfg.driver == &memory_builtin_driver)
		return;
	pthread_mutex_lock(&r.lock);
	r.wake = true;
	pthread_cond_signal(&r.cv);
	pthread_mutex_unlock(&r.lock);
}

/* Waits up to ms for a wake or stop. */
static void nap(int64_t ms)
{
	struct timespec ts = clock_deadline_in(CLOCK_REALTIME, ms);
	pthread_mutex_lock(&r.lock);
	while (!r.wake && !r.stop)
		if (pthread_cond_timedwait(&r.cv, &r.lock, &ts) != 0)
			break;
	r.wake = false;
	pthread_mutex_unlock(&r.lock);
}

static void refresh_stats(void)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_STATS, "");
	if (op)
		op->all_tenants = true;
	if (op && store_op_wait(r.st, op) == SOMA_OK)
		memory_note_outbox(json_integer_value(json_object_get(op->session, "pending")) +
					   json_integer_value(json_object_get(op->session, "sending")),
				   json_integer_value(json_object_get(op->session, "failed")),
				   json_integer_value(json_object_get(op->session, "oldest_ms")));
	store_op_free(op);
}

static json_t *claim(int64_t limit, bool reclaim)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_CLAIM, "");
	json_t *rows = NULL;
	if (!op)
		return NULL;
	op->limit = limit;
	op->flag = reclaim;
	op->all_tenants = true;
	if (store_op_wait(r.st, op) == SOMA_OK) {
		rows = op->rows;
		op->rows = NULL;
		if (reclaim && op->seq)
			log_info("memory", "took back %lld memory write(s) left sending by the previous run",
				 (long long)op->seq);
	}
	store_op_free(op);
	return rows;
}

/* Backoff before attempt n+1 (n >= 1 failed so far): base * 2^(n-1), capped at 60 s, +-25%. */
static int64_t backoff_ms(int64_t n)
{
	int64_t d = memory_cfg.backoff_ms;
	for (int64_t i = 1; i < n && d < 60000; i++)
		d *= 2;
	if (d > 60000)
		d = 60000;
	return d * 3 / 4 + (int64_t)(ids_random_u32() % (uint32_t)(d / 2 + 1));
}

/* How a row settles. A failure the service is to blame for (UNAVAILABLE while the state is
 * down: an outage) does not cost the row an attempt: it waits its backoff and is tried again, so
 * an outage never turns writes into `failed` ones; a row that fails while the service works
 * (REJECTED, or UNAVAILABLE with the breaker closed) spends one. So does a row whose own 5xx
 * opened the breaker while /health answered (the caller passes outage false): else one row that
 * SomaBrain always answers 5xx opened the breaker itself, was the probe after each open period
 * and never spent an attempt, pending for ever and keeping memory down for every tenant. A
 * 429, a timeout or a transport error never blames the row (a throttled or unreachable
 * SomaBrain is an outage, however long). */
static json_t *settlement(json_t *row, enum memory_call res, const char *err, bool outage)
{
	json_int_t id = json_integer_value(json_object_get(row, "id"));
	int64_t attempts = json_integer_value(json_object_get(row, "attempts")) + 1;
	if (res == MEMORY_CALL_OK)
		return json_pack("{s:I, s:s}", "id", id, "result", "delivered");
	if (res == MEMORY_CALL_SKIPPED)
		return json_pack("{s:I, s:s, s:I}", "id", id, "result", "release", "delay_ms", (json_int_t)0);
	if ((res == MEMORY_CALL_UNAVAILABLE || res == MEMORY_CALL_SERVER_ERROR) && outage)
		return json_pack("{s:I, s:s, s:I}", "id", id, "result", "release", "delay_ms",
				 (json_int_t)backoff_ms(attempts));
	if (attempts >= memory_cfg.max_attempts) {
		log_warn("memory",
			 "memory write %s of tenant %s failed %lld time(s) and is now failed: %s; an admin "
			 "may retry it (POST /v1/memory/outbox/%lld/retry) or drop it",
			 json_string_value(json_object_get(row, "key")),
			 json_string_value(json_object_get(row, "tenant")), (long long)attempts, err, (long long)id);
		return json_pack("{s:I, s:s, s:s}", "id", id, "result", "failed", "error", err);
	}
	return json_pack("{s:I, s:s, s:s, s:I}", "id", id, "result", "retry", "error", err, "delay_ms",
			 (json_int_t)backoff_ms(attempts));
}

static struct memory_item item_of(json_t *row)
{
	json_t *body = json_object_get(row, "body");
	const char *ns = json_string_value(json_object_get(row, "namespace"));
	return (struct memory_item){.key = json_string_value(json_object_get(row, "key")),
				    .tenant = json_string_value(json_object_get(row, "tenant")),
				    .ns = ns && ns[0] ? ns : memory_cfg.ns, /* "": the default namespace */
				    .session_id = json_string_value(json_object_get(row, "session_id")),
				    .value = json_object_get(body, "value"),
				    .tags = json_object_get(body, "tags")};
}

/* One claimed batch: its rows and what became of each. Two exist: one in flight on the lanes
 * while the relay settles the one before and claims the one after. */
struct batch {
	json_t *rows;			     /* claimed rows (owned); items borrow from them */
	size_t n;			     /* rows */
	struct memory_item items[BATCH_MAX]; /* what each row asks */
	unsigned char lane_of[BATCH_MAX];    /* the lane that calls it */
	enum memory_call res[BATCH_MAX];     /* its outcome */
	bool opened[BATCH_MAX];		     /* its own failure opened the breaker (memory_note_call) */
	char err[BATCH_MAX][160];	     /* a sentence when it failed */
};

/* ---- lanes: the SomaBrain calls of a batch, LANES at a time ----
 * Row i goes to lane hash(tenant, session) % LANES (rows without a session: round robin), so
 * all rows of a session are in one lane, which calls them in id order: the order per session
 * holds while different sessions are in flight at once. Each lane is a thread with its own
 * libcurl handle (curl_api_thread_handle), so each keeps its connection to SomaBrain alive.
 * A lane skips (SKIPPED) a row whose session already failed in this batch, and everything
 * once the relay stops or the breaker opens. */
static struct {
	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t go;    /* a new job, or quit */
	pthread_cond_t done;  /* a lane finished the job */
	pthread_t tid[LANES]; /* the lane threads */
	int started;	      /* how many exist */
	unsigned job;	      /* bumps per batch */
	int busy;	      /* lanes still on the job */
	bool quit;	      /* lanes should exit */
	struct batch *batch;  /* the job (the relay's; untouched by it until done) */
} lanes = {.lock = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* Calls lane me's rows of b in order (lane threads; the relay thread when no lane started). */
static void lane_run(struct batch *b, unsigned me)
{
	const struct memory_item *it = b->items;
	for (size_t i = 0; i < b->n; i++) {
		if (b->lane_of[i] != me)
			continue;
		bool blocked = false; /* an earlier row of this session failed in this batch (same lane) */
		for (size_t j = 0; j < i && !blocked && it[i].session_id[0]; j++)
			blocked = b->lane_of[j] == me && b->res[j] != MEMORY_CALL_OK &&
				  strcmp(it[j].session_id, it[i].session_id) == 0 &&
				  strcmp(it[j].tenant, it[i].tenant) == 0;
		if (blocked || stopping() || !memory_breaker_allows())
			continue; /* stays SKIPPED */
		memory_cfg.driver->remember(r.st, &it[i], 1, &b->res[i], &b->err[i]);
		b->opened[i] = memory_note_call(b->res[i], "remember_failure");
	}
}

static void *lane_main(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg, seen = 0;
	char name[16];
	snprintf(name, sizeof(name), "soma-memlane%u", me);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&lanes.lock);
	for (;;) {
		while (!lanes.quit && lanes.job == seen)
			pthread_cond_wait(&lanes.go, &lanes.lock);
		if (lanes.quit)
			break;
		seen = lanes.job;
		struct batch *b = lanes.batch;
		pthread_mutex_unlock(&lanes.lock);
		lane_run(b, me);
		pthread_mutex_lock(&lanes.lock);
		if (--lanes.busy == 0)
			pthread_cond_signal(&lanes.done);
	}
	pthread_mutex_unlock(&lanes.lock);
	return NULL;
}

static void lanes_start(void)
{
	lanes.quit = false;
	lanes.job = 0; /* no lane runs yet: each starts with seen = 0 (a restarted relay's too) */
	lanes.busy = 0;
	for (lanes.started = 0; lanes.started < LANES; lanes.started++)
		if (pthread_create(&lanes.tid[lanes.started], NULL, lane_main, (void *)(uintptr_t)lanes.started) != 0)
			break;
	if (lanes.started < LANES)
		log_warn("memory", "started %d of %d memory delivery lanes; SomaBrain writes go %d at a time",
			 lanes.started, LANES, lanes.started ? lanes.started : 1);
}

static void lanes_stop(void)
{
	pthread_mutex_lock(&lanes.lock);
	lanes.quit = true;
	pthread_cond_broadcast(&lanes.go);
	pthread_mutex_unlock(&lanes.lock);
	for (int i = 0; i < lanes.started; i++)
		pthread_join(lanes.tid[i], NULL);
	lanes.started = 0;
}

/* FNV-1a of tenant and session: the lane of a session. */
static unsigned session_lane(const char *tenant, const char *session_id, unsigned n)
{
	uint32_t h = 2166136261u;
	for (const char *p = tenant; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ 0xffu) * 16777619u;
	for (const char *p = session_id; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % n;
}

/* Starts delivering b: the built-in driver at once, in one store op; SomaBrain on the lanes
 * (on this thread when none could start). delivery_wait(b) returns when it is done. */
static void delivery_begin(struct batch *b)
{
	unsigned nl = lanes.started ? (unsigned)lanes.started : 1;
	for (size_t i = 0; i < b->n; i++) {
		b->items[i] = item_of(json_array_get(b->rows, i));
		b->err[i][0] = '\0';
		b->res[i] = MEMORY_CALL_SKIPPED;
		b->opened[i] = false;
		b->lane_of[i] = (unsigned char)(b->items[i].session_id[0]
							? session_lane(b->items[i].tenant, b->items[i].session_id, nl)
							: i % nl);
	}
	if (memory_cfg.driver == &memory_builtin_driver) {
		memory_cfg.driver->remember(r.st, b->items, b->n, b->res, b->err);
		memory_note_call(b->res[0], "remember_failure");
		return;
	}
	if (!lanes.started) {
		lane_run(b, 0);
		return;
	}
	pthread_mutex_lock(&lanes.lock);
	lanes.batch = b;
	lanes.busy = lanes.started;
	lanes.job++;
	pthread_cond_broadcast(&lanes.go);
	pthread_mutex_unlock(&lanes.lock);
}

static void delivery_wait(void)
{
	pthread_mutex_lock(&lanes.lock);
	while (lanes.busy > 0)
		pthread_cond_wait(&lanes.done, &lanes.lock);
	pthread_mutex_unlock(&lanes.lock);
}

/* Settles b's rows in one store op and frees them. */
static void settle(struct batch *b)
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_SETTLE, "");
	double counts[3] = {0};
	if (!op || !(op->row = json_array())) {
		store_op_free(op);
		goto out; /* rows stay sending; the next start takes them back */
	}
	struct memory_status now;
	memory_snapshot(&now);
	for (size_t i = 0; i < b->n; i++) {
		json_t *s = settlement(json_array_get(b->rows, i), b->res[i], b->err[i],
				       now.state == MEMORY_DOWN && !b->opened[i]);
		const char *what = json_string_value(json_object_get(s, "result"));
		counts[strcmp(what, "delivered") == 0 ? 0
		       : strcmp(what, "failed") == 0  ? 2
						      : 1] += strcmp(what, "release") != 0;
		json_array_append_new(op->row, s);
	}
	enum soma_err e = store_op_wait(r.st, op);
	if (e != SOMA_OK)
		log_error("memory", "cannot settle %zu memory write(s): %s; they are retried after a restart", b->n,
			  soma_err_str(e));
	store_op_free(op);
	memory_count_delivery("delivered", counts[0]);
	memory_count_delivery("retry", counts[1]);
	memory_count_delivery("failed", counts[2]);
out:
	json_decref(b->rows);
	b->rows = NULL;
	b->n = 0;
}

/* Rows to claim now under the token bucket, or 0 and how long to wait (*wait_ms): at least
 * 50 ms worth of the rate, so a rate-limited drain claims and settles batches, not single rows. */
static int64_t batch_limit(double tokens, double rate, int64_t *wait_ms)
{
	double want = rate / 20.0;
	want = want < 1 ? 1 : want > BATCH_MAX ? BATCH_MAX : want;
	*wait_ms = tokens < want ? (int64_t)((want - tokens) * 1000.0 / rate) + 1 : 0;
	if (tokens < want)
		return 0;
	return tokens < BATCH_MAX ? (int64_t)tokens : BATCH_MAX;
}

/* The health probe and the outbox counts, when due. */
static void look_around(bool somabrain, int64_t now, int64_t *next_health, int64_t *next_stats)
{
	if (somabrain && memory_cfg.url[0] && now >= *next_health) { /* (no URL: down, unconfigured) */
		char detail[MEMORY_REASON_MAX];
		memory_note_health(memory_cfg.driver->health(detail, sizeof(detail)), detail);
		*next_health = now + memory_cfg.health_interval_ms;
	}
	if (now >= *next_stats) {
		refresh_stats();
		*next_stats = now + STATS_MS;
	}
}

/* The loop keeps one batch in flight while it claims the next and settles the last: a claim
 * never takes a row whose session has an earlier row `sending`, so the next batch holds other
 * sessions only, and the store's round trips hide behind the SomaBrain calls. */
static void *relay_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-memrelay");
	static struct batch batches[2];
	struct batch *flying = NULL; /* delivering on the lanes */
	bool somabrain = memory_cfg.driver == &memory_somabrain_driver, dirty = false;
	int64_t next_health = 0, next_stats = 0, last_ms = clock_wall_ms();
	double tokens = memory_cfg.rate_per_s;
	if (somabrain)
		lanes_start();
	json_t *none = claim(0, true); /* rows a dead process left sending are pending again, at once */
	bool first = !none;	       /* (if that failed, the first real claim does it) */
	json_decref(none);
	while (!stopping()) {
		int64_t now = clock_wall_ms();
		look_around(somabrain, now, &next_health, &next_stats);
		struct memory_status st;
		memory_snapshot(&st);
		double rate = st.state == MEMORY_DEGRADED ? memory_cfg.rate_per_s / 2.0 : memory_cfg.rate_per_s;
		tokens += (double)(now - last_ms) * rate / 1000.0;
		/* the bucket holds a second's worth, and never less than one row: at 1/s degraded halves
		 * the rate to 0.5 and a cap of 0.5 tokens never allowed the one row a claim needs */
		double cap = rate < 1 ? 1 : rate;
		tokens = tokens > cap ? cap : tokens;
		last_ms = now;
		int64_t wait_ms, limit = batch_limit(tokens, rate, &wait_ms);
		if (st.state == MEMORY_DOWN || !limit) {
			if (flying) { /* finish what is out first */
				delivery_wait();
				settle(flying);
				flying = NULL;
			} else {
				nap(st.state == MEMORY_DOWN ? POLL_MS : wait_ms);
			}
			continue;
		}
		struct batch *done = flying, *b = flying == &batches[0] ? &batches[1] : &batches[0];
		b->rows = claim(limit, first);
		b->n = json_array_size(b->rows);
		first = first && !b->rows;
		tokens -= (double)b->n;
		if (done)
			delivery_wait();
		if (b->n)
			delivery_begin(b);
		if (done)
			settle(done);
		flying = b->n ? b : NULL;
		if (!b->n) {
			json_decref(b->rows);
			b->rows = NULL;
		}
		if (b->n || done) {
			dirty = true;
			continue; /* (after `done`, its sessions' later rows may be ready) */
		}
		if (dirty) /* the backlog just ran out: show it at once */
			refresh_stats();
		dirty = false;
		nap(POLL_MS);
	}
	if (flying) {
		delivery_wait();
		settle(flying);
	}
	if (somabrain)
		lanes_stop();
	return NULL;
}

enum soma_err memory_relay_start(struct store *st, char *why, size_t cap)
{
	r.st = st;
	r.stop = false;
	r.wake = false;
	if (pthread_create(&r.tid, NULL, relay_main, NULL) != 0) {
		snprintf(why, cap, "cannot start the memory relay thread");
		return SOMA_ERR_INTERNAL;
	}
	r.running = true;
	return SOMA_OK;
}

void memory_relay_stop(void)
{
	if (!r.running)
		return;
	pthread_mutex_lock(&r.lock);
	r.stop = true;
	pthread_cond_broadcast(&r.cv);
	pthread_mutex_unlock(&r.lock);
	pthread_join(r.tid, NULL);
	r.running = false;
}
