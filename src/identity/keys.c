/*
 * keys.c - creating API keys, and the shared rules for tenant ids and scope lists (see
 * identity.h). The rules live here so the CLI, the admin API and the JWT verifier accept the
 * same tenants and scopes.
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/ids.h"
#include "identity/identity.h"

bool identity_has_scope(const struct identity *id, const char *scope)
{
	size_t n = strlen(scope);
	for (const char *p = id->scopes; *p;) {
		while (*p == ' ')
			p++;
		const char *end = strchr(p, ' ');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && len > 0 && strncmp(p, scope, n) == 0)
			return true;
		p += len;
	}
	return false;
}

bool identity_tenant_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > STORE_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.'))
			return false;
	}
	return true;
}

bool identity_scopes_normalize(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	bool sep = false;
	if (cap == 0)
		return false;
	for (const char *p = in ? in : ""; *p; p++) {
		char c = *p;
		if (c == ',' || c == ' ') {
			sep = o > 0;
			continue;
		}
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ':' || c == '_' || c == '.' ||
			  c == '-';
		if (!ok || o + 2 >= cap)
			return false;
		if (sep) {
			out[o++] = ' ';
			sep = false;
		}
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

enum soma_err identity_key_new(const char *tenant, const char *scopes, const char *name,
			       char token[IDENTITY_TOKEN_LEN + 1], struct store_key *key)
{
	char id[IDENTITY_KEY_ID_LEN + 1], secret[IDENTITY_SECRET_LEN + 1];
	enum soma_err err = ids_random_hex(id, IDENTITY_KEY_ID_LEN);
	if (err == SOMA_OK)
		err = ids_random_hex(secret, IDENTITY_SECRET_LEN);
	if (err != SOMA_OK)
		return err;
	memset(key, 0, sizeof(*key));
	snprintf(token, IDENTITY_TOKEN_LEN + 1, "%s%s_%s", IDENTITY_TOKEN_PREFIX, id, secret);
	snprintf(key->id, sizeof(key->id), "%s", id);
	snprintf(key->tenant, sizeof(key->tenant), "%s", tenant);
	snprintf(key->name, sizeof(key->name), "%s", name ? name : "");
	snprintf(key->scopes, sizeof(key->scopes), "%s", scopes ? scopes : "");
	SHA256((const unsigned char *)token, strlen(token), key->token_hash);
	key->created_ms = clock_wall_ms();
	OPENSSL_cleanse(secret, sizeof(secret));
	return SOMA_OK;
}

enum soma_err identity_key_create(struct store *st, const char *tenant, const char *scopes, const char *name,
				  char token[IDENTITY_TOKEN_LEN + 1], struct store_key *key)
{
	enum soma_err err = identity_key_new(tenant, scopes, name, token, key);
	return err == SOMA_OK ? store_key_insert(st, key) : err;
}
