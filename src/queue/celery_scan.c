/*
 * celery_scan.c - the fast reader of a Celery protocol v2 envelope (celery_envelope_scan in
 * celery_wire.h): the fields a worker needs, read straight from the text, without the jansson
 * tree of the envelope's ~50 values (building and freeing that tree per message was half of a
 * worker's CPU).
 *
 * DESIGN: two steps over the text, and one allocation for the strings kept.
 * 1. check: the whole text is validated as JSON at least as strictly as jansson's json_loadb
 *    reads it (grammar, UTF-8, escapes and surrogate pairs, no \u0000, no control character in a
 *    string, integers that fit 18 digits, reals without an exponent, nesting up to SCAN_DEPTH);
 * 2. read: on text known good, a light walk over the members of the envelope, its headers,
 *    properties and delivery_info, and the base64-decoded body [args, kwargs, embed]. A key seen
 *    twice counts its last value, as in jansson's objects.
 * The reader says only "read" or "not mine". Whatever it does not read exactly as the jansson
 * reader (celery_wire.c) does is left to that reader, which accepts it or says why not: a text
 * that fails the check, a v1 or non-string body, a typed {"__type__", "__value__"} object where a
 * header is read (untyping could change it), an escaped key, a compression header, an unknown
 * content type, a message without task or id. Malformed messages are thus refused by one reader
 * with one set of reasons; the unit tests and the fuzz harness hold both to the same reading.
 * args, kwargs, a non-empty embed and soma_payload are still handed out as jansson values,
 * parsed from their own spans and untyped ([] and {} without parsing).
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/celery_wire.h"

#define SCAN_DEPTH    64   /* deeper nesting is left to jansson (its limit is 2048) */
#define SCAN_BODY_BUF 4096 /* bodies up to this size are decoded on the stack */

struct span {
	const char *p; /* the value's first byte, NULL when absent */
	size_t n;      /* its length */
};

/* ---- 1. check -------------------------------------------------------------------------------- */

static const char *ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Four hex digits at p (before e) into *u. */
static bool hex4(const char *p, const char *e, uint32_t *u)
{
	if (e - p < 4)
		return false;
	*u = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return false;
		*u = *u << 4 | (uint32_t)h;
	}
	return true;
}

/* Length of the valid UTF-8 sequence at s (lead byte >= 0x80), or 0: what jansson accepts
 * (no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t left)
{
	size_t n = s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3 : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
	if (n == 0 || n > left)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	uint32_t cp = n == 2   ? (s[0] & 0x1Fu) << 6 | (s[1] & 0x3Fu)
		      : n == 3 ? (s[0] & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu)
			       : (s[0] & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
	bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
	return overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : n;
}

/* The string at p ('"'): its end, or NULL. */
static const char *check_string(const char *p, const char *e)
{
	for (p++; p < e;) {
		unsigned char c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c >= 0x80) {
			size_t k = utf8_len((const unsigned char *)p, (size_t)(e - p));
			if (!k)
				return NULL;
			p += k;
			continue;
		}
		if (c != '\\') {
			p++;
			continue;
		}
		if (++p == e)
			return NULL;
		if (*p && strchr("\"\\/bfnrt", *p)) {
			p++;
			continue;
		}
		uint32_t u, lo;
		if (*p != 'u' || !hex4(p + 1, e, &u) || u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
			return NULL;
		p += 5;
		if (u >= 0xD800 && u <= 0xDBFF) { /* a high surrogate: its low half must follow */
			if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
				return NULL;
			p += 6;
		}
	}
	return NULL;
}

static bool digit(const char *p, const char *e)
{
	return p < e && *p >= '0' && *p <= '9';
}

/* A number jansson reads without a range error: an integer of at most 18 digits, or a real
 * without exponent of fewer than 300 characters. */
static const char *check_number(const char *p, const char *e)
{
	const char *s = p;
	if (p < e && *p == '-')
		p++;
	if (!digit(p, e))
		return NULL;
	if (*p == '0' && digit(p + 1, e))
		return NULL;
	while (digit(p, e))
		p++;
	bool real = p < e && *p == '.';
	if (real) {
		if (!digit(++p, e))
			return NULL;
		while (digit(p, e))
			p++;
	}
	if (p < e && (*p == 'e' || *p == 'E'))
		return NULL;
	return p - s > (real ? 300 : 18 + (*s == '-')) ? NULL : p;
}

static const char *check_lit(const char *p, const char *e, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

static const char *check_value(const char *p, const char *e, int depth);

/* An object or array at p; its end, or NULL. */
static const char *check_container(const char *p, const char *e, int depth)
{
	char close = *p == '{' ? '}' : ']';
	if (depth > SCAN_DEPTH)
		return NULL;
	p = ws(p + 1, e);
	if (p < e && *p == close)
		return p + 1;
	for (;;) {
		if (close == '}') {
			if (p >= e || *p != '"' || !(p = check_string(p, e)))
				return NULL;
			p = ws(p, e);
			if (p >= e || *p++ != ':')
				return NULL;
		}
		if (!(p = check_value(p, e, depth + 1)))
			return NULL;
		p = ws(p, e);
		if (p < e && *p == ',') {
			p = ws(p + 1, e);
			continue;
		}
		return p < e && *p == close ? p + 1 : NULL;
	}
}

static const char *check_value(const char *p, const char *e, int depth)
{
	p = ws(p, e);
	if (p >= e)
		return NULL;
	switch (*p) {
	case '{':
	case '[':
		return check_container(p, e, depth);
	case '"':
		return check_string(p, e);
	case 't':
		return check_lit(p, e, "true");
	case 'f':
		return check_lit(p, e, "false");
	case 'n':
		return check_lit(p, e, "null");
	default:
		return check_number(p, e);
	}
}

/* The whole text is one JSON value (an object or array unless any), nothing after it. */
static bool check_text(const char *p, size_t len, bool any)
{
	const char *e = p + len, *s = ws(p, e);
	if (s == e || (!any && *s != '{' && *s != '['))
		return false;
	const char *end = check_value(s, e, 0);
	return end && ws(end, e) == e;
}

/* ---- 2. read (the text is valid JSON from here on) ------------------------------------------ */

/* The end of the valid value at p. */
static const char *skip(const char *p)
{
	if (*p == '"') {
		for (p++; *p != '"'; p++)
			p += *p == '\\';
		return p + 1;
	}
	if (*p != '{' && *p != '[') {
		while (*p == '-' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z'))
			p++;
		return p;
	}
	int depth = 0;
	do {
		if (*p == '"')
			p = skip(p);
		else
			depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']'), p++;
	} while (depth > 0);
	return p;
}

/* Members of an object, or elements of an array: *p starts at the '{' / '[' (first call) or
 * after the previous item. key (objects) is the raw text inside the quotes. */
static bool next_item(const char **p, const char *e, bool object, struct span *key, struct span *val)
{
	const char *q = ws(*p, e);
	if (*q == '{' || *q == '[' || *q == ',')
		q = ws(q + 1, e);
	if (*q == '}' || *q == ']')
		return false;
	if (object) {
		const char *end = skip(q);
		key->p = q + 1, key->n = (size_t)(end - q - 2);
		q = ws(ws(end, e) + 1, e);
	}
	val->p = q;
	q = skip(q);
	val->n = (size_t)(q - val->p);
	*p = q;
	return true;
}

struct want {
	const char *name; /* a key */
	size_t at;	  /* offset of its span in struct fields */
};

/* The spans of an object's wanted members (the last of a key seen twice). False when a key is
 * escaped: it could spell a wanted one. */
static bool members(struct span obj, const struct want *w, size_t nw, void *fields)
{
	const char *p = obj.p, *e = obj.p + obj.n;
	struct span k, v;
	while (next_item(&p, e, true, &k, &v)) {
		if (memchr(k.p, '\\', k.n))
			return false;
		for (size_t i = 0; i < nw; i++)
			if (strlen(w[i].name) == k.n && memcmp(w[i].name, k.p, k.n) == 0)
				*(struct span *)((char *)fields + w[i].at) = v;
	}
	return true;
}

static bool is(struct span v, char c)
{
	return v.p && *v.p == c;
}

/* The string value v unescaped into *out (advanced past its NUL); NULL when v is not a string. */
static const char *take_str(struct span v, char **out)
{
	if (!is(v, '"'))
		return NULL;
	char *o = *out, *start = o;
	for (size_t i = 1; i + 1 < v.n; i++) {
		if (v.p[i] != '\\') {
			*o++ = v.p[i];
			continue;
		}
		char c = v.p[++i];
		const char *simple = strchr("b\bf\fn\nr\rt\t", c);
		if (c != 'u') {
			*o++ = simple ? simple[1] : c; /* \" \\ \/ are themselves */
			continue;
		}
		uint32_t u = 0, lo = 0;
		hex4(v.p + i + 1, v.p + v.n, &u);
		i += 4;
		if (u >= 0xD800 && u <= 0xDBFF) {
			hex4(v.p + i + 3, v.p + v.n, &lo);
			u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
			i += 6;
		}
		if (u < 0x80) {
			*o++ = (char)u;
		} else if (u < 0x800) {
			*o++ = (char)(0xC0 | u >> 6), *o++ = (char)(0x80 | (u & 0x3F));
		} else if (u < 0x10000) {
			*o++ = (char)(0xE0 | u >> 12), *o++ = (char)(0x80 | (u >> 6 & 0x3F));
			*o++ = (char)(0x80 | (u & 0x3F));
		} else {
			*o++ = (char)(0xF0 | u >> 18), *o++ = (char)(0x80 | (u >> 12 & 0x3F));
			*o++ = (char)(0x80 | (u >> 6 & 0x3F)), *o++ = (char)(0x80 | (u & 0x3F));
		}
	}
	*o++ = '\0';
	*out = o;
	return start;
}

/* json_integer_value of v: an integer's value, else 0. */
static int64_t int_of(struct span v)
{
	if (!v.p || !(*v.p == '-' || (*v.p >= '0' && *v.p <= '9')) || memchr(v.p, '.', v.n))
		return 0;
	return strtoll(v.p, NULL, 10);
}

/* json_number_value of v: a number's value, else 0. */
static double num_of(struct span v)
{
	return v.p && (*v.p == '-' || (*v.p >= '0' && *v.p <= '9')) ? strtod(v.p, NULL) : 0.0;
}

static bool is_int(struct span v)
{
	return v.p && (*v.p == '-' || (*v.p >= '0' && *v.p <= '9')) && !memchr(v.p, '.', v.n);
}

static bool equals(struct span v, const char *lit)
{
	size_t n = strlen(lit);
	return v.p && v.n == n + 2 && *v.p == '"' && memcmp(v.p + 1, lit, n) == 0;
}

/* ---- the envelope ---------------------------------------------------------------------------- */

#define AT(f) offsetof(struct fields, f)

struct fields {
	struct span body, ctype, headers, props;			   /* envelope */
	struct span task, id, retries, eta, expires, timelimit, compression; /* headers */
	struct span payload, tenant, session, max_retries;		   /* our headers */
	struct span corr, tag, prio, benc, dinfo;			   /* properties */
	struct span rk, exch;						   /* delivery_info */
};

static const struct want top[] = {
	{"body", AT(body)}, {"content-type", AT(ctype)}, {"headers", AT(headers)}, {"properties", AT(props)}};
static const struct want hdr[] = {{"task", AT(task)},
				  {"id", AT(id)},
				  {"retries", AT(retries)},
				  {"eta", AT(eta)},
				  {"expires", AT(expires)},
				  {"timelimit", AT(timelimit)},
				  {"compression", AT(compression)},
				  {"soma_payload", AT(payload)},
				  {"soma_tenant", AT(tenant)},
				  {"soma_session", AT(session)},
				  {"soma_max_retries", AT(max_retries)}};
static const struct want prop[] = {{"correlation_id", AT(corr)},
				   {"delivery_tag", AT(tag)},
				   {"priority", AT(prio)},
				   {"body_encoding", AT(benc)},
				   {"delivery_info", AT(dinfo)}};
static const struct want dinfo[] = {{"routing_key", AT(rk)}, {"exchange", AT(exch)}};

/* The header values read here: a typed object among them is left to the jansson reader. */
static bool plain_headers(const struct fields *f)
{
	const struct span *v[] = {&f->task, &f->id, &f->retries, &f->eta, &f->expires, &f->timelimit,
				  &f->tenant, &f->session, &f->max_retries};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (is(*v[i], '{'))
			return false;
	if (is(f->timelimit, '[')) {
		const char *p = f->timelimit.p, *e = p + f->timelimit.n;
		struct span k, x;
		while (next_item(&p, e, false, &k, &x))
			if (is(x, '{'))
				return false;
	}
	return true;
}

/* An array or object of the body as jansson reads and untypes it; [] / {} when it is not one. */
static json_t *body_value(struct span v, bool array)
{
	json_t *out = NULL;
	if (v.p && (*v.p == '[' || *v.p == '{')) {
		const char *in = ws(v.p + 1, v.p + v.n);
		if (*in != ']' && *in != '}')
			out = celery_json_untype(json_loadb(v.p, v.n, 0, NULL));
	}
	if (array ? json_is_array(out) : json_is_object(out))
		return out;
	json_decref(out);
	return array ? json_array() : json_object();
}

/* The embed when any of its members is not null (the jansson value, untyped), else NULL. */
static json_t *embed_value(struct span v)
{
	if (!is(v, '{'))
		return NULL;
	const char *p = v.p, *e = v.p + v.n;
	struct span k, x;
	bool any = false;
	while (next_item(&p, e, true, &k, &x))
		any |= !(x.n == 4 && memcmp(x.p, "null", 4) == 0);
	if (!any)
		return NULL;
	json_t *embed = celery_json_untype(json_loadb(v.p, v.n, 0, NULL));
	return json_is_object(embed) ? celery_embed_or_null(embed) : (json_decref(embed), NULL);
}

/* The body: base64 (or raw) text decoded, checked as JSON, [args, kwargs, embed] read. */
static bool read_body(const struct fields *f, char *strs, struct celery_msg *m)
{
	char stack[SCAN_BODY_BUF], *raw = strs, *heap = NULL, *text;
	size_t len;
	take_str(f->body, &raw); /* the body string, unescaped, at strs (later strings overwrite it) */
	len = strlen(strs);
	if (equals(f->benc, "base64")) {
		if (len % 4 != 0 || len > (size_t)1 << 30)
			return false;
		text = len / 4 * 3 + 1 <= sizeof(stack) ? stack : (heap = malloc(len / 4 * 3 + 1));
		int n = text && len ? EVP_DecodeBlock((unsigned char *)text, (const unsigned char *)strs, (int)len) : 0;
		if (!text || n < 0) {
			free(heap);
			return false;
		}
		for (size_t i = len; i > 0 && strs[i - 1] == '='; i--)
			n--; /* EVP_DecodeBlock counts the padding as zero bytes */
		len = (size_t)n;
	} else {
		text = strs;
	}
	bool ok = check_text(text, len, true) && ws(text, text + len)[0] == '[';
	if (ok) {
		const char *p = ws(text, text + len), *e = text + len;
		struct span k, x, item[3] = {{0}};
		for (int i = 0; i < 3 && next_item(&p, e, false, &k, &x); i++)
			item[i] = x;
		m->args = body_value(item[0], true);
		m->kwargs = body_value(item[1], false);
		m->embed = embed_value(item[2]);
		ok = m->args && m->kwargs;
	}
	free(heap);
	return ok;
}

bool celery_envelope_scan(const char *text, size_t len, struct celery_msg *out)
{
	struct fields f = {0};
	memset(out, 0, sizeof(*out));
	const char *s = ws(text, text + len);
	if (!check_text(text, len, false) || *s != '{')
		return false;
	if (!members((struct span){s, len - (size_t)(s - text)}, top, 4, &f) || !is(f.headers, '{') ||
	    !is(f.body, '"') || (is(f.ctype, '"') && !equals(f.ctype, "application/json")))
		return false;
	if (is(f.props, '{') && !members(f.props, prop, 5, &f))
		return false;
	if (!members(f.headers, hdr, 11, &f) || f.compression.p || !is(f.task, '"') || !plain_headers(&f) ||
	    (is(f.dinfo, '{') && !members(f.dinfo, dinfo, 2, &f)))
		return false;
	if (is(f.benc, '"') && memchr(f.benc.p, '\\', f.benc.n)) /* it could spell base64 */
		return false;
	/* every string kept is at most its raw length; the body is decoded in the same buffer first */
	size_t cap = f.body.n + 16;
	const struct span *keep[] = {&f.task, &f.id, &f.corr, &f.tag, &f.rk, &f.exch, &f.tenant, &f.session, &f.eta, &f.expires};
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		cap += keep[i]->n + 1;
	char *strs = malloc(cap), *o;
	out->text = text, out->len = len, out->strs = strs;
	if (!strs || !read_body(&f, strs, out))
		goto not_mine;
	o = strs;
	out->task = take_str(f.task, &o);
	out->id = is(f.id, '"') ? take_str(f.id, &o) : take_str(f.corr, &o);
	if (!out->task[0] || !out->id || !out->id[0] || strlen(out->id) > 64)
		goto not_mine;
	out->delivery_tag = is(f.tag, '"') ? take_str(f.tag, &o) : "";
	out->routing_key = take_str(f.rk, &o);
	out->exchange = is(f.exch, '"') ? take_str(f.exch, &o) : "";
	out->tenant = take_str(f.tenant, &o);
	out->session = take_str(f.session, &o);
	int64_t prio = int_of(f.prio);
	out->priority = prio < 0 ? 0 : prio > 9 ? 9 : (int)prio;
	out->retries = int_of(f.retries);
	const char *eta = take_str(f.eta, &o), *expires = take_str(f.expires, &o);
	if (eta && !celery_time_parse(eta, &out->eta_ms))
		out->eta_ms = 0;
	if (expires && !celery_time_parse(expires, &out->expires_ms))
		out->expires_ms = 0;
	if (is(f.timelimit, '[')) {
		const char *p = f.timelimit.p, *e = p + f.timelimit.n;
		struct span k, t[2] = {{0}};
		for (int i = 0; i < 2 && next_item(&p, e, false, &k, &t[i]); i++)
			;
		out->time_limit = num_of(t[0]);
		out->soft_time_limit = num_of(t[1]);
	}
	out->has_max_retries = is_int(f.max_retries);
	out->max_retries = int_of(f.max_retries);
	if (is(f.payload, '{')) {
		out->payload = celery_json_untype(json_loadb(f.payload.p, f.payload.n, 0, NULL));
		if (!json_is_object(out->payload))
			json_decref(out->payload), out->payload = NULL;
	}
	return true;
not_mine:
	celery_msg_deinit(out);
	return false;
}
