/*
 * test_multipart.c - the multipart/form-data parser and the boundary extraction.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "gateway/multipart.h"

#define MAX_PARTS 64
static struct multipart_part parts[MAX_PARTS];

static int parse(const char *body, const char *boundary)
{
	return multipart_parse(body, strlen(body), boundary, parts, MAX_PARTS);
}

static bool str_is(struct str s, const char *want)
{
	return s.p && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

Test(multipart, boundary_from_content_type)
{
	char b[80];
	cr_assert(multipart_boundary(str_from("multipart/form-data; boundary=abc123"), b, sizeof(b)));
	cr_assert_str_eq(b, "abc123");
	cr_assert(multipart_boundary(str_from("Multipart/Form-Data; charset=utf-8; boundary=\"q u\"; x=1"), b,
				     sizeof(b)));
	cr_assert_str_eq(b, "q u");
	cr_assert(multipart_boundary(str_from("multipart/form-data; boundary=xyz ; other=1"), b, sizeof(b)));
	cr_assert_str_eq(b, "xyz");
	cr_assert_not(multipart_boundary(str_from("application/json"), b, sizeof(b)));
	cr_assert_not(multipart_boundary(str_from("multipart/form-data"), b, sizeof(b)));
	cr_assert_not(multipart_boundary(str_from("multipart/form-data; boundary="), b, sizeof(b)));
	cr_assert_not(multipart_boundary(str_from("multipart/form-data; boundary=\"unterminated"), b, sizeof(b)));
	char long_ct[200];
	memset(long_ct, 'a', sizeof(long_ct));
	memcpy(long_ct, "multipart/form-data; boundary=", 30);
	long_ct[sizeof(long_ct) - 1] = '\0';
	cr_assert_not(multipart_boundary(str_from(long_ct), b, sizeof(b)), "boundaries are at most 70 characters");
}

Test(multipart, files_and_fields)
{
	const char *body = "--XX\r\n"
			   "Content-Disposition: form-data; name=\"session_id\"\r\n\r\n"
			   "s1\r\n"
			   "--XX\r\n"
			   "Content-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n"
			   "Content-Type: text/plain\r\n\r\n"
			   "line one\r\nline two\r\n"
			   "--XX\r\n"
			   "content-disposition: form-data; name=files; filename=b.bin\r\n\r\n"
			   "\r\n--X not the boundary\r\n"
			   "--XX--\r\n";
	cr_assert_eq(parse(body, "XX"), 3);
	cr_assert(str_is(parts[0].name, "session_id"));
	cr_assert_eq(parts[0].len, 2);
	cr_assert_eq(memcmp(parts[0].data, "s1", 2), 0);
	cr_assert(str_is(parts[1].name, "files") && str_is(parts[1].filename, "a.txt"));
	cr_assert(str_is(parts[1].content_type, "text/plain"));
	cr_assert_eq(parts[1].len, strlen("line one\r\nline two"), "the CRLF before the delimiter is not data");
	cr_assert(str_is(parts[2].name, "files") && str_is(parts[2].filename, "b.bin"), "unquoted parameters");
	cr_assert_eq(parts[2].len, strlen("\r\n--X not the boundary"), "a near-boundary inside data is data");
}

Test(multipart, empty_part_and_binary)
{
	const char body[] = "--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"z\"\r\n\r\n"
			    "\0\1\2\r\n--b--";
	int n = multipart_parse(body, sizeof(body) - 1, "b", parts, MAX_PARTS);
	cr_assert_eq(n, 1);
	cr_assert_eq(parts[0].len, 3);
	cr_assert_eq(parts[0].data[0], '\0');
}

Test(multipart, malformed_bodies_are_rejected)
{
	cr_assert_eq(parse("", "b"), -1, "no delimiter");
	cr_assert_eq(parse("junk", "b"), -1);
	cr_assert_eq(parse("--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated", "b"), -1);
	cr_assert_eq(parse("--b\r\nno blank line after headers", "b"), -1);
	cr_assert_eq(parse("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "b"), -1, "a part without a name");
	cr_assert_eq(parse("--bX\r\n", "b"), -1, "text after the delimiter");
	cr_assert_eq(parse("--b--", "b"), 0, "no parts at all");
}

Test(multipart, part_count_is_bounded)
{
	char body[8192];
	size_t used = 0;
	for (int i = 0; i < 5; i++)
		used += (size_t)snprintf(body + used, sizeof(body) - used,
					 "--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n", i);
	snprintf(body + used, sizeof(body) - used, "--b--");
	cr_assert_eq(multipart_parse(body, strlen(body), "b", parts, 5), 5);
	cr_assert_eq(multipart_parse(body, strlen(body), "b", parts, 4), MULTIPART_TOO_MANY,
		     "more parts than room: refused, and told apart from a malformed body");
}

Test(multipart, transport_padding_after_a_boundary)
{
	const char *body = "--b  \r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b\t\r\n"
			   "Content-Disposition: form-data; name=\"g\"\r\n\r\nw\r\n--b-- \r\n";
	cr_assert_eq(parse(body, "b"), 2, "spaces and tabs after a boundary are padding (RFC 2046)");
	cr_assert(str_is(parts[1].name, "g"));
	cr_assert_eq(parse("--b x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b--", "b"), -1,
		     "anything else after a boundary is malformed");
}

Test(multipart, boundary_is_its_own_parameter)
{
	char b[80];
	cr_assert_not(multipart_boundary(str_from("multipart/form-data; xboundary=abc"), b, sizeof(b)));
	cr_assert(multipart_boundary(str_from("multipart/form-data; xboundary=abc; boundary=def"), b, sizeof(b)));
	cr_assert_str_eq(b, "def");
	cr_assert(multipart_boundary(str_from("multipart/form-data;boundary=g"), b, sizeof(b)));
	cr_assert_str_eq(b, "g");
}

static const char *clean(const char *name, size_t len)
{
	static char out[MULTIPART_FILENAME_MAX + 8];
	multipart_clean_filename((struct str){name, len}, out, sizeof(out));
	return out;
}

Test(multipart, file_names_come_out_as_valid_utf8)
{
	cr_assert_str_eq(clean("caf\xc3\xa9.txt", 9), "caf\xc3\xa9.txt", "UTF-8 kept");
	cr_assert_str_eq(clean("caf\xe9.txt", 8), "caf_.txt", "a Latin-1 byte replaced");
	cr_assert_str_eq(clean("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80", 9), "_________",
			 "overlong, surrogate, > U+10FFFF");
	cr_assert_str_eq(clean("a\xc3", 2), "a_", "a sequence cut by the end of the name");
	cr_assert_str_eq(clean("dir/../x\"y\r", 11), "x_y_");
	cr_assert_str_eq(clean("../..", 5), "upload");
	char name[301] = "a";
	for (int i = 0; i < 150; i++)
		memcpy(name + 1 + 2 * i, "\xc3\xa9", 2);
	const char *out = clean(name, 301);
	cr_assert_eq(strlen(out), 199, "cut before the character that would cross %d bytes", MULTIPART_FILENAME_MAX);
	cr_assert_eq(memcmp(out, name, 199), 0);
}
