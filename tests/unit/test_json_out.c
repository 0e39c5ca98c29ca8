/*
 * test_json_out.c - compact JSON text (src/core/json_out.c) must be json_dumps(v, JSON_COMPACT)'s
 * bytes: hand-picked values (every escape, UTF-8 of each length, integer limits, reals, empty and
 * nested containers, keys needing escapes) and random trees, and the same refusals (a string that
 * is not UTF-8, a scalar without `any`; a key that is not UTF-8, which json_dumps writes as broken JSON),
 * and json_out_string: one string alone, as json_dumps writes it.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"

/* json_out's text and length equal json_dumps's, or both refuse. Takes v. */
static void same(json_t *v, int any)
{
	size_t flags = JSON_COMPACT | (any ? JSON_ENCODE_ANY : 0), len = 12345;
	char *want = json_dumps(v, flags), *got = json_out(v, any, &len);
	if (!want)
		cr_assert_null(got, "json_dumps refused, json_out gave %s", got);
	else {
		cr_assert_not_null(got, "json_out refused %s", want);
		cr_assert_str_eq(got, want);
		cr_assert_eq(len, strlen(want));
	}
	free(want);
	free(got);
	json_decref(v);
}

Test(json_out, scalars_and_containers)
{
	same(json_object(), 0);
	same(json_array(), 0);
	same(json_pack("{s:i, s:I, s:I, s:b, s:b, s:n, s:s}", "a", 0, "max", (json_int_t)INT64_MAX, "min",
		       (json_int_t)INT64_MIN, "t", 1, "f", 0, "z", "s", ""),
	     0);
	same(json_pack("{s:f, s:f, s:f, s:f, s:f}", "r", 1.5, "big", 1e300, "whole", 3.0, "tiny", 1e-7, "neg", -0.1),
	     0);
	same(json_pack("[[[]], {}, [{s:[1, 2, {s:{}}]}]]", "x", "y"), 0);
	same(json_integer(-42), 1);
	same(json_string("alone"), 1);
	same(json_real(2.25), 1);
	same(json_null(), 1);
	same(json_true(), 1);
}

Test(json_out, escapes_and_utf8)
{
	char ctl[40];
	for (int i = 1; i < 32; i++)
		ctl[i - 1] = (char)i;
	memcpy(ctl + 31, "\"\\/\x7f", 5);
	same(json_pack("{s:s, s:s, s:s, s:s}", "ctl", ctl, "q\"k\n", "v", "utf8", "é ü € 𝄞 ﬀ \xf4\x8f\xbf\xbf", "mixed",
		       "a\tb\"c\\d é\x01z"),
	     0);
	same(json_pack("[s%]", "nul\0inside", (size_t)10), 0);
	json_t *key = json_object();
	json_object_setn_new_nocheck(key, "k\0ey", 4, json_string("v"));
	same(key, 0);
}

/* Long strings whose one special byte sits at every offset of the eight-byte scan, and runs of
 * every ASCII byte. */
Test(json_out, specials_at_every_offset)
{
	static const char *const special[] = {"\"", "\\", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac", " "};
	char text[64];
	for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++)
		for (int at = 0; at < 24; at++) {
			int n = snprintf(text, sizeof(text), "%.*s%s", at, "abcdefghijklmnopqrstuvwxyz", special[k]);
			snprintf(text + n, sizeof(text) - (size_t)n, "%s", "0123456789ABCDEFGHIJ");
			same(json_pack("{s:s}", text, text), 0);
		}
	char all[128];
	for (int i = 1; i < 128; i++)
		all[i - 1] = (char)i;
	all[127] = '\0';
	same(json_pack("[s, s]", all, all + 40), 0);
}

Test(json_out, refuses_what_json_dumps_refuses)
{
	static const char *const bad[] = {"\xc0\x80",
					  "\xed\xa0\x80",
					  "\xf4\x90\x80\x80",
					  "\xe0\x9f\xbf",
					  "\x80",
					  "abc\xc3",
					  "\xc3(",
					  "\xf8\x88\x80\x80\x80",
					  "ok\xff",
					  "long ascii run \xc3\xa9 then \xe2\x82"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		same(json_pack("[o]", json_string_nocheck(bad[i])), 0);
		/* a key: json_dumps writes broken JSON (a cut key without its closing quote); json_out refuses */
		json_t *o = json_object();
		json_object_set_new_nocheck(o, bad[i], json_true());
		cr_assert_null(json_out(o, 0, NULL), "json_out wrote a key that is not UTF-8 (%zu)", i);
		json_decref(o);
	}
	same(json_string("scalar"), 0);
	same(json_integer(1), 0);
	cr_assert_null(json_out(NULL, 1, NULL));
}

/* A random value, depth levels at most, from a fixed seed. */
static json_t *random_value(unsigned *seed, int depth)
{
	static const char *const pieces[] = {"a", "é", "\"", "\\", "\n", "\x1f", " ", "€", "𝄞", "/", "\t", "z9"};
	int kind = rand_r(seed) % (depth > 0 ? 8 : 6);
	char text[64] = "";
	size_t len = 0;
	switch (kind) {
	case 0:
		return json_integer((json_int_t)rand_r(seed) * (rand_r(seed) % 2 ? -1 : 1) * 1000003);
	case 1:
		return json_real((double)rand_r(seed) / 7.0);
	case 2:
		return rand_r(seed) % 2 ? json_true() : json_null();
	case 3:
	case 4:
	case 5:
		for (int i = rand_r(seed) % 8; i > 0; i--) /* at most 8 pieces of 4 bytes */
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s", pieces[rand_r(seed) % 12]);
		return json_string(text);
	case 6: {
		json_t *a = json_array();
		for (int i = rand_r(seed) % 5; i > 0; i--)
			json_array_append_new(a, random_value(seed, depth - 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		for (int i = rand_r(seed) % 5; i > 0; i--) {
			snprintf(text, sizeof(text), "k%d%s", rand_r(seed) % 50, pieces[rand_r(seed) % 12]);
			json_object_set_new(o, text, random_value(seed, depth - 1));
		}
		return o;
	}
	}
}

Test(json_out, random_trees)
{
	unsigned seed = 20261128;
	for (int i = 0; i < 2000; i++)
		same(random_value(&seed, 5), 1);
}

/* json_out_string(s, n) is the text json_dumps writes for json_stringn(s, n) (an embedded NUL,
 * every escape, UTF-8), and refuses what is not UTF-8. */
static void same_string(const char *s, size_t n)
{
	json_t *v = json_stringn_nocheck(s, n);
	char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	size_t len = 12345;
	char *got = json_out_string(s, n, &len);
	cr_assert_not_null(got, "json_out_string refused %s", want);
	cr_assert_str_eq(got, want);
	cr_assert_eq(len, strlen(want));
	free(want);
	free(got);
	json_decref(v);
}

Test(json_out, a_string_alone)
{
	char all[128];
	for (int i = 0; i < 128; i++)
		all[i] = (char)i;
	same_string(all, sizeof(all));
	same_string("", 0);
	same_string("é ü € 𝄞 \"quoted\" back\\slash", strlen("é ü € 𝄞 \"quoted\" back\\slash"));
	same_string("nul\0inside", 10);
	cr_assert_null(json_out_string("abc\xc3", 4, NULL));
	cr_assert_null(json_out_string("\xed\xa0\x80", 3, NULL));
	cr_assert_null(json_out_string(NULL, 0, NULL));
}
