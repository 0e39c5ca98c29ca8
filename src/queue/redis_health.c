/*
 * redis_health.c - whether the redis driver's broker answers, for the `queue` service of
 * /v1/health (queue_broker_status).
 *
 * DESIGN: one connection of its own, opened lazily on the first health poll and used only by
 * the thread that polls health (the orchestrator's main loop); each poll is one PING with a
 * short reply timeout. While Redis is down the connection's own backoff (conn.h) spaces the
 * reconnect attempts, so a poll then fails at once instead of waiting on a dead host each time.
 * The relay and the workers keep their own connections: their state is not read here.
 */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "queue/queue.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

#define PING_TIMEOUT_MS 1000

static struct redis_conn *conn; /* the health poller's; closed by queue_broker_close */
static _Atomic int no_aof = -1; /* Redis keeps no append-only file: 1, 0, -1 not asked yet; read by
				 * any thread (queue_broker_aof) */

/* Whether Redis writes an append-only file (INFO persistence), asked once per process: without
 * one, a Redis restart loses every task it holds - published, so no longer in the store's outbox
 * - though each was acknowledged. Said once in the log and then in the detail. */
static void check_persistence(const struct redis_url *u)
{
	redisReply *r = redis_cmd(conn, "INFO persistence");
	if (r && r->type == REDIS_REPLY_STRING && r->str) {
		no_aof = strstr(r->str, "aof_enabled:0") != NULL;
		if (no_aof)
			log_warn("queue",
				 "redis at %s:%d keeps no append-only file: the tasks it holds (acknowledged, and no "
				 "longer in the store) are lost if it restarts; run it with appendonly yes",
				 u->host, u->port);
	}
	if (r)
		freeReplyObject(r);
}

bool queue_broker_status(char *detail, size_t cap)
{
	struct redis_url u;
	char why[256] = "";
	if (!redis_url_parse(cfg_str(CFG_REDIS_URL), &u, why, sizeof(why))) {
		snprintf(detail, cap, "redis.url is not usable (%s); check redis.url", why);
		return false;
	}
	if (!conn)
		conn = redis_queue_connect(PING_TIMEOUT_MS);
	redisReply *r = conn ? redis_cmd(conn, "PING") : NULL;
	bool ok = r && r->type != REDIS_REPLY_ERROR;
	if (ok && no_aof < 0)
		check_persistence(&u);
	if (ok)
		snprintf(detail, cap, "redis at %s:%d; %lld task(s) published by this node%s", u.host, u.port,
			 queue_relay_published(),
			 no_aof == 1 ? "; no append-only file: a Redis restart loses its tasks (appendonly yes)" : "");
	else
		snprintf(detail, cap,
			 "redis at %s:%d unreachable (%s): tasks are accepted but wait in the store's outbox and none "
			 "runs until it is back; check redis.url",
			 u.host, u.port,
			 r	? r->str
			 : conn ? redis_conn_error(conn)
				: "cannot connect");
	if (r)
		freeReplyObject(r);
	return ok;
}

int queue_broker_aof(void)
{
	int n = no_aof;
	return n < 0 ? -1 : !n;
}

void queue_broker_close(void)
{
	redis_conn_close(conn);
	conn = NULL;
}
