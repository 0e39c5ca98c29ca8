/*
 * ssrf.c - the SSRF guard's checks: which addresses an outbound fetch may connect to, and the
 * allowlist tools.fetch.allowed_hosts (see tools_int.h).
 *
 * DESIGN: the check is made on the address the socket is about to connect to (fetch.c calls it
 * from libcurl's open-socket callback), so what was checked is what is connected to: a name
 * that resolves differently between a check and the connect (DNS rebinding) gains nothing.
 * Every range that is not public unicast is refused: RFC 6890's special-purpose blocks for IPv4
 * and IPv6. IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
 * NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by that address; Teredo (2001::/32), whose
 * client address is obfuscated, is refused outright. Pure functions, any thread.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "tools/tools_int.h"

struct v4_range {
	uint32_t net;	    /* network, host order */
	int bits;	    /* prefix length */
	const char *reason; /* why it is refused */
};

/* Most specific first: the metadata address before link-local. */
static const struct v4_range v4_refused[] = {
	{0xA9FEA9FE, 32, "metadata"},	   /* 169.254.169.254: cloud instance metadata */
	{0xFFFFFFFF, 32, "broadcast"},	   /* 255.255.255.255 */
	{0x00000000, 8, "unspecified"},	   /* 0.0.0.0/8 "this network" */
	{0x0A000000, 8, "private"},	   /* 10.0.0.0/8 */
	{0x64400000, 10, "cgnat"},	   /* 100.64.0.0/10 shared address space */
	{0x7F000000, 8, "loopback"},	   /* 127.0.0.0/8 */
	{0xA9FE0000, 16, "link-local"},	   /* 169.254.0.0/16 */
	{0xAC100000, 12, "private"},	   /* 172.16.0.0/12 */
	{0xC0000000, 24, "reserved"},	   /* 192.0.0.0/24 IETF protocol assignments */
	{0xC0000200, 24, "documentation"}, /* 192.0.2.0/24 TEST-NET-1 */
	{0xC0586300, 24, "reserved"},	   /* 192.88.99.0/24 6to4 relay anycast */
	{0xC0A80000, 16, "private"},	   /* 192.168.0.0/16 */
	{0xC6120000, 15, "reserved"},	   /* 198.18.0.0/15 benchmarking */
	{0xC6336400, 24, "documentation"}, /* 198.51.100.0/24 TEST-NET-2 */
	{0xCB007100, 24, "documentation"}, /* 203.0.113.0/24 TEST-NET-3 */
	{0xE0000000, 4, "multicast"},	   /* 224.0.0.0/4 */
	{0xF0000000, 4, "reserved"},	   /* 240.0.0.0/4 */
};

static const char *v4_reason(uint32_t a)
{
	for (size_t i = 0; i < sizeof(v4_refused) / sizeof(v4_refused[0]); i++) {
		uint32_t mask = v4_refused[i].bits ? 0xFFFFFFFFu << (32 - v4_refused[i].bits) : 0;
		if ((a & mask) == v4_refused[i].net)
			return v4_refused[i].reason;
	}
	return NULL;
}

static uint32_t v4_at(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static const char *v6_reason(const uint8_t *b)
{
	static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
	if (zero(b, 16))
		return "unspecified"; /* :: */
	if (zero(b, 15) && b[15] == 1)
		return "loopback"; /* ::1 */
	if (zero(b, 10) && b[10] == 0xff && b[11] == 0xff)
		return v4_reason(v4_at(b + 12)); /* ::ffff:a.b.c.d */
	if (zero(b, 12))
		return v4_reason(v4_at(b + 12)) ?: "reserved"; /* ::a.b.c.d (deprecated): never public */
	if (memcmp(b, nat64, 12) == 0)
		return v4_reason(v4_at(b + 12)); /* 64:ff9b::/96 */
	if (b[0] == 0x20 && b[1] == 0x02)
		return v4_reason(v4_at(b + 2)); /* 2002::/16 6to4 */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
		return "tunnel"; /* 2001::/32 Teredo */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
		return "documentation"; /* 2001:db8::/32 */
	if (b[0] == 0x01 && zero(b + 1, 7))
		return "reserved"; /* 100::/64 discard */
	if ((b[0] & 0xfe) == 0xfc)
		return "unique-local"; /* fc00::/7 (AWS's metadata fd00:ec2::254 included) */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return "link-local"; /* fe80::/10 */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
		return "site-local"; /* fec0::/10 */
	if (b[0] == 0xff)
		return "multicast"; /* ff00::/8 */
	if ((b[0] & 0xe0) != 0x20)
		return "reserved"; /* outside 2000::/3, the global unicast space */
	return NULL;
}

const char *ssrf_addr_refused(const struct sockaddr *sa)
{
	if (!sa)
		return "unspecified";
	if (sa->sa_family == AF_INET)
		return v4_reason(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6)
		return v6_reason(((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr);
	return "reserved"; /* AF_UNIX and the like: never */
}

/* An item of the list as a NUL-terminated host (brackets of an IPv6 literal removed). */
static bool item_host(const struct cfg_pair *p, char *out, size_t cap)
{
	const char *s = p->item;
	size_t n = p->ilen;
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
		s++, n -= 2;
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, s, n);
	out[n] = '\0';
	return true;
}

/* Parses an IP literal into 16 bytes (IPv4 as ::ffff:a.b.c.d) so both families compare alike. */
static bool literal(const char *s, uint8_t out[16])
{
	struct in_addr a4;
	if (inet_pton(AF_INET, s, &a4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		return true;
	}
	return inet_pton(AF_INET6, s, out) == 1;
}

bool ssrf_host_listed(const char *list, const char *host)
{
	char h[256], item[256];
	size_t n = host ? strlen(host) : 0;
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
		host++, n -= 2;
	if (!list || n == 0 || n >= sizeof(h))
		return false;
	memcpy(h, host, n);
	h[n] = '\0';
	uint8_t hb[16], ib[16];
	bool h_ip = literal(h, hb);
	struct cfg_pair p;
	for (const char *it = list; cfg_list_next(&it, &p);) {
		if (!item_host(&p, item, sizeof(item)))
			continue;
		if (h_ip ? literal(item, ib) && memcmp(hb, ib, 16) == 0 : strcasecmp(item, h) == 0)
			return true;
		size_t sl = strlen(item + 1); /* "*.example.com" matches a.example.com, not example.com */
		if (!h_ip && item[0] == '*' && item[1] == '.' && n > sl && strcasecmp(h + n - sl, item + 1) == 0)
			return true;
	}
	return false;
}

bool ssrf_addr_listed(const char *list, const struct sockaddr *sa)
{
	uint8_t a[16] = {0}, ib[16];
	if (!list || !sa)
		return false;
	if (sa->sa_family == AF_INET) {
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(a, ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr, 16);
	} else {
		return false;
	}
	char item[256];
	struct cfg_pair p;
	for (const char *it = list; cfg_list_next(&it, &p);)
		if (item_host(&p, item, sizeof(item)) && literal(item, ib) && memcmp(a, ib, 16) == 0)
			return true;
	return false;
}
