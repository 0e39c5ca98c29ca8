/*
 * h1_target.c - which provider URLs the direct client takes (h1_target_parse, see h1_conn.h):
 * http:// to an IPv4 or bracketed IPv6 literal, or localhost, with an optional port and a path
 * of visible ASCII. Everything else (https, a name to resolve, user info, a fragment) is left to
 * libcurl, so no lookup ever blocks an io thread. Any thread; no state.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "llm/h1_conn.h"

bool h1_target_parse(const char *url, struct h1_target *t)
{
	memset(t, 0, sizeof(*t));
	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	const char *a = url + 7, *slash = strchr(a, '/');
	size_t alen = slash ? (size_t)(slash - a) : strlen(a);
	const char *path = slash ? slash : "/";
	if (!alen || alen >= sizeof(t->authority) || strlen(path) >= sizeof(t->path) || memchr(a, '@', alen))
		return false;
	for (const char *p = path; *p; p++) {
		if (*p <= ' ' || *p >= 0x7f || *p == '#')
			return false;
	}
	char host[64];
	const char *port = NULL;
	size_t hlen;
	if (a[0] == '[') { /* [v6]:port */
		const char *close = memchr(a, ']', alen);
		if (!close)
			return false;
		hlen = (size_t)(close - a - 1);
		if (hlen >= sizeof(host))
			return false;
		memcpy(host, a + 1, hlen);
		if (close + 1 < a + alen) {
			if (close[1] != ':')
				return false;
			port = close + 2;
		}
	} else {
		const char *colon = memchr(a, ':', alen);
		hlen = colon ? (size_t)(colon - a) : alen;
		if (hlen >= sizeof(host))
			return false;
		memcpy(host, a, hlen);
		port = colon ? colon + 1 : NULL;
	}
	host[hlen] = '\0';
	unsigned long portnum = 80;
	if (port) {
		size_t plen = (size_t)(a + alen - port);
		portnum = 0;
		for (size_t i = 0; i < plen; i++) {
			if (port[i] < '0' || port[i] > '9' || i >= 5)
				return false;
			portnum = portnum * 10 + (unsigned long)(port[i] - '0');
		}
		if (!plen || !portnum || portnum > 65535)
			return false;
	}
	struct sockaddr_in *v4 = (struct sockaddr_in *)&t->addr;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&t->addr;
	if (strcasecmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		if (strcasecmp(host, "localhost") == 0)
			v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)portnum);
		t->addr_len = sizeof(*v4);
	} else if (a[0] == '[' && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)portnum);
		t->addr_len = sizeof(*v6);
	} else {
		return false; /* a name: libcurl resolves it without blocking the loop */
	}
	memcpy(t->authority, a, alen);
	t->authority[alen] = '\0';
	memcpy(t->path, path, strlen(path) + 1); /* length checked above */
	return true;
}
