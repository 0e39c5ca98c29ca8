/*
 * redis.c - the redis bus driver (bus.driver = redis): the live events of every node reach the
 * streams of every node, and the deltas of replies in progress stay in Redis for a resume on
 * any node, also after the node that held the stream died.
 *
 * DESIGN
 * Sequencing. Redis assigns the cursors: one Lua script (bus_redis_lua, redis_state.c) runs a
 * batch of records atomically; for an ephemeral record it takes the session's last cursor from
 * the hash soma:bus:<key>:m {s: seq, n: minor}, raises it to the record's base seq and to the
 * floor the publisher sends (the highest cursor this node saw in the generation it runs there,
 * so a Redis that lost its data mid-reply never reuses a cursor already handed out; reset when
 * the generation ends or the session is forgotten), counts n up and appends "<seq> <minor> <json>" to
 * the list soma:bus:<key>:l (LTRIM to BUS_LOG_MAX); a committed record raises s. Because every
 * node's records pass through the one script in one order, cursors of a session sort in the
 * same order on every node, as bus.h requires, even with two workers publishing to a session.
 *
 * Publishing. bus_publish_* (worker threads, the store's writer, io threads) only append a
 * record to a bounded queue (QUEUE_MAX records, QUEUE_MAX_BYTES) and wake the publisher
 * thread; nobody waits for Redis. The publisher thread takes what is queued (up to BATCH_MAX
 * records) and sends it as ONE EVALSHA: one round trip per batch, not per delta, and while it
 * waits the next batch builds up, so batches grow with the load. One queue and one thread keep
 * a node's records in publish order (the deltas of a reply before its final).
 *
 * Channel. The script PUBLISHes the whole batch as one message on one channel per database,
 * soma:bus:<db>, to which every gateway subscribes once (redis_sub.c). Not one channel per
 * session, because: subscribing stays a local, synchronous act (a stream is followed the moment
 * it subscribes, before it reads the store, which is what makes replay + live gap-free, with
 * no SUBSCRIBE round trip to wait for on an io thread); 10,000 streams cost no subscription
 * churn; and a batch of many sessions' records is one PUBLISH. The price: every gateway
 * receives every session's messages and drops those nobody follows on it (one hash lookup);
 * Redis writes each batch once per gateway. A fleet where that matters would shard the channel
 * by session hash; at our sizes (a handful of gateways) it does not. Cancel notices (cancel.c)
 * go on a channel of their own, soma:cancel:<db>, followed by the nodes that run workers (a
 * worker-only node subscribes to it alone): the publisher PUBLISHes each by itself.
 *
 * Framing of a published batch: records back to back, each
 * "<kind> <keylen> <textlen> <seq> <minor>\n<key><text>" (kinds in bus_int.h); a committed
 * record's frame is built in C when it is queued (redis_batch.c), the others' by the script.
 * The EVALSHA of a batch is built and sent by redis_batch.c.
 *
 * Expiry. While a generation runs its list lives window + LIVE_EXTRA_MS, renewed by each
 * delta (so the log of a worker that crashed mid-reply still goes); the hash counts running
 * generations (r: a b record per bus_generation_begin, an x per end; the floor table counts this
 * node's, so two replies of a session on one node are two); when the last one ends the list
 * expires after stream.resume_window_s.
 *
 * Resume. bus_snapshot reads s and the list in one pipelined round trip (on the store thread
 * that read the stream's rows: never an io thread) and merges what this node delivered
 * locally while degraded.
 *
 * Retry. A batch that fails while Redis answered the one before is sent again, as it was, on a
 * new connection for up to RETRY_MS (a killed connection, a proxy's timeout, a Redis restart): a
 * batch key makes Redis run it once even when the first attempt ran and only its reply was lost
 * (redis_batch.c). Meanwhile the queue fills behind it (bounded as ever).
 *
 * Degraded. When a batch fails beyond that (Redis down, paused) its records go to the local
 * machinery (this node's streams only); the publisher continues the cursors from its floor table, and
 * marks the sessions lost. Once Redis answers again it publishes a resync record for them,
 * which also raises each session's published seq in Redis to the last one it delivered locally,
 * and the subscriber thread sends a gap marker to all streams after a reconnect: each stream
 * fills what it missed from the store (and the Redis log) and carries on (stream_replay.c), so
 * nothing stays silently missing. A forget (a delete or reset) that went local-only is owed the
 * same way: the first batch Redis takes carries it again, before anything newer, so the other
 * nodes' streams of a deleted session end and Redis drops its state. Deltas that went local-only
 * on another node are gone (their final is in the store), and so is a delta that a Redis without
 * persistence took, answered and died with before its PUBLISH reached the other nodes.
 *
 * Limits: a forget is owed only while the floor table has room (FLOOR_MAX sessions); an owed
 * delete arriving after the session was created again under that id (during the outage) ends
 * that session's streams too (they reconnect and read it from the store); and one Redis
 * database must serve one deployment (keys and channel are per database).
 *
 * Threads: the publisher thread owns pub_conn and the floor table (redis_state.c); the snapshot
 * connection is shared by the store threads under its lock; health state is under state_lock,
 * the queue under q_lock.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_int.h"
#include "core/clock.h"
#include "core/log.h"
#include "redis/conn.h"

#define QUEUE_MAX	65536
#define QUEUE_MAX_BYTES (64u << 20)
#define BATCH_MAX	512
#define LIVE_EXTRA_MS	600000
#define IDLE_PING_MS	2000
#define QUIET_MS	200  /* a batch after this long without one checks its connection first */
#define RETRY_MS	3000 /* a failed batch is sent again for this long while Redis was up */

static _Atomic bool active; /* the driver runs: publishes go to the queue */
static struct {
	pthread_mutex_t q_lock;	     /* guards the queue fields and running/stop */
	pthread_cond_t q_cv;	     /* signalled when records arrive or on stop */
	struct bus_rec *head, *tail; /* the queue */
	size_t nrecs, bytes;	     /* its size */
	bool running, stop;	     /* thread started / asked to stop */
	bool overflow;		     /* records were dropped: resync every stream */
	long long dropped;	     /* records dropped since start */
	pthread_t thread;	     /* the publisher */
	struct redis_conn *pub_conn; /* the publisher's connection (its thread only) */
	bool subscribing;	     /* this node runs the subscriber thread */
	char channel[48];	     /* soma:bus:<db> */
	char cancel_channel[48];     /* soma:cancel:<db> (cancel.c) */
	char where[300];	     /* host:port, for messages */
	pthread_mutex_t state_lock;  /* guards the fields below */
	bool pub_ok;		     /* the last batch (or connect) succeeded */
	char pub_error[256];	     /* why not */
	long long published;	     /* records published through Redis */
	long long degraded;	     /* records delivered locally only */
} R = {.q_lock = PTHREAD_MUTEX_INITIALIZER, .q_cv = PTHREAD_COND_INITIALIZER, .state_lock = PTHREAD_MUTEX_INITIALIZER};

bool bus_redis_running(void)
{
	return atomic_load(&active);
}

static void rec_free(struct bus_rec *r)
{
	if (r)
		free(r->text);
	free(r);
}

bool bus_redis_enqueue(enum bus_rec_kind kind, const char *key, int64_t num, const char *text, size_t len)
{
	if (!atomic_load(&active))
		return false;
	struct bus_rec *r = malloc(sizeof(*r));
	if (!r || (text && !bus_rec_fill(r, kind, key, num, text, len))) {
		free(r);
		return false; /* out of memory: this node's streams at least get it */
	}
	if (!text)
		r->text = NULL, r->len = r->off = 0;
	r->kind = kind;
	r->tag[0] = (char)kind, r->tag[1] = '\0';
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->num = num;
	r->next = NULL;
	pthread_mutex_lock(&R.q_lock);
	if (!R.running || R.stop) {
		pthread_mutex_unlock(&R.q_lock);
		rec_free(r);
		return false;
	}
	if (R.nrecs >= QUEUE_MAX || R.bytes + r->len > QUEUE_MAX_BYTES) {
		bool first = !R.overflow;
		R.overflow = true;
		R.dropped++;
		pthread_mutex_unlock(&R.q_lock);
		rec_free(r);
		if (first)
			log_warn("bus",
				 "the redis publish queue is full (%d records): live events are dropped; "
				 "streams get a gap marker and resume from the store and Redis",
				 QUEUE_MAX);
		return true;
	}
	if (R.tail)
		R.tail->next = r;
	else
		R.head = r;
	R.tail = r;
	R.nrecs++;
	R.bytes += r->len;
	pthread_cond_signal(&R.q_cv);
	pthread_mutex_unlock(&R.q_lock);
	return true;
}

static void set_pub_state(bool ok, const char *why)
{
	pthread_mutex_lock(&R.state_lock);
	if (ok && !R.pub_ok)
		log_info("bus", "redis at %s reachable again: live events go to every node", R.where);
	else if (!ok && R.pub_ok)
		log_warn("bus",
			 "redis at %s unreachable (%s): live events reach this node's streams only; retrying by "
			 "itself (check redis.url)",
			 R.where, why);
	R.pub_ok = ok;
	snprintf(R.pub_error, sizeof(R.pub_error), "%.200s", ok ? "" : why);
	pthread_mutex_unlock(&R.state_lock);
}

/* ---- the publisher thread ----------------------------------------------------------------------- */

/* Sends a batch (redis_batch.c); true when Redis ran it, false to degrade the batch. While Redis
 * answered the last batch, a failed one is sent again (on a new connection) for up to RETRY_MS: a
 * dropped connection or a short Redis restart then loses nothing, also on a node that serves no
 * streams (where a degraded record reaches nobody); once Redis is known down, batches degrade at
 * their first failure, so this node's streams wait for nothing longer than that. */
static bool send_batch(struct bus_rec **recs, size_t n, bool resync_all, int64_t window_ms)
{
	char why[300];
	pthread_mutex_lock(&R.state_lock);
	int64_t until = R.pub_ok ? clock_wall_ms() + RETRY_MS : 0;
	pthread_mutex_unlock(&R.state_lock);
	if (!bus_redis_send(R.pub_conn, R.channel, recs, n, resync_all, window_ms, LIVE_EXTRA_MS, until, why,
			    sizeof(why))) {
		set_pub_state(false, why);
		return false;
	}
	set_pub_state(true, NULL);
	pthread_mutex_lock(&R.state_lock);
	R.published += (long long)n;
	pthread_mutex_unlock(&R.state_lock);
	return true;
}

/* Redis could not take the batch: this node's streams get it (redis_state.c). */
static void degrade(struct bus_rec **recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bus_redis_degrade(recs[i]->kind, recs[i]->key, recs[i]->num,
				  recs[i]->text ? recs[i]->text + recs[i]->off : NULL, recs[i]->len - recs[i]->off);
	pthread_mutex_lock(&R.state_lock);
	R.degraded += (long long)n;
	pthread_mutex_unlock(&R.state_lock);
}

/* Takes up to BATCH_MAX records off the queue into recs; false when stopping with nothing left.
 * Waits at most 500 ms for records (then returns with none, for the idle work). */
static bool take_batch(struct bus_rec **recs, size_t *n, bool *overflow)
{
	pthread_mutex_lock(&R.q_lock);
	if (!R.head && !R.stop) {
		struct timespec until = clock_deadline_in(CLOCK_REALTIME, 500);
		pthread_cond_timedwait(&R.q_cv, &R.q_lock, &until);
	}
	*n = 0;
	while (R.head && *n < BATCH_MAX) {
		struct bus_rec *r = R.head;
		R.head = r->next;
		R.nrecs--;
		R.bytes -= r->len;
		recs[(*n)++] = r;
	}
	if (!R.head)
		R.tail = NULL;
	*overflow = R.overflow;
	R.overflow = false;
	bool more = *n > 0 || !R.stop;
	pthread_mutex_unlock(&R.q_lock);
	return more;
}

/* Before a batch after a quiet spell: the connection may have died meanwhile (Redis's or a
 * proxy's idle timeout, CLIENT KILL). A PING finds out, and a dead connection is replaced at once
 * (the batch would be sent again anyway, but only after the backoff of the connection). */
static void fresh_connection(void)
{
	redisReply *r = redis_cmd(R.pub_conn, "PING");
	if (r)
		freeReplyObject(r);
	else if (redis_conn_reconnect(R.pub_conn) != SOMA_OK)
		log_debug("bus", "redis: the publisher's connection is down; the batch degrades");
}

/* Idle: a PING (or a reconnect), so that the publisher notices Redis going and coming back. */
static void idle_check(void)
{
	redisReply *r = redis_cmd(R.pub_conn, "PING");
	if (r)
		freeReplyObject(r);
	set_pub_state(r != NULL, redis_conn_error(R.pub_conn));
}

/* Sends the cancel notices among recs by themselves (cancel.c) and takes them out of recs. */
static void send_cancels(struct bus_rec **recs, size_t *n)
{
	size_t kept = 0;
	for (size_t i = 0; i < *n; i++) {
		if (recs[i]->kind != BUS_REC_CANCEL) {
			recs[kept++] = recs[i];
			continue;
		}
		bus_cancel_send(R.pub_conn, R.cancel_channel, recs[i]->text, recs[i]->len);
		rec_free(recs[i]);
	}
	*n = kept;
}

static void *publisher_main(void *arg)
{
	(void)arg;
	struct bus_rec *recs[BATCH_MAX];
	size_t n;
	bool overflow;
	int64_t window = bus_local_window_ms(), next_sweep = 0, next_ping = 0, last_sent = 0;
	while (take_batch(recs, &n, &overflow)) {
		send_cancels(recs, &n);
		bool owe = overflow || bus_floor_lost_count() > 0;
		bus_redis_account(recs, n); /* (generations counted whatever becomes of the batch) */
		if (n > 0 || (owe && redis_conn_ensure(R.pub_conn) == SOMA_OK)) {
			if (clock_wall_ms() - last_sent > QUIET_MS)
				fresh_connection();
			last_sent = clock_wall_ms();
			if (!send_batch(recs, n, overflow, window)) {
				degrade(recs, n);
				if (overflow) {
					pthread_mutex_lock(&R.q_lock);
					R.overflow = true; /* owed until Redis takes it */
					pthread_mutex_unlock(&R.q_lock);
				}
			}
		} else if (clock_wall_ms() >= next_ping) { /* idle: health follows Redis all the same */
			idle_check();
			next_ping = clock_wall_ms() + IDLE_PING_MS;
		}
		for (size_t i = 0; i < n; i++)
			rec_free(recs[i]);
		int64_t now = clock_wall_ms();
		if (now >= next_sweep) {
			bus_floor_sweep(now - window - 60000);
			next_sweep = now + 5000;
		}
	}
	return NULL;
}

/* ---- lifecycle, health ------------------------------------------------------------------------- */

enum soma_err bus_redis_start(const char *url, bool subscribe, char *why, size_t cap)
{
	struct redis_url u;
	char perr[128];
	if (!redis_url_parse(url, &u, perr, sizeof(perr))) {
		snprintf(why, cap, "bus.driver = redis needs a valid redis.url: %s", perr);
		return SOMA_ERR_CONFIG;
	}
	snprintf(R.where, sizeof(R.where), "%s:%d", u.host, u.port);
	snprintf(R.channel, sizeof(R.channel), "soma:bus:%d", u.db);
	snprintf(R.cancel_channel, sizeof(R.cancel_channel), "%s%d", BUS_CANCEL_PREFIX, u.db);
	enum soma_err err = redis_conn_open(url, 2000, true, &R.pub_conn, why, cap);
	if (err == SOMA_OK)
		err = bus_snap_open(url, why, cap);
	if (err != SOMA_OK)
		goto fail;
	R.pub_ok = redis_conn_ok(R.pub_conn);
	snprintf(R.pub_error, sizeof(R.pub_error), "%s", R.pub_ok ? "" : redis_conn_error(R.pub_conn));
	R.stop = false;
	R.running = true;
	if (pthread_create(&R.thread, NULL, publisher_main, NULL) != 0) {
		R.running = false;
		snprintf(why, cap, "cannot start the bus publisher thread");
		err = SOMA_ERR_NOMEM;
		goto fail;
	}
	bool cancels = bus_cancel_listening(); /* this node runs workers: it follows cancel notices */
	R.subscribing = subscribe || cancels;
	if (R.subscribing && (err = bus_sub_start(url, subscribe ? R.channel : "", cancels ? R.cancel_channel : "",
						  2000, why, cap)) != SOMA_OK) {
		R.subscribing = false;
		bus_redis_stop();
		return err;
	}
	atomic_store(&active, true);
	if (R.pub_ok)
		log_info("bus", "redis driver on %s, channel %s%s%s%s", R.where, R.channel,
			 subscribe ? "" : " (publishing only: this node serves no streams)",
			 cancels ? "; cancel notices on " : "", cancels ? R.cancel_channel : "");
	else
		log_warn("bus",
			 "redis at %s unreachable (%s): live events reach this node's streams only until it "
			 "answers; check redis.url",
			 R.where, R.pub_error);
	return SOMA_OK;
fail:
	redis_conn_close(R.pub_conn);
	R.pub_conn = NULL;
	bus_snap_close();
	return err;
}

void bus_redis_stop(void)
{
	pthread_mutex_lock(&R.q_lock);
	bool was = R.running;
	R.stop = true;
	pthread_cond_broadcast(&R.q_cv);
	pthread_mutex_unlock(&R.q_lock);
	if (R.subscribing)
		bus_sub_stop();
	R.subscribing = false;
	if (was)
		pthread_join(R.thread, NULL); /* it drains the queue first: to Redis, or locally */
	atomic_store(&active, false);
	pthread_mutex_lock(&R.q_lock);
	R.running = false;
	for (struct bus_rec *r = R.head, *next; r; r = next) { /* (published after the drain: none normally) */
		next = r->next;
		rec_free(r);
	}
	R.head = R.tail = NULL;
	R.nrecs = R.bytes = 0;
	pthread_mutex_unlock(&R.q_lock);
	bus_floor_clear();
	redis_conn_close(R.pub_conn);
	R.pub_conn = NULL;
	bus_snap_close();
}

bool bus_redis_status(char *detail, size_t cap)
{
	char sub_why[256] = "";
	long long received = 0;
	bool sub_ok = !R.subscribing || bus_sub_state(sub_why, sizeof(sub_why), &received);
	pthread_mutex_lock(&R.q_lock);
	long long dropped = R.dropped;
	pthread_mutex_unlock(&R.q_lock);
	pthread_mutex_lock(&R.state_lock);
	bool ok = R.pub_ok && sub_ok;
	if (ok)
		snprintf(detail, cap,
			 "redis at %s; %ld live subscriber(s) here; %lld published, %lld received, %lld dropped",
			 R.where, bus_subscribers(), R.published, received, dropped);
	else
		snprintf(detail, cap,
			 "redis at %s unreachable (%s): live events reach this node's streams only; reconnecting by "
			 "itself (check redis.url)",
			 R.where, !R.pub_ok ? R.pub_error : sub_why);
	pthread_mutex_unlock(&R.state_lock);
	return ok;
}

bool bus_redis_down(void)
{
	pthread_mutex_lock(&R.state_lock);
	bool down = !R.pub_ok;
	pthread_mutex_unlock(&R.state_lock);
	if (down && R.subscribing) { /* an idle publisher learns late that Redis is back (its next
				      * PING); the subscriber, which sends the gap marker streams
				      * fill by a snapshot, knows at once */
		char why[8];
		long long received;
		down = !bus_sub_state(why, sizeof(why), &received);
	}
	return down;
}
