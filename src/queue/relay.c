/*
 * relay.c - the transactional outbox of the redis queue: committed task rows -> Celery messages.
 *
 * DESIGN: a task is committed into the store's tasks table in the same transaction as the
 * state change that causes it (MESSAGE, TASK_PUBLISH, a dead letter requeued). This thread,
 * woken by the store's task hook (and every second regardless), claims up to RELAY_BATCH rows
 * (STORE_OP_TASK_RELAY_CLAIM: queued -> relaying with a lease), LPUSHes their messages to their
 * band keys in one pipeline - with soma-task-owner-<id> (the tenant, for the task API; never over another
 * tenant's: append_owner) and,
 * for a requeued dead letter, DEL of its old result meta and run-lock first - then deletes the rows
 * (STORE_OP_TASK_RELAY_DONE; after a full batch, and for handed rows, the next claim deletes them in
 * its own transaction, so a backlog costs one commit per batch and the lanes' tasks one a second). A crash between
 * LPUSH and the delete (of this process, or of PostgreSQL, where these commits do not wait for their WAL flush:
 * pg_writer.c) publishes those rows again; the worker's dedupe (result meta, run-lock) makes the copy a no-op while
 * either exists, and a conversation's reply is keyed on its task id in the store (src/tasks/conversation.c), so its
 * copy is a no-op at any time. A row's available_ms in the future becomes the message's eta (the worker holds it, as
 * Celery). Redis down: this thread keeps the rows it claimed and retries them with a backoff.
 *
 * Handed rows. The tasks of the messages PostgreSQL's message lanes commit are not claimed: the
 * lane stores each already claimed for this relay ('relaying', lease RELAY_LEASE_MS) and hands the
 * committed rows over (queue_relay_hand, store_set_task_relay), and this thread publishes them
 * as a claimed batch and deletes them with its next claim. That spares each message the claim's UPDATE (a second row
 * version and its index entries, the statement and its transaction: ~37 us of PostgreSQL time
 * per message at -c20, bench/ingest_pg.sh). Handed rows go first; a claim runs when the task hook
 * wakes this thread (other tasks committed) and at least every second, so rows of every other
 * kind, and handed rows a crashed node left behind once their lease passed, are still claimed.
 * The price of a crash between a lane's COMMIT and the publish: those tasks wait for their lease
 * (30 s), where queued rows would have been claimed by another node's relay within a second; the
 * same for rows handed while HANDED_MAX are waiting (Redis down): they stay in the table only.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define RELAY_BATCH    1000
#define RELAY_LEASE_MS 30000
#define HANDED_MAX     20000 /* rows handed and not yet published; past it the lanes' rows wait for their lease */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool running, stop;
static bool taking;	  /* under lock: queue_relay_hand takes rows (the thread runs, not stopping) */
static json_t *handed;	  /* under lock: rows handed by the lanes, not yet taken by the thread */
static unsigned long gen; /* under lock: task hook wakes (a claim is due) */
static pthread_t tid;
static struct store *store;
static struct redis_conn *conn;
static atomic_llong published;

void queue_relay_wake(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	gen++;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
}

static bool queue_relay_hand(json_t *rows, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	bool ok = taking && json_array_size(handed) + json_array_size(rows) <= HANDED_MAX &&
		  (handed || (handed = json_array())) && json_array_extend(handed, rows) == 0;
	if (ok)
		pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	json_decref(rows);
	return ok;
}

/* The oldest handed rows, at most RELAY_BATCH (a JSON array, the caller's), NULL when there are
 * none (or out of memory: they are taken later). */
static json_t *take_handed(void)
{
	pthread_mutex_lock(&lock);
	json_t *rows = handed, *rest = NULL;
	size_t n = json_array_size(rows);
	if (n > RELAY_BATCH && (rest = json_array())) {
		for (size_t i = RELAY_BATCH; i < n; i++)
			json_array_append(rest, json_array_get(rows, i));
		while (json_array_size(rows) > RELAY_BATCH)
			json_array_remove(rows, json_array_size(rows) - 1);
	}
	handed = n > RELAY_BATCH ? rest : NULL;
	if (n > RELAY_BATCH && !rest)
		handed = rows, rows = NULL;
	pthread_mutex_unlock(&lock);
	if (rows && json_array_size(rows) == 0)
		json_decref(rows), rows = NULL;
	return rows;
}

long long queue_relay_published(void)
{
	return atomic_load(&published);
}

/* A requeued dead letter runs again: DEL its result and run-lock, and the FAILURE results and chord
 * joins its failure wrote for the later links of its chain (redis_canvas.c fail_chain: their
 * results would make the worker take the links, published when it succeeds, for copies). */
static enum soma_err forget_outcome(const char *id, const json_t *chain)
{
	size_t links = json_array_size(chain) < 32 ? json_array_size(chain) : 32, n = 0;
	char keys[2 + 2 * 32][CELERY_ID_KEY_MAX];
	const char *argv[1 + 2 + 2 * 32];
	size_t lens[1 + 2 + 2 * 32];
	redis_meta_key(id, keys[n++], sizeof(keys[0]));
	snprintf(keys[n++], sizeof(keys[0]), "soma-run-%s-0", id);
	for (size_t i = 0; i < links; i++) {
		const char *link = json_string_value(
			json_object_get(json_object_get(json_array_get(chain, i), "options"), "task_id"));
		if (!link || !celery_id_ok(link))
			continue;
		redis_meta_key(link, keys[n++], sizeof(keys[0]));
		snprintf(keys[n++], sizeof(keys[0]), "soma-once-%s-join", link);
	}
	argv[0] = "DEL", lens[0] = 3;
	for (size_t i = 0; i < n; i++)
		argv[i + 1] = keys[i], lens[i + 1] = strlen(keys[i]);
	return redis_append_argv(conn, (int)n + 1, argv, lens);
}

/* SET soma-task-owner-<id> to the tenant for ttl seconds unless it names another tenant: a task id
 * belongs to the first tenant that used it (POST /v1/tasks claims a caller's id before the publish:
 * tasks_publish.c), so a row never hands another tenant's id (its result, its revoke) to its own. */
static const char owner_script[] = "local v = redis.call('GET', KEYS[1]) "
				   "if v and v ~= ARGV[1] then return 0 end "
				   "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1";

static enum soma_err append_owner(const char *key, const char *ttl, const char *tenant)
{
	const char *t = tenant ? tenant : "";
	const char *argv[] = {"EVAL", owner_script, "1", key, t, ttl};
	size_t lens[] = {4, sizeof(owner_script) - 1, 1, strlen(key), strlen(t), strlen(ttl)};
	return redis_append_argv(conn, 6, argv, lens);
}

/* Appends the commands of one row; returns how many, or -1 when one could not be appended. */
static int append_row(json_t *row, int64_t now)
{
	const char *id = json_string_value(json_object_get(row, "id"));
	json_t *payload = json_object_get(row, "payload");
	int64_t available = json_integer_value(json_object_get(row, "available_ms"));
	char key[CELERY_KEY_MAX], owner[CELERY_ID_KEY_MAX], ttl[24];
	char *env = redis_task_envelope(row, 0, available > now + 5 ? available : 0, key);
	if (!env) {
		log_error("queue", "cannot build the message of task %s; it stays in the outbox", id);
		return 0;
	}
	int n = 0, want = 0;
	json_t *cel = json_object_get(payload, "celery");
	if (json_is_true(json_object_get(row, "requeued")))
		want++, n += forget_outcome(id, json_object_get(json_object_get(cel, "embed"), "chain")) == SOMA_OK;
	const char *gid = json_string_value(json_object_get(cel, "group"));
	if (gid && json_is_integer(json_object_get(cel, "chord_size"))) { /* the chord's size, as Celery's caller */
		char skey[CELERY_ID_KEY_MAX], size[24], sttl[24];
		long long exp = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
		snprintf(skey, sizeof(skey), "celery-taskset-meta-%s.s", gid);
		snprintf(size, sizeof(size), "%lld", (long long)json_integer_value(json_object_get(cel, "chord_size")));
		snprintf(sttl, sizeof(sttl), "%lld", exp > 0 ? exp : 86400LL);
		const char *s[] = {"SETEX", skey, sttl, size};
		size_t sl[] = {5, strlen(skey), strlen(sttl), strlen(size)};
		want++, n += redis_append_argv(conn, 4, s, sl) == SOMA_OK;
	}
	const char *l[] = {"LPUSH", key, env};
	size_t ll[] = {5, strlen(key), strlen(env)};
	want++, n += redis_append_argv(conn, 3, l, ll) == SOMA_OK;
	const char *tenant = json_string_value(json_object_get(row, "tenant"));
	long long expires = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	snprintf(owner, sizeof(owner), "soma-task-owner-%s", id);
	/* kept while the task waits for its eta too: the tenant may revoke it (and read it) until then */
	long long wait_s = available > clock_wall_ms() ? (available - clock_wall_ms()) / 1000 + 1 : 0;
	snprintf(ttl, sizeof(ttl), "%lld", (expires > 0 ? expires : 31536000LL) + wait_s);
	want++, n += append_owner(owner, ttl, tenant) == SOMA_OK;
	size_t i;
	json_t *other;
	json_array_foreach(json_object_get(cel, "owned"), i, other) /* a canvas's later tasks are the tenant's too */
	{
		snprintf(owner, sizeof(owner), "soma-task-owner-%s", json_string_value(other));
		want++, n += append_owner(owner, ttl, tenant) == SOMA_OK;
	}
	free(env);
	return n == want ? n : -1;
}

/* Publishes the claimed rows; true when Redis took every message. */
static bool publish(json_t *rows)
{
	int64_t now = clock_wall_ms();
	if (redis_conn_ensure(conn) != SOMA_OK)
		return false;
	int n = 0;
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row)
	{
		int k = append_row(row, now);
		if (k < 0) { /* all or nothing: drop what was queued, keep the rows, try again */
			redis_conn_broken(conn, "a task message could not be queued for redis");
			return false;
		}
		n += k;
	}
	bool ok = n > 0 || json_array_size(rows) == 0;
	for (int k = 0; k < n; k++) {
		redisReply *r = redis_get_reply(conn);
		if (!r || r->type == REDIS_REPLY_ERROR) {
			if (r)
				log_warn("queue", "redis refused a task message: %s", r->str);
			ok = false;
		}
		freeReplyObject(r);
		if (!redis_conn_ok(conn))
			return false;
	}
	return ok;
}

/* The ids of rows, a new array (NULL on OOM). */
static json_t *row_ids(json_t *rows)
{
	json_t *ids = json_array();
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row)
	{
		if (ids && json_array_append(ids, json_object_get(row, "id")) != 0)
			json_decref(ids), ids = NULL;
	}
	return ids;
}

/* Deletes the published rows ids (taken) in a RELAY_DONE of their own. */
static void done_ids(json_t *ids)
{
	struct store_op *op = ids ? store_op_new(STORE_OP_TASK_RELAY_DONE, "") : NULL;
	if (!op) {
		json_decref(ids);
		return;
	}
	op->row = ids;
	if (store_op_wait(store, op) != SOMA_OK)
		log_warn("queue",
			 "published tasks could not be removed from the outbox (%s); they are published "
			 "again after %d s and deduplicated by the workers",
			 soma_err_str(op->err), RELAY_LEASE_MS / 1000);
	store_op_free(op);
}

/* One batch; returns how many rows were published (-1: Redis or the store failed). Rows that
 * could not be published are kept (still claimed) and tried again first, so a Redis restart
 * costs a backoff, not a lease. A full batch's rows are deleted by the next claim, in its
 * transaction (op->row of RELAY_CLAIM: one commit per batch, not two); a smaller one's at once.
 * Handed rows are deleted by the next claim too - one runs at least every second, well inside
 * their lease - so the lanes' tasks cost one DELETE per second, not one transaction per batch
 * published (~100 a second at -c20, each ~10 rows); past RELAY_BATCH of them waiting, at once. */
static json_t *unsent;
static bool unsent_claimed;   /* unsent came from a claim (else: handed) */
static json_t *published_ids; /* published, to delete with the next claim */

/* Keeps published ids (taken) in published_ids, for the next claim to delete in its transaction;
 * past RELAY_BATCH of them they are deleted at once, in a RELAY_DONE of their own. */
static void keep_ids(json_t *ids)
{
	if (!ids)
		return;
	if (!published_ids)
		published_ids = ids;
	else if (json_array_extend(published_ids, ids) != 0)
		done_ids(json_incref(ids)); /* (out of memory) */
	if (ids != published_ids)
		json_decref(ids);
	if (json_array_size(published_ids) > RELAY_BATCH) {
		done_ids(published_ids);
		published_ids = NULL;
	}
}

/* Publishes unsent and deletes its rows; returns how many (-1: Redis failed, unsent kept). */
static int publish_unsent(void)
{
	int n = (int)json_array_size(unsent);
	if (n > 0 && !publish(unsent)) {
		log_warn("queue", "cannot publish %d task(s) to redis (%s); retrying", n, redis_conn_error(conn));
		return -1;
	}
	if (n > 0) {
		if (unsent_claimed && n < RELAY_BATCH)
			done_ids(row_ids(unsent));
		else /* a full claim: the next claim follows at once; handed rows: within a second */
			keep_ids(row_ids(unsent));
		atomic_fetch_add(&published, n);
	}
	json_decref(unsent);
	unsent = NULL;
	return n;
}

/* Claims a batch into unsent; false when the store failed. */
static bool claim_batch(void)
{
	struct store_op *op = store_op_new(STORE_OP_TASK_RELAY_CLAIM, "");
	if (!op)
		return false;
	op->limit = RELAY_BATCH;
	op->delay_ms = RELAY_LEASE_MS;
	op->all_tenants = true;
	op->row = published_ids;
	published_ids = NULL;
	if (store_op_wait(store, op) == SOMA_OK) {
		unsent = op->rows;
		op->rows = NULL;
	} else if (op->row) { /* rolled back with the claim: delete them on their own */
		done_ids(op->row);
		op->row = NULL;
	}
	store_op_free(op);
	unsent_claimed = true;
	return unsent != NULL;
}

/* Rows that failed before (still claimed) go first, then the handed rows, then, when claim is
 * set, one claimed batch. Returns how many claimed rows were published (RELAY_BATCH: more may
 * be waiting), or -1 when Redis or the store failed (what was not published is kept). */
static int relay_once(bool claim)
{
	if (unsent && (publish_unsent() < 0))
		return -1;
	if ((unsent = take_handed())) {
		unsent_claimed = false;
		if (publish_unsent() < 0)
			return -1;
	}
	if (!claim)
		return 0;
	if (!claim_batch())
		return -1;
	return publish_unsent();
}

static void *relay_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-q-relay");
	int backoff_ms = 0;
	unsigned long seen = 0;
	bool more = true;	/* a claim is due at once (at start: what a previous run left) */
	int64_t next_claim = 0; /* wall ms: at least one claim a second */
	for (;;) {
		pthread_mutex_lock(&lock);
		bool quit = stop, claim = more || gen != seen || clock_wall_ms() >= next_claim;
		if (claim)
			seen = gen, next_claim = clock_wall_ms() + 1000;
		pthread_mutex_unlock(&lock);
		if (quit)
			break;
		int n = relay_once(claim);
		more = n == RELAY_BATCH; /* more is waiting */
		backoff_ms = n < 0 ? (backoff_ms ? (backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2) : 100) : 0;
		if (more)
			continue;
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, backoff_ms ? backoff_ms : 1000);
		pthread_mutex_lock(&lock);
		while (!stop && (backoff_ms || (gen == seen && !handed)))
			if (pthread_cond_timedwait(&wake, &lock, &until) != 0)
				break;
		pthread_mutex_unlock(&lock);
	}
	if (published_ids) /* stopped right after a full batch */
		done_ids(published_ids);
	published_ids = NULL;
	return NULL;
}

enum soma_err queue_relay_start(struct store *st)
{
	if (running)
		return SOMA_OK;
	store = st;
	if (!(conn = redis_queue_connect(5000)))
		return SOMA_ERR_INVALID;
	pthread_mutex_lock(&lock);
	stop = false;
	taking = true;
	pthread_mutex_unlock(&lock);
	if (pthread_create(&tid, NULL, relay_main, NULL) != 0) {
		pthread_mutex_lock(&lock);
		taking = false;
		pthread_mutex_unlock(&lock);
		redis_conn_close(conn);
		conn = NULL;
		return SOMA_ERR_INTERNAL;
	}
	running = true;
	store_set_task_relay(st, queue_relay_hand, NULL, RELAY_LEASE_MS);
	return SOMA_OK;
}

/* Stops after the batch in hand (rows it claimed but could not publish wait for their lease). */
void queue_relay_stop(void)
{
	if (!running)
		return;
	store_set_task_relay(store, NULL, NULL, 0); /* the lanes' next tasks are queued rows */
	pthread_mutex_lock(&lock);
	stop = true;
	taking = false; /* rows handed from now on wait for their lease */
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	pthread_join(tid, NULL);
	running = false;
	json_t *left; /* handed while the last batch went out: every batch of them, not only the first */
	while ((left = take_handed())) {
		if (unsent) {
			json_decref(left); /* Redis is failing: they wait for their lease */
			continue;
		}
		unsent = left;
		unsent_claimed = false;
		(void)publish_unsent(); /* (Redis down: they wait for their lease) */
	}
	json_decref(unsent); /* still claimed: published again when their lease passes */
	unsent = NULL;
	if (published_ids) /* those last handed rows went out */
		done_ids(published_ids);
	published_ids = NULL;
	redis_conn_close(conn);
	conn = NULL;
}
