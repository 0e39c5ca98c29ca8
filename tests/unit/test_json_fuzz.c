/*
 * test_json_fuzz.c - the hand-written JSON writer and checker against jansson on random bytes:
 * json_out_string(s, n) writes json_dumps's text of json_stringn(s, n) or refuses what it refuses
 * (src/core/json_out.c), and what jscan_check passes json_loadb reads (src/core/json_scan.c).
 *
 * DESIGN: the bytes are drawn from a palette of those the code looks at (quotes, backslashes,
 * controls, NUL, DEL, UTF-8 leads and continuations, overlong and surrogate forms, U+2028/2029)
 * among plain ASCII runs, at lengths around the eight-byte scan. Each input sits in a buffer of
 * exactly its size (malloc'd, no NUL after it), so a read past its end is an ASan error in the
 * sanitizer build.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "core/json_scan.h"

static const char *const atoms[] = {
	"a",
	"abcdefgh",
	" ",
	"\"",
	"\\",
	"\\u",
	"u00",
	"\x01",
	"\x1f",
	"\x7f",
	"\0",
	"\n",
	"\t",
	"\xc3\xa9",
	"\xe2\x82\xac",
	"\xf0\x9d\x84\x9e",
	"\xe2\x80\xa8",
	"\xe2\x80\xa9",
	"\xc0\x80",
	"\xed\xa0\x80",
	"\xf4\x90\x80\x80",
	"\x80",
	"\xc3",
	"\xff",
	"{",
	"}",
	"[",
	"]",
	":",
	",",
	"1",
	"-0.5",
	"true",
	"null",
	"\\n",
	"\\ud834\\udd1e",
	"\\ud800",
	"\\u0000",
	"\\/",
	"12345678901234567890",
};

/* Random bytes of the palette into buf (at most cap); returns their length. */
static size_t random_bytes(unsigned *seed, char *buf, size_t cap)
{
	size_t n = 0;
	for (int a = rand_r(seed) % 24; a > 0; a--) {
		size_t i = (size_t)rand_r(seed) % (sizeof(atoms) / sizeof(atoms[0]));
		size_t k = atoms[i][0] ? strlen(atoms[i]) : 1; /* "\0": one NUL byte */
		if (n + k > cap)
			break;
		memcpy(buf + n, atoms[i], k);
		n += k;
	}
	return n;
}

/* A malloc'd copy of exactly n bytes (at least one allocated byte, never read). */
static char *exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	cr_assert_not_null(p);
	memcpy(p, s, n);
	return p;
}

Test(json_fuzz, a_string_is_written_as_json_dumps_writes_it)
{
	unsigned seed = 1128;
	char buf[256];
	for (int round = 0; round < 20000; round++) {
		size_t n = random_bytes(&seed, buf, sizeof(buf));
		char *s = exact(buf, n);
		json_t *v = json_stringn_nocheck(s, n);
		char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		size_t len = 0;
		char *got = json_out_string(s, n, &len);
		if (!want)
			cr_assert_null(got, "round %d: json_dumps refused, json_out_string gave %s", round, got);
		else {
			cr_assert_not_null(got, "round %d: json_out_string refused %s", round, want);
			cr_assert_eq(len, strlen(want), "round %d", round);
			cr_assert(memcmp(got, want, len) == 0, "round %d: %s, json_dumps %s", round, got, want);
		}
		free(got);
		free(want);
		json_decref(v);
		free(s);
	}
}

Test(json_fuzz, a_long_string_across_buffer_growth)
{
	size_t n = 70000;
	char *s = malloc(n);
	cr_assert_not_null(s);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)(i % 97 == 0 ? '"' : i % 89 == 0 ? '\n' : 'a' + (char)(i % 26));
	json_t *v = json_stringn(s, n);
	char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), *got = json_out_string(s, n, NULL);
	cr_assert_not_null(got);
	cr_assert_str_eq(got, want);
	free(got);
	free(want);
	json_decref(v);
	free(s);
}

Test(json_fuzz, what_the_check_passes_jansson_reads)
{
	unsigned seed = 2811;
	char buf[256];
	int passed = 0;
	for (int round = 0; round < 50000; round++) {
		size_t n = random_bytes(&seed, buf + 1, sizeof(buf) - 2);
		buf[0] = rand_r(&seed) % 2 ? '"' : '[';
		size_t len = n + 1;
		if (rand_r(&seed) % 2)
			buf[len++] = buf[0] == '"' ? '"' : ']';
		char *text = exact(buf, len);
		struct jtape t;
		if (jscan_check(text, len, true, &t)) {
			passed++;
			json_error_t err;
			json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &err);
			cr_assert_not_null(v, "round %d: checked, jansson refused (%s): %.*s", round, err.text,
					   (int)len, text);
			json_decref(v);
		}
		free(text);
	}
	cr_assert_gt(passed, 100, "the inputs test little: %d passed the check", passed);
}
