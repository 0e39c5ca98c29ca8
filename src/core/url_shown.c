/*
 * url_shown.c - a URL without its credentials (see url_shown.h).
 */
#include "core/url_shown.h"

#include <stdio.h>
#include <string.h>

void url_shown(const char *url, char *out, size_t cap)
{
	size_t scheme = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	const char *host = strncmp(url + scheme, "://", 3) == 0 ? url + scheme + 3 : url;
	const char *end = host + strcspn(host, "/?#");
	const char *at = memrchr(host, '@', (size_t)(end - host)); /* (a password may hold an @) */
	size_t head = (size_t)(host - url), rest = strcspn(at ? at + 1 : host, "?#");
	snprintf(out, cap, "%.*s%.*s", (int)head, url, (int)rest, at ? at + 1 : host);
}
