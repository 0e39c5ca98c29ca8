/*
 * json_scan.c - the strict JSON checker and the light reader of json_scan.h.
 *
 * DESIGN: jscan_check is a recursive descent over the bytes (depth bounded by JSCAN_DEPTH), and
 * on the way it records the members of the outer objects on a tape, so a reader finds them
 * without a second walk. The readers (jscan_next and what uses it) trust the text: it passed
 * jscan_check, so every string closes and every bracket matches before the end.
 */
#include "core/json_scan.h"

#include <stdlib.h>
#include <string.h>

/* ---- 1. check -------------------------------------------------------------------------------- */

/* (inline here: the check calls it around every token, and most calls find no whitespace) */
static inline const char *ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

const char *jscan_ws(const char *p, const char *e)
{
	return ws(p, e);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
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
size_t jscan_utf8_len(const unsigned char *s, size_t left)
{
	size_t n = s[0] >= 0xC2 && s[0] <= 0xDF	  ? 2
		   : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
		   : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4
						  : 0;
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
		p = (const char *)jscan_plain((const unsigned char *)p, (const unsigned char *)e);
		if (p == e)
			break;
		unsigned char c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c >= 0x80) {
			size_t k = jscan_utf8_len((const unsigned char *)p, (size_t)(e - p));
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
			if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, e, &lo) || lo < 0xDC00 ||
			    lo > 0xDFFF)
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

/* True when the digits [d, d + n) (n == 19, no sign) are at most int64's magnitude: INT64_MAX,
 * or 2^63 for a negative number. */
static bool int64_fits(const char *d, bool negative)
{
	return memcmp(d, negative ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
}

/* A number jansson reads without a range error: an integer within int64 (strtoll without
 * ERANGE), or a real of fewer than 300 characters whose value cannot overflow a double (its
 * integer digits plus its exponent at most 300: strtod's overflow is jansson's error; an
 * underflow is not, and reads the same in both). */
static const char *check_number(const char *p, const char *e)
{
	const char *s = p;
	bool negative = p < e && *p == '-';
	if (negative)
		p++;
	if (!digit(p, e))
		return NULL;
	if (*p == '0' && digit(p + 1, e))
		return NULL;
	const char *d = p;
	while (digit(p, e))
		p++;
	long int_digits = (long)(p - d);
	bool real = p < e && *p == '.';
	if (real) {
		if (!digit(++p, e))
			return NULL;
		while (digit(p, e))
			p++;
	}
	if (p < e && (*p == 'e' || *p == 'E')) {
		real = true;
		bool minus = ++p < e && *p == '-';
		if (p < e && (*p == '+' || *p == '-'))
			p++;
		if (!digit(p, e))
			return NULL;
		long exp = 0;
		while (digit(p, e)) {
			if (exp < 100000)
				exp = exp * 10 + (*p - '0');
			p++;
		}
		if (!minus && int_digits + exp > 300)
			return NULL; /* may overflow: left to jansson */
	}
	if (real)
		return p - s <= 300 ? p : NULL;
	if (int_digits < 19)
		return p;
	return int_digits == 19 && int64_fits(d, negative) ? p : NULL;
}

static const char *check_lit(const char *p, const char *e, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

static const char *check_value(const char *p, const char *e, int depth, struct jtape *t);

/* An object or array at p; its end, or NULL. Members of objects down to JSCAN_TAPE_DEPTH go on t. */
static const char *check_container(const char *p, const char *e, int depth, struct jtape *t)
{
	char close = *p == '{' ? '}' : ']';
	if (depth > JSCAN_DEPTH)
		return NULL;
	p = ws(p + 1, e);
	if (p < e && *p == close)
		return p + 1;
	for (;;) {
		int at = -1;
		if (close == '}') {
			const char *k = p;
			if (p >= e || *p != '"' || !(p = check_string(p, e)))
				return NULL;
			if (t && depth <= JSCAN_TAPE_DEPTH && t->n < JSCAN_TAPE_MAX)
				at = t->n++, t->m[at].key = (struct jspan){k + 1, (size_t)(p - k - 2)},
				t->m[at].depth = depth;
			else if (t && depth <= JSCAN_TAPE_DEPTH)
				t->full = true;
			p = ws(p, e);
			if (p >= e || *p++ != ':')
				return NULL;
			p = ws(p, e);
		}
		const char *v = p;
		if (!(p = check_value(p, e, depth + 1, t)))
			return NULL;
		if (at >= 0)
			t->m[at].val = (struct jspan){v, (size_t)(p - v)};
		p = ws(p, e);
		if (p < e && *p == ',') {
			p = ws(p + 1, e);
			continue;
		}
		return p < e && *p == close ? p + 1 : NULL;
	}
}

static const char *check_value(const char *p, const char *e, int depth, struct jtape *t)
{
	p = ws(p, e);
	if (p >= e)
		return NULL;
	switch (*p) {
	case '{':
	case '[':
		return check_container(p, e, depth, t);
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

/* The whole text is one JSON value (an object or array unless any), nothing after it; t (or
 * NULL) receives the members of its objects. */
bool jscan_check(const char *p, size_t len, bool any, struct jtape *t)
{
	if (t)
		t->n = 0, t->full = false;
	const char *e = p + len, *s = ws(p, e);
	if (s == e || (!any && *s != '{' && *s != '['))
		return false;
	const char *end = check_value(s, e, 0, t);
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
		while (*p == '-' || *p == '+' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		       *p == 'E')
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
bool jscan_next(const char **p, const char *e, bool object, struct jspan *key, struct jspan *val)
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

static bool wanted(struct jspan k, struct jspan v, const struct jwant *w, size_t nw, void *fields)
{
	if (memchr(k.p, '\\', k.n))
		return false;
	for (size_t i = 0; i < nw; i++) /* (a key holds no NUL: the check refuses \u0000 and raw controls) */
		if (w[i].name[0] == (k.n ? k.p[0] : '\0') && strncmp(w[i].name, k.p, k.n) == 0 &&
		    w[i].name[k.n] == '\0')
			*(struct jspan *)((char *)fields + w[i].at) = v;
	return true;
}

/* The spans of an object's wanted members (the last of a key seen twice), from the tape when it
 * has them (top: obj is the envelope). False when a key is escaped: it could spell a wanted one. */
bool jscan_members(const struct jtape *t, bool top, struct jspan obj, const struct jwant *w, size_t nw, void *fields)
{
	int parent = -1;
	if (!top)
		for (parent = 0; t && parent < t->n && t->m[parent].val.p != obj.p; parent++)
			;
	if (t && !t->full && parent < t->n) {
		int depth = parent < 0 ? 0 : t->m[parent].depth + 1;
		for (int i = parent + 1; i < t->n && t->m[i].depth >= depth; i++)
			if (t->m[i].depth == depth && !wanted(t->m[i].key, t->m[i].val, w, nw, fields))
				return false;
		return true;
	}
	const char *p = obj.p, *e = obj.p + obj.n;
	struct jspan k, v;
	while (jscan_next(&p, e, true, &k, &v))
		if (!wanted(k, v, w, nw, fields))
			return false;
	return true;
}

bool jscan_is(struct jspan v, char c)
{
	return v.p && *v.p == c;
}

/* The string value v unescaped into *out (advanced past its NUL); NULL when v is not a string. */
const char *jscan_str(struct jspan v, char **out)
{
	if (!jscan_is(v, '"'))
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
/* The number v as a C string for strtoll / strtod, which read up to a byte that is not part of
 * a number: the span's text may end right after it (a bare number at the end of the buffer), so
 * they read a copy. Into small (when it fits) or a malloc'ed copy; NULL on OOM. */
static char *number_text(struct jspan v, char small[64])
{
	char *s = v.n < 64 ? small : malloc(v.n + 1);
	if (s) {
		memcpy(s, v.p, v.n);
		s[v.n] = '\0';
	}
	return s;
}

int64_t jscan_int(struct jspan v)
{
	if (!jscan_is_int(v))
		return 0;
	char small[64], *s = number_text(v, small);
	int64_t n = s ? strtoll(s, NULL, 10) : 0;
	if (s != small)
		free(s);
	return n;
}

/* json_number_value of v: a number's value, else 0. */
double jscan_num(struct jspan v)
{
	if (!v.p || !(*v.p == '-' || (*v.p >= '0' && *v.p <= '9')))
		return 0.0;
	char small[64], *s = number_text(v, small);
	double d = s ? strtod(s, NULL) : 0.0;
	if (s != small)
		free(s);
	return d;
}

bool jscan_is_int(struct jspan v)
{
	return v.p && (*v.p == '-' || (*v.p >= '0' && *v.p <= '9')) && !memchr(v.p, '.', v.n) &&
	       !memchr(v.p, 'e', v.n) && !memchr(v.p, 'E', v.n);
}

bool jscan_equals(struct jspan v, const char *lit)
{
	size_t n = strlen(lit);
	return v.p && v.n == n + 2 && *v.p == '"' && memcmp(v.p + 1, lit, n) == 0;
}
