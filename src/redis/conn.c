/*
 * conn.c - a blocking Redis connection with URL parsing, AUTH/SELECT and reconnect with
 * backoff (see conn.h).
 */
#include "redis/conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct redis_conn {
	struct redis_url url; /* where to connect */
	int timeout_ms;	      /* connect and reply timeout (0: no reply timeout) */
	redisContext *ctx;    /* NULL while broken */
	int64_t retry_at_ms;  /* earliest next connect attempt */
	int backoff_ms;	      /* current backoff */
	char error[512];      /* last error */
};

static int64_t mono_ms(void)
{
	return (int64_t)(clock_mono_ns() / 1000000);
}

static int parse_port(const char *s, size_t n)
{
	int v = 0;
	if (n == 0 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v >= 1 && v <= 65535 ? v : -1;
}

bool redis_url_parse(const char *url, struct redis_url *out, char *why, size_t why_cap)
{
	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (!url || strncmp(url, "redis://", 8) != 0) {
		snprintf(why, why_cap, "expected redis://[:password@]host[:port][/db]");
		return false;
	}
	const char *p = url + 8, *at = strrchr(p, '@'), *slash;
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		size_t ulen = colon ? (size_t)(colon - p) : 0;
		const char *pw = colon ? colon + 1 : p;
		size_t plen = (size_t)(at - pw);
		if (ulen >= sizeof(out->user) || plen >= sizeof(out->password)) {
			snprintf(why, why_cap, "user or password too long");
			return false;
		}
		memcpy(out->user, p, ulen);
		memcpy(out->password, pw, plen);
		p = at + 1;
	}
	slash = strchr(p, '/');
	size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
	const char *colon = memchr(p, ':', hostport);
	size_t hlen = colon ? (size_t)(colon - p) : hostport;
	if (hlen == 0 || hlen >= sizeof(out->host)) {
		snprintf(why, why_cap, "missing or too long host");
		return false;
	}
	memcpy(out->host, p, hlen);
	if (colon && (out->port = parse_port(colon + 1, hostport - hlen - 1)) < 0) {
		snprintf(why, why_cap, "port must be 1-65535");
		return false;
	}
	if (slash && slash[1]) {
		char *end;
		long db = strtol(slash + 1, &end, 10);
		if (*end || db < 0 || db > 65535) {
			snprintf(why, why_cap, "database must be a number after the /");
			return false;
		}
		out->db = (int)db;
	}
	return true;
}

static struct timeval tv_ms(int ms)
{
	return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

void redis_conn_broken(struct redis_conn *c, const char *why)
{
	if (why && why != c->error)
		snprintf(c->error, sizeof(c->error), "%s", why);
	if (c->ctx)
		redisFree(c->ctx);
	c->ctx = NULL;
	c->retry_at_ms = mono_ms() + c->backoff_ms;
	c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Runs AUTH or SELECT at connect time; false (connection broken) on failure. */
static bool setup_cmd(struct redis_conn *c, redisReply *r, const char *what)
{
	bool ok = r && r->type != REDIS_REPLY_ERROR;
	if (!ok) {
		char why[256];
		snprintf(why, sizeof(why), "%s failed: %.200s", what, r ? r->str : c->ctx->errstr);
		redis_conn_broken(c, why);
	}
	if (r)
		freeReplyObject(r);
	return ok;
}

static enum soma_err connect_now(struct redis_conn *c)
{
	struct timeval tv = tv_ms(c->timeout_ms > 0 ? c->timeout_ms : 5000);
	c->ctx = redisConnectWithTimeout(c->url.host, c->url.port, tv);
	if (!c->ctx || c->ctx->err) {
		char why[256];
		snprintf(why, sizeof(why), "cannot connect to redis at %.64s:%d: %.120s", c->url.host, c->url.port,
			 c->ctx ? c->ctx->errstr : "out of memory");
		redis_conn_broken(c, why);
		return SOMA_ERR_UNAVAILABLE;
	}
	struct timeval rt = tv_ms(c->timeout_ms);
	if (c->timeout_ms > 0 && redisSetTimeout(c->ctx, rt) != REDIS_OK) {
		redis_conn_broken(c, "cannot set the redis reply timeout");
		return SOMA_ERR_UNAVAILABLE;
	}
	if (c->url.password[0]) {
		redisReply *r = c->url.user[0] ? redisCommand(c->ctx, "AUTH %s %s", c->url.user, c->url.password)
					       : redisCommand(c->ctx, "AUTH %s", c->url.password);
		if (!setup_cmd(c, r, "redis AUTH"))
			return SOMA_ERR_UNAVAILABLE;
	}
	if (c->url.db && !setup_cmd(c, redisCommand(c->ctx, "SELECT %d", c->url.db), "redis SELECT"))
		return SOMA_ERR_UNAVAILABLE;
	c->backoff_ms = BACKOFF_MIN_MS;
	c->error[0] = '\0';
	return SOMA_OK;
}

enum soma_err redis_conn_open(const char *url, int timeout_ms, bool lazy, struct redis_conn **out, char *why,
			      size_t why_cap)
{
	*out = NULL;
	struct redis_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, why_cap, "out of memory");
		return SOMA_ERR_NOMEM;
	}
	char perr[128];
	if (!redis_url_parse(url, &c->url, perr, sizeof(perr))) {
		snprintf(why, why_cap, "bad redis URL: %s", perr);
		free(c);
		return SOMA_ERR_INVALID;
	}
	c->timeout_ms = timeout_ms;
	c->backoff_ms = BACKOFF_MIN_MS;
	if (connect_now(c) != SOMA_OK && !lazy) {
		snprintf(why, why_cap, "%s", c->error);
		redis_conn_close(c);
		return SOMA_ERR_UNAVAILABLE;
	}
	*out = c;
	return SOMA_OK;
}

void redis_conn_close(struct redis_conn *c)
{
	if (!c)
		return;
	if (c->ctx)
		redisFree(c->ctx);
	free(c);
}

enum soma_err redis_conn_ensure(struct redis_conn *c)
{
	if (c->ctx)
		return SOMA_OK;
	if (mono_ms() < c->retry_at_ms)
		return SOMA_ERR_UNAVAILABLE;
	return connect_now(c);
}

enum soma_err redis_conn_reconnect(struct redis_conn *c)
{
	return c->ctx ? SOMA_OK : connect_now(c);
}

/* A NULL reply from hiredis means the connection is unusable. */
static redisReply *checked(struct redis_conn *c, void *reply)
{
	if (!reply)
		redis_conn_broken(c, c->ctx && c->ctx->errstr[0] ? c->ctx->errstr : "redis connection lost");
	return reply;
}

redisReply *redis_cmd(struct redis_conn *c, const char *fmt, ...)
{
	if (redis_conn_ensure(c) != SOMA_OK)
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	void *r = redisvCommand(c->ctx, fmt, ap);
	va_end(ap);
	return checked(c, r);
}

redisReply *redis_cmd_argv(struct redis_conn *c, int argc, const char **argv, const size_t *lens)
{
	if (redis_conn_ensure(c) != SOMA_OK)
		return NULL;
	return checked(c, redisCommandArgv(c->ctx, argc, argv, lens));
}

enum soma_err redis_append_argv(struct redis_conn *c, int argc, const char **argv, const size_t *lens)
{
	if (!c->ctx) /* never reconnects: see conn.h */
		return SOMA_ERR_UNAVAILABLE;
	return redisAppendCommandArgv(c->ctx, argc, argv, lens) == REDIS_OK ? SOMA_OK : SOMA_ERR_NOMEM;
}

redisReply *redis_get_reply(struct redis_conn *c)
{
	if (!c->ctx)
		return NULL;
	void *r = NULL;
	if (redisGetReply(c->ctx, &r) != REDIS_OK)
		return checked(c, NULL);
	return r;
}

void redis_conn_set_timeout(struct redis_conn *c, int timeout_ms)
{
	c->timeout_ms = timeout_ms;
	if (c->ctx)
		redisSetTimeout(c->ctx, tv_ms(timeout_ms));
}

bool redis_conn_ok(const struct redis_conn *c)
{
	return c->ctx != NULL;
}

const char *redis_conn_error(const struct redis_conn *c)
{
	return c->error[0] ? c->error : "no error";
}

int redis_conn_db(const struct redis_conn *c)
{
	return c->url.db;
}

redisContext *redis_conn_ctx(struct redis_conn *c)
{
	return c->ctx;
}
