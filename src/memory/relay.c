/*
 * relay.c - the memory relay: one thread that delivers the memory outbox to the driver.
 *
 * DESIGN: the loop (1) probes SomaBrain's /health every memory.health_interval_ms, (2) reads the
 * outbox counts for health and metrics, (3) unless the state is down, claims a batch of ready
 * rows (the store marks them `sending`, in order per session; the first claim after a start
 * also takes back rows a dead process left `sending`), (4) delivers them, (5) settles each
 * (delivered rows are deleted; failures get an exponential backoff, or `failed` after
 * memory.max_attempts). With SomaBrain the rows go one by one: a session whose row failed has
 * its later rows released untried (order per session), and once the breaker opens the rest of
 * the batch is released without costing an attempt. A token bucket holds deliveries to
 * memory.relay_rate_per_s (half while degraded), so a long backlog drains without flattening
 * SomaBrain. The thread sleeps on a condition variable: a committed write wakes it
 * (memory_relay_wake), else it looks again every POLL_MS. Only this thread calls the driver's
 * remember; the state it reports goes through memory.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "memory/memory_int.h"

#define BATCH_MAX 128
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

void memory_relay_wake(void)
{
	pthread_mutex_lock(&r.lock);
	r.wake = true;
	pthread_cond_signal(&r.cv);
	pthread_mutex_unlock(&r.lock);
}

/* Waits up to ms for a wake or stop. */
static void nap(int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_sec++, ts.tv_nsec -= 1000000000L;
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

/* How a row settles. A failure the service is to blame for (UNAVAILABLE while the breaker is
 * open: an outage) does not cost the row an attempt: it waits its backoff and is tried again, so
 * an outage never turns writes into `failed` ones; a row that fails while the service works
 * (REJECTED, or UNAVAILABLE with the breaker closed) spends one. */
static json_t *settlement(json_t *row, enum memory_call res, const char *err, bool outage)
{
	json_int_t id = json_integer_value(json_object_get(row, "id"));
	int64_t attempts = json_integer_value(json_object_get(row, "attempts")) + 1;
	if (res == MEMORY_CALL_OK)
		return json_pack("{s:I, s:s}", "id", id, "result", "delivered");
	if (res == MEMORY_CALL_SKIPPED)
		return json_pack("{s:I, s:s, s:I}", "id", id, "result", "release", "delay_ms", (json_int_t)0);
	if (res == MEMORY_CALL_UNAVAILABLE && outage)
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

/* Delivers rows (SomaBrain: one by one, see DESIGN); results[i] and err[i] per row. */
static void deliver(json_t *rows, size_t n, enum memory_call *res, char (*err)[160])
{
	struct memory_item items[BATCH_MAX];
	for (size_t i = 0; i < n; i++) {
		items[i] = item_of(json_array_get(rows, i));
		err[i][0] = '\0';
	}
	if (memory_cfg.driver == &memory_builtin_driver) {
		memory_cfg.driver->remember(r.st, items, n, res, err);
		memory_note_call(res[0], "remember_failure");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		bool blocked = false; /* an earlier row of this session failed in this batch */
		for (size_t j = 0; j < i && !blocked; j++)
			blocked = res[j] != MEMORY_CALL_OK && items[i].session_id[0] &&
				  strcmp(items[j].session_id, items[i].session_id) == 0;
		if (blocked || stopping() || !memory_breaker_allows()) {
			res[i] = MEMORY_CALL_SKIPPED;
			continue;
		}
		memory_cfg.driver->remember(r.st, &items[i], 1, &res[i], &err[i]);
		memory_note_call(res[i], "remember_failure");
	}
}

static void settle(json_t *rows, size_t n, const enum memory_call *res, char (*err)[160])
{
	struct store_op *op = store_op_new(STORE_OP_OUTBOX_SETTLE, "");
	double counts[3] = {0};
	if (!op || !(op->row = json_array())) {
		store_op_free(op);
		return; /* rows stay sending; the next start takes them back */
	}
	struct memory_status now;
	memory_snapshot(&now);
	for (size_t i = 0; i < n; i++) {
		json_t *s = settlement(json_array_get(rows, i), res[i], err[i], now.state == MEMORY_DOWN);
		const char *what = json_string_value(json_object_get(s, "result"));
		counts[strcmp(what, "delivered") == 0 ? 0
		       : strcmp(what, "failed") == 0  ? 2
						      : 1] += strcmp(what, "release") != 0;
		json_array_append_new(op->row, s);
	}
	enum soma_err e = store_op_wait(r.st, op);
	if (e != SOMA_OK)
		log_error("memory", "cannot settle %zu memory write(s): %s; they are retried after a restart", n,
			  soma_err_str(e));
	store_op_free(op);
	memory_count_delivery("delivered", counts[0]);
	memory_count_delivery("retry", counts[1]);
	memory_count_delivery("failed", counts[2]);
}

static void *relay_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-memrelay");
	bool somabrain = memory_cfg.driver == &memory_somabrain_driver;
	int64_t next_health = 0, next_stats = 0, last_ms = clock_wall_ms();
	double tokens = memory_cfg.rate_per_s;
	static enum memory_call res[BATCH_MAX];
	static char err[BATCH_MAX][160];
	json_t *none = claim(0, true); /* rows a dead process left sending are pending again, at once */
	bool first = !none;	       /* (if that failed, the first real claim does it) */
	json_decref(none);
	while (!stopping()) {
		int64_t now = clock_wall_ms();
		if (somabrain && now >= next_health) {
			char detail[MEMORY_REASON_MAX];
			memory_note_health(memory_cfg.driver->health(detail, sizeof(detail)), detail);
			next_health = now + memory_cfg.health_interval_ms;
		}
		if (now >= next_stats) {
			refresh_stats();
			next_stats = now + STATS_MS;
		}
		struct memory_status st;
		memory_snapshot(&st);
		double rate = st.state == MEMORY_DEGRADED ? memory_cfg.rate_per_s / 2.0 : memory_cfg.rate_per_s;
		tokens += (double)(now - last_ms) * rate / 1000.0;
		tokens = tokens > rate ? rate : tokens;
		last_ms = now;
		if (st.state == MEMORY_DOWN || tokens < 1) {
			nap(st.state == MEMORY_DOWN ? POLL_MS : (int64_t)(1000.0 / rate) + 1);
			continue;
		}
		int64_t limit = tokens < BATCH_MAX ? (int64_t)tokens : BATCH_MAX;
		json_t *rows = claim(limit, first);
		size_t n = json_array_size(rows);
		first = first && !rows;
		if (n) {
			tokens -= (double)n;
			deliver(rows, n, res, err);
			settle(rows, n, res, err);
			next_stats = 0;
		}
		json_decref(rows);
		if (!n)
			nap(POLL_MS);
	}
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
