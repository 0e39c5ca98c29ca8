/*
 * json_read.c - JSON text as a jansson value (see json_read.h): request bodies
 * (gateway/common.c) and recall's stored payloads (sqlite_memory_search.c).
 *
 * DESIGN: jansson's json_loadb reads through a stream callback byte by byte (~36,000
 * instructions for a conversation memory's ~270 bytes, ~13,000 for a ~70-byte chat message
 * body). Here jscan_check validates the text (at least as strictly as json_loadb, see
 * json_scan.h), then the tree is built from the checked text with one buffer for all its strings.
 * What jscan_check refuses (an exponent, a number of more than 18 digits, nesting deeper than
 * JSCAN_DEPTH, and every text that is not JSON) is left to json_loadb, and so is a repeated key
 * under JSON_REJECT_DUPLICATES: the value is always the one json_loadb gives (same members in
 * the same order, the last of a repeated key, integers and reals as jansson types them), and a
 * refusal carries json_loadb's own error.
 */
#include "core/json_read.h"

#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"

/* The value of v (checked text); strings are unescaped through *buf (room: the text's length).
 * NULL on OOM, or (with unique) when an object repeats a key. */
static json_t *value_of(struct jspan v, char **buf, bool unique)
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
			json_t *item = value_of(val, buf, unique);
			char *name = *buf;
			if (object && item && !jscan_str((struct jspan){key.p - 1, key.n + 2}, buf))
				json_decref(item), item = NULL;
			size_t name_len = object ? (size_t)(*buf - name - 1) : 0;
			if (item && object && unique && json_object_getn(out, name, name_len))
				json_decref(item), item = NULL;
			if (!item || (object ? json_object_setn_new_nocheck(out, name, name_len, item)
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

json_t *json_read(const char *text, size_t len, size_t flags, json_error_t *error)
{
	if (!text)
		return NULL;
	if ((flags & ~(size_t)(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)) ||
	    !jscan_check(text, len, (flags & JSON_DECODE_ANY) != 0, NULL))
		return json_loadb(text, len, flags, error);
	const char *start = jscan_ws(text, text + len), *end = text + len;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		end--;
	char *buf = malloc(len + 1), *p = buf;
	json_t *v =
		buf ? value_of((struct jspan){start, (size_t)(end - start)}, &p, (flags & JSON_REJECT_DUPLICATES) != 0)
		    : NULL;
	free(buf);
	if (!v) /* a repeated key: json_loadb refuses it, with its own words (out of memory: it says so) */
		return json_loadb(text, len, flags, error);
	return v;
}
