/*
 * test_local_request.c - which Host values count as this machine's loopback for the anonymous mode
 * (src/http/local_request.c); the whole check runs against the real server in
 * tests/e2e/test_auth_local.py.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "http/local_request.h"

Test(local_request, loopback_hosts)
{
	const char *yes[] = {"localhost",	  "LocalHost:8080", "127.0.0.1", "127.0.0.1:1",
			     "127.255.0.9:65535", "[::1]",	    "[::1]:8080"};
	const char *no[] = {"",
			    "attacker.example",
			    "localhost.attacker.example",
			    "127.0.0.1.attacker.example",
			    "127.0.0.1:",
			    "127.0.0.1:123456",
			    "127.0.0.1:80x",
			    "127.0.0",
			    "127.0.0.1.5",
			    "127..0.1",
			    "1270.0.0.1",
			    "128.0.0.1",
			    "[::2]",
			    "[::1]x",
			    "[::1]:",
			    "::1",
			    "localhost:8080:1"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		cr_assert(http_host_is_loopback(yes[i], strlen(yes[i])), "%s", yes[i]);
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		cr_assert_not(http_host_is_loopback(no[i], strlen(no[i])), "%s", no[i]);
}
