/*
 * utf8.c - valid UTF-8 from cut or foreign text (see utf8.h).
 */
#include "core/utf8.h"

#include <string.h>

#include "core/json_scan.h"

/* Whether the n bytes at p are the start of a sequence the text's end cut: a lead byte and only
 * continuation bytes, fewer than the lead asks for. */
static bool cut_at_end(const unsigned char *p, size_t n)
{
	size_t want = p[0] >= 0xc2 && p[0] <= 0xdf   ? 2
		      : p[0] >= 0xe0 && p[0] <= 0xef ? 3
		      : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
						     : 0;
	if (n >= want)
		return false;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return false;
	}
	return true;
}

bool utf8_repair(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n = strlen(s);
	bool changed = false;
	for (size_t i = 0; i < n;) {
		size_t len = p[i] < 0x80 ? 1 : jscan_utf8_len(p + i, n - i); /* jansson's rules */
		if (len > 0) {
			i += len;
		} else if (cut_at_end(p + i, n - i)) {
			p[i] = '\0'; /* the text was cut inside this character */
			return true;
		} else {
			p[i++] = '?';
			changed = true;
		}
	}
	return changed;
}
