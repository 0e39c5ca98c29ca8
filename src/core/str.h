/*
 * str.h - borrowed string slices, and the one string hash of the project.
 *
 * A struct str points into memory owned by someone else (a request arena, a config table).
 * It is never freed and never kept beyond the owner's lifetime; copy what you keep.
 */
#ifndef SOMA_CORE_STR_H
#define SOMA_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

struct str {
	const char *p; /* first byte; not NUL-terminated in general */
	size_t len;    /* number of bytes */
};

#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL   ((struct str){NULL, 0})

/* FNV-1a of the NUL-terminated s, continued from h: str_hash(s) starts it; a key of several
 * parts continues it over each (with a separator part between parts, so "ab"+"c" and "a"+"bc"
 * differ). For tables of our own, not for anything an attacker must not predict. */
static inline uint32_t str_hash_more(uint32_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static inline uint32_t str_hash(const char *s)
{
	return str_hash_more(2166136261u, s);
}

/* FNV-1a of n bytes at p, continued from h (2166136261u to start): for keys that are not
 * NUL-terminated, e.g. a path segment. */
static inline uint32_t str_hash_bytes(uint32_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	return h;
}

/* Writes v in decimal at out (room for 20 bytes, no NUL); returns the number of digits. */
static inline size_t str_u64_dec(char *out, uint64_t v)
{
	size_t n = 1;
	for (uint64_t t = v; t >= 10; t /= 10)
		n++;
	for (size_t i = n; i-- > 0; v /= 10)
		out[i] = (char)('0' + v % 10);
	return n;
}

static inline struct str str_from(const char *s)
{
	return (struct str){s, s ? strlen(s) : 0};
}

static inline bool str_eq(struct str a, struct str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool str_eq_cstr(struct str a, const char *b)
{
	return str_eq(a, str_from(b));
}

static inline bool str_ieq_cstr(struct str a, const char *b)
{
	size_t n = strlen(b);
	return a.len == n && strncasecmp(a.p, b, n) == 0;
}

#endif
