/*
 * test_identity.c - API keys and the auth cache (src/identity/keys.c, auth_cache.c) on a real
 * store in a temporary data directory.
 *
 * DESIGN: revocations and late key creations go through a second store connection, as
 * `somaagent keys ...` does from its own process; the cache notices other connections' commits
 * (PRAGMA data_version), which is what auth_cache_refresh() is built on.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "identity/identity.h"

static char dir[64];
static struct store *st, *other;
static bool cache_up;

static void setup(void)
{
	char why[256] = "";
	tmpdir_make(dir, sizeof(dir));
	cr_assert_eq(store_open(dir, &st, why, sizeof(why)), SOMA_OK, "%s", why);
	cr_assert_eq(store_migrate(st, NULL), SOMA_OK);
	other = NULL;
	cache_up = false;
}

static void teardown(void)
{
	if (cache_up)
		auth_cache_deinit();
	store_close(other);
	store_close(st);
	tmpdir_remove(dir);
}

TestSuite(identity, .init = setup, .fini = teardown);

static struct store *second_connection(void)
{
	char why[256] = "";
	if (!other)
		cr_assert_eq(store_open(dir, &other, why, sizeof(why)), SOMA_OK, "%s", why);
	return other;
}

static void cache_init(void)
{
	cr_assert_eq(auth_cache_init(st), SOMA_OK);
	cache_up = true;
}

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	}
	return true;
}

static void create(const char *tenant, const char *scopes, char token[IDENTITY_TOKEN_LEN + 1], struct store_key *k)
{
	cr_assert_eq(identity_key_create(st, tenant, scopes, "test key", token, k), SOMA_OK);
}

Test(identity, token_format)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	create("acme", "read write", token, &k);
	cr_assert_eq(strlen(token), 62);
	cr_assert_eq(IDENTITY_TOKEN_LEN, 62);
	cr_assert(strncmp(token, "sa01_", 5) == 0, "token %s", token);
	cr_assert(all_hex(token + 5, 16), "id part of %s", token);
	cr_assert_eq(token[21], '_', "token %s", token);
	cr_assert(all_hex(token + 22, 40), "secret part of %s", token);
	cr_assert_eq(strlen(k.id), 16);
	cr_assert(strncmp(k.id, token + 5, 16) == 0, "key id %s is the id part of the token", k.id);
	cr_assert_str_eq(k.tenant, "acme");
	cr_assert_str_eq(k.scopes, "read write");
	cr_assert_str_eq(k.name, "test key");
	cr_assert_gt(k.created_ms, 1500000000000LL);
	cr_assert_eq(k.revoked_ms, 0);
}

Test(identity, tokens_are_unique)
{
	char t1[IDENTITY_TOKEN_LEN + 1], t2[IDENTITY_TOKEN_LEN + 1];
	struct store_key k1, k2;
	create("acme", "", t1, &k1);
	create("acme", "", t2, &k2);
	cr_assert_str_neq(k1.id, k2.id);
	cr_assert(strcmp(t1 + 22, t2 + 22) != 0, "secrets differ");
}

Test(identity, null_name_and_scopes_are_empty)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	cr_assert_eq(identity_key_create(st, "t", NULL, NULL, token, &k), SOMA_OK);
	cr_assert_str_eq(k.name, "");
	cr_assert_str_eq(k.scopes, "");
}

Test(identity, store_holds_the_hash_not_the_token)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	create("acme", "admin", token, &k);
	unsigned char want[32];
	SHA256((const unsigned char *)token, strlen(token), want);
	cr_assert_eq(memcmp(k.token_hash, want, 32), 0);

	struct store_key *keys = NULL;
	size_t n = 0;
	cr_assert_eq(store_key_list(st, &keys, &n), SOMA_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(memcmp(keys[0].token_hash, want, 32), 0);
	cr_assert_null(memmem(&keys[0], sizeof(keys[0]), token + 22, 40), "the secret is in the stored row");
	free(keys);

	/* nothing written to disk holds the secret */
	static const char *const files[] = {"somaagent.db", "somaagent.db-wal"};
	for (size_t i = 0; i < 2; i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		FILE *f = fopen(path, "rb");
		if (!f)
			continue;
		static char buf[1 << 20];
		size_t len = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		cr_assert_null(memmem(buf, len, token + 22, 40), "%s holds the secret", files[i]);
	}
}

Test(identity, lookup_ok_resolves_the_identity)
{
	char token[IDENTITY_TOKEN_LEN + 1], t2[IDENTITY_TOKEN_LEN + 1];
	struct store_key k, k2;
	create("acme", "read admin", token, &k);
	create("other", "read", t2, &k2);
	cache_init();
	cr_assert_eq(auth_cache_valid_keys(), 2);
	struct identity id;
	memset(&id, 0, sizeof(id));
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_OK);
	cr_assert_str_eq(id.tenant, "acme");
	cr_assert_str_eq(id.key_id, k.id);
	cr_assert_str_eq(id.scopes, "read admin");
	char subject[80];
	snprintf(subject, sizeof(subject), "key:%s", k.id);
	cr_assert_str_eq(id.subject, subject);
	cr_assert_eq(auth_cache_lookup(t2, strlen(t2), &id), AUTH_OK);
	cr_assert_str_eq(id.tenant, "other");
}

Test(identity, lookup_invalid)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	create("acme", "read", token, &k);
	cache_init();
	struct identity id;
	char bad[IDENTITY_TOKEN_LEN + 2];

	memcpy(bad, token, sizeof(token));
	bad[61] = bad[61] == 'a' ? 'b' : 'a'; /* wrong secret */
	cr_assert_eq(auth_cache_lookup(bad, IDENTITY_TOKEN_LEN, &id), AUTH_INVALID);

	memcpy(bad, token, sizeof(token));
	bad[5] = bad[5] == 'a' ? 'b' : 'a'; /* unknown id */
	cr_assert_eq(auth_cache_lookup(bad, IDENTITY_TOKEN_LEN, &id), AUTH_INVALID);

	cr_assert_eq(auth_cache_lookup(token, IDENTITY_TOKEN_LEN - 1, &id), AUTH_INVALID, "too short");
	memcpy(bad, token, sizeof(token));
	bad[62] = 'f';
	bad[63] = '\0';
	cr_assert_eq(auth_cache_lookup(bad, IDENTITY_TOKEN_LEN + 1, &id), AUTH_INVALID, "too long");

	memcpy(bad, token, sizeof(token));
	bad[1] = 'b'; /* "sb01_" */
	cr_assert_eq(auth_cache_lookup(bad, IDENTITY_TOKEN_LEN, &id), AUTH_INVALID);
	memcpy(bad, token, sizeof(token));
	bad[21] = '-';
	cr_assert_eq(auth_cache_lookup(bad, IDENTITY_TOKEN_LEN, &id), AUTH_INVALID);

	cr_assert_eq(auth_cache_lookup("", 0, &id), AUTH_INVALID);
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_OK, "the real token still works");
}

Test(identity, revoked_key_after_refresh)
{
	char token[IDENTITY_TOKEN_LEN + 1], keep[IDENTITY_TOKEN_LEN + 1];
	struct store_key k, k2;
	create("acme", "read", token, &k);
	create("acme", "read", keep, &k2);
	cache_init();
	struct identity id;
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_OK);
	cr_assert_eq(store_key_revoke(second_connection(), k.id), SOMA_OK);
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_OK, "the snapshot changes only on refresh");
	cr_assert_eq(auth_cache_refresh(), SOMA_OK);
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_REVOKED);
	cr_assert_eq(auth_cache_valid_keys(), 1);
	cr_assert_eq(auth_cache_lookup(keep, strlen(keep), &id), AUTH_OK);
	cr_assert_eq(store_key_revoke(st, k.id), SOMA_ERR_NOT_FOUND, "a key is revoked once");
	cr_assert_eq(store_key_revoke(st, "0000000000000000"), SOMA_ERR_NOT_FOUND);
}

Test(identity, revoked_key_with_wrong_secret_is_invalid)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	create("acme", "read", token, &k);
	cr_assert_eq(store_key_revoke(st, k.id), SOMA_OK);
	cache_init();
	struct identity id;
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_REVOKED);
	token[61] = token[61] == 'a' ? 'b' : 'a';
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_INVALID, "only the true token learns it");
	cr_assert_eq(auth_cache_valid_keys(), 0);
}

Test(identity, key_created_elsewhere_appears_after_refresh)
{
	cache_init();
	cr_assert_eq(auth_cache_valid_keys(), 0);
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	cr_assert_eq(identity_key_create(second_connection(), "late", "", "n", token, &k), SOMA_OK);
	struct identity id;
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_INVALID);
	cr_assert_eq(auth_cache_refresh(), SOMA_OK);
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_OK);
	cr_assert_str_eq(id.tenant, "late");
	cr_assert_eq(auth_cache_refresh(), SOMA_OK, "a refresh without changes is fine");
	cr_assert_eq(auth_cache_valid_keys(), 1);
}

Test(identity, deinit_empties_the_cache)
{
	char token[IDENTITY_TOKEN_LEN + 1];
	struct store_key k;
	create("acme", "read", token, &k);
	cache_init();
	auth_cache_deinit();
	cache_up = false;
	struct identity id;
	cr_assert_eq(auth_cache_valid_keys(), 0);
	cr_assert_eq(auth_cache_lookup(token, strlen(token), &id), AUTH_INVALID);
}

Test(identity, has_scope)
{
	struct identity id = {.scopes = "read  admin write"};
	cr_assert(identity_has_scope(&id, "read"));
	cr_assert(identity_has_scope(&id, "admin"));
	cr_assert(identity_has_scope(&id, "write"));
	cr_assert_not(identity_has_scope(&id, "adm"));
	cr_assert_not(identity_has_scope(&id, "writer"));
	cr_assert_not(identity_has_scope(&id, "read admin"));
	cr_assert_not(identity_has_scope(&id, ""));
	struct identity padded = {.scopes = "  admin  "};
	cr_assert(identity_has_scope(&padded, "admin"));
	struct identity longer = {.scopes = "administrator"};
	cr_assert_not(identity_has_scope(&longer, "admin"));
	struct identity none = {.scopes = ""};
	cr_assert_not(identity_has_scope(&none, "admin"));
}
