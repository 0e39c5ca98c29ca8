/*
 * celery_wire.c - encoder and decoder of the Celery protocol v2 envelope (see celery_wire.h).
 *
 * DESIGN: jansson values in, text out and back; base64 through OpenSSL's EVP block coder
 * (standard alphabet, '=' padding, no line breaks - what Python's base64.b64encode writes).
 * Times are UTC milliseconds throughout; the formats carry microseconds as Python prints them.
 */
#include "queue/celery_wire.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "core/json_py.h"

/* ---- base64 ---------------------------------------------------------------------------------- */

static char *b64_encode(const char *in, size_t len)
{
	if (len > (size_t)1 << 30)
		return NULL;
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
	return out;
}

/* Decodes base64 text (whitespace is not allowed, padding is); NULL when malformed. */
static char *b64_decode(const char *in, size_t len, size_t *out_len)
{
	if (len % 4 != 0 || len > (size_t)1 << 30)
		return NULL;
	char *out = malloc(len / 4 * 3 + 1);
	if (!out)
		return NULL;
	int n = len ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len) : 0;
	if (n < 0) {
		free(out);
		return NULL;
	}
	for (size_t i = len; i > 0 && in[i - 1] == '='; i--)
		n--; /* EVP_DecodeBlock counts the padding as zero bytes */
	out[n] = '\0';
	*out_len = (size_t)n;
	return out;
}

/* ---- encode ---------------------------------------------------------------------------------- */

char *celery_envelope_encode(const json_t *body, const json_t *headers, const json_t *properties)
{
	char *raw = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!raw)
		return NULL;
	char *b64 = b64_encode(raw, strlen(raw));
	free(raw);
	json_t *props = properties ? json_copy((json_t *)properties) : json_object();
	json_t *env = NULL;
	char *text = NULL;
	if (!b64 || !props)
		goto out;
	json_object_set_new(props, "body_encoding", json_string("base64"));
	if (!json_is_string(json_object_get(props, "delivery_tag"))) {
		char tag[IDS_UUID_LEN + 1];
		ids_uuid4(tag);
		json_object_set_new(props, "delivery_tag", json_string(tag));
	}
	if (!json_object_get(props, "priority"))
		json_object_set_new(props, "priority", json_integer(0));
	env = json_pack("{s:s, s:s, s:s, s:o, s:O}", "body", b64, "content-encoding", "utf-8", "content-type",
			"application/json", "headers", headers ? json_incref((json_t *)headers) : json_object(),
			"properties", props);
	if (env)
		text = json_dumps(env, JSON_COMPACT);
out:
	free(b64);
	json_decref(props);
	json_decref(env);
	return text;
}

/* ---- decode ---------------------------------------------------------------------------------- */

json_t *celery_json_untype(json_t *v)
{
	if (json_is_object(v)) {
		json_t *type = json_object_get(v, "__type__"), *value = json_object_get(v, "__value__");
		if (json_object_size(v) == 2 && json_is_string(type) && value) {
			json_t *plain = json_incref(value);
			json_decref(v);
			return celery_json_untype(plain);
		}
		const char *k;
		json_t *child;
		void *tmp;
		json_object_foreach_safe(v, tmp, k, child)
		{
			json_t *fixed = celery_json_untype(json_incref(child));
			if (fixed != child)
				json_object_set(v, k, fixed);
			json_decref(fixed);
		}
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++) {
			json_t *child = json_array_get(v, i);
			json_t *fixed = celery_json_untype(json_incref(child));
			if (fixed != child)
				json_array_set(v, i, fixed);
			json_decref(fixed);
		}
	}
	return v;
}

void celery_msg_deinit(struct celery_msg *m)
{
	if (!m)
		return;
	json_decref(m->envelope);
	json_decref(m->args);
	json_decref(m->kwargs);
	json_decref(m->embed);
	json_decref(m->payload);
	json_decref(m->v1_headers);
	free(m->strs);
	memset(m, 0, sizeof(*m));
}

json_t *celery_embed_or_null(json_t *embed)
{
	const char *k;
	json_t *v;
	json_object_foreach(embed, k, v)
	{
		if (!json_is_null(v))
			return embed;
	}
	json_decref(embed);
	return NULL;
}

/* The body as JSON: decoded per properties.body_encoding; a body that is already JSON (not a
 * string) is taken as it is. */
static json_t *body_json(json_t *env, json_t *props, char *why, size_t cap)
{
	json_t *body = json_object_get(env, "body");
	const char *ctype = json_string_value(json_object_get(env, "content-type"));
	if (ctype && strcmp(ctype, "application/json") != 0) {
		snprintf(why, cap, "content-type %.64s is not accepted (only application/json)", ctype);
		return NULL;
	}
	if (json_object_get(json_object_get(env, "headers"), "compression")) {
		snprintf(why, cap, "compressed bodies are not accepted (send without compression)");
		return NULL;
	}
	if (!json_is_string(body))
		return body ? json_incref(body) : (snprintf(why, cap, "the envelope has no body"), NULL);
	const char *enc = json_string_value(json_object_get(props, "body_encoding"));
	const char *text = json_string_value(body);
	size_t len = json_string_length(body);
	char *decoded = NULL;
	if (enc && strcmp(enc, "base64") == 0) {
		if (!(decoded = b64_decode(text, len, &len))) {
			snprintf(why, cap, "the body is not valid base64");
			return NULL;
		}
		text = decoded;
	}
	json_error_t e;
	json_t *v = json_py_load(text, len, JSON_DECODE_ANY, &e);
	free(decoded);
	if (!v)
		snprintf(why, cap, "the body is not JSON: %s", e.text);
	return v;
}

static void parse_times(struct celery_msg *m)
{
	const char *eta = json_string_value(json_object_get(m->headers, "eta"));
	const char *expires = json_string_value(json_object_get(m->headers, "expires"));
	if (eta && !celery_time_parse(eta, &m->eta_ms))
		m->eta_ms = 0;
	if (expires && !celery_time_parse(expires, &m->expires_ms))
		m->expires_ms = 0;
	json_t *tl = json_object_get(m->headers, "timelimit");
	m->time_limit = json_number_value(json_array_get(tl, 0));
	m->soft_time_limit = json_number_value(json_array_get(tl, 1));
	m->ignore_result = json_is_true(json_object_get(m->headers, "ignore_result"));
}

/* Protocol v1: the body is {task, id, args, kwargs, eta, expires, retries, ...}. */
static bool from_v1(struct celery_msg *m, json_t *body)
{
	m->v1_headers = json_object();
	const char *k;
	json_t *v;
	json_object_foreach(body, k, v)
	{
		if (strcmp(k, "args") != 0 && strcmp(k, "kwargs") != 0)
			json_object_set(m->v1_headers, k, v);
	}
	m->headers = m->v1_headers;
	m->args = json_incref(json_object_get(body, "args"));
	m->kwargs = json_incref(json_object_get(body, "kwargs"));
	return true;
}

/* Our own headers (redis_publish.c writes them): who sent the task, and its retry budget. */
static void soma_headers(struct celery_msg *m)
{
	json_t *payload = json_object_get(m->headers, "soma_payload");
	json_t *mr = json_object_get(m->headers, "soma_max_retries");
	m->payload = json_is_object(payload) ? json_incref(payload) : NULL;
	m->tenant = json_string_value(json_object_get(m->headers, "soma_tenant"));
	m->session = json_string_value(json_object_get(m->headers, "soma_session"));
	m->traceparent = json_string_value(json_object_get(m->headers, "traceparent"));
	m->has_max_retries = json_is_integer(mr);
	m->max_retries = json_integer_value(mr);
}

/* A header as a C string for the events: NULL when not a string or when it holds U+0000. */
static const char *header_text(const struct celery_msg *m, const char *key)
{
	json_t *v = json_object_get(m->headers, key);
	return json_is_string(v) && !json_py_has_nul(v) ? json_string_value(v) : NULL;
}

/* The headers a task-received event repeats as they came (Celery 5.2, worker/strategy.py). */
static void event_headers(struct celery_msg *m)
{
	m->root_id = header_text(m, "root_id");
	m->parent_id = header_text(m, "parent_id");
	m->argsrepr = header_text(m, "argsrepr");
	m->kwargsrepr = header_text(m, "kwargsrepr");
	m->shadow = header_text(m, "shadow");
	m->eta_text = header_text(m, "eta");
	m->expires_text = header_text(m, "expires");
}

/* A header or property read as a C string holds U+0000: it would be read cut short (task "t\u0000x"
 * as "t", a tenant as another), so the message is refused (JSON_ALLOW_NUL keeps NULs in args). */
enum soma_err celery_envelope_decode(const char *text, size_t len, struct celery_msg *out, char *why, size_t why_cap)
{
	if (celery_envelope_scan(text, len, out))
		return SOMA_OK;
	return celery_envelope_decode_tree(text, len, out, why, why_cap);
}

enum soma_err celery_msg_tree(struct celery_msg *m)
{
	if (m->headers)
		return SOMA_OK;
	json_t *env = json_py_load(m->text, m->len, 0, NULL);
	if (!json_is_object(env)) { /* (the text was read once: only memory can fail now) */
		json_decref(env);
		return SOMA_ERR_NOMEM;
	}
	if (!json_is_object(json_object_get(env, "properties")))
		json_object_set_new(env, "properties", json_object());
	m->envelope = env;
	m->properties = json_object_get(env, "properties");
	m->headers = celery_json_untype(json_incref(json_object_get(env, "headers")));
	json_decref(m->headers); /* still owned by the envelope */
	return SOMA_OK;
}

enum soma_err celery_envelope_decode_tree(const char *text, size_t len, struct celery_msg *out, char *why,
					  size_t why_cap)
{
	memset(out, 0, sizeof(*out));
	out->text = text;
	out->len = len;
	json_error_t e;
	json_t *env = json_py_load(text, len, 0, &e);
	if (!json_is_object(env)) {
		snprintf(why, why_cap, "the message is not a JSON object: %s", env ? "wrong type" : e.text);
		json_decref(env);
		return SOMA_ERR_INVALID;
	}
	out->envelope = env;
	out->properties = json_object_get(env, "properties");
	if (!json_is_object(out->properties)) {
		json_object_set_new(env, "properties", json_object());
		out->properties = json_object_get(env, "properties");
	}
	json_t *body = body_json(env, out->properties, why, why_cap);
	if (!body)
		goto bad;
	body = celery_json_untype(body);
	out->headers = json_object_get(env, "headers");
	if (json_is_object(out->headers) && json_is_string(json_object_get(out->headers, "task"))) {
		out->args = json_incref(json_array_get(body, 0));
		out->kwargs = json_incref(json_array_get(body, 1));
		json_t *embed = json_array_get(body, 2);
		out->embed = json_is_object(embed) ? celery_embed_or_null(json_incref(embed)) : NULL;
		out->headers = celery_json_untype(json_incref(out->headers));
		json_decref(out->headers); /* still owned by the envelope */
	} else if (json_is_object(body) && json_is_string(json_object_get(body, "task"))) {
		from_v1(out, body);
	} else {
		json_decref(body);
		snprintf(why, why_cap, "not a Celery task message (no task header)");
		goto bad;
	}
	json_decref(body);
	if (!json_is_array(out->args))
		json_decref(out->args), out->args = json_array();
	if (!json_is_object(out->kwargs))
		json_decref(out->kwargs), out->kwargs = json_object();
	soma_headers(out);
	out->task = json_string_value(json_object_get(out->headers, "task"));
	out->id = json_string_value(json_object_get(out->headers, "id"));
	if (!out->id)
		out->id = json_string_value(json_object_get(out->properties, "correlation_id"));
	if (!out->task || !out->task[0] || !out->id || !celery_id_ok(out->id)) {
		snprintf(why, why_cap, "the message lacks a task name or a task id (at most %d characters)",
			 CELERY_ID_MAX);
		goto bad;
	}
	if (celery_names_hold_nul(out)) {
		snprintf(why, why_cap, "a header or property read as a name holds U+0000 (\\u0000)");
		goto bad;
	}
	out->delivery_tag = json_string_value(json_object_get(out->properties, "delivery_tag"));
	if (!out->delivery_tag)
		out->delivery_tag = "";
	json_int_t prio = json_integer_value(json_object_get(out->properties, "priority"));
	out->priority = prio < 0 ? 0 : prio > 9 ? 9 : (int)prio;
	out->retries = json_integer_value(json_object_get(out->headers, "retries"));
	json_t *di = json_object_get(out->properties, "delivery_info");
	out->routing_key = json_string_value(json_object_get(di, "routing_key"));
	out->exchange = json_string_value(json_object_get(di, "exchange"));
	if (!out->exchange)
		out->exchange = "";
	parse_times(out);
	event_headers(out);
	return SOMA_OK;
bad:
	celery_msg_deinit(out);
	return SOMA_ERR_INVALID;
}

/* Lua's %s: the whitespace kombu's tag pattern skips. */
static bool lua_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

size_t celery_envelope_tag(const char *text, size_t len, char *buf, size_t cap)
{
	static const char key[] = "\"delivery_tag\"";
	const char *p = text, *e = text + len, *at;
	while (p < e && (at = memmem(p, (size_t)(e - p), key, sizeof(key) - 1))) {
		const char *q = at + sizeof(key) - 1;
		p = at + 1;
		while (q < e && lua_space(*q))
			q++;
		if (q >= e || *q++ != ':')
			continue;
		while (q < e && lua_space(*q))
			q++;
		if (q >= e || *q++ != '"')
			continue;
		const char *end = memchr(q, '"', (size_t)(e - q));
		if (!end || end == q)
			continue;
		size_t n = (size_t)(end - q);
		if (n >= cap || memchr(q, '\0', n))
			return 0;
		memcpy(buf, q, n);
		buf[n] = '\0';
		return n;
	}
	return 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

int celery_priority_band(int priority)
{
	if (priority <= 0)
		return 0;
	if (priority > 9)
		priority = 9;
	return priority / 3 * 3;
}

size_t celery_queue_key(const char *queue, int priority, char *buf, size_t cap)
{
	int band = celery_priority_band(priority);
	int n = band ? snprintf(buf, cap, "%s" CELERY_SEP "%d", queue, band) : snprintf(buf, cap, "%s", queue);
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t celery_key_queue_len(const char *key, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++)
		if (key[i] == '\x06' && key[i + 1] == '\x16')
			return i;
	return len;
}

/* ---- times ----------------------------------------------------------------------------------- */

static bool digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (**p < '0' || **p > '9')
			return false;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return true;
}

bool celery_time_parse(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec = 0, frac_ms = 0, oh = 0, om = 0;
	const char *p = s;
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' || !digits(&p, 2, &d))
		return false;
	if ((*p != 'T' && *p != 't' && *p != ' ') || (p++, !digits(&p, 2, &h)) || *p++ != ':' || !digits(&p, 2, &mi))
		return false;
	if (*p == ':' && (p++, !digits(&p, 2, &sec)))
		return false;
	if (*p == '.' || *p == ',') {
		p++;
		int scale = 100, n = 0;
		for (; *p >= '0' && *p <= '9'; p++, n++) {
			frac_ms += scale * (*p - '0');
			scale /= 10;
		}
		if (n == 0)
			return false;
	}
	int sign = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (!digits(&p, 2, &oh) || (*p == ':' && (p++, false)) || !digits(&p, 2, &om))
			return false;
	}
	if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return false;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
	int64_t t = (int64_t)timegm(&tm);
	*ms = (t - sign * (oh * 3600 + om * 60)) * 1000 + frac_ms;
	return true;
}

static char *format(int64_t wall_ms, char *out, size_t cap, const char *suffix)
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06d%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000) * 1000, suffix);
	return out;
}

char *celery_time_format(int64_t wall_ms, char *out, size_t cap)
{
	return format(wall_ms, out, cap, "Z");
}

char *celery_date_done(int64_t wall_ms, char *out, size_t cap)
{
	return format(wall_ms, out, cap, "");
}
