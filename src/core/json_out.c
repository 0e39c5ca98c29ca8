/*
 * json_out.c - compact JSON text of a jansson value (see json_out.h).
 *
 * DESIGN: one buffer (malloc'd, doubled as it fills, at most JSON_OUT_MAX) written by a recursive
 * walk of the value. A string is copied a run at a time: bytes that need no escape and no UTF-8
 * check (printable ASCII other than '"' and '\\') are scanned in a tight loop (jscan_plain); a multi-byte
 * sequence is checked by jansson's rules (jscan_utf8_len: no overlong forms, no surrogates,
 * nothing past U+10FFFF), so what json_dumps refuses, json_out refuses.
 */
#include "core/json_out.h"

#include "core/json_scan.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct out {
	char *p;    /* the text so far (malloc'd) */
	size_t len; /* bytes used */
	size_t cap; /* bytes allocated */
	bool bad;   /* a limit was hit, memory ran out, or a string is not UTF-8 */
};

static bool reserve(struct out *o, size_t n)
{
	if (o->bad)
		return false;
	if (o->len + n + 1 <= o->cap)
		return true;
	size_t cap = o->cap ? o->cap : 256;
	while (cap < o->len + n + 1)
		cap *= 2;
	char *grown = cap <= JSON_OUT_MAX + 1 ? realloc(o->p, cap) : NULL;
	if (!grown)
		return !(o->bad = true);
	o->p = grown;
	o->cap = cap;
	return true;
}

static void put(struct out *o, const char *s, size_t n)
{
	if (reserve(o, n)) {
		memcpy(o->p + o->len, s, n);
		o->len += n;
	}
}

static void put_c(struct out *o, char c)
{
	if (reserve(o, 1))
		o->p[o->len++] = c;
}

static void put_string(struct out *o, const char *str, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)str, *e = s + len;
	if (!reserve(o, len + 2))
		return;
	o->p[o->len++] = '"';
	if (jscan_plain(s, e) == e) { /* the common case, all of it as it is: one copy, room reserved */
		memcpy(o->p + o->len, str, len);
		o->len += len;
		o->p[o->len++] = '"';
		return;
	}
	while (s < e) {
		const unsigned char *run = s;
		s = jscan_plain(s, e);
		while (s < e && *s >= 0x80) { /* UTF-8 kept as it is, once checked */
			size_t n = jscan_utf8_len(s, (size_t)(e - s));
			if (n == 0) {
				o->bad = true;
				return;
			}
			s = jscan_plain(s + n, e);
		}
		put(o, (const char *)run, (size_t)(s - run));
		if (s == e)
			break;
		/* each byte with a short escape, followed by its letter: ", \, \b, \f, \n, \r, \t */
		static const char pairs[] = "\"\"\\\\\bb\ff\nn\rr\tt";
		char esc[6] = {'\\', 'u', '0', '0', hex[*s >> 4], hex[*s & 0xF]};
		size_t n = 6; /* another control character: \u00XX */
		for (size_t i = 0; i + 1 < sizeof(pairs); i += 2)
			if (pairs[i] == (char)*s) {
				esc[1] = pairs[i + 1];
				n = 2;
			}
		put(o, esc, n);
		s++;
	}
	put_c(o, '"');
}

static void put_int(struct out *o, json_int_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	/* unsigned arithmetic: the most negative value has no positive counterpart */
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	put(o, p, (size_t)(buf + sizeof(buf) - p));
}

static void put_real(struct out *o, const json_t *v)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY); /* jansson's own formatting */
	if (!text) {
		o->bad = true;
		return;
	}
	put(o, text, strlen(text));
	free(text);
}

static void put_value(struct out *o, const json_t *v, int depth)
{
	if (o->bad)
		return;
	if (depth > JSON_OUT_DEPTH) {
		o->bad = true;
		return;
	}
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		put_c(o, '{');
		bool first = true;
		for (void *it = json_object_iter((json_t *)v); it && !o->bad;
		     it = json_object_iter_next((json_t *)v, it)) {
			if (!first)
				put_c(o, ',');
			first = false;
			put_string(o, json_object_iter_key(it), json_object_iter_key_len(it));
			put_c(o, ':');
			put_value(o, json_object_iter_value(it), depth + 1);
		}
		put_c(o, '}');
		break;
	}
	case JSON_ARRAY: {
		put_c(o, '[');
		size_t n = json_array_size(v);
		for (size_t i = 0; i < n && !o->bad; i++) {
			if (i)
				put_c(o, ',');
			put_value(o, json_array_get(v, i), depth + 1);
		}
		put_c(o, ']');
		break;
	}
	case JSON_STRING:
		put_string(o, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		put_int(o, json_integer_value(v));
		break;
	case JSON_REAL:
		put_real(o, v);
		break;
	case JSON_TRUE:
		put(o, "true", 4);
		break;
	case JSON_FALSE:
		put(o, "false", 5);
		break;
	case JSON_NULL:
		put(o, "null", 4);
		break;
	default:
		o->bad = true;
	}
}

/* The text o holds, NUL-terminated, handed to the caller; NULL (and o freed) when writing failed. */
static char *out_finish(struct out *o, size_t *len)
{
	if (o->bad || !reserve(o, 0)) {
		free(o->p);
		return NULL;
	}
	o->p[o->len] = '\0';
	if (len)
		*len = o->len;
	return o->p;
}

char *json_out(const json_t *v, int any, size_t *len)
{
	if (!v || (!any && !json_is_object(v) && !json_is_array(v)))
		return NULL;
	struct out o = {0};
	put_value(&o, v, 0);
	return out_finish(&o, len);
}

char *json_out_string(const char *s, size_t n, size_t *len)
{
	if (!s)
		return NULL;
	struct out o = {0};
	put_string(&o, s, n);
	return out_finish(&o, len);
}
