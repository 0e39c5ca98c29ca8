/*
 * redis_publish.c - what the redis driver writes: task messages as Celery producers write them,
 * and result metas as Celery's Redis result backend writes them (interop.md 1.2-1.4, 1.7).
 *
 * DESIGN: our tasks travel as Celery v2 messages: args and kwargs in the body, the rest of our
 * payload (subject, scopes, event ids...) and the tenant/session in extra headers
 * (soma_tenant, soma_session, soma_payload, soma_max_retries), which Celery ignores, and the
 * payload's traceparent, when there is one, as the traceparent header. Options
 * (priority, expires, time limits) come from task.options. Pure builders plus one function that
 * appends to a caller's pipeline; no state.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/ids.h"
#include "core/json_out.h"
#include "core/json_scan.h"
#include "core/utf8.h"
#include "queue/celery_wire.h"
#include "queue/queue_int.h"
#include "redis/conn.h"

struct redis_conn *redis_queue_connect(int timeout_ms)
{
	struct redis_conn *c = NULL;
	char why[256];
	if (redis_conn_open(cfg_str(CFG_REDIS_URL), timeout_ms, true, &c, why, sizeof(why)) != SOMA_OK)
		return NULL;
	return c;
}

void redis_meta_key(const char *task_id, char *buf, size_t cap)
{
	snprintf(buf, cap, "celery-task-meta-%s", task_id);
}

/* ---- a JSON text writer: the envelope and the meta written as text, not built as jansson trees
 * and dumped (that was most of the publisher's CPU). Values taken from the caller's JSON (args,
 * kwargs, payload, result) go through json_out, so their bytes are what json_dumps writes;
 * strings we make are escaped as jansson escapes them (\", \\, \b \f \n \r \t, other controls
 * as \u00XX uppercase, UTF-8 as is) and must be valid UTF-8, as json_string demands. */

#define WB_MAX ((size_t)512 << 20) /* Redis's largest string: past it the message could not be sent */

struct wbuf {
	char *p;    /* text (owned until handed out) */
	size_t len; /* bytes written */
	size_t cap; /* allocated */
	bool bad;   /* out of memory, over WB_MAX, or a value that is not valid JSON text */
};

static void wb_put(struct wbuf *b, const char *s, size_t n)
{
	if (b->bad || b->len + n > WB_MAX) {
		b->bad = true;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->bad = true;
			return;
		}
		b->p = p, b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void wb_lit(struct wbuf *b, const char *s)
{
	wb_put(b, s, strlen(s));
}

static void wb_int(struct wbuf *b, long long v)
{
	char n[24], *p = n + sizeof(n);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
	do
		*--p = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--p = '-';
	wb_put(b, p, (size_t)(n + sizeof(n) - p));
}

/* v as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes it; NULL as null. The common small
 * values are written here, the rest by json_out (json_dumps' bytes at a fraction of its cost). */
static void wb_json(struct wbuf *b, const json_t *v)
{
	if (!v || json_is_null(v))
		wb_lit(b, "null");
	else if (json_is_true(v) || json_is_false(v))
		wb_lit(b, json_is_true(v) ? "true" : "false");
	else if (json_is_integer(v))
		wb_int(b, (long long)json_integer_value(v));
	else if (json_is_array(v) && json_array_size(v) == 0)
		wb_lit(b, "[]");
	else if (json_is_object(v) && json_object_size(v) == 0)
		wb_lit(b, "{}");
	else if (!b->bad) {
		size_t n;
		char *text = json_out(v, 1, &n);
		if (text)
			wb_put(b, text, n);
		else
			b->bad = true;
		free(text);
	}
}

static bool utf8_valid(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s), k;
	for (size_t i = 0; i < n; i += k)
		if (!(k = u[i] < 0x80 ? 1 : jscan_utf8_len(u + i, n - i)))
			return false;
	return true;
}

/* s as a JSON string; invalid UTF-8 marks the buffer bad (jansson refuses such a string). */
static void wb_str(struct wbuf *b, const char *s)
{
	static const char short_esc[] = "\bb\ff\nn\rr\tt"; /* control, letter */
	size_t n = strlen(s), run = 0;
	if (!utf8_valid(s)) {
		b->bad = true;
		return;
	}
	wb_put(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char seq[8];
		if (c != '"' && c != '\\' && c >= 0x20) {
			run++;
			continue;
		}
		const char *e = c ? memchr(short_esc, c, sizeof(short_esc) - 1) : NULL;
		if (c == '"' || c == '\\')
			seq[0] = '\\', seq[1] = (char)c, seq[2] = '\0';
		else if (e && (e - short_esc) % 2 == 0)
			seq[0] = '\\', seq[1] = e[1], seq[2] = '\0';
		else
			snprintf(seq, sizeof(seq), "\\u%04X", c);
		wb_put(b, s + i - run, run);
		run = 0;
		wb_lit(b, seq);
	}
	wb_put(b, s + n - run, run);
	wb_put(b, "\"", 1);
}

static void wb_str_or_null(struct wbuf *b, const char *s)
{
	if (s)
		wb_str(b, s);
	else
		wb_lit(b, "null");
}

static void wb_time_or_null(struct wbuf *b, int64_t ms)
{
	char t[CELERY_TIME_LEN];
	if (ms > 0)
		wb_str(b, celery_time_format(ms, t, sizeof(t)));
	else
		wb_lit(b, "null");
}

static void wb_number_or_null(struct wbuf *b, const json_t *v)
{
	json_t *r = json_is_number(v) && json_number_value(v) > 0 ? json_real(json_number_value(v)) : NULL;
	wb_json(b, r); /* jansson's real format (%.17g, ".0" added) */
	json_decref(r);
}

/* The body [args, kwargs, embed] as compact JSON. */
static void write_body(struct wbuf *b, const json_t *args, const json_t *kwargs, const json_t *embed)
{
	wb_lit(b, "[");
	if (json_is_array(args))
		wb_json(b, args);
	else
		wb_lit(b, "[]");
	wb_lit(b, ",");
	if (json_is_object(kwargs))
		wb_json(b, kwargs);
	else
		wb_lit(b, "{}");
	wb_lit(b, ",");
	if (json_is_object(embed))
		wb_json(b, embed);
	else
		wb_lit(b, "{\"callbacks\":null,\"errbacks\":null,\"chain\":null,\"chord\":null}");
	wb_lit(b, "]");
}

/* The "...repr" header of v: its compact JSON as a string, or dflt when absent. */
static void write_repr(struct wbuf *b, const json_t *v, const char *dflt)
{
	if (!v || (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0)) {
		wb_str(b, !v ? dflt : json_is_array(v) ? "[]" : "{}");
		return;
	}
	struct wbuf text = {0};
	wb_json(&text, v);
	if (text.bad)
		b->bad = true;
	else
		wb_str(b, text.p);
	free(text.p);
}

/* The payload keys that are not args, kwargs, options or celery, as soma_payload (none: nothing). */
static void write_extra(struct wbuf *b, const json_t *payload)
{
	const char *k;
	json_t *v;
	bool first = true;
	json_object_foreach((json_t *)payload, k, v)
	{
		if (!strcmp(k, "args") || !strcmp(k, "kwargs") || !strcmp(k, "options") || !strcmp(k, "celery") ||
		    !strcmp(k, "traceparent"))
			continue;
		wb_lit(b, first ? ",\"soma_payload\":{" : ",");
		first = false;
		wb_str(b, k);
		wb_lit(b, ":");
		wb_json(b, v);
	}
	if (!first)
		wb_lit(b, "}");
}

static const char *origin(void)
{
	static char origin[96];
	if (!origin[0]) {
		char host[64] = "host";
		gethostname(host, sizeof(host) - 1);
		snprintf(origin, sizeof(origin), "soma%d@%s", (int)getpid(), host);
	}
	return origin;
}

/* The headers object (see redis_task_envelope in queue_int.h for what goes where). */
static void write_headers(struct wbuf *b, const json_t *task, const char *name, const char *id, int64_t retries,
			  int64_t eta_ms)
{
	json_t *payload = json_object_get(task, "payload"), *opts = json_object_get(payload, "options");
	json_t *cel = json_object_get(payload, "celery"), *group = json_object_get(cel, "group");
	json_t *gindex = json_object_get(cel, "group_index"), *mr = json_object_get(task, "max_retries");
	const char *root = json_string_value(json_object_get(cel, "root_id"));
	wb_lit(b, "{\"lang\":\"c\",\"task\":");
	wb_str(b, name);
	wb_lit(b, ",\"id\":");
	wb_str(b, id);
	wb_lit(b, ",\"shadow\":null,\"eta\":");
	wb_time_or_null(b, eta_ms);
	wb_lit(b, ",\"expires\":");
	wb_time_or_null(b, json_integer_value(json_object_get(opts, "expires_ms")));
	wb_lit(b, ",\"group\":");
	wb_json(b, json_is_string(group) ? group : NULL);
	wb_lit(b, ",\"group_index\":");
	wb_json(b, json_is_string(group) && json_is_integer(gindex) ? gindex : NULL);
	wb_lit(b, ",\"retries\":");
	wb_int(b, (long long)retries);
	wb_lit(b, ",\"timelimit\":[");
	wb_number_or_null(b, json_object_get(opts, "time_limit"));
	wb_lit(b, ",");
	wb_number_or_null(b, json_object_get(opts, "soft_time_limit"));
	wb_lit(b, "],\"root_id\":");
	wb_str(b, root ? root : id);
	wb_lit(b, ",\"parent_id\":null,\"argsrepr\":");
	write_repr(b, json_object_get(payload, "args"), "[]");
	wb_lit(b, ",\"kwargsrepr\":");
	write_repr(b, json_object_get(payload, "kwargs"), "{}");
	wb_lit(b, ",\"origin\":");
	wb_str(b, origin());
	wb_lit(b, ",\"ignore_result\":false,\"soma_tenant\":");
	wb_str_or_null(b, json_string_value(json_object_get(task, "tenant")));
	wb_lit(b, ",\"soma_session\":");
	wb_str_or_null(b, json_string_value(json_object_get(task, "session_id")));
	wb_lit(b, ",\"soma_max_retries\":");
	wb_int(b, mr ? (long long)json_integer_value(mr) : cfg_int(CFG_QUEUE_MAX_RETRIES));
	const char *tp = json_string_value(json_object_get(payload, "traceparent"));
	if (tp) { /* W3C trace context as a message header, where OpenTelemetry's Celery support puts it */
		wb_lit(b, ",\"traceparent\":");
		wb_str(b, tp);
	}
	if (json_is_object(payload))
		write_extra(b, payload);
	wb_lit(b, "}");
}

char *redis_task_envelope(const json_t *task, int64_t retries, int64_t eta_ms, char key[192])
{
	const char *id = json_string_value(json_object_get(task, "id"));
	const char *name = json_string_value(json_object_get(task, "name"));
	const char *queue = json_string_value(json_object_get(task, "queue"));
	json_t *payload = json_object_get(task, "payload");
	int priority = (int)json_integer_value(json_object_get(json_object_get(payload, "options"), "priority"));
	if (!id || !name || !queue || !celery_queue_key(queue, priority, key, 192))
		return NULL;
	struct wbuf body = {0}, b = {0};
	write_body(&body, json_object_get(payload, "args"), json_object_get(payload, "kwargs"),
		   json_object_get(json_object_get(payload, "celery"), "embed"));
	char *b64 = body.bad ? NULL : malloc(4 * ((body.len + 2) / 3) + 1);
	if (!b64 || body.len > (size_t)1 << 30)
		b.bad = true;
	else
		EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)body.p, (int)body.len);
	free(body.p);
	char tag[IDS_UUID_LEN + 1];
	ids_uuid4(tag);
	wb_lit(&b, "{\"body\":\"");
	wb_lit(&b, b64 ? b64 : "");
	free(b64);
	wb_lit(&b, "\",\"content-encoding\":\"utf-8\",\"content-type\":\"application/json\",\"headers\":");
	write_headers(&b, task, name, id, retries, eta_ms);
	wb_lit(&b, ",\"properties\":{\"correlation_id\":");
	wb_str(&b, id);
	wb_lit(&b, ",\"reply_to\":\"\",\"delivery_mode\":2,\"delivery_info\":{\"exchange\":\"\",\"routing_key\":");
	wb_str(&b, queue);
	wb_lit(&b, "},\"priority\":");
	wb_int(&b, priority < 0 ? 0 : priority > 9 ? 9 : priority);
	wb_lit(&b, ",\"body_encoding\":\"base64\",\"delivery_tag\":\"");
	wb_lit(&b, tag);
	wb_lit(&b, "\"}}");
	if (b.bad) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static void write_meta(struct wbuf *b, const char *task_id, const char *status, const json_t *result,
		       const char *exc_type, const char *exc_module, const char *message, const json_t *extra)
{
	char done[CELERY_TIME_LEN], tb[1200] = "";
	wb_lit(b, "{\"status\":");
	wb_str(b, status);
	wb_lit(b, ",\"result\":");
	if (exc_type && utf8_valid(exc_type) && (!message || utf8_valid(message)) &&
	    (!exc_module || utf8_valid(exc_module))) {
		wb_lit(b, "{\"exc_type\":");
		wb_str(b, exc_type);
		wb_lit(b, ",\"exc_message\":[");
		wb_str(b, message ? message : "");
		wb_lit(b, "],\"exc_module\":");
		wb_str(b, exc_module ? exc_module : "builtins");
		wb_lit(b, "}");
		/* the text we have as the traceback (`celery result --traceback`): no Python frames */
		snprintf(tb, sizeof(tb), "%.100s: %.1000s\n", exc_type, message ? message : "");
		utf8_repair(tb);
	} else { /* an exception text that is not UTF-8 (a cut message) is null, as jansson made it */
		wb_json(b, exc_type ? NULL : result);
	}
	wb_lit(b, ",\"traceback\":");
	if (tb[0])
		wb_str(b, tb);
	else
		wb_lit(b, "null");
	wb_lit(b, ",\"children\":[],\"date_done\":");
	if (strcmp(status, "RETRY") != 0)
		wb_str(b, celery_date_done(clock_wall_ms(), done, sizeof(done)));
	else
		wb_lit(b, "null");
	wb_lit(b, ",\"task_id\":");
	wb_str(b, task_id);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)extra, k, v)
	{
		wb_lit(b, ",");
		wb_str(b, k);
		wb_lit(b, ":");
		wb_json(b, v);
	}
	wb_lit(b, "}");
}

char *redis_meta_text(const char *task_id, const char *status, const json_t *result, const char *exc_type,
		      const char *exc_module, const char *message, const json_t *extra)
{
	struct wbuf b = {0};
	write_meta(&b, task_id, status, result, exc_type, exc_module, message, extra);
	if (b.bad)
		free(b.p);
	return b.bad ? NULL : b.p;
}

int redis_meta_append(struct redis_conn *c, const char *task_id, const char *status, const json_t *result,
		      const char *exc_type, const char *exc_module, const char *message, const json_t *extra)
{
	char *text = redis_meta_text(task_id, status, result, exc_type, exc_module, message, extra);
	int n = text ? redis_meta_append_text(c, task_id, text) : 0;
	free(text);
	return n;
}

int redis_meta_append_text(struct redis_conn *c, const char *task_id, const char *text)
{
	char kbuf[128], *key = kbuf; /* a longer id (a caller's choice) gets its whole key */
	size_t kcap = strlen(task_id) + sizeof("celery-task-meta-");
	if (kcap > sizeof(kbuf) && !(key = malloc(kcap)))
		return 0;
	redis_meta_key(task_id, key, key == kbuf ? sizeof(kbuf) : kcap);
	long long ttl = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	size_t len = strlen(text);
	enum soma_err err;
	char ttl_s[24];
	snprintf(ttl_s, sizeof(ttl_s), "%lld", ttl);
	if (ttl > 0) {
		const char *argv[] = {"SETEX", key, ttl_s, text};
		size_t lens[] = {5, strlen(key), strlen(ttl_s), len};
		err = redis_append_argv(c, 4, argv, lens);
	} else {
		const char *argv[] = {"SET", key, text};
		size_t lens[] = {3, strlen(key), len};
		err = redis_append_argv(c, 3, argv, lens);
	}
	const char *pargv[] = {"PUBLISH", key, text};
	size_t plens[] = {7, strlen(key), len};
	int n = err == SOMA_OK;
	if (n && redis_append_argv(c, 3, pargv, plens) == SOMA_OK)
		n++;
	if (key != kbuf)
		free(key);
	return n;
}

int redis_owner_append(struct redis_conn *c, const char *task_id, const char *tenant)
{
	if (!tenant || !tenant[0])
		return 0;
	char key[CELERY_ID_KEY_MAX], ttl_s[24];
	snprintf(key, sizeof(key), "soma-task-owner-%s", task_id);
	long long ttl = cfg_int(CFG_QUEUE_RESULT_EXPIRES_S);
	snprintf(ttl_s, sizeof(ttl_s), "%lld", ttl);
	enum soma_err err;
	if (ttl > 0) {
		const char *argv[] = {"SETEX", key, ttl_s, tenant};
		size_t lens[] = {5, strlen(key), strlen(ttl_s), strlen(tenant)};
		err = redis_append_argv(c, 4, argv, lens);
	} else {
		const char *argv[] = {"SET", key, tenant};
		size_t lens[] = {3, strlen(key), strlen(tenant)};
		err = redis_append_argv(c, 3, argv, lens);
	}
	return err == SOMA_OK ? 1 : -1;
}
