/*
 * test_tools_html.c - HTML to text (src/tools/html_text.c): scripts and styles dropped, the title
 * first, blocks on their own lines, white space folded, entities decoded, broken HTML recovered.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools_int.h"

static char *conv(const char *html)
{
	char *t = html_to_text(html, strlen(html), NULL);
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
	char *t = html_to_text(latin1, strlen(latin1), "iso-8859-1");
	cr_assert_str_eq(t, "caf\xc3\xa9");
	free(t);
}

Test(html, empty_input)
{
	char *t = html_to_text("", 0, NULL);
	cr_assert_not_null(t);
	cr_assert_str_eq(t, "");
	free(t);
}
