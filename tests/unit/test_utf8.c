/*
 * test_utf8.c - utf8_repair (src/core/utf8.c): valid text stays as it is, a character cut at the
 * end goes, every other invalid byte becomes '?', and the result is always valid UTF-8 (what
 * jansson accepts as a string).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/utf8.h"

static void check(const char *in, const char *want, bool changed)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", in);
	cr_assert_eq(utf8_repair(buf), changed, "%s", in);
	cr_assert_str_eq(buf, want);
	json_t *s = json_string(buf);
	cr_assert_not_null(s, "jansson takes %s", buf);
	json_decref(s);
}

Test(utf8, valid_text_is_kept)
{
	check("", "", false);
	check("plain ascii", "plain ascii", false);
	check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", false);
}

Test(utf8, a_character_cut_at_the_end_goes)
{
	check("ab\xc3", "ab", true);
	check("ab\xe2\x82", "ab", true);
	check("ab\xf0\x9f\x98", "ab", true);
}

Test(utf8, other_invalid_bytes_become_question_marks)
{
	check("a\xff"
	      "b",
	      "a?b", true);
	check("a\x80"
	      "b",
	      "a?b", true); /* a lone continuation byte */
	check("a\xc0\xaf"
	      "b",
	      "a??b", true); /* overlong */
	check("a\xed\xa0\x80"
	      "b",
	      "a???b", true);		/* a surrogate */
	check("a\xc3(b", "a?(b", true); /* a lead byte without its continuation */
	check("a\xf5\x80\x80\x80"
	      "b",
	      "a????b", true); /* beyond U+10FFFF */
}
