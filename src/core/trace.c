/*
 * trace.c - traceparent parsing and formatting, span ids, span records (see trace.h).
 *
 * DESIGN: no locks. The enabled flag is an atomic read once per would-be span; the id generator
 * and the current span are per thread. A finished span leaves this file by copy, through
 * otlp_enqueue (otlp.c), which never blocks.
 */
#include "core/trace.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "core/otlp.h"

static atomic_bool enabled;

bool trace_enabled(void)
{
	return atomic_load_explicit(&enabled, memory_order_relaxed);
}

void trace_set_enabled(bool on)
{
	atomic_store(&enabled, on);
}

/* ---- traceparent ------------------------------------------------------------------------------ */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* uppercase hex is invalid in a traceparent */
}

/* n bytes from 2n lowercase hex digits; false on any other character. */
static bool hex_bytes(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

bool trace_parse(const char *s, size_t len, struct trace_ctx *out)
{
	uint8_t version;
	memset(out, 0, sizeof(*out));
	if (!s || len < TRACEPARENT_LEN || !hex_bytes(s, &version, 1) || version == 0xff)
		return false;
	if (version == 0 ? len != TRACEPARENT_LEN : (len > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-'))
		return false;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return false;
	struct trace_ctx c = {0};
	if (!hex_bytes(s + 3, c.trace_id, 16) || !hex_bytes(s + 36, c.span_id, 8) || !hex_bytes(s + 53, &c.flags, 1))
		return false;
	if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
		return false;
	c.flags &= TRACE_FLAG_SAMPLED; /* other bits are sent as 0 */
	c.valid = true;
	*out = c;
	return true;
}

void trace_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

void trace_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags, char out[TRACEPARENT_LEN + 1])
{
	out[0] = '0', out[1] = '0', out[2] = '-';
	trace_hex(trace_id, 16, out + 3);
	out[35] = '-';
	trace_hex(span_id, 8, out + 36);
	out[52] = '-';
	trace_hex(&flags, 1, out + 53);
}

/* ---- ids and time ----------------------------------------------------------------------------- */

static __thread uint64_t rng[2];

static uint64_t rng_next(void)
{
	if (!rng[0] && !rng[1]) {
		if (ids_random_bytes(rng, sizeof(rng)) != SOMA_OK || (!rng[0] && !rng[1]))
			rng[0] = (uint64_t)(uintptr_t)&rng ^ 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
		rng[1] |= 1; /* xorshift128+ needs a non-zero state */
	}
	uint64_t s1 = rng[0];
	const uint64_t s0 = rng[1];
	rng[0] = s0;
	s1 ^= s1 << 23;
	rng[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
	return rng[1] + s0;
}

void trace_random_id(uint8_t *out, size_t n)
{
	do {
		for (size_t i = 0; i < n; i += 8) {
			uint64_t v = rng_next();
			size_t k = n - i < 8 ? n - i : 8;
			memcpy(out + i, &v, k);
		}
	} while (all_zero(out, n));
}

uint64_t trace_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- spans ------------------------------------------------------------------------------------- */

static void copy_cut(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap) {
		n = cap - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--; /* never cut inside a UTF-8 sequence */
	}
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

bool trace_span_start(struct trace_span *s, const struct trace_ctx *parent, const char *name, enum trace_kind kind)
{
	s->on = false;
	if (!trace_enabled())
		return false;
	s->on = true;
	s->kind = kind;
	s->status = TRACE_STATUS_UNSET;
	s->nattrs = 0;
	s->end_ns = 0;
	if (parent && parent->valid) {
		memcpy(s->trace_id, parent->trace_id, 16);
		memcpy(s->parent_id, parent->span_id, 8);
		s->has_parent = true;
		s->flags = parent->flags;
	} else {
		trace_random_id(s->trace_id, 16);
		s->has_parent = false;
		s->flags = TRACE_FLAG_SAMPLED;
	}
	trace_random_id(s->span_id, 8);
	copy_cut(s->name, sizeof(s->name), name);
	s->start_ns = trace_now_ns();
	return true;
}

bool trace_span_start_child(struct trace_span *s, const char *name, enum trace_kind kind)
{
	const struct trace_span *cur = trace_current();
	struct trace_ctx parent = {.valid = false};
	if (cur && cur->on) {
		memcpy(parent.trace_id, cur->trace_id, 16);
		memcpy(parent.span_id, cur->span_id, 8);
		parent.flags = cur->flags;
		parent.valid = true;
	}
	return trace_span_start(s, &parent, name, kind);
}

static struct trace_attr *attr_next(struct trace_span *s, const char *key)
{
	if (!s->on || s->nattrs >= TRACE_MAX_ATTRS)
		return NULL;
	struct trace_attr *a = &s->attrs[s->nattrs++];
	a->key = key;
	return a;
}

void trace_span_attr_str(struct trace_span *s, const char *key, const char *value)
{
	struct trace_attr *a = attr_next(s, key);
	if (a) {
		a->is_int = false;
		copy_cut(a->str, sizeof(a->str), value);
	}
}

void trace_span_attr_int(struct trace_span *s, const char *key, int64_t value)
{
	struct trace_attr *a = attr_next(s, key);
	if (a) {
		a->is_int = true;
		a->num = value;
	}
}

void trace_span_traceparent(const struct trace_span *s, char out[TRACEPARENT_LEN + 1])
{
	trace_format(s->trace_id, s->span_id, s->flags, out);
}

void trace_span_end(struct trace_span *s)
{
	if (!s || !s->on)
		return;
	s->end_ns = trace_now_ns();
	if (s->end_ns < s->start_ns)
		s->end_ns = s->start_ns; /* the wall clock stepped back */
	s->on = false;
	otlp_enqueue(s);
}

static __thread struct trace_span *current;

void trace_current_set(struct trace_span *s)
{
	current = s;
}

struct trace_span *trace_current(void)
{
	return current;
}
