/*
 * redis_sub.c - the subscriber thread of the redis bus driver: receives every node's batches on
 * the node-wide channel and hands each record to the local fan-out (bus_local_deliver); on a
 * node that runs workers also the cancel notices of the other nodes (cancel.c), on their own
 * channel (a node may follow either channel or both, with one SUBSCRIBE).
 *
 * DESIGN: one thread with one blocking hiredis connection in subscribe mode, read through
 * poll() (a wake pipe stops it at once; a read timeout would break a hiredis context). The io
 * threads never touch Redis: the record goes to bus.c, which posts it once per io thread with
 * subscribers of the session, as the local driver does. Every 3 s of silence it sends a PING; 10
 * s without a byte means the connection is dead (a Redis that froze without closing it). After
 * a connection was lost (or never made) and is made again, every stream on this node gets the
 * gap marker: what was published meanwhile did not reach it, so it fills that from the store and
 * the Redis log and carries on (src/gateway/stream_replay.c). Order: Redis delivers a channel's messages in publish
 * order on one connection, and records are dispatched in that order, one at a time.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus_int.h"
#include "core/clock.h"
#include "core/log.h"
#include "redis/conn.h"

#define PING_AFTER_MS 3000
#define DEAD_AFTER_MS 10000

static struct {
	pthread_t thread;	 /* the subscriber */
	bool started;		 /* thread running */
	int wake[2];		 /* stop pipe */
	struct redis_conn *conn; /* its connection (its thread only) */
	char channel[48];	 /* the bus channel it follows ("" for none) */
	char cancel[48];	 /* the cancel channel it follows ("" for none) */
	char shown[100];	 /* both, for messages */
	pthread_mutex_t lock;	 /* guards the fields below */
	pthread_cond_t cv;	 /* signalled on the first attempt's outcome */
	bool ok;		 /* subscribed right now */
	bool attempted;		 /* the first attempt is over */
	char error[256];	 /* why not subscribed */
	long long received;	 /* messages (batches) taken */
} S = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .wake = {-1, -1}};

static int64_t mono_ms(void)
{
	return (int64_t)(clock_mono_ns() / 1000000);
}

static void set_state(bool ok, const char *why)
{
	pthread_mutex_lock(&S.lock);
	if (S.attempted && ok && !S.ok)
		log_info("bus", "subscribed to %s again: this node follows every node", S.shown);
	else if (S.attempted && !ok && S.ok)
		log_warn("bus",
			 "lost the subscription to %s (%s): streams on this node follow its own events only, and "
			 "its workers miss other nodes' cancels",
			 S.shown, why);
	S.ok = ok;
	S.attempted = true;
	snprintf(S.error, sizeof(S.error), "%s", ok ? "" : why);
	pthread_cond_broadcast(&S.cv);
	pthread_mutex_unlock(&S.lock);
}

/* Waits ms or until stopped; true when stopped. */
static bool wait_or_stop(int ms)
{
	struct pollfd p = {S.wake[0], POLLIN, 0};
	return poll(&p, 1, ms) > 0;
}

static bool subscribe_now(void)
{
	/* one command: its first reply is the first channel's confirmation, and the second's comes
	 * in the stream (messages of the first may come before it: on_reply skips it) */
	redisReply *r = S.channel[0] && S.cancel[0]
				? redis_cmd(S.conn, "SUBSCRIBE %s %s", S.channel, S.cancel)
				: redis_cmd(S.conn, "SUBSCRIBE %s", S.channel[0] ? S.channel : S.cancel);
	bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3;
	if (r && !ok)
		redis_conn_broken(S.conn, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply to SUBSCRIBE");
	if (r)
		freeReplyObject(r);
	return ok;
}

/* One reply in subscribe mode: ["message", channel, payload] or ["pong", ""]. */
static void on_reply(redisReply *r)
{
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(r->element[0]->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
		pthread_mutex_lock(&S.lock);
		S.received++;
		pthread_mutex_unlock(&S.lock);
		if (S.cancel[0] && r->element[1]->type == REDIS_REPLY_STRING &&
		    strcmp(r->element[1]->str, S.cancel) == 0)
			bus_cancel_dispatch(r->element[2]->str, r->element[2]->len);
		else if (!bus_redis_dispatch(r->element[2]->str, r->element[2]->len))
			log_warn("bus", "malformed message on %s (%zu bytes) ignored after its valid part", S.channel,
				 r->element[2]->len);
	}
	freeReplyObject(r);
}

/* Reads what arrived; false when the connection broke. */
static bool read_available(redisContext *ctx)
{
	if (redisBufferRead(ctx) != REDIS_OK)
		return false;
	for (;;) {
		void *reply = NULL;
		if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
			return false;
		if (!reply)
			return true;
		on_reply(reply);
	}
}

static bool send_ping(redisContext *ctx)
{
	if (redisAppendCommand(ctx, "PING") != REDIS_OK)
		return false;
	int done = 0;
	while (!done) {
		if (redisBufferWrite(ctx, &done) != REDIS_OK)
			return false;
	}
	return true;
}

static void *subscriber_main(void *arg)
{
	(void)arg;
	bool lost = false, pinged = false;
	int64_t last_rx = 0;
	for (;;) {
		redisContext *ctx = redis_conn_ctx(S.conn);
		if (!ctx || !S.ok) {
			if (!subscribe_now()) {
				set_state(false, redis_conn_error(S.conn));
				lost = true;
				if (wait_or_stop(200))
					break;
				continue;
			}
			set_state(true, NULL);
			if (lost)
				bus_local_gap(NULL); /* what was published meanwhile never came: resume by cursor */
			lost = pinged = false;
			last_rx = mono_ms();
			continue;
		}
		struct pollfd p[2] = {{ctx->fd, POLLIN, 0}, {S.wake[0], POLLIN, 0}};
		int rc = poll(p, 2, 1000);
		if (rc < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		const char *why = NULL;
		if (p[0].revents) {
			if (read_available(ctx))
				last_rx = mono_ms(), pinged = false;
			else
				why = ctx->errstr[0] ? ctx->errstr : "connection closed";
		} else if (mono_ms() - last_rx > DEAD_AFTER_MS) {
			why = "no answer to PING for 10 s";
		} else if (!pinged && mono_ms() - last_rx > PING_AFTER_MS) {
			pinged = send_ping(ctx);
			if (!pinged)
				why = "cannot send PING";
		}
		if (why) {
			char copy[256];
			snprintf(copy, sizeof(copy), "%s", why); /* (why may live in the context freed next) */
			redis_conn_broken(S.conn, copy);
			set_state(false, copy);
			lost = true;
		}
	}
	return NULL;
}

enum soma_err bus_sub_start(const char *url, const char *channel, const char *cancel_channel, int wait_ms, char *why,
			    size_t cap)
{
	snprintf(S.channel, sizeof(S.channel), "%s", channel);
	snprintf(S.cancel, sizeof(S.cancel), "%s", cancel_channel);
	snprintf(S.shown, sizeof(S.shown), "%s%s%s", channel, channel[0] && cancel_channel[0] ? " and " : "",
		 cancel_channel);
	S.ok = S.attempted = false;
	S.received = 0;
	enum soma_err err = redis_conn_open(url, 2000, true, &S.conn, why, cap);
	if (err != SOMA_OK)
		return err;
	if (pipe(S.wake) != 0 || pthread_create(&S.thread, NULL, subscriber_main, NULL) != 0) {
		snprintf(why, cap, "cannot start the bus subscriber thread");
		bus_sub_stop();
		return SOMA_ERR_NOMEM;
	}
	S.started = true;
	struct timespec until = clock_deadline_in(CLOCK_REALTIME, wait_ms);
	pthread_mutex_lock(&S.lock);
	while (!S.attempted && pthread_cond_timedwait(&S.cv, &S.lock, &until) == 0)
		;
	pthread_mutex_unlock(&S.lock);
	return SOMA_OK;
}

void bus_sub_stop(void)
{
	if (S.started) {
		ssize_t w = write(S.wake[1], "x", 1);
		(void)w;
		pthread_join(S.thread, NULL);
		S.started = false;
	}
	for (int i = 0; i < 2; i++) {
		if (S.wake[i] >= 0)
			close(S.wake[i]);
		S.wake[i] = -1;
	}
	redis_conn_close(S.conn);
	S.conn = NULL;
	pthread_mutex_lock(&S.lock);
	S.ok = false;
	pthread_mutex_unlock(&S.lock);
}

bool bus_sub_state(char *why, size_t cap, long long *received)
{
	pthread_mutex_lock(&S.lock);
	bool ok = S.ok;
	snprintf(why, cap, "%s", S.error);
	*received = S.received;
	pthread_mutex_unlock(&S.lock);
	return ok;
}

/* ---- the framing of a batch: "<kind> <keylen> <textlen> <seq> <minor>\n<key><text>"... ---- */

/* Parses a record's header at p (up to end); false when malformed. */
static bool parse_header(const char *p, const char *end, char *kind, long long v[4], const char **body)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	char head[128];
	if (!nl || nl - p < 2 || (size_t)(nl - p) >= sizeof(head) || p[1] != ' ')
		return false;
	memcpy(head, p, (size_t)(nl - p));
	head[nl - p] = '\0';
	*kind = head[0];
	char *at = head + 1;
	for (int i = 0; i < 4; i++) {
		char *next;
		v[i] = strtoll(at, &next, 10);
		if (next == at || (*next != ' ' && *next != '\0'))
			return false;
		at = next;
	}
	*body = nl + 1;
	return *at == '\0' && v[0] >= 0 && v[0] < BUS_KEY_MAX && v[1] >= 0 && v[0] + v[1] <= end - *body;
}

bool bus_redis_dispatch(const char *payload, size_t len)
{
	const char *p = payload, *end = payload + len;
	while (p < end) {
		char kind, key[BUS_KEY_MAX];
		long long v[4];
		const char *body;
		if (!parse_header(p, end, &kind, v, &body))
			return false;
		memcpy(key, body, (size_t)v[0]);
		key[v[0]] = '\0';
		const char *text = body + v[0];
		struct bus_cursor c = {v[2], v[3]};
		if ((kind == BUS_REC_COMMITTED || kind == BUS_REC_EPHEMERAL) && c.seq >= 0)
			bus_local_deliver(key, c, text, (size_t)v[1]);
		else if (kind == BUS_REC_FORGET && (v[2] == 1 || v[2] == 2)) /* deleted: its streams end; reset */
			bus_local_forget(key), bus_local_end(key, v[2] == 2);
		else if (kind == BUS_REC_FORGET)
			bus_local_forget(key);
		else if (kind == BUS_REC_RESYNC)
			bus_local_gap(key[0] ? key : NULL);
		p = text + v[1];
	}
	return true;
}
