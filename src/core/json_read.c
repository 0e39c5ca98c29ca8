/*
 * json_read.c - JSON text as a jansson value (see json_read.h): request bodies
 * (gateway/common.c) and recall's stored payloads (sqlite_memory_search.c).
 *
 * DESIGN: jansson's json_loadb reads through a stream callback byte by byte (~36,000
 * instructions for a conversation memory's ~270 bytes, ~13,000 for a ~70-byte chat message
 * body). Here jscan_check validates the text (at least as strictly as json_loadb, see
 * json_scan.h), then the tree is built from the checked text with one buffer for all its strings.
 * What jscan_check refuses (an integer beyond int64, a real that may overflow a double or is
 * longer than 300 characters, nesting deeper than JSCAN_DEPTH, and every text that is not
 * JSON) is left to json_loadb, and so is a repeated key under JSON_REJECT_DUPLICATES: the
 * value is always the one json_loadb gives (same members in the same order, the last of a
 * repeated key, integers and reals as jansson types them), and a refusal carries json_loadb's
 * own error.
 * Out of memory is its own outcome, never handed to json_loadb: jansson 2.14's string reader
 * ignores a failed allocation (it retries it for every byte, then reads and writes past its
 * buffer). For the same reason json_loadb only sees texts up to JSON_READ_JANSSON_MAX bytes; a
 * larger one that jscan_check refuses gets our own error (no line or column).
 */
#include "core/json_read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_scan.h"

/* The value of v (checked text); strings are unescaped through *buf (room: the text's length).
 * NULL on OOM, or (with unique) when an object repeats a key: then *dup is set. */
static json_t *value_of(struct jspan v, char **buf, bool unique, bool *dup)
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
			json_t *item = value_of(val, buf, unique, dup);
			char *name = *buf;
			if (object && item && !jscan_str((struct jspan){key.p - 1, key.n + 2}, buf))
				json_decref(item), item = NULL;
			size_t name_len = object ? (size_t)(*buf - name - 1) : 0;
			if (item && object && unique && json_object_getn(out, name, name_len))
				json_decref(item), item = NULL, *dup = true;
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

/* Fills error (or NULL) as jansson fills it, code included (json_error_code reads it back from
 * the last byte of text, where jsonp_error_set stores it). */
static void set_error(json_error_t *error, enum json_error_code code, const char *text)
{
	if (!error)
		return;
	error->line = error->column = error->position = -1;
	snprintf(error->source, sizeof(error->source), "%s", "<buffer>");
	snprintf(error->text, sizeof(error->text) - 1, "%s", text);
	error->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)code;
}

/* json_loadb's answer for a text json_read does not read itself, within the size jansson is
 * trusted with. */
static json_t *loadb_bounded(const char *text, size_t len, size_t flags, json_error_t *error, bool dup)
{
	if (len <= JSON_READ_JANSSON_MAX)
		return json_loadb(text, len, flags, error);
	set_error(error, dup ? json_error_duplicate_key : json_error_invalid_syntax,
		  dup ? "duplicate object key"
		      : "not JSON (or, in a text this large, a number out of range or nesting deeper than 64)");
	return NULL;
}

json_t *json_read(const char *text, size_t len, size_t flags, json_error_t *error)
{
	if (!text)
		return NULL;
	if ((flags & ~(size_t)(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)) ||
	    !jscan_check(text, len, (flags & JSON_DECODE_ANY) != 0, NULL))
		return loadb_bounded(text, len, flags, error, false);
	const char *start = jscan_ws(text, text + len), *end = text + len;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		end--;
	char *buf = malloc(len + 1), *p = buf;
	bool dup = false;
	json_t *v = buf ? value_of((struct jspan){start, (size_t)(end - start)}, &p,
				   (flags & JSON_REJECT_DUPLICATES) != 0, &dup)
			: NULL;
	free(buf);
	if (!v && dup) /* a repeated key: json_loadb refuses it, with its own words */
		return loadb_bounded(text, len, flags, error, true);
	if (!v)
		set_error(error, json_error_out_of_memory, "out of memory");
	return v;
}

bool json_read_out_of_memory(const json_error_t *error)
{
	return error && json_error_code(error) == json_error_out_of_memory;
}
