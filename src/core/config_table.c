/*
 * config_table.c - the key definitions (from config_keys.h) and their validators.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_int.h"
#include "tools/tools.h"

bool cfg_parse_listen(const char *value, char *host, size_t host_cap, int *port)
{
	const char *colon;
	size_t hlen;
	if (value[0] == '[') {
		const char *end = strchr(value, ']');
		if (!end || end[1] != ':')
			return false;
		hlen = (size_t)(end - value - 1);
		value++;
		colon = end + 1;
	} else {
		colon = strrchr(value, ':');
		if (!colon || memchr(value, ':', (size_t)(colon - value)))
			return false;
		hlen = (size_t)(colon - value);
	}
	if (hlen == 0 || hlen >= host_cap)
		return false;
	memcpy(host, value, hlen);
	host[hlen] = '\0';
	const char *p = colon + 1;
	if (*p == '\0' || strlen(p) > 5)
		return false;
	long n = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		n = n * 10 + (*p - '0');
	}
	if (n < 1 || n > 65535)
		return false;
	*port = (int)n;
	return true;
}

bool cfg_listen_is_loopback(const char *host)
{
	/* literal addresses only (and "localhost"): a name such as 127.example.com is not loopback */
	struct in_addr v4;
	struct in6_addr v6;
	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6);
	return strcmp(host, "localhost") == 0;
}

static bool validate_listen(const char *value, char *why, size_t cap)
{
	char host[256];
	int port;
	if (cfg_parse_listen(value, host, sizeof(host), &port))
		return true;
	snprintf(why, cap, "expected host:port with a port from 1 to 65535, e.g. 127.0.0.1:8080 or [::1]:8080");
	return false;
}

static bool validate_nonempty(const char *value, char *why, size_t cap)
{
	if (value[0])
		return true;
	snprintf(why, cap, "expected a non-empty path");
	return false;
}

static bool validate_nonempty_text(const char *value, char *why, size_t cap)
{
	if (value[0])
		return true;
	snprintf(why, cap, "expected a non-empty text");
	return false;
}

static bool validate_tenant(const char *value, char *why, size_t cap)
{
	size_t n = strlen(value);
	bool ok = n > 0 && n <= 64;
	for (size_t i = 0; ok && i < n; i++) {
		char c = value[i];
		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		     c == '_' || c == '.';
	}
	if (!ok)
		snprintf(why, cap, "expected 1 to 64 characters of [A-Za-z0-9._-]");
	return ok;
}

static bool validate_admin_token(const char *value, char *why, size_t cap)
{
	size_t n = strlen(value);
	if (n == 0 || (n >= 32 && n <= 256 && !strpbrk(value, " \t\r\n")))
		return true;
	snprintf(why, cap, "expected empty, or 32 to 256 characters without spaces");
	return false;
}

static bool validate_url_or_empty(const char *value, char *why, size_t cap)
{
	if (!value[0] || strncmp(value, "http://", 7) == 0 || strncmp(value, "https://", 8) == 0)
		return true;
	snprintf(why, cap, "expected an http:// or https:// URL, or empty");
	return false;
}

static bool validate_store_url(const char *value, char *why, size_t cap)
{
	if (!value[0] || strncmp(value, "postgresql://", 13) == 0 || strncmp(value, "postgres://", 11) == 0)
		return true;
	snprintf(why, cap, "expected a postgresql://user:password@host:port/database URL, or empty for SQLite");
	return false;
}

static bool validate_redis_url(const char *value, char *why, size_t cap)
{
	if (!value[0] || strncmp(value, "redis://", 8) == 0)
		return true;
	snprintf(why, cap, "expected a redis://[:password@]host[:port][/db] URL, or empty");
	return false;
}

static const struct cfg_key_def key_defs[CFG_KEY_COUNT] = {
#define CFG_DEF_ROW(id, name, type, def, min, max, choices, validate, secret, alias, doc) \
	[CFG_##id] = {name, type, def, min, max, choices, validate, secret, alias, doc},
	CFG_KEYS(CFG_DEF_ROW)
#undef CFG_DEF_ROW
};

const struct cfg_key_def *cfg_def(enum cfg_key key)
{
	return &key_defs[key];
}

bool cfg_is_url(enum cfg_key key)
{
	cfg_validate_fn v = key_defs[key].validate;
	return v == validate_url_or_empty || v == validate_store_url || v == validate_redis_url;
}

bool cfg_find(const char *name, enum cfg_key *out)
{
	for (int i = 0; i < CFG_KEY_COUNT; i++) {
		if (strcmp(key_defs[i].name, name) == 0) {
			*out = (enum cfg_key)i;
			return true;
		}
	}
	return false;
}

void cfg_env_name(enum cfg_key key, char *out, size_t cap)
{
	const char *name = key_defs[key].name;
	size_t o = 0;
	const char *prefix = "SOMA_";
	for (; *prefix && o + 1 < cap; prefix++)
		out[o++] = *prefix;
	for (; *name && o + 1 < cap; name++) {
		char c = *name;
		if (c == '.')
			c = '_';
		else if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		out[o++] = c;
	}
	out[o] = '\0';
}
