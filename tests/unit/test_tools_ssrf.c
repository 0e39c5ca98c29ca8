/*
 * test_tools_ssrf.c - the SSRF guard's address checks (src/tools/ssrf.c): every refused IPv4 and
 * IPv6 range, the IPv6 forms that carry an IPv4 address, and the allowlist's host and address
 * matching.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>

#include "tools/tools_int.h"

/* The reason the guard gives for a literal address (NULL: public). */
static const char *why(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
	} else {
		cr_assert_eq(inet_pton(AF_INET6, ip, &v6->sin6_addr), 1, "bad literal %s", ip);
		v6->sin6_family = AF_INET6;
	}
	return ssrf_addr_refused((struct sockaddr *)&ss);
}

static void refused(const char *ip, const char *reason)
{
	const char *r = why(ip);
	cr_assert_not_null(r, "%s was allowed", ip);
	cr_assert_str_eq(r, reason, "%s: %s, expected %s", ip, r, reason);
}

Test(ssrf, ipv4_ranges_refused)
{
	refused("127.0.0.1", "loopback");
	refused("127.255.255.254", "loopback");
	refused("10.1.2.3", "private");
	refused("172.16.0.1", "private");
	refused("172.31.255.255", "private");
	refused("192.168.1.1", "private");
	refused("169.254.169.254", "metadata");
	refused("169.254.1.1", "link-local");
	refused("100.64.0.1", "cgnat");
	refused("100.127.255.255", "cgnat");
	refused("0.0.0.0", "unspecified");
	refused("0.1.2.3", "unspecified");
	refused("224.0.0.1", "multicast");
	refused("239.255.255.250", "multicast");
	refused("240.0.0.1", "reserved");
	refused("255.255.255.255", "broadcast");
	refused("192.0.2.1", "documentation");
	refused("198.51.100.7", "documentation");
	refused("203.0.113.9", "documentation");
	refused("198.18.0.1", "reserved");
	refused("192.0.0.8", "reserved");
}

Test(ssrf, ipv4_public_allowed)
{
	cr_assert_null(why("93.184.216.34"));
	cr_assert_null(why("8.8.8.8"));
	cr_assert_null(why("172.32.0.1"));  /* just past 172.16/12 */
	cr_assert_null(why("100.128.0.1")); /* just past 100.64/10 */
	cr_assert_null(why("169.253.255.255"));
	cr_assert_null(why("11.0.0.1"));
}

Test(ssrf, ipv6_ranges_refused)
{
	refused("::", "unspecified");
	refused("::1", "loopback");
	refused("fe80::1", "link-local");
	refused("fec0::1", "site-local");
	refused("fc00::1", "unique-local");
	refused("fd00:ec2::254", "unique-local");
	refused("ff02::1", "multicast");
	refused("2001:db8::1", "documentation");
	refused("2001:0:4136:e378:8000:63bf:3fff:fdd2", "tunnel");
	refused("100::1", "reserved");
	refused("4000::1", "reserved");
}

Test(ssrf, ipv6_forms_carrying_ipv4)
{
	refused("::ffff:127.0.0.1", "loopback");
	refused("::ffff:169.254.169.254", "metadata");
	refused("::ffff:10.0.0.1", "private");
	refused("::ffff:7f00:1", "loopback");
	refused("::127.0.0.1", "loopback");
	refused("::8.8.8.8", "reserved"); /* IPv4-compatible: deprecated, never public */
	refused("64:ff9b::a9fe:a9fe", "metadata");
	refused("64:ff9b::192.168.0.1", "private");
	refused("2002:7f00:1::1", "loopback"); /* 6to4 of 127.0.0.1 */
	refused("2002:c0a8:101::1", "private");
	cr_assert_null(why("::ffff:8.8.8.8"));
	cr_assert_null(why("64:ff9b::808:808"));
	cr_assert_null(why("2002:808:808::1"));
}

Test(ssrf, ipv6_public_allowed)
{
	cr_assert_null(why("2606:4700:4700::1111"));
	cr_assert_null(why("2a00:1450:4001:80b::200e"));
}

Test(ssrf, hosts_listed)
{
	const char *list = "example.com, *.example.org, 127.0.0.1, [::1]";
	cr_assert(ssrf_host_listed(list, "example.com"));
	cr_assert(ssrf_host_listed(list, "EXAMPLE.com"));
	cr_assert_not(ssrf_host_listed(list, "www.example.com"));
	cr_assert(ssrf_host_listed(list, "a.example.org"));
	cr_assert(ssrf_host_listed(list, "a.b.example.org"));
	cr_assert_not(ssrf_host_listed(list, "example.org"));
	cr_assert_not(ssrf_host_listed(list, "badexample.org"));
	cr_assert(ssrf_host_listed(list, "127.0.0.1"));
	cr_assert_not(ssrf_host_listed(list, "127.0.0.2"));
	cr_assert(ssrf_host_listed(list, "[::1]"));
	cr_assert(ssrf_host_listed(list, "::1"));
	cr_assert(ssrf_host_listed(list, "[0:0::1]"));
	cr_assert_not(ssrf_host_listed(list, "localhost"));
	cr_assert_not(ssrf_host_listed("", "example.com"));
}

Test(ssrf, addresses_listed)
{
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
	cr_assert(ssrf_addr_listed("example.com,127.0.0.1", (struct sockaddr *)&v4));
	cr_assert_not(ssrf_addr_listed("example.com", (struct sockaddr *)&v4));
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &v6.sin6_addr); /* the mapped form of a listed address */
	cr_assert(ssrf_addr_listed("127.0.0.1", (struct sockaddr *)&v6));
	inet_pton(AF_INET6, "::1", &v6.sin6_addr);
	cr_assert(ssrf_addr_listed("[::1]", (struct sockaddr *)&v6));
	cr_assert_not(ssrf_addr_listed("127.0.0.1", (struct sockaddr *)&v6));
}
