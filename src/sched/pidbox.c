/*
 * pidbox.c - Celery's remote control as a worker answers it (interop.md section 1.10): the
 * listener on `/<db>.celery.pidbox` and the methods `celery inspect` / `celery control` and
 * Flower use (see sched.h).
 *
 * DESIGN: the listener thread owns a connection in subscribed mode. It polls the socket with a
 * short timeout so that it notices a stop, decodes each broadcast, keeps those addressed to this
 * node (destination, or pattern + matcher, as kombu 5.2 decides), runs the method and hands the reply to the
 * publisher (control.c), which pushes it to the client's reply queue only when the client's
 * binding exists. On a broken connection it reconnects (with conn.c's backoff) and subscribes
 * again, declaring the node's binding `_kombu.binding.celery.pidbox` first. The connection has
 * a reply timeout (a Redis that hangs cannot hold the thread, or a shutdown, for long); messages
 * are only read after poll() said the socket is readable, so the timeout never cuts a wait.
 */
#include <fnmatch.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "queue/celery_wire.h"
#include "sched/sched_int.h"

#define POLL_MS 200

static struct {
	pthread_t tid;	       /* the listener */
	atomic_bool stop;      /* asked to stop */
	bool running;	       /* started */
	struct redis_conn *rc; /* subscribed connection */
	char channel[64];      /* /<db>.celery.pidbox */
} P;

/* The envelope's body as JSON: base64 (kombu's default on Redis) or raw text. Only the body
 * decoding is needed here; celery_wire.c decodes task messages, not control messages. */
static json_t *envelope_body(json_t *env)
{
	const char *body = json_string_value(json_object_get(env, "body"));
	const char *enc = json_string_value(json_object_get(json_object_get(env, "properties"), "body_encoding"));
	if (!body)
		return NULL;
	size_t len = strlen(body);
	if (!enc || strcmp(enc, "base64") != 0)
		return json_loadb(body, len, 0, NULL);
	if (len % 4 || len > (1u << 24))
		return NULL;
	unsigned char *raw = malloc(len / 4 * 3 + 1);
	int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)body, (int)len) : -1;
	for (size_t i = len; n > 0 && i > 0 && body[i - 1] == '='; i--)
		n--;
	json_t *v = n >= 0 ? json_loadb((const char *)raw, (size_t)n, 0, NULL) : NULL;
	free(raw);
	return v;
}

/* Python's truth value of a JSON value (kombu tests `if destination:`). */
static bool truthy(const json_t *v)
{
	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_ARRAY:
		return json_array_size(v) > 0;
	case JSON_OBJECT:
		return json_object_size(v) > 0;
	case JSON_STRING:
		return json_string_length(v) > 0;
	case JSON_INTEGER:
		return json_integer_value(v) != 0;
	case JSON_REAL:
		return json_real_value(v) != 0;
	case JSON_TRUE:
		return true;
	default:
		return false;
	}
}

/* Python's `me in dest`: list membership, substring of a string, key of a dict. */
static bool named_in(const char *me, json_t *dest)
{
	size_t i;
	json_t *d;
	if (json_is_string(dest))
		return strstr(json_string_value(dest), me) != NULL;
	if (json_is_object(dest))
		return json_object_get(dest, me) != NULL;
	json_array_foreach(dest, i, d)
	{
		if (json_is_string(d) && strcmp(json_string_value(d), me) == 0)
			return true;
	}
	return false;
}

/* kombu 5.2's Node.handle_message: a non-empty destination names the nodes; else a pattern with a
 * matcher selects them (glob: fnmatch; pcre: Python's re.match, anchored at the start only; any
 * other matcher raises there, so nobody answers); else (no pattern, or no matcher) every node. */
static bool for_me(json_t *req)
{
	const char *me = sched_nodename();
	json_t *dest = json_object_get(req, "destination");
	if (truthy(dest))
		return named_in(me, dest);
	json_t *pv = json_object_get(req, "pattern"), *mv = json_object_get(req, "matcher");
	if (!truthy(pv) || !truthy(mv))
		return true;
	const char *pattern = json_string_value(pv), *matcher = json_string_value(mv);
	if (!pattern || !matcher)
		return false;
	if (strcmp(matcher, "glob") == 0)
		return fnmatch(pattern, me, FNM_NOESCAPE) == 0;
	if (strcmp(matcher, "pcre") != 0)
		return false;
	regex_t re;
	if (regcomp(&re, pattern, REG_EXTENDED) != 0)
		return false;
	regmatch_t m;
	/* the leftmost match starts at 0 exactly when a match at the start exists */
	bool hit = regexec(&re, me, 1, &m, 0) == 0 && m.rm_so == 0;
	regfree(&re);
	return hit;
}

static void on_message(const char *data, size_t len)
{
	json_t *env = json_loadb(data, len, 0, NULL);
	json_t *req = json_is_object(env) ? envelope_body(env) : NULL;
	json_t *clock = json_object_get(json_object_get(env, "headers"), "clock");
	if (json_is_integer(clock))
		ctl_clock_seen((uint64_t)json_integer_value(clock));
	const char *method = json_string_value(json_object_get(req, "method"));
	if (!method || !for_me(req))
		goto out;
	json_t *args = json_object_get(req, "arguments");
	json_t *reply = pidbox_handle(method, json_is_object(args) ? args : NULL);
	json_t *reply_to = json_object_get(req, "reply_to");
	if (json_is_string(json_object_get(reply, "error")))
		log_info("celery", "pidbox: %s", json_string_value(json_object_get(reply, "error")));
	if (!reply) {
		log_info("celery", "pidbox: ignoring unknown method %.64s", method);
	} else if (json_is_object(reply_to)) {
		json_t *body = json_pack("{s:o}", sched_nodename(), reply);
		ctl_enqueue(CTL_REPLY, body, json_string_value(json_object_get(reply_to, "exchange")),
			    json_string_value(json_object_get(reply_to, "routing_key")),
			    json_string_value(json_object_get(req, "ticket")));
	} else {
		json_decref(reply); /* a cast: nobody waits for an answer */
	}
out:
	json_decref(req);
	json_decref(env);
}

/* Declares our binding and subscribes; false when Redis is not there (retried later). */
static bool subscribe(void)
{
	char member[200];
	snprintf(member, sizeof(member), CELERY_SEP CELERY_SEP "%s.celery.pidbox", sched_nodename());
	redisReply *r = redis_cmd(P.rc, "SADD _kombu.binding.celery.pidbox %s", member);
	if (!r)
		return false;
	freeReplyObject(r);
	r = redis_cmd(P.rc, "PSUBSCRIBE %s", P.channel);
	bool ok = r && r->type == REDIS_REPLY_ARRAY;
	if (r)
		freeReplyObject(r);
	return ok;
}

static void handle_reply(redisReply *r)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !r->element[0]->str)
		return;
	redisReply *data = NULL;
	if (strcmp(r->element[0]->str, "pmessage") == 0 && r->elements == 4)
		data = r->element[3];
	else if (strcmp(r->element[0]->str, "message") == 0)
		data = r->element[2];
	if (data && data->type == REDIS_REPLY_STRING)
		on_message(data->str, data->len);
}

static void *pidbox_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "soma-pidbox");
	bool subscribed = false;
	while (!atomic_load(&P.stop)) {
		if (!subscribed && !(subscribed = subscribe())) {
			struct timespec ts = {0, POLL_MS * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		redisContext *ctx = redis_conn_ctx(P.rc);
		void *reply = NULL;
		if (!ctx || redisGetReplyFromReader(ctx, &reply) != REDIS_OK) {
			redis_conn_broken(P.rc, ctx ? ctx->errstr : "pidbox connection lost");
			subscribed = false;
			continue;
		}
		if (reply) {
			handle_reply(reply);
			freeReplyObject(reply);
			continue;
		}
		struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};
		int n = poll(&pfd, 1, POLL_MS);
		if (n > 0 && redisBufferRead(ctx) != REDIS_OK) {
			log_warn("celery", "pidbox connection lost (%s); subscribing again", ctx->errstr);
			redis_conn_broken(P.rc, ctx->errstr);
			subscribed = false;
		}
	}
	return NULL;
}

enum soma_err pidbox_start(const char *redis_url, char *why, size_t why_cap)
{
	enum soma_err err = redis_conn_open(redis_url, 2000, true, &P.rc, why, why_cap);
	if (err != SOMA_OK)
		return err;
	snprintf(P.channel, sizeof(P.channel), "/%d.celery.pidbox", redis_conn_db(P.rc));
	atomic_store(&P.stop, false);
	if (pthread_create(&P.tid, NULL, pidbox_main, NULL) != 0) {
		redis_conn_close(P.rc);
		P.rc = NULL;
		snprintf(why, why_cap, "cannot start the pidbox thread");
		return SOMA_ERR_INTERNAL;
	}
	P.running = true;
	return SOMA_OK;
}

void pidbox_stop(void)
{
	if (!P.running)
		return;
	atomic_store(&P.stop, true);
	pthread_join(P.tid, NULL);
	P.running = false;
	redis_conn_close(P.rc);
	P.rc = NULL;
}
