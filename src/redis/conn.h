/*
 * conn.h - one blocking connection to Redis (hiredis), used by one thread at a time.
 *
 * DESIGN: every Redis user (the Celery queue, the bus, the pidbox, beat) holds its own
 * connections; a connection belongs to the thread that opened it. A command that fails on the
 * wire returns NULL and marks the connection broken; the next command reconnects, no more often
 * than every `backoff` (100 ms doubling to 5 s), so a Redis restart costs callers a few failed
 * calls and never a busy loop. Whether to retry the failed command is the caller's decision
 * (only the caller knows whether it is idempotent). Error replies (REDIS_REPLY_ERROR) are
 * returned like any other reply.
 *
 * URLs: redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default).
 */
#ifndef SOMA_REDIS_CONN_H
#define SOMA_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct redis_url {
	char host[256];
	int port;
	int db;
	char user[128];
	char password[256];
};

struct redis_conn;

/* Parses url into *out. False, with a sentence in why, when it is not a redis:// URL. */
bool redis_url_parse(const char *url, struct redis_url *out, char *why, size_t why_cap);

/* Connects to url (AUTH and SELECT included) with timeout_ms for connecting and for each reply
 * (0: no reply timeout, for blocking commands). The caller owns *out, freed with
 * redis_conn_close(). Fails with a sentence in why when the URL is bad or Redis does not answer;
 * with `lazy` a Redis that does not answer is not an error (the first command connects). */
enum soma_err redis_conn_open(const char *url, int timeout_ms, bool lazy, struct redis_conn **out, char *why,
			      size_t why_cap) SOMA_MUST_CHECK;
void redis_conn_close(struct redis_conn *c);

/* Runs one command (printf-like hiredis format). The caller owns the reply (freeReplyObject).
 * NULL when not connected or on a wire error: redis_conn_error() says why. */
redisReply *redis_cmd(struct redis_conn *c, const char *fmt, ...);
redisReply *redis_cmd_argv(struct redis_conn *c, int argc, const char **argv, const size_t *lens);

/* Pipelining: queue commands, then read their replies in order with redis_get_reply(). A wire
 * error in the middle marks the connection broken; later replies are then NULL.
 * An append never reconnects (SOMA_ERR_UNAVAILABLE while broken): call redis_conn_ensure() before
 * the first command of a pipeline. So a pipeline is in one connection or not sent at all - never
 * its tail in a new connection after its head was lost with the old one (a result lost while its
 * ack goes through, or replies read against the wrong commands). */
enum soma_err redis_append_argv(struct redis_conn *c, int argc, const char **argv, const size_t *lens) SOMA_MUST_CHECK;
redisReply *redis_get_reply(struct redis_conn *c);

/* Sets the reply timeout (0: none) of this connection. */
void redis_conn_set_timeout(struct redis_conn *c, int timeout_ms);
/* True when connected (after a successful connect and no wire error since). */
bool redis_conn_ok(const struct redis_conn *c);
/* Connects now if broken (respecting the backoff). SOMA_ERR_UNAVAILABLE while Redis is down. */
enum soma_err redis_conn_ensure(struct redis_conn *c) SOMA_MUST_CHECK;
/* Connects now if broken, without waiting out the backoff: for a connection that was up and was
 * found dead by its first round trip after an idle spell (Redis restarted meanwhile), where one
 * immediate attempt is right. SOMA_ERR_UNAVAILABLE when Redis does not answer. */
enum soma_err redis_conn_reconnect(struct redis_conn *c) SOMA_MUST_CHECK;
/* The last error, for logs. Never NULL. */
const char *redis_conn_error(const struct redis_conn *c);
/* The database number of the URL (Celery's fanout channels are prefixed "/<db>."). */
int redis_conn_db(const struct redis_conn *c);
/* The hiredis context, for subscriptions; NULL while broken. Borrowed. */
redisContext *redis_conn_ctx(struct redis_conn *c);
/* Marks the connection broken (after a wire error seen through redis_conn_ctx()). */
void redis_conn_broken(struct redis_conn *c, const char *why);

#endif
