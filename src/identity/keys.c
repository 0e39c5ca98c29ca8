/*
 * keys.c - creating API keys and checking scopes (see identity.h).
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

enum soma_err identity_key_create(struct store *st, const char *tenant, const char *scopes, const char *name,
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
	err = store_key_insert(st, key);
	OPENSSL_cleanse(secret, sizeof(secret));
	return err;
}
