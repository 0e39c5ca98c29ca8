/*
 * memory_payload.c - a stored memory's payload (JSON text) as a jansson value, for recall's
 * results (sqlite_memory_search.c).
 *
 * DESIGN: every recall result carries its payload as an object, and jansson's json_loads cost
 * ~36,000 instructions for a conversation memory's ~270 bytes (its lexer reads through a stream
 * callback byte by byte), as much as the rest of building the result. The payload is our own
 * json_out text, so it is read here with core/json_scan: jscan_check validates it (at least as
 * strictly as json_loads, see json_scan.h), then the tree is built from the checked text with
 * one buffer for all its strings. What jscan_check refuses (an exponent, a number of more than
 * 18 digits, nesting deeper than JSCAN_DEPTH: never written by json_out for a conversation event)
 * is left to json_loads, so the value is always the one json_loads gives: same members in the
 * same order, the last of a repeated key, integers and reals as jansson types them.
 */
#include "store/memory_payload.h"

#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"

/* The value of v (checked text); strings are unescaped through *buf (room: the text's length).
 * NULL on OOM. */
static json_t *value_of(struct jspan v, char **buf)
{
	switch (*v.p) {
	case '"': {
		char *s = *buf;
		if (!jscan_str(v, buf))
			return NULL;
		return json_stringn_nocheck(s, (size_t)(*buf - s - 1)); /* (UTF-8 checked) */
	}
	case '{':
	case '[': {
		bool object = *v.p == '{';
		json_t *out = object ? json_object() : json_array();
		const char *p = v.p, *e = v.p + v.n;
		struct jspan key, val;
		while (out && jscan_next(&p, e, object, &key, &val)) {
			json_t *item = value_of(val, buf);
			char *name = *buf;
			if (object && item && !jscan_str((struct jspan){key.p - 1, key.n + 2}, buf))
				json_decref(item), item = NULL;
			if (!item || (object ? json_object_setn_new_nocheck(out, name, (size_t)(*buf - name - 1), item)
					     : json_array_append_new(out, item)) != 0) {
				json_decref(out);
				out = NULL;
			}
		}
		return out;
	}
	case 't':
		return json_true();
	case 'f':
		return json_false();
	case 'n':
		return json_null();
	default:
		return jscan_is_int(v) ? json_integer(jscan_int(v)) : json_real(jscan_num(v));
	}
}

json_t *memory_payload_read(const char *text, size_t len)
{
	if (!text)
		return NULL;
	if (!jscan_check(text, len, true, NULL))
		return json_loadb(text, len, JSON_DECODE_ANY, NULL);
	const char *start = jscan_ws(text, text + len), *end = text + len;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		end--;
	char *buf = malloc(len + 1), *p = buf;
	json_t *v = buf ? value_of((struct jspan){start, (size_t)(end - start)}, &p) : NULL;
	free(buf);
	return v;
}
