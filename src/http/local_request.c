/*
 * local_request.c - see local_request.h.
 */
#include "http/local_request.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"

bool http_host_is_loopback(const char *host, size_t n)
{
	/* the listen address's own reading (core/config.h): host:port or [v6]:port, then a literal
	 * loopback address or "localhost"; a Host may also come without a port */
	char text[256], name[256];
	int port;
	if (n == 0 || n >= sizeof(text))
		return false;
	for (size_t i = 0; i < n; i++)
		text[i] = (char)tolower((unsigned char)host[i]); /* (host names are case-insensitive) */
	text[n] = '\0';
	if (cfg_parse_listen(text, name, sizeof(name), &port))
		return cfg_listen_is_loopback(name);
	if (text[0] == '[' && text[n - 1] == ']') {
		text[n - 1] = '\0';
		return cfg_listen_is_loopback(text + 1);
	}
	return !strchr(text, ':') && cfg_listen_is_loopback(text); /* (an IPv6 Host is bracketed) */
}

const char *http_req_not_local(const struct http_req *req)
{
	if (http_req_header(req, "forwarded").p || http_req_header(req, "x-forwarded-for").p ||
	    http_req_header(req, "x-real-ip").p)
		return "it came through a proxy (Forwarded or X-Forwarded-For)";
	struct str host = http_req_header(req, "host");
	if (host.p && !http_host_is_loopback(host.p, host.len))
		return "its Host is not this machine's loopback name or address";
	struct str origin = http_req_header(req, "origin");
	if (origin.p) {
		size_t skip = origin.len > 7 && strncasecmp(origin.p, "http://", 7) == 0    ? 7
			      : origin.len > 8 && strncasecmp(origin.p, "https://", 8) == 0 ? 8
											    : 0;
		if (!skip || !http_host_is_loopback(origin.p + skip, origin.len - skip))
			return "it was sent by a web page of another site (Origin)";
	}
	return NULL;
}
