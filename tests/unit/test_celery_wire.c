/*
 * test_celery_wire.c - the Celery envelope encoder/decoder, band keys and times
 * (src/queue/celery_wire.c), against the bytes observed from Celery 5.2.6 / kombu 5.2.4
 * (shared/reference/interop.md section 1.2).
 */
#include <criterion/criterion.h>
#include <stdio.h>
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
	cr_assert_null(m.embed); /* an embed of nulls asks for nothing */
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

/* ---- the text writers of redis_publish.c against the jansson builders they replaced ---------- */

#include <unistd.h>

#include "core/clock.h"
#include "core/config.h"
#include "queue/queue_int.h"

static json_t *ref_time_or_null(int64_t ms)
{
	char buf[CELERY_TIME_LEN];
	return ms > 0 ? json_string(celery_time_format(ms, buf, sizeof(buf))) : json_null();
}

static json_t *ref_number_or_null(const json_t *v)
{
	return json_is_number(v) && json_number_value(v) > 0 ? json_real(json_number_value(v)) : json_null();
}

/* The envelope as json_pack + celery_envelope_encode built it before the text writer. */
static char *ref_envelope(const json_t *task, int64_t retries, int64_t eta_ms)
{
	char origin[96], host[64] = "host";
	gethostname(host, sizeof(host) - 1);
	snprintf(origin, sizeof(origin), "soma%d@%s", (int)getpid(), host);
	const char *id = json_string_value(json_object_get(task, "id"));
	const char *queue = json_string_value(json_object_get(task, "queue"));
	json_t *payload = json_object_get(task, "payload"), *opts = json_object_get(payload, "options");
	json_t *args = json_object_get(payload, "args"), *kwargs = json_object_get(payload, "kwargs");
	json_t *extra = json_is_object(payload) ? json_copy(payload) : json_object();
	json_object_del(extra, "args");
	json_object_del(extra, "kwargs");
	json_object_del(extra, "options");
	json_object_del(extra, "celery");
	json_t *cel = json_object_get(payload, "celery"), *embed = json_object_get(cel, "embed");
	json_t *group = json_object_get(cel, "group"), *gindex = json_object_get(cel, "group_index");
	const char *root = json_string_value(json_object_get(cel, "root_id"));
	int priority = (int)json_integer_value(json_object_get(opts, "priority"));
	char *argsrepr = args ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	char *kwargsrepr = kwargs ? json_dumps(kwargs, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_t *body = json_pack(
		"[o, o, o]", json_is_array(args) ? json_incref(args) : json_array(),
		json_is_object(kwargs) ? json_incref(kwargs) : json_object(),
		json_is_object(embed) ? json_incref(embed)
				      : json_pack("{s:n, s:n, s:n, s:n}", "callbacks", "errbacks", "chain", "chord"));
	json_t *headers = json_pack(
		"{s:s, s:s, s:s, s:n, s:o, s:o, s:n, s:n, s:I, s:[o, o], s:s, s:n, s:s, s:s, s:s, s:b, s:s?, s:s?, "
		"s:I}",
		"lang", "c", "task", json_string_value(json_object_get(task, "name")), "id", id, "shadow", "eta",
		ref_time_or_null(eta_ms), "expires",
		ref_time_or_null(json_integer_value(json_object_get(opts, "expires_ms"))), "group", "group_index",
		"retries", (json_int_t)retries, "timelimit", ref_number_or_null(json_object_get(opts, "time_limit")),
		ref_number_or_null(json_object_get(opts, "soft_time_limit")), "root_id", id, "parent_id", "argsrepr",
		argsrepr ? argsrepr : "[]", "kwargsrepr", kwargsrepr ? kwargsrepr : "{}", "origin", origin,
		"ignore_result", 0, "soma_tenant", json_string_value(json_object_get(task, "tenant")), "soma_session",
		json_string_value(json_object_get(task, "session_id")), "soma_max_retries",
		(json_int_t)(json_object_get(task, "max_retries")
				     ? json_integer_value(json_object_get(task, "max_retries"))
				     : cfg_int(CFG_QUEUE_MAX_RETRIES)));
	if (headers && json_object_size(extra))
		json_object_set(headers, "soma_payload", extra);
	if (headers && json_is_string(group)) {
		json_object_set(headers, "group", group);
		json_object_set(headers, "group_index", json_is_integer(gindex) ? gindex : json_null());
	}
	if (headers && root)
		json_object_set_new(headers, "root_id", json_string(root));
	json_t *props = json_pack("{s:s, s:s, s:i, s:{s:s, s:s}, s:i}", "correlation_id", id, "reply_to", "",
				  "delivery_mode", 2, "delivery_info", "exchange", "", "routing_key", queue, "priority",
				  priority < 0	 ? 0
				  : priority > 9 ? 9
						 : priority);
	char *text = body && headers && props ? celery_envelope_encode(body, headers, props) : NULL;
	free(argsrepr);
	free(kwargsrepr);
	json_decref(extra);
	json_decref(body);
	json_decref(headers);
	json_decref(props);
	return text;
}

/* text with its fresh delivery tag (the last property) replaced by TAG. */
static char *fix_tag(char *text)
{
	if (!text)
		return NULL;
	char *tag = strstr(text, "\"delivery_tag\":\"");
	cr_assert(tag);
	tag += strlen("\"delivery_tag\":\"");
	cr_assert_eq(strlen(tag), 36 + 3);
	memcpy(tag, "TAG\"}}", 7);
	return text;
}

static void same_envelope(const char *task_json, int64_t retries, int64_t eta_ms)
{
	json_error_t e;
	json_t *task = json_loads(task_json, 0, &e);
	cr_assert(task, "%s: %s", task_json, e.text);
	char key[CELERY_KEY_MAX];
	char *want = fix_tag(ref_envelope(task, retries, eta_ms));
	char *got = fix_tag(redis_task_envelope(task, retries, eta_ms, key));
	cr_assert(want && got, "%s", task_json);
	cr_assert_str_eq(got, want);
	free(want);
	free(got);
	json_decref(task);
}

Test(celery_wire, the_task_envelope_is_byte_for_byte_what_jansson_built)
{
	same_envelope("{\"id\":\"a1\",\"name\":\"soma.noop\",\"queue\":\"celery\",\"tenant\":\"default\","
		      "\"payload\":{\"args\":[],\"kwargs\":{}},\"max_retries\":3}",
		      0, 0);
	same_envelope("{\"id\":\"a2\",\"name\":\"soma.echo\",\"queue\":\"q\\u00e9\",\"session_id\":\"s\","
		      "\"payload\":{\"args\":[1,\"x\\\"\\\\\\n\\u0001\\u00e9\\ud83d\\ude00/\",2.5,null],"
		      "\"kwargs\":{\"k\\t\":{\"n\":[true,false]}},\"subject\":\"u\\u2028\",\"scopes\":\"a b\","
		      "\"options\":{\"priority\":7,\"expires_ms\":1764273499123,\"time_limit\":30,"
		      "\"soft_time_limit\":2.25}},\"attempts\":0,\"requeued\":false}",
		      4, 1764273500001);
	same_envelope("{\"id\":\"a3\",\"name\":\"t\",\"queue\":\"celery\",\"tenant\":\"t1\",\"payload\":{\"args\":[3],"
		      "\"celery\":{\"group\":\"g1\",\"group_index\":2,\"root_id\":\"r1\",\"embed\":{\"callbacks\":null,"
		      "\"errbacks\":null,\"chain\":[{\"task\":\"next\"}],\"chord\":null}},\"ev\":[1],"
		      "\"options\":{\"priority\":-3}}}",
		      0, 0);
	same_envelope("{\"id\":\"a4\",\"name\":\"t\",\"queue\":\"celery\",\"payload\":{\"args\":{\"not\":\"a list\"},"
		      "\"kwargs\":[1],\"celery\":{\"group\":\"g\",\"group_index\":\"x\"},\"options\":{\"priority\":12,"
		      "\"time_limit\":-1}}}",
		      1, 0);
	same_envelope("{\"id\":\"a5\",\"name\":\"t\",\"queue\":\"celery\",\"payload\":7}", 0, 0);
	json_t *noname = json_pack("{s:s, s:s}", "id", "x", "queue", "celery");
	char key[CELERY_KEY_MAX];
	cr_assert_null(redis_task_envelope(noname, 0, 0, key));
	json_decref(noname);
}

static char *ref_meta(const char *task_id, const char *status, const json_t *result, const char *exc_type,
		      const char *exc_module, const char *message, const json_t *extra, const char *done)
{
	bool ready = strcmp(status, "RETRY") != 0;
	json_t *res = exc_type ? json_pack("{s:s, s:[s], s:s}", "exc_type", exc_type, "exc_message",
					   message ? message : "", "exc_module", exc_module ? exc_module : "builtins")
			       : json_incref(result ? (json_t *)result : json_null());
	char tb[1200];
	snprintf(tb, sizeof(tb), "%s: %s\n", exc_type ? exc_type : "", message ? message : "");
	json_t *meta = json_pack("{s:s, s:o, s:o, s:[], s:o, s:s}", "status", status, "result", res ? res : json_null(),
				 "traceback", exc_type && res ? json_string(tb) : json_null(), "children", "date_done",
				 ready ? json_string(done) : json_null(), "task_id", task_id);
	if (meta && extra)
		json_object_update(meta, (json_t *)extra);
	char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	json_decref(meta);
	return text;
}

static void same_meta(const char *status, const json_t *result, const char *exc_type, const char *message,
		      const json_t *extra)
{
	char *got = redis_meta_text("id-1", status, result, exc_type, "celery.exceptions", message, extra);
	cr_assert(got);
	/* the date_done written, handed to the reference */
	char done[CELERY_TIME_LEN] = "";
	const char *d = strstr(got, "\"date_done\":\"");
	if (d)
		snprintf(done, sizeof(done), "%.26s", d + strlen("\"date_done\":\""));
	char *want = ref_meta("id-1", status, result, exc_type, "celery.exceptions", message, extra, done);
	cr_assert_str_eq(got, want);
	free(got);
	free(want);
}

Test(celery_wire, the_result_meta_is_byte_for_byte_what_jansson_built)
{
	json_t *extra = json_pack("{s:s, s:i}", "name", "soma.noop", "retries", 2);
	json_t *result = json_pack("{s:[i, f, s], s:n}", "a\"b", 1, 0.1, "\xc3\xa9\n", "z");
	same_meta("SUCCESS", NULL, NULL, NULL, extra);
	same_meta("SUCCESS", result, NULL, NULL, extra);
	same_meta("SUCCESS", result, NULL, NULL, NULL);
	same_meta("RETRY", NULL, "Retry", "boom \"quoted\" \x01", extra);
	same_meta("FAILURE", NULL, "Exception", "cut \xc3", extra);	     /* not UTF-8: result null */
	same_meta("FAILURE", NULL, "Exception", "lead \xf5\x80\x80", extra); /* 0xF5 leads nothing: not UTF-8 */
	same_meta("REVOKED", NULL, "TaskRevokedError", NULL, NULL);
	json_decref(extra);
	json_decref(result);
}

Test(celery_wire, a_traceparent_rides_as_a_header_only_when_present)
{
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	json_t *task = json_pack("{s:s, s:s, s:s, s:{s:[], s:s, s:s}}", "id", "t1", "name", "conversation.process",
				 "queue", "conversation", "payload", "args", "subject", "u", "traceparent", tp);
	char key[CELERY_KEY_MAX], why[256];
	char *text = redis_task_envelope(task, 0, 0, key);
	cr_assert_not_null(text);
	struct celery_msg m;
	cr_assert_eq(celery_envelope_decode(text, strlen(text), &m, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_str_eq(m.traceparent, tp);
	cr_assert_str_eq(json_string_value(json_object_get(m.payload, "subject")), "u");
	cr_assert_null(json_object_get(m.payload, "traceparent"), "not in soma_payload as well");
	celery_msg_deinit(&m);
	free(text);
	json_object_del(json_object_get(task, "payload"), "traceparent");
	text = redis_task_envelope(task, 0, 0, key);
	cr_assert_null(strstr(text, "traceparent"), "no header without a trace: %s", text);
	free(text);
	json_decref(task);
}
