/*
 * test_json_read.c - text read by json_read (src/core/json_read.c) is the value json_loadb reads
 * with the same flags: the same members in the same order, the same types, the same refusals (and
 * their error), for what json_scan reads itself and for what it leaves to jansson.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_read.h"

/* Both readers agree on text read with flags: both refuse it (with the same error), or both give
 * equal values that dump alike. */
static void same_with(const char *text, size_t flags)
{
	json_error_t ew, eg;
	json_t *want = json_loadb(text, strlen(text), flags, &ew);
	json_t *got = json_read(text, strlen(text), flags, &eg);
	if (!want) {
		cr_assert_null(got, "jansson refuses %s (flags %zu)", text, flags);
		cr_assert_str_eq(eg.text, ew.text, "%s", text);
		cr_assert_eq(eg.line, ew.line, "%s", text);
		cr_assert_eq(eg.column, ew.column, "%s", text);
		return;
	}
	cr_assert_not_null(got, "%s (flags %zu)", text, flags);
	cr_assert(json_equal(want, got), "%s", text);
	cr_assert_eq(json_typeof(want), json_typeof(got), "%s", text);
	char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY),
	     *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
	cr_assert_str_eq(a, b, "member order or types of %s", text);
	free(a), free(b);
	json_decref(want), json_decref(got);
}

/* ... with each flag set the project reads with */
static void same_as_jansson(const char *text)
{
	same_with(text, JSON_DECODE_ANY);	 /* stored payloads */
	same_with(text, JSON_REJECT_DUPLICATES); /* request bodies */
	same_with(text, 0);
	same_with(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES);
}

Test(json_read, reads_what_json_loadb_reads)
{
	const char *texts[] = {
		("{\"id\":\"01a2\",\"type\":\"conversation_event\",\"role\":\"user\",\"content\":\"hello, this is "
		 "message number 7\",\"session_id\":\"s1\",\"persona_id\":null,\"metadata\":{\"tenant\":\"default\"},"
		 "\"created_at\":\"2026-11-28T14:59:53.965Z\"}"),
		("{\"content\":\"quote \\\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t \\u00e9 \\ud83d\\ude00 "
		 "caf\xc3\xa9\"}"),
		" { \"a\" : [ 1 , -2 , 3.25 , -0 , 0.5 , true , false , null , \"x\" , [ ] , { } ] } \n",
		"{\"z\":1,\"a\":2,\"m\":{\"k\":[{\"deep\":[1,[2,[3]]]}]}}",
		"{\"k\":1,\"k\":\"second\",\"j\":2}",
		"{\"o\":{\"a\":1,\"b\":2,\"a\":3}}",
		"[{\"x\":1},{\"x\":2}]",
		"{\"d\\u0041\":1,\"dA\":2}",
		"{\"session_id\":\"s-1\",\"message\":\"hello, this is message number 7\"}",
		"{\"esc\\u0041key\":\"v\",\"\":\"empty key\"}",
		"\"a string\"",
		"42",
		"-17",
		"3.5",
		"-7.5",
		"true",
		"null",
		"[]",
		"{}",
		"{\"big\":123456789012345678}",
		"{\"huge\":1234567890123456789012}",
		"{\"exp\":1e5}",
		"{\"e\":2.5E-3}",
		"{\"v\":[1e-07,-2.5e+300,9e-400,0.1e1,1E0,-0e0,12345678901234567890e288]}",
		"{\"over\":1e309}",
		"{\"over\":-123e307}",
		"{\"i19\":9223372036854775807,\"n19\":-9223372036854775808}",
		"{\"i19\":9223372036854775808}",
		"{\"n19\":-9223372036854775809}",
		"{\"bad\":1e}",
		"{\"bad\":1e+}",
		"{\"bad\":.5}",
		"{\"bad\":}",
		"{\"a\":1",
		"",
		"{\"nul\":\"\\u0000\"}",
		"{\"a\":1} x",
		"{\"ctl\":\"\x01\"}",
		"{\"utf\":\"\xff\"}"};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		same_as_jansson(texts[i]);
	char deep[201];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	deep[200] = '\0';
	same_as_jansson(deep); /* deeper than json_scan reads: left to jansson */
	cr_assert_null(json_read(NULL, 0, 0, NULL));
}

/* A large text (beyond what json_loadb is trusted with, JSON_READ_JANSSON_MAX) of reals with
 * exponents, as Python's json.dumps writes small floats (an embedding, a Celery kwarg), and of
 * 19-digit integers, is read by json_read itself: the same value as jansson's. */
Test(json_read, large_texts_with_exponents_and_19_digit_integers)
{
	size_t cap = JSON_READ_JANSSON_MAX + 65536, len = 0;
	char *text = malloc(cap);
	cr_assert_not_null(text);
	len += (size_t)snprintf(text, cap, "{\"id\":1234567890123456789,\"v\":[");
	for (int i = 0; len < JSON_READ_JANSSON_MAX + 1024; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s%.6e", i ? "," : "", (i % 7 - 3) * 1.25e-5 / (i + 1));
	len += (size_t)snprintf(text + len, cap - len, "]}");
	cr_assert_gt(len, JSON_READ_JANSSON_MAX);
	same_with(text, JSON_REJECT_DUPLICATES);
	free(text);
}
