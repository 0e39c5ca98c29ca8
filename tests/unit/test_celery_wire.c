/*
 * test_celery_wire.c - the Celery envelope encoder/decoder, band keys and times
 * (src/queue/celery_wire.c), against the bytes observed from Celery 5.2.6 / kombu 5.2.4
 * (shared/reference/interop.md section 1.2).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "queue/celery_wire.h"

/* apply_async((2, 3), priority=5) as kombu 5.2.4 LPUSHed it (ids completed to full UUIDs). */
static const char observed[] =
	"{\"body\": \"W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3Jk"
	"IjogbnVsbH1d\", \"content-encoding\": \"utf-8\", \"content-type\": \"application/json\", \"headers\": "
	"{\"lang\": \"py\", \"task\": \"proj.add\", \"id\": \"f40bd79f-1b2c-4d5e-8f70-0123456789ab\", \"shadow\": "
	"null, \"eta\": null, \"expires\": null, \"group\": null, \"group_index\": null, \"retries\": 0, "
	"\"timelimit\": [null, null], \"root_id\": \"f40bd79f-1b2c-4d5e-8f70-0123456789ab\", \"parent_id\": null, "
	"\"argsrepr\": \"(2, 3)\", \"kwargsrepr\": \"{}\", \"origin\": \"gen16906@vm\", \"ignore_result\": false}, "
	"\"properties\": {\"correlation_id\": \"f40bd79f-1b2c-4d5e-8f70-0123456789ab\", \"reply_to\": "
	"\"4b7c4b15-0000-4000-8000-000000000000\", \"delivery_mode\": 2, \"delivery_info\": {\"exchange\": \"\", "
	"\"routing_key\": \"celery\"}, \"priority\": 5, \"body_encoding\": \"base64\", \"delivery_tag\": "
	"\"90c372b3-0000-4000-8000-000000000000\"}}";

Test(celery_wire, decodes_the_observed_envelope)
{
	struct celery_msg m;
	char why[256] = "";
	cr_assert_eq(celery_envelope_decode(observed, strlen(observed), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_str_eq(m.task, "proj.add");
	cr_assert_str_eq(m.id, "f40bd79f-1b2c-4d5e-8f70-0123456789ab");
	cr_assert_str_eq(m.delivery_tag, "90c372b3-0000-4000-8000-000000000000");
	cr_assert_eq(m.priority, 5);
	cr_assert_str_eq(m.routing_key, "celery");
	cr_assert_str_eq(m.exchange, "");
	cr_assert_eq(json_array_size(m.args), 2);
	cr_assert_eq(json_integer_value(json_array_get(m.args, 1)), 3);
	cr_assert_eq(json_object_size(m.kwargs), 0);
	cr_assert(json_is_null(json_object_get(m.embed, "chain")));
	cr_assert_eq(m.eta_ms, 0);
	cr_assert_eq(m.time_limit, 0);
	celery_msg_deinit(&m);
}

Test(celery_wire, encodes_what_kombu_decodes)
{
	json_t *body = json_pack("[[i,i],{},{s:n,s:n,s:n,s:n}]", 2, 3, "callbacks", "errbacks", "chain", "chord");
	json_t *headers = json_pack("{s:s, s:s, s:s, s:i}", "lang", "c", "task", "proj.add", "id", "abc", "retries", 0);
	json_t *props = json_pack("{s:s, s:{s:s, s:s}, s:i}", "correlation_id", "abc", "delivery_info", "exchange", "",
				  "routing_key", "celery", "priority", 5);
	char *text = celery_envelope_encode(body, headers, props);
	cr_assert_not_null(text);
	json_t *env = json_loads(text, 0, NULL);
	cr_assert_not_null(env);
	/* compact JSON of the body, standard base64 with padding */
	cr_assert_str_eq(
		json_string_value(json_object_get(env, "body")),
		"W1syLDNdLHt9LHsiY2FsbGJhY2tzIjpudWxsLCJlcnJiYWNrcyI6bnVsbCwiY2hhaW4iOm51bGwsImNob3JkIjpudWxsfV0=");
	cr_assert_str_eq(json_string_value(json_object_get(env, "content-type")), "application/json");
	cr_assert_str_eq(json_string_value(json_object_get(env, "content-encoding")), "utf-8");
	json_t *p = json_object_get(env, "properties");
	cr_assert_str_eq(json_string_value(json_object_get(p, "body_encoding")), "base64");
	const char *tag = json_string_value(json_object_get(p, "delivery_tag"));
	cr_assert(tag && strlen(tag) == 36 && tag[14] == '4', "a UUID4 delivery tag: %s", tag ? tag : "(none)");
	struct celery_msg m;
	char why[256] = "";
	cr_assert_eq(celery_envelope_decode(text, strlen(text), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert(json_equal(m.args, json_array_get(body, 0)));
	cr_assert_str_eq(m.delivery_tag, tag);
	celery_msg_deinit(&m);
	json_decref(env);
	free(text);
	/* a given delivery tag is kept */
	json_object_set_new(props, "delivery_tag", json_string("t-1"));
	text = celery_envelope_encode(body, headers, props);
	cr_assert_not_null(strstr(text, "\"delivery_tag\":\"t-1\""));
	free(text);
	json_decref(body);
	json_decref(headers);
	json_decref(props);
}

Test(celery_wire, decodes_raw_bodies_typed_values_and_v1)
{
	const char *raw = "{\"body\":\"[[1],{\\\"when\\\":{\\\"__type__\\\":\\\"datetime\\\",\\\"__value__\\\":"
			  "\\\"2024-01-02T03:04:05\\\"}},null]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"eta\":"
			  "{\"__type__\":\"datetime\",\"__value__\":\"2024-01-02T03:04:05+00:00\"}},"
			  "\"properties\":{\"body_encoding\":\"utf-8\"}}";
	struct celery_msg m;
	char why[256] = "";
	cr_assert_eq(celery_envelope_decode(raw, strlen(raw), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_str_eq(json_string_value(json_object_get(m.kwargs, "when")), "2024-01-02T03:04:05");
	cr_assert_eq(m.eta_ms, 1704164645000LL);
	cr_assert_eq(json_object_size(m.embed), 0);
	celery_msg_deinit(&m);
	const char *v1 = "{\"body\":{\"task\":\"t\",\"id\":\"i\",\"args\":[1],\"kwargs\":{},\"retries\":2},"
			 "\"properties\":{}}";
	cr_assert_eq(celery_envelope_decode(v1, strlen(v1), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(m.retries, 2);
	cr_assert_str_eq(m.task, "t");
	celery_msg_deinit(&m);
	static const char *const bad[] = {"[]",
					  "{}",
					  "{\"body\":\"!!\",\"properties\":{\"body_encoding\":\"base64\"}}",
					  "{\"body\":\"[]\",\"content-type\":\"application/x-python-serialize\"}",
					  "{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\"}}",
					  "not json"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(celery_envelope_decode(bad[i], strlen(bad[i]), &m, why, sizeof(why)), SOMA_ERR_INVALID,
			     "%s", bad[i]);
		cr_assert(why[0]);
		celery_msg_deinit(&m);
	}
}

Test(celery_wire, priority_bands_and_keys)
{
	static const int expect[10] = {0, 0, 0, 3, 3, 3, 6, 6, 6, 9};
	for (int p = 0; p < 10; p++)
		cr_assert_eq(celery_priority_band(p), expect[p], "priority %d", p);
	cr_assert_eq(celery_priority_band(-1), 0);
	cr_assert_eq(celery_priority_band(42), 9);
	char key[CELERY_KEY_MAX];
	cr_assert_eq(celery_queue_key("celery", 5, key, sizeof(key)), 9);
	cr_assert_eq(memcmp(key,
			    "celery\x06\x16"
			    "3",
			    9),
		     0);
	cr_assert_eq(celery_queue_key("celery", 0, key, sizeof(key)), 6);
	cr_assert_str_eq(key, "celery");
	cr_assert_eq(celery_key_queue_len("celery\x06\x16"
					  "9",
					  9),
		     6);
	cr_assert_eq(celery_key_queue_len("ops", 3), 3);
	cr_assert_eq(celery_queue_key("celery", 9, key, 4), 0);
}

Test(celery_wire, times)
{
	int64_t ms;
	cr_assert(celery_time_parse("2026-11-27T10:56:49.461034Z", &ms));
	cr_assert_eq(ms, 1795777009461LL);
	cr_assert(celery_time_parse("2026-11-27T10:56:49.461034", &ms)); /* naive = UTC */
	cr_assert_eq(ms, 1795777009461LL);
	cr_assert(celery_time_parse("2026-11-27T12:56:49.461+02:00", &ms));
	cr_assert_eq(ms, 1795777009461LL);
	cr_assert(celery_time_parse("2026-11-27 10:56", &ms));
	cr_assert_eq(ms, 1795776960000LL);
	cr_assert_not(celery_time_parse("2026-13-27T10:56:49Z", &ms));
	cr_assert_not(celery_time_parse("yesterday", &ms));
	cr_assert_not(celery_time_parse("2026-11-27T10:56:49Zjunk", &ms));
	char buf[CELERY_TIME_LEN];
	cr_assert_str_eq(celery_time_format(1795777009461LL, buf, sizeof(buf)), "2026-11-27T10:56:49.461000Z");
	cr_assert_str_eq(celery_date_done(1795777009461LL, buf, sizeof(buf)), "2026-11-27T10:56:49.461000");
}
