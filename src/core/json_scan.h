/*
 * json_scan.h - a strict JSON checker and a light reader over checked text, without building a
 * tree. Its users: the fast Celery envelope reader (queue/celery_scan.c), the provider's stream
 * chunks (llm/chunk_scan.c); jscan_utf8_len checks UTF-8 for the envelope writer
 * (queue/redis_publish.c) and json_out.c.
 *
 * DESIGN: jscan_check validates a text at least as strictly as jansson's json_loadb reads it
 * (grammar, UTF-8, escapes and surrogate pairs, no \u0000, no control character in a string,
 * integers within int64, reals of at most 300 characters that cannot overflow a double, nesting
 * up to JSCAN_DEPTH): what it passes, jansson reads. Everything else here works on text jscan_check passed, and only
 * there: spans point into the caller's text (borrowed), nothing allocates.
 */
#ifndef SOMA_CORE_JSON_SCAN_H
#define SOMA_CORE_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define JSCAN_DEPTH	 64 /* deeper nesting is refused (jansson's limit is 2048) */
#define JSCAN_TAPE_MAX	 96 /* object members the check remembers (more: readers walk the text) */
#define JSCAN_TAPE_DEPTH 2  /* it remembers those of objects nested up to here (0: the outer one) */

/* Length of the valid UTF-8 sequence at s (its lead byte >= 0x80; left bytes readable), or 0:
 * what jansson accepts (no overlong forms, no surrogates, nothing past U+10FFFF). */
size_t jscan_utf8_len(const unsigned char *s, size_t left);

struct jspan {
	const char *p; /* the value's first byte, NULL when absent */
	size_t n;      /* its length */
};

/* The members of a text's objects down to JSCAN_TAPE_DEPTH as the check met them, in text order,
 * so a reader finds nested members without walking their text again. A member's own members
 * follow it, one depth deeper. */
struct jtape {
	struct {
		struct jspan key; /* the text inside the key's quotes */
		struct jspan val; /* the value */
		int depth;	  /* 0: a member of the outer object */
	} m[JSCAN_TAPE_MAX];
	int n;	   /* entries */
	bool full; /* a member was not recorded: the tape is not used */
};

struct jwant {
	const char *name; /* a key */
	size_t at;	  /* offset of its struct jspan in the caller's fields struct */
};

/* Past the bytes from s (before e) that a JSON string holds as they are and that need no UTF-8
 * check: printable ASCII other than '"' and '\\'. Eight at a time while none of the eight needs a
 * look (a byte >= 0x80, < 0x20, '"' or '\\'), then one at a time. Inline: the checker and the
 * writer (json_out.c) run it per string. */
static inline const unsigned char *jscan_plain(const unsigned char *s, const unsigned char *e)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	while (e - s >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
		uint64_t look = (w | (w - ones * 0x20) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash)) & highs;
		if (look)
			break;
		s += 8;
	}
	while (s < e && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\')
		s++;
	return s;
}

/* p advanced over JSON whitespace, up to e. */
const char *jscan_ws(const char *p, const char *e);
/* True when text[0..len) is one JSON value (an object or array unless any) and nothing else but
 * whitespace; t (or NULL) receives the members of its objects. */
bool jscan_check(const char *text, size_t len, bool any, struct jtape *t);
/* The next member of an object (key: the text inside its quotes) or element of an array: *p
 * starts at the '{' / '[' and is advanced past each item. False at the end. */
bool jscan_next(const char **p, const char *e, bool object, struct jspan *key, struct jspan *val);
/* Stores, at w[i].at in fields, the span of each member of obj named w[i].name (the last of a
 * key seen twice), from t when it holds them (top: obj is the outer object). False when a key is
 * escaped: it could spell a wanted one. */
bool jscan_members(const struct jtape *t, bool top, struct jspan obj, const struct jwant *w, size_t nw, void *fields);
/* v is present and starts with c. */
bool jscan_is(struct jspan v, char c);
/* A string value unescaped into *out (advanced past its NUL; room: v.n bytes); NULL when v is not
 * a string. */
const char *jscan_str(struct jspan v, char **out);
/* json_integer_value / json_number_value / json_is_integer of v. */
int64_t jscan_int(struct jspan v);
double jscan_num(struct jspan v);
bool jscan_is_int(struct jspan v);
/* v is the string lit, written without escapes. */
bool jscan_equals(struct jspan v, const char *lit);

#endif
