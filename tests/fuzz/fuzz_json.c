/*
 * fuzz_json.c - libFuzzer harness: arbitrary bytes as JSON text, read by our tree-less readers
 * and written by our writer, each checked against jansson (the reference they claim to match).
 *
 * Invariants, besides no crash and no sanitizer report:
 *   - what jscan_check passes, jansson's json_loadb reads (core/json_scan.h's promise);
 *   - for an object it passed, jscan_members/jscan_str/jscan_int give the values jansson gives
 *     for the outer object's string and integer members (the last of a key seen twice);
 *   - json_out of what jansson read is byte for byte json_dumps(JSON_COMPACT) (core/json_out.h);
 *   - json_read gives the value json_loadb gives (equal, same types, same member order) or refuses
 *     what it refuses, with and without JSON_REJECT_DUPLICATES (core/json_read.h);
 *   - llm_chunk_scan, when it accepts the text as a stream chunk, gives the fields jansson gives
 *     (llm/chunk_scan.h), with its unescape buffer sized by the input's first byte so the
 *     "buffer too small" path is taken too.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "core/json_read.h"
#include "core/json_scan.h"
#include "llm/chunk_scan.h"

static void same_str(const char *got, const char *want)
{
	if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
		abort();
}

/* The outer object's members named by the keys jansson found, read through the scanner. */
static void check_members(const char *text, size_t len, const struct jtape *tape, json_t *obj)
{
	const char *key;
	json_t *value;
	struct jspan top = {jscan_ws(text, text + len), 0};
	top.n = (size_t)(text + len - top.p);
	json_object_foreach(obj, key, value)
	{
		if (strlen(key) > 40 || strchr(key, '"') || strchr(key, '\\'))
			continue; /* an escaped key makes jscan_members refuse: that is its documented answer */
		struct jspan got = {0};
		struct jwant want = {key, 0};
		if (!jscan_members(tape, true, top, &want, 1, &got))
			continue; /* some key of the text is escaped */
		if (!got.p)
			abort(); /* jansson has the member, the scan does not */
		if (json_is_string(value)) {
			char *buf = malloc(got.n + 1), *o = buf;
			const char *s = buf ? jscan_str(got, &o) : NULL;
			if (buf && (!s || (size_t)(o - buf) - 1 != json_string_length(value) ||
				    memcmp(s, json_string_value(value), json_string_length(value)) != 0))
				abort();
			free(buf);
		} else if (jscan_is(got, '"')) {
			abort();
		}
		if (json_is_integer(value) != jscan_is_int(got))
			abort();
		if (json_is_integer(value) && jscan_int(got) != json_integer_value(value))
			abort();
	}
}

static void check_out(json_t *v)
{
	size_t n = 0;
	char *mine = json_out(v, 1, &n);
	char *ref = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if ((mine == NULL) != (ref == NULL) || (mine && (strlen(ref) != n || memcmp(mine, ref, n) != 0)))
		abort();
	free(mine);
	free(ref);
}

static void check_chunk(const char *text, size_t len, size_t cap, json_t *j)
{
	char *buf = malloc(cap ? cap : 1);
	struct llm_chunk f;
	if (!buf || !llm_chunk_scan(text, len, buf, cap, &f)) {
		free(buf);
		return; /* left to jansson: allowed */
	}
	if (!json_is_object(j))
		abort(); /* the scan read what jansson refuses */
	json_t *usage = json_object_get(j, "usage"), *choice = json_array_get(json_object_get(j, "choices"), 0);
	json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
	json_t *in = json_object_get(usage, "prompt_tokens"), *out = json_object_get(usage, "completion_tokens");
	same_str(f.model, json_string_value(json_object_get(j, "model")));
	same_str(f.content, json_string_value(content));
	if (f.content && f.content_len != json_string_length(content))
		abort();
	same_str(f.finish, json_string_value(json_object_get(choice, "finish_reason")));
	if (f.usage != json_is_object(usage) || f.has_in != (f.usage && json_is_integer(in)) ||
	    f.has_out != (f.usage && json_is_integer(out)) || (f.has_in && f.in_tokens != json_integer_value(in)) ||
	    (f.has_out && f.out_tokens != json_integer_value(out)))
		abort();
	free(buf);
}

/* json_read against json_loadb with the same flags (j: json_loadb's value for JSON_DECODE_ANY) */
static void check_read(const char *text, size_t len, size_t flags, json_t *j)
{
	json_t *want = flags == JSON_DECODE_ANY ? json_incref(j) : json_loadb(text, len, flags, NULL);
	json_t *got = json_read(text, len, flags, NULL);
	if ((want == NULL) != (got == NULL) || (want && !json_equal(want, got)))
		abort();
	if (want) {
		char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY),
		     *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
		if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
			abort(); /* member order, or an integer read as a real */
		free(a), free(b);
	}
	json_decref(want), json_decref(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t cap = 16 + (size_t)data[0] * 8; /* 16..2056 bytes of unescape room for the chunk scan */
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	struct jtape tape;
	bool passed = jscan_check(text, len, true, &tape);
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	if (passed && !j)
		abort(); /* the strict checker passed what jansson refuses */
	if (passed && json_is_object(j))
		check_members(text, len, &tape, j);
	if (j)
		check_out(j);
	check_chunk(text, len, cap, j);
	check_read(text, len, JSON_DECODE_ANY, j);
	check_read(text, len, JSON_REJECT_DUPLICATES, j);
	json_decref(j);
	return 0;
}
