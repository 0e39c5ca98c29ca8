/*
 * otlp_json.c - the body of an OTLP/HTTP JSON export (otlp_encode and otlp_traces_url, otlp.h).
 *
 * DESIGN: written as text into one growing buffer, no JSON tree: every value we write is either
 * hex, digits or a short string escaped by log_json_escape. OTLP's JSON mapping (interop.md 6.1):
 * lowerCamelCase keys, trace and span ids as lowercase hex (not base64), enums as integers,
 * 64-bit integers (times, intValue) as decimal strings, parentSpanId omitted on a root span.
 * Pure functions, any thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/otlp.h"

struct obuf {
	char *p;    /* text (owned until handed out) */
	size_t len; /* bytes written */
	size_t cap; /* allocated */
	bool bad;   /* out of memory */
};

static void put(struct obuf *b, const char *s, size_t n)
{
	if (b->bad)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->bad = true;
			return;
		}
		b->p = p, b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void lit(struct obuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* s as a JSON string, quotes included (at most TRACE_ATTR_LEN-ish inputs: escaped on the stack). */
static void str(struct obuf *b, const char *s)
{
	char esc[6 * 256 + 1];
	size_t n = 0, len = strlen(s);
	log_json_escape(esc, sizeof(esc), &n, s, len < 256 ? len : 256);
	put(b, "\"", 1);
	put(b, esc, n);
	put(b, "\"", 1);
}

static void hex(struct obuf *b, const uint8_t *bytes, size_t n)
{
	char h[2 * 16 + 1];
	trace_hex(bytes, n, h);
	put(b, "\"", 1);
	put(b, h, 2 * n);
	put(b, "\"", 1);
}

/* A 64-bit integer as OTLP JSON wants it: a decimal string. */
static void int_str(struct obuf *b, int64_t v)
{
	char n[32];
	int k = snprintf(n, sizeof(n), "\"%" PRId64 "\"", v);
	put(b, n, (size_t)k);
}

static void uint_str(struct obuf *b, uint64_t v)
{
	char n[32];
	int k = snprintf(n, sizeof(n), "\"%" PRIu64 "\"", v);
	put(b, n, (size_t)k);
}

static void attributes(struct obuf *b, const struct trace_span *s)
{
	lit(b, ",\"attributes\":[");
	for (size_t i = 0; i < s->nattrs && i < TRACE_MAX_ATTRS; i++) {
		const struct trace_attr *a = &s->attrs[i];
		lit(b, i ? ",{\"key\":" : "{\"key\":");
		str(b, a->key);
		if (a->is_int) {
			lit(b, ",\"value\":{\"intValue\":");
			int_str(b, a->num);
		} else {
			lit(b, ",\"value\":{\"stringValue\":");
			str(b, a->str);
		}
		lit(b, "}}");
	}
	lit(b, "]");
}

static void span(struct obuf *b, const struct trace_span *s)
{
	char num[16];
	lit(b, "{\"traceId\":");
	hex(b, s->trace_id, 16);
	lit(b, ",\"spanId\":");
	hex(b, s->span_id, 8);
	if (s->has_parent) {
		lit(b, ",\"parentSpanId\":");
		hex(b, s->parent_id, 8);
	}
	lit(b, ",\"name\":");
	str(b, s->name);
	snprintf(num, sizeof(num), "%d", (int)s->kind);
	lit(b, ",\"kind\":");
	lit(b, num);
	lit(b, ",\"startTimeUnixNano\":");
	uint_str(b, s->start_ns);
	lit(b, ",\"endTimeUnixNano\":");
	uint_str(b, s->end_ns);
	attributes(b, s);
	snprintf(num, sizeof(num), "%d", (int)s->status);
	lit(b, ",\"status\":{\"code\":");
	lit(b, num);
	lit(b, "}}");
}

char *otlp_encode(const struct trace_span *spans, size_t n, const char *service_name, size_t *len)
{
	struct obuf b = {0};
	lit(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{"
		"\"stringValue\":");
	str(&b, service_name ? service_name : "somaagent");
	lit(&b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"somaagent\",\"version\":\"" SOMA_VERSION "\"},"
		"\"spans\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			lit(&b, ",");
		span(&b, &spans[i]);
	}
	lit(&b, "]}]}]}");
	if (b.bad) {
		free(b.p);
		return NULL;
	}
	if (len)
		*len = b.len;
	return b.p;
}

bool otlp_traces_url(const char *base, char *out, size_t cap)
{
	size_t n = strlen(base);
	const char *sep = n && base[n - 1] == '/' ? "" : "/";
	int k = snprintf(out, cap, "%s%sv1/traces", base, sep);
	return k > 0 && (size_t)k < cap;
}
