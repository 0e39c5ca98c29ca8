/*
 * json_py.c - JSON written by Python's json.dumps read with jansson (see json_py.h).
 */
#include "core/json_py.h"

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
