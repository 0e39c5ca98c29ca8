/*
 * test_otlp_json.c - the OTLP/HTTP JSON body (src/core/otlp_json.c, interop.md 6.1), read back with
 * jansson: lowerCamelCase keys, hex ids of the right length, enums as integers, 64-bit integers as
 * decimal strings, parentSpanId only on child spans, service.name as the resource attribute; and
 * the export URL of a base endpoint.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/otlp.h"

static struct trace_span make(bool parent, const char *name)
{
	struct trace_span s = {.on = false, .kind = TRACE_KIND_SERVER, .status = TRACE_STATUS_ERROR};
	for (int i = 0; i < 16; i++)
		s.trace_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 8; i++) {
		s.span_id[i] = (uint8_t)(0x10 + i);
		s.parent_id[i] = (uint8_t)(0xf0 + i);
	}
	s.has_parent = parent;
	s.start_ns = 1544712660000000000ull;
	s.end_ns = 18446744073709551615ull; /* the largest fixed64: exact only as a string */
	snprintf(s.name, sizeof(s.name), "%s", name);
	s.attrs[0] = (struct trace_attr){.key = "http.route", .is_int = false};
	snprintf(s.attrs[0].str, sizeof(s.attrs[0].str), "/v1/\"q\"\n");
	s.attrs[1] = (struct trace_attr){.key = "http.response.status_code", .is_int = true, .num = -9007199254740993};
	s.nattrs = 2;
	return s;
}

Test(otlp_json, encodes_the_export_request)
{
	struct trace_span spans[2] = {make(true, "POST /v1/session/message"), make(false, "root \"span\"")};
	size_t len = 0;
	char *text = otlp_encode(spans, 2, "svc-\"a\"", &len);
	cr_assert_not_null(text);
	cr_assert_eq(len, strlen(text));
	json_error_t e;
	json_t *root = json_loads(text, 0, &e);
	cr_assert_not_null(root, "%s: %s", e.text, text);
	json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
	json_t *attr = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(attr, "key")), "service.name");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(attr, "value"), "stringValue")),
			 "svc-\"a\"");
	json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "somaagent");
	json_t *list = json_object_get(ss, "spans");
	cr_assert_eq(json_array_size(list), 2);
	json_t *s0 = json_array_get(list, 0), *s1 = json_array_get(list, 1);
	cr_assert_str_eq(json_string_value(json_object_get(s0, "traceId")), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
	cr_assert_str_eq(json_string_value(json_object_get(s0, "spanId")), "1011121314151617");
	cr_assert_str_eq(json_string_value(json_object_get(s0, "parentSpanId")), "f0f1f2f3f4f5f6f7");
	cr_assert_null(json_object_get(s1, "parentSpanId"), "a root span has no parentSpanId");
	cr_assert_str_eq(json_string_value(json_object_get(s0, "name")), "POST /v1/session/message");
	cr_assert_str_eq(json_string_value(json_object_get(s1, "name")), "root \"span\"");
	cr_assert(json_is_integer(json_object_get(s0, "kind")));
	cr_assert_eq(json_integer_value(json_object_get(s0, "kind")), 2);
	cr_assert_str_eq(json_string_value(json_object_get(s0, "startTimeUnixNano")), "1544712660000000000");
	cr_assert_str_eq(json_string_value(json_object_get(s0, "endTimeUnixNano")), "18446744073709551615");
	json_t *a = json_object_get(s0, "attributes");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(a, 0), "key")), "http.route");
	cr_assert_str_eq(
		json_string_value(json_object_get(json_object_get(json_array_get(a, 0), "value"), "stringValue")),
		"/v1/\"q\"\n");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(a, 1), "value"), "intValue")),
			 "-9007199254740993");
	json_t *status = json_object_get(s0, "status");
	cr_assert(json_is_integer(json_object_get(status, "code")));
	cr_assert_eq(json_integer_value(json_object_get(status, "code")), 2);
	cr_assert_null(strstr(text, "_id"), "no snake_case keys: %s", text);
	json_decref(root);
	free(text);
}

Test(otlp_json, encodes_an_empty_batch)
{
	char *text = otlp_encode(NULL, 0, "s", NULL);
	json_t *root = json_loads(text, 0, NULL);
	cr_assert_not_null(root, "%s", text);
	json_decref(root);
	free(text);
}

Test(otlp_json, appends_v1_traces_to_the_base_url)
{
	char url[64];
	cr_assert(otlp_traces_url("http://127.0.0.1:4318", url, sizeof(url)));
	cr_assert_str_eq(url, "http://127.0.0.1:4318/v1/traces");
	cr_assert(otlp_traces_url("http://c:4318/otel/", url, sizeof(url)));
	cr_assert_str_eq(url, "http://c:4318/otel/v1/traces");
	cr_assert_not(otlp_traces_url("http://a-very-long-host-name-that-does-not-fit:4318", url, 32));
}

Test(otlp_json, text_that_is_not_utf8_is_sent_empty_not_lost)
{
	struct trace_span s = make(false, "ok");
	snprintf(s.name, sizeof(s.name), "bad \xff name");
	char *text = otlp_encode(&s, 1, "svc\xc3", NULL);
	cr_assert_not_null(text, "the batch is still encoded");
	json_t *root = json_loads(text, 0, NULL);
	cr_assert_not_null(root, "%s", text);
	json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
	json_t *sp = json_array_get(json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(sp, "name")), "");
	cr_assert_str_eq(json_string_value(json_object_get(sp, "spanId")), "1011121314151617");
	json_decref(root);
	free(text);
}
