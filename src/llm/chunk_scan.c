/*
 * chunk_scan.c - a streamed chunk's fields without a JSON tree (see chunk_scan.h).
 *
 * DESIGN: jscan_check validates the whole text and records the outer object's members; the
 * nested objects are read by walking their text (the check's record of nested members depends on
 * its depth limit and does not follow arrays, so it is not used for them). Any thread; no state.
 */
#include "llm/chunk_scan.h"

#include <stddef.h>
#include <string.h>

#include "core/json_scan.h"

struct top {
	struct jspan model, choices, usage, x_groq;
};
struct groq {
	struct jspan usage;
};
struct choice {
	struct jspan delta, finish;
};
struct tokens {
	struct jspan in, out;
};
struct delta {
	struct jspan content;
};

/* A string member unescaped into *o (room checked by the caller), NULL when not a string. */
static const char *text(struct jspan v, char **o, size_t *len)
{
	char *start = *o;
	const char *s = jscan_str(v, o);
	if (s && len)
		*len = (size_t)(*o - start) - 1; /* jscan_check refuses \u0000: no NUL inside */
	return s;
}

bool llm_chunk_scan(const char *data, size_t len, char *buf, size_t cap, struct llm_chunk *out)
{
	static const struct jwant top_w[] = {{"model", offsetof(struct top, model)},
					     {"choices", offsetof(struct top, choices)},
					     {"usage", offsetof(struct top, usage)},
					     {"x_groq", offsetof(struct top, x_groq)}};
	static const struct jwant groq_w[] = {{"usage", offsetof(struct groq, usage)}};
	static const struct jwant choice_w[] = {{"delta", offsetof(struct choice, delta)},
						{"finish_reason", offsetof(struct choice, finish)}};
	static const struct jwant tokens_w[] = {{"prompt_tokens", offsetof(struct tokens, in)},
						{"completion_tokens", offsetof(struct tokens, out)}};
	static const struct jwant delta_w[] = {{"content", offsetof(struct delta, content)}};
	struct jtape t;
	struct top f = {0};
	struct choice ch = {0};
	struct tokens tk = {0};
	struct delta d = {0};
	struct groq g = {0};
	memset(out, 0, sizeof(*out));
	const char *s = jscan_ws(data, data + len);
	if (s == data + len || *s != '{' || !jscan_check(data, len, false, &t) ||
	    !jscan_members(&t, true, (struct jspan){s, len - (size_t)(s - data)}, top_w, 4, &f))
		return false;
	/* Groq streams the usage in x_groq.usage of the last chunk; a top-level usage comes first */
	if (!jscan_is(f.usage, '{') && jscan_is(f.x_groq, '{') && !jscan_members(NULL, false, f.x_groq, groq_w, 1, &g))
		return false;
	struct jspan usage = jscan_is(f.usage, '{') ? f.usage : g.usage;
	if (jscan_is(usage, '{') && !jscan_members(NULL, false, usage, tokens_w, 2, &tk))
		return false;
	if (jscan_is(f.choices, '[')) {
		const char *p = f.choices.p, *e = f.choices.p + f.choices.n;
		struct jspan key, first = {0};
		out->no_choices = *jscan_ws(p + 1, e) == ']';
		if (jscan_next(&p, e, false, &key, &first) && jscan_is(first, '{') &&
		    !jscan_members(NULL, false, first, choice_w, 2, &ch))
			return false;
		if (jscan_is(ch.delta, '{') && !jscan_members(NULL, false, ch.delta, delta_w, 1, &d))
			return false;
	}
	if (f.model.n + ch.finish.n + d.content.n > cap)
		return false; /* (each string unescaped takes at most its JSON length, NUL included) */
	char *o = buf;
	out->model = text(f.model, &o, NULL);
	out->content = text(d.content, &o, &out->content_len);
	out->finish = text(ch.finish, &o, NULL);
	out->usage = jscan_is(f.usage, '{');
	bool counted = jscan_is(usage, '{');
	if ((out->has_in = counted && jscan_is_int(tk.in)))
		out->in_tokens = jscan_int(tk.in);
	if ((out->has_out = counted && jscan_is_int(tk.out)))
		out->out_tokens = jscan_int(tk.out);
	return true;
}

static bool json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Each colon outside an escape is where a member's key ends: the key is the quoted text just
 * before it (an escaped quote cannot close it), the value starts just after. One memchr per
 * member instead of a substring search per key. */
unsigned llm_chunk_peek(const char *data, size_t len)
{
	const char *end = data + len;
	unsigned found = 0;
	for (const char *c = memchr(data, ':', len); c; c = memchr(c, ':', (size_t)(end - c))) {
		const char *q = c++, *v = c;
		while (v < end && json_space(*v))
			v++;
		if (v == end || (*v != '{' && *v != '"'))
			continue; /* most members: a number, null, an array (or a colon inside a string) */
		while (q > data && json_space(q[-1]))
			q--;
		size_t klen = (size_t)(q - data); /* bytes before the colon and its spaces */
		/* the last letters first: most keys fail on them, without a memcmp call */
		if (*v == '{' && klen >= 7 && q[-2] == 'e' && q[-3] == 'g' && memcmp(q - 7, "\"usage\"", 7) == 0)
			found |= LLM_PEEK_USAGE;
		else if (klen >= 7 && q[-2] == 'r' && q[-3] == 'o' && memcmp(q - 7, "\"error\"", 7) == 0)
			found |= LLM_PEEK_ERROR;
		else if (*v == '"' && klen >= 15 && q[-2] == 'n' && q[-3] == 'o' &&
			 memcmp(q - 15, "\"finish_reason\"", 15) == 0)
			found |= LLM_PEEK_FINISH;
	}
	return found;
}
