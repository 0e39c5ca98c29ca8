/*
 * test_celery_scan.c - the fast envelope reader (src/queue/celery_scan.c) held to the jansson
 * reader's reading (celery_envelope_decode_tree): on the envelopes Celery 5.2.6 / kombu 5.2.4
 * wrote (tests/unit/data/celery526_envelopes.jsonl), on ours, on odd but valid ones; and a
 * malformed message is refused by celery_envelope_decode with the jansson reader's reason.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "celery_same.h"
#include "queue/celery_wire.h"
#include "queue/queue_int.h"

#ifndef SOMA_SOURCE_ROOT
#define SOMA_SOURCE_ROOT "."
#endif

/* text read by both readers: the same reading; fast: the fast reader must read it itself. */
static void same_reading(const char *text, bool fast)
{
	size_t len = strlen(text);
	struct celery_msg a, b, c;
	char wb[256] = "", wc[256] = "";
	bool scanned = celery_envelope_scan(text, len, &a);
	enum soma_err eb = celery_envelope_decode_tree(text, len, &b, wb, sizeof(wb));
	enum soma_err ec = celery_envelope_decode(text, len, &c, wc, sizeof(wc));
	cr_assert(!fast || scanned, "the fast reader left this to jansson: %s", text);
	cr_assert_eq(ec, eb, "%s", text);
	cr_assert_eq(eb, SOMA_OK, "%s: %s", text, wb);
	if (scanned) {
		cr_assert_null(a.headers, "the fast reader builds no tree");
		const char *d = celery_msg_differs(&a, &b);
		cr_assert_null(d, "%s differs: %s", d, text);
		cr_assert_eq(celery_msg_tree(&a), SOMA_OK);
		d = celery_msg_differs(&a, &b);
		cr_assert_null(d, "%s differs after celery_msg_tree: %s", d, text);
	}
	const char *d = celery_msg_differs(&c, &b);
	cr_assert_null(d, "%s differs (celery_envelope_decode): %s", d, text);
	celery_msg_deinit(&a);
	celery_msg_deinit(&b);
	celery_msg_deinit(&c);
}

/* text refused: the fast reader does not read it, and the reason is the jansson reader's. */
static void refused(const char *text, size_t len)
{
	struct celery_msg a, b, c;
	char wb[256] = "", wc[256] = "";
	cr_assert_not(celery_envelope_scan(text, len, &a), "read a malformed message: %.*s", (int)len, text);
	cr_assert_null(a.args);
	cr_assert_eq(celery_envelope_decode_tree(text, len, &b, wb, sizeof(wb)), SOMA_ERR_INVALID, "%.*s", (int)len,
		     text);
	cr_assert_eq(celery_envelope_decode(text, len, &c, wc, sizeof(wc)), SOMA_ERR_INVALID);
	cr_assert(wb[0]);
	cr_assert_str_eq(wc, wb);
	celery_msg_deinit(&a);
	celery_msg_deinit(&b);
	celery_msg_deinit(&c);
}

Test(celery_scan, reads_celery_526_envelopes_as_jansson_does)
{
	FILE *f = fopen(SOMA_SOURCE_ROOT "/tests/unit/data/celery526_envelopes.jsonl", "r");
	cr_assert_not_null(f);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int count = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		line[n - 1] = '\0';
		/* proj.big has a real with an exponent (1e-07) in its kwargs: read fast too */
		same_reading(line, true);
		count++;
	}
	free(line);
	fclose(f);
	cr_assert_eq(count, 14);
}

Test(celery_scan, fields_of_celery_envelopes)
{
	FILE *f = fopen(SOMA_SOURCE_ROOT "/tests/unit/data/celery526_envelopes.jsonl", "r");
	cr_assert_not_null(f);
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int seen = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		struct celery_msg m;
		line[n - 1] = '\0';
		if (!celery_envelope_scan(line, (size_t)n - 1, &m))
			continue;
		if (strcmp(m.id, "id-\xc3\xa9-\"q\"") == 0) { /* \u00e9 and \" in the id */
			cr_assert_str_eq(json_string_value(json_object_get(m.kwargs, "x")),
					 "caf\xc3\xa9 \xf0\x9f\x98\x80 \"quoted\" back\\slash\nnl\ttab \xe2\x80\xa8");
			seen |= 1;
		}
		if (strcmp(m.task, "proj.eta") == 0 && m.retries == 3) {
			cr_assert_eq(m.eta_ms, 1795777009461LL);
			cr_assert_eq(m.expires_ms, 1795777009461LL + 3600000);
			/* as sent, for the task-received event */
			cr_assert_str_eq(m.eta_text, "2026-11-27T10:56:49.461034+00:00");
			cr_assert_str_eq(m.expires_text, "2026-11-27T11:56:49.461034+00:00");
			cr_assert_str_eq(m.root_id, m.id);
			cr_assert_null(m.parent_id);
			cr_assert_str_eq(m.argsrepr, "[1]");
			cr_assert_str_eq(m.kwargsrepr, "{}");
			seen |= 2;
		}
		if (m.time_limit == 30 && m.soft_time_limit == 12.5)
			seen |= 4;
		if (strcmp(m.task, "proj.a") == 0 && m.embed &&
		    json_array_size(json_object_get(m.embed, "chain")) == 2) /* the rest of the chain */
			seen |= 8;
		if (strcmp(m.task, "proj.m") == 0 && json_is_object(json_object_get(m.embed, "chord"))) {
			cr_assert_eq(celery_msg_tree(&m), SOMA_OK);
			cr_assert(json_is_string(json_object_get(m.headers, "group")));
			seen |= 16;
		}
		if (strcmp(m.task, "proj.prio") == 0) {
			cr_assert_eq(m.priority, 9);
			cr_assert_str_eq(m.routing_key, "other");
			seen |= 32;
		}
		if (strcmp(m.task, "proj.add") == 0 && m.priority == 5) {
			cr_assert_null(m.embed, "an embed of nulls asks for nothing");
			seen |= 64;
		}
		celery_msg_deinit(&m);
	}
	free(line);
	fclose(f);
	cr_assert_eq(seen, 127, "seen %d", seen);
}

Test(celery_scan, reads_our_envelopes)
{
	static const char *const tasks[] = {
		"{\"id\":\"a1\",\"name\":\"soma.noop\",\"queue\":\"celery\",\"tenant\":\"default\","
		"\"payload\":{\"args\":[],\"kwargs\":{}},\"max_retries\":3}",
		"{\"id\":\"a2\",\"name\":\"soma.echo\",\"queue\":\"q\\u00e9\",\"session_id\":\"s\\n\","
		"\"payload\":{\"args\":[1,\"x\\\"\\\\\\n\\u0001\\u00e9\\ud83d\\ude00/\",2.5,null],"
		"\"kwargs\":{\"k\\t\":{\"n\":[true,false]}},\"subject\":\"u\\u2028\",\"scopes\":\"a b\","
		"\"options\":{\"priority\":7,\"expires_ms\":1764273499123,\"time_limit\":30,\"soft_time_limit\":2.25}}"
		"}",
		"{\"id\":\"a3\",\"name\":\"t\",\"queue\":\"celery\",\"tenant\":\"t1\",\"payload\":{\"args\":[3],"
		"\"celery\":{\"group\":\"g1\",\"group_index\":2,\"root_id\":\"r1\",\"embed\":{\"callbacks\":null,"
		"\"errbacks\":null,\"chain\":[{\"task\":\"next\"}],\"chord\":null}},\"ev\":[1]},\"options\":{"
		"\"priority\":-3}}",
		"{\"id\":\"a4\",\"name\":\"t\",\"queue\":\"celery\",\"payload\":{\"args\":{\"not\":\"a list\"},"
		"\"kwargs\":[1],\"celery\":{\"group\":\"g\",\"group_index\":\"x\"}},\"options\":{\"priority\":12}}",
	};
	for (size_t i = 0; i < sizeof(tasks) / sizeof(tasks[0]); i++) {
		json_t *task = json_loads(tasks[i], 0, NULL);
		char key[CELERY_KEY_MAX];
		char *text = redis_task_envelope(task, (int64_t)i, i ? 1764273500001 : 0, key);
		cr_assert_not_null(text);
		same_reading(text, true);
		free(text);
		json_decref(task);
	}
}

Test(celery_scan, odd_but_valid_envelopes)
{
	static const char *const odd[] = {
		/* whitespace everywhere, a key given twice (the last counts), no properties */
		" \r\n{ \"body\" :\t\"W1sxXSx7fSxudWxsXQ==\" , \"headers\" : { \"task\" : \"a\" , \"id\" : \"1\" , "
		"\"task\" : \"b\" } , \"properties\" : { \"body_encoding\" : \"base64\" } }\n",
		"{\"body\":\"[[1],{},null]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
		/* properties not an object; priority as a real, a string, out of range */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":[1]}",
		"{\"body\":\"[]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"priority\":5.0}}",
		"{\"body\":\"[[]]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"priority\":\"5\"}}",
		"{\"body\":\"[[],{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"priority\":-4}}",
		"{\"body\":\"[1,2,3,4]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":2.0,\"timelimit\":[30,2."
		"5]},"
		"\"properties\":{\"priority\":42,\"delivery_info\":{\"routing_key\":\"rk\",\"exchange\":\"ex\"}}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"timelimit\":\"x\",\"retries\":"
		"true},"
		"\"properties\":{\"delivery_info\":[]}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"timelimit\":[[1],\"2\"],\"eta\":5,"
		"\"expires\":\"never\"}}",
		/* no header id: the correlation id; ids and names with escapes */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\u00e9\\ud83d\\ude00\"},\"properties\":"
		"{\"correlation_id\":\"c\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"delivery_tag\":\"\\u0041\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":7},\"properties\":{\"correlation_id\":"
		"\"c\"}}",
		/* typed values in the body: untyped */
		"{\"body\":\"[{\\\"__type__\\\":\\\"x\\\",\\\"__value__\\\":[1]},{\\\"k\\\":{\\\"__type__\\\":"
		"\\\"d\\\","
		"\\\"__value__\\\":\\\"2024\\\"}},{\\\"chain\\\":{\\\"__type__\\\":\\\"n\\\",\\\"__value__\\\":null}}]"
		"\","
		"\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{\\\"chord\\\":{\\\"task\\\":\\\"b\\\"},\\\"chain\\\":null}]\",\"headers\":{"
		"\"task\":"
		"\"t\",\"id\":\"i\",\"group\":\"g\",\"soma_payload\":{\"__type__\":\"p\",\"__value__\":{\"a\":1}}}}",
		/* our headers, of every type */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"soma_tenant\":\"te\","
		"\"soma_session\":\"s\\u00e9\",\"soma_max_retries\":-2,\"soma_payload\":{\"subject\":\"u\"}}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"soma_tenant\":1,"
		"\"soma_session\":null,\"soma_max_retries\":2.5,\"soma_payload\":[1]}}",
		/* W3C trace context (a string, or not) */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"traceparent\":"
		"\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"traceparent\":7}}",
		/* times: a long fraction, an offset */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"eta\":"
		"\"2026-11-27T12:56:49.4610349999999999999+02:00\",\"expires\":\"2026-11-27 10:56\"}}",
		/* raw bodies (no base64), one with escapes */
		"{\"body\":\"[[\\\"\\\\u00e9\\\\n\\\"],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},"
		"\"properties\":{\"body_encoding\":\"utf-8\"}}",
		"{\"body\":\"W1tdLHt9LHt9XQ==\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"content-type\":"
		"\"application/json\",\"properties\":{\"body_encoding\":\"base64\",\"priority\":3}}",
		/* 18 digits (the most the fast reader takes), a 64-character id */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":-123456789012345678}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":"
		"\"0123456789012345678901234567890123456789012345678901234567890123\"}}",
	};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		same_reading(odd[i], true);
	/* members of nested objects that spell wanted keys, where the tape holds them or not */
	same_reading("{\"x\":[{\"task\":\"no\",\"id\":\"no\"}],\"body\":\"[[],{},{}]\",\"headers\":{\"a\":"
		     "[{\"task\":\"no\"}],\"task\":\"t\",\"id\":\"i\",\"b\":{\"id\":\"no\"}},\"properties\":{\"y\":"
		     "[{\"routing_key\":\"no\"}],\"delivery_info\":{\"routing_key\":\"rk\",\"z\":{\"exchange\":"
		     "\"no\"}},\"priority\":4}}",
		     true);
	/* more members than the tape holds: the headers are walked */
	char big[4096];
	size_t n = (size_t)snprintf(big, sizeof(big), "{\"body\":\"[[],{},{}]\",\"headers\":{\"soma_payload\":{");
	for (int i = 0; i < 120; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%d\":%d", i ? "," : "", i, i);
	snprintf(big + n, sizeof(big) - n,
		 "},\"task\":\"t\",\"id\":\"i\",\"retries\":2},\"properties\":"
		 "{\"delivery_tag\":\"d\"}}");
	same_reading(big, true);
	/* left to the jansson reader, which reads them */
	static const char *const deferred[] = {
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"t\\u0061sk\":\"t\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"eta\":{\"__type__\":\"datetime\","
		"\"__value__\":\"2026-11-27T10:56:49Z\"}}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":{\"__type__\":\"uuid\",\"__value__\":"
		"\"u\"}}}",
		"{\"body\":[[1],{},{}],\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
		"{\"body\":\"{\\\"task\\\":\\\"v1\\\",\\\"id\\\":\\\"i\\\",\\\"args\\\":[1]}\",\"headers\":{}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"content-type\":\"application\\/"
		"json\"}",
		"{\"body\":\"W1tdLHt9LHt9XQ==\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":"
		"{\"body_encoding\":\"base\\u0036\\u0034\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"traceparent\":{\"__type__\":"
		"\"s\",\"__value__\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}}}",
	};
	/* a real with an exponent (Python's json.dumps writes 1e-05) and a 19-digit integer: read fast */
	same_reading("{\"body\":\"[[1e3,1e-05],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}}", true);
	same_reading(
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":1234567890123456789}}",
		true);
	for (size_t i = 0; i < sizeof(deferred) / sizeof(deferred[0]); i++) {
		struct celery_msg m;
		cr_assert_not(celery_envelope_scan(deferred[i], strlen(deferred[i]), &m), "%s", deferred[i]);
		same_reading(deferred[i], false);
	}
}

Test(celery_scan, headers_for_the_events_as_sent)
{
	/* strings with escapes, non-strings (NULL), a typed one (left to jansson, which untypes it) */
	static const char *const fast[] = {
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"root_id\":\"r\\u00e9\","
		"\"parent_id\":\"p\\\"\",\"argsrepr\":\"(1, 'a\\\\n')\",\"kwargsrepr\":\"{'k': 2}\",\"eta\":\"x\","
		"\"shadow\":\"sh\\u00e9\",\"ignore_result\":true}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"root_id\":5,\"parent_id\":null,"
		"\"argsrepr\":[1],\"kwargsrepr\":true,\"eta\":7,\"expires\":null,"
		"\"shadow\":5,\"ignore_result\":1}}",
	};
	for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++)
		same_reading(fast[i], true);
	struct celery_msg m;
	cr_assert(celery_envelope_scan(fast[0], strlen(fast[0]), &m));
	cr_assert_str_eq(m.root_id, "r\xc3\xa9");
	cr_assert_str_eq(m.parent_id, "p\"");
	cr_assert_str_eq(m.argsrepr, "(1, 'a\\n')");
	cr_assert_str_eq(m.kwargsrepr, "{'k': 2}");
	cr_assert_str_eq(m.eta_text, "x", "an eta that does not parse is still repeated as sent");
	cr_assert_null(m.expires_text);
	cr_assert_str_eq(m.shadow, "sh\xc3\xa9");
	cr_assert(m.ignore_result);
	celery_msg_deinit(&m);
	cr_assert(celery_envelope_scan(fast[1], strlen(fast[1]), &m));
	cr_assert(!m.root_id && !m.parent_id && !m.argsrepr && !m.kwargsrepr && !m.eta_text && !m.expires_text &&
		  !m.shadow && !m.ignore_result);
	celery_msg_deinit(&m);
	static const char typed[] = "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"parent_id\":"
				    "{\"__type__\":\"uuid\",\"__value__\":\"p\"},\"root_id\":\"r\\u0000x\"}}";
	cr_assert_not(celery_envelope_scan(typed, strlen(typed), &m));
	same_reading(typed, false);
	char why[256];
	cr_assert_eq(celery_envelope_decode_tree(typed, strlen(typed), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_str_eq(m.parent_id, "p");
	cr_assert_null(m.root_id, "a root_id holding U+0000 is not repeated cut short");
	celery_msg_deinit(&m);
}

Test(celery_scan, malformed_messages_get_the_jansson_reason)
{
	static const char *const bad[] = {
		"",
		"   ",
		"not json",
		"[1]",
		"{\"body\":\"W1tdLHt9LHt9XQ==\"",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}} x",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}\"x\":1}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\xff\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\xc0\xaf\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\xed\xa0\x80\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\u0000\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\x\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\u12g4\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\n\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":01}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":1.}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":-}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"retries\":12345678901234567890}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"timelimit\":[1e400]}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"x\":tru}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"x\":nulll}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"x\":[1,]}}",
		"{\"body\":\"%%%%\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"body_encoding\":"
		"\"base64\"}}",
		"{\"body\":\"W1tdLHt9LHt9XQ\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"body_"
		"encoding\":"
		"\"base64\"}}",
		"{\"body\":\"eyJ4Ijo=\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"body_encoding\":"
		"\"base64\"}}",
		"{\"body\":\"[[],{},{}\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"content-type\":\"application/"
		"x-python-serialize\",\"headers\":{\"task\":\"t\","
		"\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"compression\":null}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"\"}}",
		"{\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		refused(bad[i], strlen(bad[i]));
	/* a NUL byte in the text, and nesting deeper than jansson's limit */
	static const char nul[] = "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}}\0";
	refused(nul, sizeof(nul) - 1);
	static const char nul_inside[] = "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\0\",\"id\":\"i\"}}";
	refused(nul_inside, sizeof(nul_inside) - 1);
	size_t depth = 3000, n = 0;
	char *deep = malloc(2 * depth + 128);
	n += (size_t)snprintf(deep, 2 * depth + 128,
			      "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"x\":");
	memset(deep + n, '[', depth), n += depth;
	memset(deep + n, ']', depth), n += depth;
	deep[n++] = '}';
	refused(deep, n);
	free(deep);
}

/* An envelope whose id is n times unit (a UTF-8 character), into buf. */
static size_t with_id(char *buf, size_t cap, const char *unit, int n)
{
	size_t at = (size_t)snprintf(buf, cap, "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"");
	for (int i = 0; i < n; i++)
		at += (size_t)snprintf(buf + at, cap - at, "%s", unit);
	return at + (size_t)snprintf(buf + at, cap - at, "\"}}");
}

Test(celery_scan, ids_of_255_characters_are_read_and_longer_ones_refused)
{
	char buf[2 * CELERY_ID_BYTES];
	with_id(buf, sizeof(buf), "x", CELERY_ID_MAX);
	same_reading(buf, true);
	with_id(buf, sizeof(buf), "\xe2\x98\x83", CELERY_ID_MAX); /* 255 snowmen: 765 bytes, 255 characters */
	same_reading(buf, true);
	cr_assert(celery_id_ok("acme:report/x \xc3\xa9:1"));
	size_t n = with_id(buf, sizeof(buf), "x", CELERY_ID_MAX + 1);
	refused(buf, n);
	n = with_id(buf, sizeof(buf), "\xc3\xa9", CELERY_ID_MAX + 1);
	refused(buf, n);
}
