/*
 * local_request.c - see local_request.h.
 */
#include "http/local_request.h"

#include <string.h>
#include <strings.h>

/* Whether s[0..n) is a port: 1 to 5 digits. */
static bool port_ok(const char *s, size_t n)
{
	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Whether s[0..n) is a dotted IPv4 address in 127.0.0.0/8 (four parts of 1-3 digits). */
static bool ipv4_loopback(const char *s, size_t n)
{
	if (n < 9 || memcmp(s, "127.", 4) != 0)
		return false;
	int parts = 1, digits = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (digits == 0)
				return false;
			parts++, digits = 0;
		} else if (s[i] >= '0' && s[i] <= '9' && digits < 3) {
			digits++;
		} else {
			return false;
		}
	}
	return parts == 4 && digits > 0;
}

bool http_host_is_loopback(const char *host, size_t n)
{
	if (n > 0 && host[0] == '[') { /* [::1] or [::1]:port */
		const char *close = memchr(host, ']', n);
		if (!close || (size_t)(close - host) != 4 || memcmp(host, "[::1", 4) != 0)
			return false;
		size_t rest = n - 5;
		return rest == 0 || (close[1] == ':' && port_ok(close + 2, rest - 1));
	}
	const char *colon = memchr(host, ':', n);
	size_t name = colon ? (size_t)(colon - host) : n;
	if (colon && !port_ok(colon + 1, n - name - 1))
		return false;
	return (name == 9 && strncasecmp(host, "localhost", 9) == 0) || ipv4_loopback(host, name);
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
