/*
 * test_memory_payload.c - a stored memory's payload read by memory_payload_read
 * (src/store/memory_payload.c) is the value json_loadb reads: the same members in the same order,
 * the same types, for what json_scan reads itself and for what it leaves to jansson.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "store/memory_payload.h"

/* Both readers agree on text: both refuse it, or both give equal values that dump alike. */
static void same_as_jansson(const char *text)
{
	json_t *want = json_loadb(text, strlen(text), JSON_DECODE_ANY, NULL);
	json_t *got = memory_payload_read(text, strlen(text));
	if (!want) {
		cr_assert_null(got, "jansson refuses %s", text);
		return;
	}
	cr_assert_not_null(got, "%s", text);
	cr_assert(json_equal(want, got), "%s", text);
	cr_assert_eq(json_typeof(want), json_typeof(got), "%s", text);
	char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY),
	     *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
	cr_assert_str_eq(a, b, "member order or types of %s", text);
	free(a), free(b);
	json_decref(want), json_decref(got);
}

Test(memory_payload, reads_what_json_loads_reads)
{
	const char *texts[] = {
		"{\"id\":\"01a2\",\"type\":\"conversation_event\",\"role\":\"user\",\"content\":\"hello, this is "
		"message "
		"number 7\",\"session_id\":\"s1\",\"persona_id\":null,\"metadata\":{\"tenant\":\"default\"},"
		"\"created_at\":\"2026-11-28T14:59:53.965Z\"}",
		"{\"content\":\"quote \\\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t \\u00e9 \\ud83d\\ude00 "
		"caf\xc3\xa9\"}",
		" { \"a\" : [ 1 , -2 , 3.25 , -0 , 0.5 , true , false , null , \"x\" , [ ] , { } ] } \n",
		"{\"z\":1,\"a\":2,\"m\":{\"k\":[{\"deep\":[1,[2,[3]]]}]}}",
		"{\"k\":1,\"k\":\"second\",\"j\":2}",
		"{\"esc\\u0041key\":\"v\",\"\":\"empty key\"}",
		"\"a string\"",
		"42",
		"-7.5",
		"true",
		"null",
		"[]",
		"{}",
		"{\"big\":123456789012345678}",
		"{\"huge\":1234567890123456789012}",
		"{\"exp\":1e5}",
		"{\"e\":2.5E-3}",
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
	cr_assert_null(memory_payload_read(NULL, 0));
}
