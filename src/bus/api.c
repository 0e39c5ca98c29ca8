/*
 * api.c - the public entry points of the bus (bus.h): each goes to the redis driver while it
 * runs (bus.driver = redis), else to the local machinery of bus.c; plus messages, keys and
 * cursors, which both share.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_int.h"

enum soma_err bus_init(int64_t resume_window_ms)
{
	bus_local_init(resume_window_ms);
	return SOMA_OK;
}

void bus_deinit(void)
{
	bus_redis_stop(); /* its queue drains first (to Redis, or locally) */
	bus_local_deinit();
}

void bus_key(char out[BUS_KEY_MAX], const char *tenant, const char *session_id)
{
	snprintf(out, BUS_KEY_MAX, "%.64s/%.64s", tenant, session_id);
}

void bus_forget(const char *key)
{
	bus_local_forget(key);
	bus_redis_enqueue(BUS_REC_FORGET, key, 0, NULL, 0); /* the other nodes and Redis forget it too */
}

void bus_session_deleted(const char *key)
{
	bus_local_forget(key);
	/* with Redis, this node's streams get the marker with every node's, from the subscription,
	 * in order with the session's other records; without (or when Redis cannot take it: the
	 * driver's degraded path) from here */
	if (!bus_redis_enqueue(BUS_REC_FORGET, key, 1, NULL, 0))
		bus_local_end(key, false);
}

void bus_session_reset(const char *key)
{
	bus_local_forget(key);
	if (!bus_redis_enqueue(BUS_REC_FORGET, key, 2, NULL, 0)) /* (as bus_session_deleted) */
		bus_local_end(key, true);
}

void bus_publish_committed(const char *session_id, int64_t seq, const char *text, size_t len)
{
	if (!bus_redis_enqueue(BUS_REC_COMMITTED, session_id, seq, text, len))
		bus_local_publish_committed(session_id, seq, text, len);
}

void bus_publish_ephemeral(const char *session_id, int64_t base_seq, const char *text, size_t len,
			   struct bus_cursor *out)
{
	if (bus_redis_enqueue(BUS_REC_EPHEMERAL, session_id, base_seq, text, len)) {
		if (out)
			*out = (struct bus_cursor){-1, 0}; /* Redis assigns it later */
		return;
	}
	bus_local_publish_ephemeral(session_id, base_seq, text, len, out);
}

void bus_generation_begin(const char *session_id)
{
	if (!bus_redis_enqueue(BUS_REC_BEGIN, session_id, 0, NULL, 0)) /* (Redis counts them) */
		bus_local_generation_begin(session_id);
}

void bus_generation_end(const char *session_id)
{
	if (!bus_redis_enqueue(BUS_REC_END, session_id, 0, NULL, 0))
		bus_local_generation_end(session_id);
}

enum soma_err bus_snapshot(const char *session_id, struct bus_cursor after, struct bus_msg ***msgs, size_t *n,
			   int64_t *published_seq)
{
	if (bus_redis_running())
		return bus_redis_snapshot(session_id, after, msgs, n, published_seq);
	return bus_local_snapshot(session_id, after, msgs, n, published_seq);
}

bool bus_status(char *detail, size_t cap)
{
	if (bus_redis_running())
		return bus_redis_status(detail, cap);
	snprintf(detail, cap, "local; %ld live subscriber(s)", bus_subscribers());
	return true;
}

/* ---- messages ---------------------------------------------------------------------------------- */

void bus_msg_release(struct bus_msg *msg)
{
	if (msg && atomic_fetch_sub((_Atomic int *)&msg->refs, 1) == 1) {
		free(msg->text);
		free(msg);
	}
}

struct bus_msg *bus_msg_new(struct bus_cursor c, const char *text, size_t len)
{
	struct bus_msg *m = malloc(sizeof(*m));
	if (!m || !(m->text = malloc(len + 1))) {
		free(m);
		return NULL;
	}
	memcpy(m->text, text, len);
	m->text[len] = '\0';
	m->len = len;
	m->cursor = c;
	m->refs = 1;
	return m;
}

bool bus_msg_is_gap(const struct bus_msg *msg)
{
	return msg->cursor.seq == -1;
}

bool bus_msg_is_end(const struct bus_msg *msg)
{
	return msg->cursor.seq == -2;
}

bool bus_msg_is_reset(const struct bus_msg *msg)
{
	return msg->cursor.seq == -3;
}

/* ---- cursors ---------------------------------------------------------------------------------- */

void bus_cursor_format(struct bus_cursor c, char *out, size_t cap)
{
	if (c.minor)
		snprintf(out, cap, "%lld.%lld", (long long)c.seq, (long long)c.minor);
	else
		snprintf(out, cap, "%lld", (long long)c.seq);
}

bool bus_cursor_parse(const char *s, size_t len, struct bus_cursor *out)
{
	int64_t parts[2] = {0, 0};
	int part = 0;
	size_t digits = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '.' && part == 0 && digits > 0) {
			part = 1;
			digits = 0;
		} else if (ch >= '0' && ch <= '9' && digits < 15) {
			parts[part] = parts[part] * 10 + (ch - '0');
			digits++;
		} else {
			return false;
		}
	}
	if (digits == 0)
		return false;
	*out = (struct bus_cursor){parts[0], parts[1]};
	return true;
}

int bus_cursor_cmp(struct bus_cursor a, struct bus_cursor b)
{
	if (a.seq != b.seq)
		return a.seq < b.seq ? -1 : 1;
	if (a.minor != b.minor)
		return a.minor < b.minor ? -1 : 1;
	return 0;
}
