/*
 * otlp_json.c - the body of an OTLP/HTTP JSON export (otlp_encode and otlp_traces_url, otlp.h).
 *
 * DESIGN: a jansson tree of the batch, written by json_out. OTLP's JSON mapping (interop.md 6.1):
 * lowerCamelCase keys, trace and span ids as lowercase hex (not base64), enums as integers, 64-bit
 * integers (times, intValue) as decimal strings, parentSpanId left out on a root span. A name or
 * value that is not valid UTF-8 (a cut config string) is sent as "" rather than losing the batch.
 * Runs on the export thread only, never on a request's path. Pure functions, any thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "core/otlp.h"

static json_t *text(const char *s)
{
	json_t *v = json_string(s);
	return v ? v : json_string("");
}

static json_t *hex(const uint8_t *bytes, size_t n)
{
	char h[2 * 16 + 1];
	trace_hex(bytes, n, h);
	return json_string(h);
}

/* A 64-bit integer as OTLP JSON wants it: a decimal string. */
static json_t *decimal(uint64_t v, bool negative)
{
	char n[32];
	snprintf(n, sizeof(n), "%s%" PRIu64, negative ? "-" : "", v);
	return json_string(n);
}

/* {"key": key, "value": {kind: value}}; takes value. */
static json_t *key_value(const char *key, const char *kind, json_t *value)
{
	json_t *kv = json_object(), *any = json_object();
	json_object_set_new_nocheck(any, kind, value);
	json_object_set_new_nocheck(kv, "key", text(key));
	json_object_set_new_nocheck(kv, "value", any);
	return kv;
}

static json_t *span_json(const struct trace_span *s)
{
	json_t *o = json_object(), *attrs = json_array(), *status = json_object();
	json_object_set_new_nocheck(o, "traceId", hex(s->trace_id, 16));
	json_object_set_new_nocheck(o, "spanId", hex(s->span_id, 8));
	if (s->has_parent)
		json_object_set_new_nocheck(o, "parentSpanId", hex(s->parent_id, 8));
	json_object_set_new_nocheck(o, "name", text(s->name));
	json_object_set_new_nocheck(o, "kind", json_integer(s->kind));
	json_object_set_new_nocheck(o, "startTimeUnixNano", decimal(s->start_ns, false));
	json_object_set_new_nocheck(o, "endTimeUnixNano", decimal(s->end_ns, false));
	for (size_t i = 0; i < s->nattrs && i < TRACE_MAX_ATTRS; i++) {
		const struct trace_attr *a = &s->attrs[i];
		uint64_t mag = a->num < 0 ? 0 - (uint64_t)a->num : (uint64_t)a->num;
		json_array_append_new(attrs, a->is_int ? key_value(a->key, "intValue", decimal(mag, a->num < 0))
						       : key_value(a->key, "stringValue", text(a->str)));
	}
	json_object_set_new_nocheck(o, "attributes", attrs);
	json_object_set_new_nocheck(status, "code", json_integer(s->status));
	json_object_set_new_nocheck(o, "status", status);
	return o;
}

char *otlp_encode(const struct trace_span *spans, size_t n, const char *service_name, size_t *len)
{
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, span_json(&spans[i]));
	json_t *body =
		json_pack("{s:[{s:{s:[o]}, s:[{s:{s:s, s:s}, s:o}]}]}", "resourceSpans", "resource", "attributes",
			  key_value("service.name", "stringValue", text(service_name ? service_name : "")),
			  "scopeSpans", "scope", "name", "somaagent", "version", SOMA_VERSION, "spans", list);
	char *out = body ? json_out(body, 0, len) : NULL;
	json_decref(body);
	return out;
}

bool otlp_traces_url(const char *base, char *out, size_t cap)
{
	size_t n = strlen(base);
	const char *sep = n && base[n - 1] == '/' ? "" : "/";
	int k = snprintf(out, cap, "%s%sv1/traces", base, sep);
	return k > 0 && (size_t)k < cap;
}
