/*
 * test_tools_html.c - HTML to text (src/tools/html_text.c): scripts and styles dropped, the title
 * first, blocks on their own lines, white space folded, entities decoded, broken HTML recovered;
 * a page nested deeper than libxml2's default limit (256) is read past it, and what html_to_text
 * leaves out below its own depth limit is reported as a cut.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools_int.h"

static char *conv(const char *html)
{
	char *t = html_to_text(html, strlen(html), NULL, NULL);
	cr_assert_not_null(t);
	return t;
}

Test(html, text_without_scripts_and_styles)
{
	char *t = conv(
		"<html><head><title>The  Title</title><style>p{color:red}</style>"
		"<script>var secret = 1;</script></head><body><h1>Hello</h1>"
		"<p>First   paragraph\n with <b>bold</b> text.</p><script>alert('x')</script>"
		"<noscript>no js</noscript><ul><li>one</li><li>two</li></ul><p>A &amp; B &lt;c&gt;</p></body></html>");
	cr_assert_str_eq(t, "The Title\n\nHello\nFirst paragraph with bold text.\n\none\ntwo\nA & B <c>", "got [%s]",
			 t);
	cr_assert_null(strstr(t, "secret"));
	cr_assert_null(strstr(t, "color"));
	free(t);
}

Test(html, broken_html_recovered)
{
	char *t = conv("<div>unclosed <p>para<div>next");
	cr_assert_not_null(strstr(t, "unclosed"));
	cr_assert_not_null(strstr(t, "para"));
	cr_assert_not_null(strstr(t, "next"));
	free(t);
}

Test(html, charset_converted_to_utf8)
{
	const char latin1[] = "<p>caf\xe9</p>";
	char *t = html_to_text(latin1, strlen(latin1), "iso-8859-1", NULL);
	cr_assert_str_eq(t, "caf\xc3\xa9");
	free(t);
}

Test(html, empty_input)
{
	char *t = html_to_text("", 0, NULL, NULL);
	cr_assert_not_null(t);
	cr_assert_str_eq(t, "");
	free(t);
}

/* head, n times piece, then tail (malloc'd) */
static char *repeat(const char *piece, int n, const char *head, const char *tail)
{
	size_t cap = strlen(head) + (size_t)n * strlen(piece) + strlen(tail) + 1, at = 0;
	char *s = malloc(cap);
	cr_assert_not_null(s);
	at += (size_t)snprintf(s, cap, "%s", head);
	for (int i = 0; i < n; i++)
		at += (size_t)snprintf(s + at, cap - at, "%s", piece);
	snprintf(s + at, cap - at, "%s", tail);
	return s;
}

Test(html, text_after_deep_inline_nesting_is_kept)
{
	char *closes = repeat("</font>", 300, "", "<p>after</p>"),
	     *open = repeat("<font>", 300, "<p>before</p>", "deep"), *html = repeat(closes, 1, open, "");
	bool cut = false;
	char *t = html_to_text(html, strlen(html), NULL, &cut);
	cr_assert_not_null(t);
	cr_assert_not_null(strstr(t, "before"), "got [%s]", t);
	cr_assert_not_null(strstr(t, "after"), "the text after 300 nested elements is dropped: got [%s]", t);
	cr_assert(cut, "the text below depth 256 is left out and must be reported");
	free(t);
	free(html);
	free(open);
	free(closes);
}

Test(html, a_cut_below_the_depth_limit_is_reported)
{
	char *html = repeat("<div>", 300, "", "deep text");
	bool cut = false;
	char *t = html_to_text(html, strlen(html), NULL, &cut);
	cr_assert_not_null(t);
	cr_assert(cut, "300 nested divs: the text below depth 256 is left out and must be reported");
	free(t);
	free(html);
	const char shallow[] = "<div><div><p>fine</p></div></div>";
	t = html_to_text(shallow, strlen(shallow), NULL, &cut);
	cr_assert_str_eq(t, "fine");
	cr_assert(!cut);
	free(t);
}
