/*
 * json_py.c - JSON written by Python's json.dumps read with jansson (see json_py.h).
 */
#include "core/json_py.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The value of the four hex digits at s, or -1. */
static long hex4(const char *s)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* The code unit of the \uXXXX escape at text[i] (i + 6 <= len), or -1 when there is none. */
static long unit_at(const char *text, size_t len, size_t i)
{
	if (i + 6 > len || text[i] != '\\' || text[i + 1] != 'u')
		return -1;
	return hex4(text + i + 2);
}

/* Offset of the next lone surrogate escape at or after *from (advanced past it), or len. */
static size_t next_lone(const char *text, size_t len, size_t *from)
{
	size_t i = *from;
	while (i < len) {
		const char *b = memchr(text + i, '\\', len - i);
		if (!b)
			break;
		i = (size_t)(b - text);
		long u = unit_at(text, len, i);
		if (u < 0xd800 || u > 0xdfff) { /* not a \u escape, or not a surrogate: skip the escape */
			i += u < 0 ? 2 : 6;
			continue;
		}
		long low = u <= 0xdbff ? unit_at(text, len, i + 6) : -1;
		if (low >= 0xdc00 && low <= 0xdfff) { /* a pair */
			i += 12;
			continue;
		}
		*from = i + 6;
		return i;
	}
	*from = len;
	return len;
}

size_t json_py_fix_surrogates(char *text, size_t len)
{
	size_t n = 0, from = 0, at;
	while ((at = next_lone(text, len, &from)) < len) {
		memcpy(text + at + 2, "fffd", 4);
		n++;
	}
	return n;
}

json_t *json_py_load(const char *text, size_t len, size_t flags, json_error_t *error)
{
	size_t from = 0;
	if (!text || next_lone(text, len, &from) == len)
		return json_loadb(text, len, flags | JSON_ALLOW_NUL, error);
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return json_loadb(text, len, flags | JSON_ALLOW_NUL, error); /* (it says why it cannot) */
	memcpy(copy, text, len);
	json_py_fix_surrogates(copy, len);
	json_t *v = json_loadb(copy, len, flags | JSON_ALLOW_NUL, error);
	free(copy);
	return v;
}

bool json_py_has_nul(const json_t *s)
{
	return json_is_string(s) && strlen(json_string_value(s)) != json_string_length(s);
}

/* Appends Python's repr of the str s (quotes as repr picks them, \\, \n, \r, \t and other
 * control characters escaped) to buf at *at, never past cap - 1. */
static void repr_str(const char *s, char *buf, size_t cap, size_t *at)
{
	char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
	char tmp[8];
	if (*at + 1 < cap)
		buf[(*at)++] = q;
	for (const unsigned char *c = (const unsigned char *)s; *c && *at + 5 < cap; c++) {
		if (*c == '\\' || *c == (unsigned char)q)
			snprintf(tmp, sizeof(tmp), "\\%c", *c);
		else if (*c == '\n' || *c == '\r' || *c == '\t')
			snprintf(tmp, sizeof(tmp), "\\%c", *c == '\n' ? 'n' : *c == '\r' ? 'r' : 't');
		else if (*c < 0x20 || *c == 0x7f)
			snprintf(tmp, sizeof(tmp), "\\x%02x", *c);
		else
			snprintf(tmp, sizeof(tmp), "%c", *c);
		for (const char *p = tmp; *p; p++)
			buf[(*at)++] = *p;
	}
	if (*at + 1 < cap)
		buf[(*at)++] = q;
	buf[*at] = '\0';
}

void json_py_exc_repr(const char *type, const json_t *args, char *buf, size_t cap)
{
	if (cap < 4)
		return;
	int w = snprintf(buf, cap, "%.100s(", type && type[0] ? type : "Exception");
	size_t at = w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap - 1;
	size_t n = json_is_array(args) ? json_array_size(args) : args ? 1 : 0;
	for (size_t i = 0; i < n && at + 8 < cap; i++) {
		const json_t *a = json_is_array(args) ? json_array_get(args, i) : args;
		if (i > 0)
			buf[at++] = ',', buf[at++] = ' ', buf[at] = '\0';
		if (json_is_string(a)) {
			repr_str(json_string_value(a), buf, cap - 2, &at);
		} else {
			char *t = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
			int k = snprintf(buf + at, cap - 2 - at, "%s", t ? t : "None");
			at += k < 0 ? 0 : (size_t)k < cap - 2 - at ? (size_t)k : cap - 3 - at;
			free(t);
		}
	}
	snprintf(buf + at, cap - at, ")");
}
