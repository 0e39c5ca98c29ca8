/*
 * test_celery_pyjson.c - Celery messages and result metas as Python's json.dumps writes them:
 * \u0000 and lone surrogate escapes (core/json_py.c), read by both envelope readers alike (the
 * fast one leaves them to the jansson one); a message nobody can read still gives the delivery
 * tag it waits under in unacked (celery_envelope_tag).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "celery_same.h"
#include "core/json_py.h"
#include "queue/celery_wire.h"

#define FFFD "\xef\xbf\xbd"

/* text read by celery_envelope_decode as the jansson reader reads it; the fast reader either
 * declines it or reads it the same way. */
static void read_alike(const char *text, struct celery_msg *out)
{
	size_t len = strlen(text);
	struct celery_msg a, b;
	char wb[256] = "", wo[256] = "";
	bool scanned = celery_envelope_scan(text, len, &a);
	cr_assert_eq(celery_envelope_decode_tree(text, len, &b, wb, sizeof(wb)), SOMA_OK, "%s: %s", text, wb);
	cr_assert_eq(celery_envelope_decode(text, len, out, wo, sizeof(wo)), SOMA_OK, "%s: %s", text, wo);
	cr_assert_null(celery_msg_differs(out, &b), "%s", text);
	if (scanned)
		cr_assert_null(celery_msg_differs(&a, &b), "%s", text);
	cr_assert_eq(celery_msg_tree(out), SOMA_OK);
	cr_assert_null(celery_msg_differs(out, &b), "%s", text);
	celery_msg_deinit(&a);
	celery_msg_deinit(&b);
}

Test(celery_pyjson, nul_in_args_is_kept)
{
	/* base64 of [["a\u0000b"],{"k":"\u0000"},{}] (what kombu writes for soma.echo("a\x00b")) */
	static const char text[] = "{\"body\":\"W1siYVx1MDAwMGIiXSx7ImsiOiJcdTAwMDAifSx7fV0=\",\"headers\":{\"task\":"
				   "\"soma.echo\",\"id\":\"i\",\"argsrepr\":\"('a\\\\x00b',)\"},\"properties\":{"
				   "\"body_encoding\":\"base64\",\"delivery_tag\":\"tag-1\"}}";
	struct celery_msg m;
	read_alike(text, &m);
	json_t *a0 = json_array_get(m.args, 0);
	cr_assert_eq(json_string_length(a0), 3);
	cr_assert_eq(memcmp(json_string_value(a0), "a\0b", 3), 0);
	cr_assert_eq(json_string_length(json_object_get(m.kwargs, "k")), 1);
	cr_assert_str_eq(m.delivery_tag, "tag-1");
	char *dumped = json_dumps(m.args, JSON_COMPACT);
	cr_assert_str_eq(dumped, "[\"a\\u0000b\"]"); /* written back as Python reads it */
	free(dumped);
	celery_msg_deinit(&m);
}

Test(celery_pyjson, lone_surrogates_read_as_replacement_characters)
{
	/* raw body [["\ud800","x\udc00y","\ud83d\ude00","\\ud800"],{},{}]; an envelope header too */
	static const char text[] = "{\"body\":\"[[\\\"\\\\ud800\\\",\\\"x\\\\udc00y\\\",\\\"\\\\ud83d\\\\ude00\\\","
				   "\\\"\\\\\\\\ud800\\\"],{},{}]\",\"headers\":{\"task\":\"t\\ud800\",\"id\":\"i\","
				   "\"argsrepr\":\"\\u0000\\udbff\"}}";
	struct celery_msg m;
	read_alike(text, &m);
	cr_assert_str_eq(m.task, "t" FFFD);
	cr_assert_str_eq(json_string_value(json_array_get(m.args, 0)), FFFD);
	cr_assert_str_eq(json_string_value(json_array_get(m.args, 1)), "x" FFFD "y");
	cr_assert_str_eq(json_string_value(json_array_get(m.args, 2)), "\xf0\x9f\x98\x80");
	cr_assert_str_eq(json_string_value(json_array_get(m.args, 3)), "\\ud800"); /* an escaped backslash */
	cr_assert_eq(json_string_length(json_object_get(m.headers, "argsrepr")), 4);
	celery_msg_deinit(&m);
	/* (these were refused, with jansson's "invalid Unicode" reason) */
	static const char *const hdr[][2] = {
		{"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\udc00\",\"id\":\"i\"}}", "t" FFFD},
		{"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\ud800\\u0041\",\"id\":\"i\"}}", "t" FFFD "A"},
	};
	for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++) {
		read_alike(hdr[i][0], &m);
		cr_assert_str_eq(m.task, hdr[i][1]);
		celery_msg_deinit(&m);
	}
}

Test(celery_pyjson, a_name_holding_nul_is_refused_with_a_reason)
{
	static const char *const bad[] = {
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\\u0000x\",\"id\":\"i\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\\u0000\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"soma_tenant\":\"a\\u0000b\"}}",
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"},\"properties\":{\"delivery_tag\":"
		"\"x\\u0000\"}}",
		/* a group id (chord keys), and a chain link's task id (its result key), cut short */
		"{\"body\":\"[[],{},{}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\",\"group\":\"g\\u0000h\"}}",
		"{\"body\":\"[[],{},{\\\"chain\\\":[{\\\"task\\\":\\\"t\\\",\\\"options\\\":{\\\"task_id\\\":"
		"\\\"a\\\\u0000b\\\"}}]}]\",\"headers\":{\"task\":\"t\",\"id\":\"i\"}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct celery_msg a, b;
		char why[256] = "";
		cr_assert_not(celery_envelope_scan(bad[i], strlen(bad[i]), &a));
		cr_assert_eq(celery_envelope_decode(bad[i], strlen(bad[i]), &b, why, sizeof(why)), SOMA_ERR_INVALID,
			     "%s", bad[i]);
		cr_assert(strstr(why, "U+0000"), "%s", why);
		celery_msg_deinit(&a);
		celery_msg_deinit(&b);
	}
}

Test(celery_pyjson, the_tag_of_an_unreadable_message)
{
	char tag[72];
	static const char bad[] =
		"{\"body\":\"%%\",\"x\":\"\\ud800\",\"properties\":{\"delivery_tag\" : \"t-9\"}, oops";
	cr_assert_eq(celery_envelope_tag(bad, sizeof(bad) - 1, tag, sizeof(tag)), 3);
	cr_assert_str_eq(tag, "t-9");
	static const char later[] = "{\"a\":\"\\\"delivery_tag\\\"\",\"delivery_tag\":\"t-1\"}";
	cr_assert_eq(celery_envelope_tag(later, sizeof(later) - 1, tag, sizeof(tag)), 3);
	cr_assert_str_eq(tag, "t-1");
	cr_assert_eq(celery_envelope_tag("{\"delivery_tag\":1}", 18, tag, sizeof(tag)), 0);
	cr_assert_eq(celery_envelope_tag("", 0, tag, sizeof(tag)), 0);
}

Test(celery_pyjson, result_meta_with_nul_and_surrogates)
{
	static const char meta[] = "{\"status\":\"SUCCESS\",\"result\":[\"a\\u0000b\",\"\\udc00\"],\"task_id\":\"x\"}";
	json_t *v = json_py_load(meta, sizeof(meta) - 1, 0, NULL);
	cr_assert_not_null(v);
	cr_assert_eq(json_string_length(json_array_get(json_object_get(v, "result"), 0)), 3);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(v, "result"), 1)), FFFD);
	json_decref(v);
	char text[] = "\"\\ud800\\ud800\\udc00\\\\udc00\\u00e9\\ud800";
	cr_assert_eq(json_py_fix_surrogates(text, strlen(text)), 2);
	cr_assert_str_eq(text, "\"\\ufffd\\ud800\\udc00\\\\udc00\\u00e9\\ufffd");
}

Test(json_py, exc_repr_as_python_prints_it)
{
	char buf[128];
	json_t *args = json_pack("[s, i, s, s]", "m5", 2, "it's", "a\\b\n");
	json_py_exc_repr("ValueError", args, buf, sizeof(buf));
	cr_assert_str_eq(buf, "ValueError('m5', 2, \"it's\", 'a\\\\b\\n')");
	json_decref(args);
	json_t *one = json_string("evfail");
	json_py_exc_repr(NULL, one, buf, sizeof(buf));
	cr_assert_str_eq(buf, "Exception('evfail')");
	json_py_exc_repr("Exception", NULL, buf, sizeof(buf));
	cr_assert_str_eq(buf, "Exception()");
	char small[16];
	json_py_exc_repr("Exception", one, small, sizeof(small)); /* cut, never past the buffer */
	cr_assert(strlen(small) < sizeof(small));
	json_decref(one);
}
