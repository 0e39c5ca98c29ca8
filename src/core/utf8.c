/*
 * utf8.c - valid UTF-8 from cut or foreign text (see utf8.h).
 */
#include "core/utf8.h"

#include <string.h>

/* Length of the valid sequence at p (n bytes left), 0 when it is invalid, -1 when it is valid so
 * far but cut by the end of the text. */
static int sequence(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	int len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	unsigned cp = c & (0x7f >> len);
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return -1;
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0; /* overlong, beyond Unicode, or a surrogate */
	return len;
}

bool utf8_repair(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n = strlen(s);
	bool changed = false;
	for (size_t i = 0; i < n;) {
		int len = sequence(p + i, n - i);
		if (len > 0) {
			i += (size_t)len;
		} else if (len < 0) {
			p[i] = '\0'; /* the text was cut inside this character */
			return true;
		} else {
			p[i++] = '?';
			changed = true;
		}
	}
	return changed;
}
