/*
 * llm_ask.c - a POST /v1/chat/completions body read from its text (see llm_ask.h).
 *
 * DESIGN: one check of the whole text (jscan_check), then one walk of the outer object and one of
 * each message, making llm_proxy.c's tree checks: stream, the messages, model, temperature and
 * max_tokens. A body that fails any of them goes the tree way, which answers it: a failed body is
 * rare, and only the tree path knows which of its faults it names first (a key repeated at any
 * depth, for one, is its 400 before any 422). The provider's body is the client's spans put
 * together with ours. Runs on the request's io thread; nothing is kept.
 */
#include "gateway/llm_ask.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "gateway/gateway.h"
#include "llm/llm.h"

#define MAX_MESSAGES 4096 /* as the tree check */

/* One walk of the object obj: false when a key is escaped (it could spell a wanted one) or
 * repeated (the tree path refuses that), or there are over LLM_ASK_MAX_MEMBERS; else each member
 * named in w goes to its span at w[i].at in fields, and, when rest is not NULL, every other
 * member to rest[*nrest] (key, value). */
static bool read_members(struct jspan obj, const struct jwant *w, size_t nw, void *fields, struct jspan (*rest)[2],
			 int *nrest)
{
	struct jspan keys[LLM_ASK_MAX_MEMBERS], k, v;
	const char *p = obj.p, *e = obj.p + obj.n;
	int n = 0;
	while (jscan_next(&p, e, true, &k, &v)) {
		if (n == LLM_ASK_MAX_MEMBERS || memchr(k.p, '\\', k.n))
			return false;
		for (int i = 0; i < n; i++) {
			if (keys[i].n == k.n && memcmp(keys[i].p, k.p, k.n) == 0)
				return false;
		}
		keys[n++] = k;
		size_t i = 0;
		while (i < nw && !(strlen(w[i].name) == k.n && memcmp(w[i].name, k.p, k.n) == 0))
			i++;
		if (i < nw) {
			*(struct jspan *)((char *)fields + w[i].at) = v;
		} else if (rest) {
			rest[*nrest][0] = k;
			rest[(*nrest)++][1] = v;
		}
	}
	return true;
}

/* The string v unescaped into buf (cap bytes); NULL when v is no string or might not fit. */
static const char *text_of(struct jspan v, char *buf, size_t cap)
{
	char *o = buf;
	return v.n < cap ? jscan_str(v, &o) : NULL;
}

static bool is_literal(struct jspan v, const char *lit)
{
	size_t n = strlen(lit);
	return v.p && v.n == n && memcmp(v.p, lit, n) == 0;
}

/* Whether the messages pass the check of the tree path (llm_routes.c valid_message), on text:
 * a known role and a content (string, array or null), which an assistant's may lack when it has
 * tool_calls (an array) or a refusal (a string). */
static bool messages_ok(struct jspan messages)
{
	static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
	static const struct jwant want[] = {{"role", 0},
					    {"content", sizeof(struct jspan)},
					    {"tool_calls", 2 * sizeof(struct jspan)},
					    {"refusal", 3 * sizeof(struct jspan)}};
	const char *p = messages.p, *e = messages.p + messages.n;
	struct jspan key, m;
	size_t i = 0;
	while (jscan_is(messages, '[') && jscan_next(&p, e, false, &key, &m)) {
		struct jspan f[4] = {{0}, {0}, {0}, {0}};
		if (++i > MAX_MESSAGES || !jscan_is(m, '{') || !read_members(m, want, 4, f, NULL, NULL))
			return false;
		char role[64];
		const char *r = text_of(f[0], role, sizeof(role));
		bool ok = false;
		for (size_t j = 0; r && j < sizeof(roles) / sizeof(roles[0]); j++)
			ok = ok || strcmp(r, roles[j]) == 0;
		bool called =
			!f[1].p && r && strcmp(r, "assistant") == 0 && (jscan_is(f[2], '[') || jscan_is(f[3], '"'));
		if (!ok || !(jscan_is(f[1], '"') || jscan_is(f[1], '[') || is_literal(f[1], "null") || called))
			return false;
	}
	return i > 0;
}

/* Whether model, temperature and max_tokens pass the tree path's checks (llm_routes.c
 * tree_options); fills their values in *a. */
static bool options_ok(struct llm_ask *a)
{
	char model[512];
	const char *m = NULL;
	bool bad = false;
	if (a->model.p && !is_literal(a->model, "null")) {
		if (jscan_is(a->model, '"') && a->model.n >= sizeof(model))
			return false; /* its length unescaped is not known here */
		m = text_of(a->model, model, sizeof(model));
		bad = !m || strlen(m) >= sizeof(a->model_text);
	}
	a->temperature_value = -1;
	if (a->temperature.p && !is_literal(a->temperature, "null")) {
		char c = *a->temperature.p;
		bool number = c == '-' || (c >= '0' && c <= '9');
		a->temperature_value = number ? jscan_num(a->temperature) : -1;
		bad = bad || !number || a->temperature_value < 0 || a->temperature_value > 2;
	}
	a->max_tokens_value = 0;
	if (a->max_tokens.p && !is_literal(a->max_tokens, "null")) {
		bool integer = jscan_is_int(a->max_tokens);
		a->max_tokens_value = integer ? jscan_int(a->max_tokens) : 0;
		bad = bad || !integer || a->max_tokens_value < 1;
	}
	if (bad)
		return false;
	if (m)
		memcpy(a->model_text, m, strlen(m) + 1);
	return true;
}

enum llm_ask_result llm_ask_read(struct http_req *req, struct llm_ask *a)
{
	a->messages = a->model = a->temperature = a->max_tokens = (struct jspan){0};
	a->nextra = 0;
	a->model_text[0] = a->persona_id[0] = '\0';
	a->stream = a->include_usage = a->has_persona = false;
	const char *body = req->body, *e = body ? body + req->body_len : NULL;
	if (!body || !req->body_len || !gw_json_nesting_ok(body, req->body_len) ||
	    !jscan_check(body, req->body_len, false, NULL))
		return LLM_ASK_USE_TREE;
	const char *p = jscan_ws(body, e);
	struct top {
		struct jspan messages, model, stream, options, temperature, max_tokens, persona;
	} f = {0};
	static const struct jwant want[] = {
		{"messages", offsetof(struct top, messages)},	    {"model", offsetof(struct top, model)},
		{"stream", offsetof(struct top, stream)},	    {"stream_options", offsetof(struct top, options)},
		{"temperature", offsetof(struct top, temperature)}, {"max_tokens", offsetof(struct top, max_tokens)},
		{"persona_id", offsetof(struct top, persona)}};
	int nrest = 0;
	if (*p != '{' || !read_members((struct jspan){p, (size_t)(e - p)}, want, sizeof(want) / sizeof(want[0]), &f,
				       a->extra, &nrest))
		return LLM_ASK_USE_TREE;
	for (int i = 0; i < nrest; i++) { /* the rest is passed on, but for the platform's own */
		if (!llm_member_set_by_call(a->extra[i][0].p, a->extra[i][0].n)) {
			a->extra[a->nextra][0] = a->extra[i][0];
			a->extra[a->nextra++][1] = a->extra[i][1];
		}
	}
	a->messages = f.messages, a->model = f.model, a->temperature = f.temperature, a->max_tokens = f.max_tokens;
	struct jspan stream = f.stream, options = f.options, persona = f.persona;
	if (stream.p && !is_literal(stream, "true") && !is_literal(stream, "false") && !is_literal(stream, "null"))
		return LLM_ASK_USE_TREE;
	a->stream = is_literal(stream, "true");
	if (jscan_is(options, '{')) {
		static const struct jwant usage[] = {{"include_usage", 0}};
		struct jspan include = {0};
		if (!read_members(options, usage, 1, &include, NULL, NULL))
			return LLM_ASK_USE_TREE;
		a->include_usage = is_literal(include, "true");
	}
	if (jscan_is(persona, '"') && !(a->has_persona = text_of(persona, a->persona_id, sizeof(a->persona_id))))
		return LLM_ASK_USE_TREE;
	return messages_ok(a->messages) && options_ok(a) ? LLM_ASK_OK : LLM_ASK_USE_TREE;
}

/* Appends n bytes at *at of buf (room checked by the caller). */
static void put(char *buf, size_t *at, const char *p, size_t n)
{
	memcpy(buf + *at, p, n);
	*at += n;
}

char *llm_ask_upstream(const struct llm_ask *a, const char *default_model)
{
	static const char streamed[] = ",\"stream\":true,\"stream_options\":{\"include_usage\":true}";
	bool own_model = a->model_text[0] != '\0'; /* "" asks for the configured one, as null does */
	bool temp = a->temperature.p && !is_literal(a->temperature, "null");
	bool maxt = a->max_tokens.p && !is_literal(a->max_tokens, "null");
	size_t model_len = 0;
	char *model = own_model ? NULL : json_out_string(default_model, strlen(default_model), &model_len);
	if (!own_model && !model)
		return NULL;
	struct jspan m = own_model ? a->model : (struct jspan){model, model_len};
	size_t cap = 64 + sizeof(streamed) + m.n + a->messages.n + (temp ? a->temperature.n + 16 : 0) +
		     (maxt ? a->max_tokens.n + 16 : 0);
	for (int i = 0; i < a->nextra; i++)
		cap += a->extra[i][0].n + a->extra[i][1].n + 4;
	char *out = malloc(cap);
	size_t at = 0;
	if (out) {
		put(out, &at, "{\"model\":", 9);
		put(out, &at, m.p, m.n);
		put(out, &at, ",\"messages\":", 12);
		put(out, &at, a->messages.p, a->messages.n);
		if (a->stream)
			put(out, &at, streamed, sizeof(streamed) - 1);
		else
			put(out, &at, ",\"stream\":false", 15);
		if (temp) {
			put(out, &at, ",\"temperature\":", 15);
			put(out, &at, a->temperature.p, a->temperature.n);
		}
		if (maxt) {
			put(out, &at, ",\"max_tokens\":", 14);
			put(out, &at, a->max_tokens.p, a->max_tokens.n);
		}
		for (int i = 0; i < a->nextra; i++) {
			put(out, &at, ",\"", 2);
			put(out, &at, a->extra[i][0].p, a->extra[i][0].n);
			put(out, &at, "\":", 2);
			put(out, &at, a->extra[i][1].p, a->extra[i][1].n);
		}
		put(out, &at, "}", 2); /* with its NUL */
	}
	free(model);
	return out;
}
