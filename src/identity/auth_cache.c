/*
 * auth_cache.c - in-memory snapshot of the API keys for the io threads (see identity.h).
 *
 * DESIGN: the main thread swaps in a fresh snapshot when the store changed; the admin API also
 * patches the snapshot in place (auth_cache_put) right after its own commit, so its changes act
 * at once. A later refresh reads the same rows back, so the two never disagree for long.
 * `revocations` counts the changes that took a key away (revoked here, or a refresh that found
 * more revoked or fewer keys: another node's DELETE /v1/keys reaches this node that way); the
 * event streams opened with a key watch it and end when their key is gone (src/gateway/stream.c).
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "identity/identity.h"

static pthread_rwlock_t cache_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct store_key *keys; /* snapshot; guarded by cache_lock */
static size_t nkeys;	       /* entries in keys */
static _Atomic size_t nvalid;  /* unrevoked entries */
static _Atomic size_t nknown;  /* entries, revoked ones included (never shrinks: rows stay) */
static struct store *source;   /* where keys come from; main thread only */
static int64_t seen_version = -1;
static _Atomic uint64_t revocations; /* grows when a key was revoked or vanished */

static enum soma_err reload(void)
{
	struct store_key *fresh;
	size_t n;
	enum soma_err err = store_key_list(source, &fresh, &n);
	if (err != SOMA_OK)
		return err;
	size_t valid = 0;
	for (size_t i = 0; i < n; i++)
		valid += fresh[i].revoked_ms == 0;
	pthread_rwlock_wrlock(&cache_lock);
	/* keys are never unrevoked: more revoked rows, or fewer rows, means a key was taken away */
	if (n - valid != nkeys - atomic_load(&nvalid) || n < nkeys)
		atomic_fetch_add(&revocations, 1);
	struct store_key *old = keys;
	keys = fresh;
	nkeys = n;
	atomic_store(&nvalid, valid);
	if (n > atomic_load(&nknown))
		atomic_store(&nknown, n);
	pthread_rwlock_unlock(&cache_lock);
	free(old);
	return SOMA_OK;
}

enum soma_err auth_cache_init(struct store *st)
{
	source = st;
	seen_version = -1;
	return auth_cache_refresh();
}

enum soma_err auth_cache_refresh(void)
{
	int64_t v;
	enum soma_err err = store_data_version(source, &v);
	if (err != SOMA_OK)
		return err;
	if (v == seen_version)
		return SOMA_OK;
	err = reload();
	if (err == SOMA_OK)
		seen_version = v;
	return err;
}

void auth_cache_deinit(void)
{
	pthread_rwlock_wrlock(&cache_lock);
	free(keys);
	keys = NULL;
	nkeys = 0;
	atomic_store(&nvalid, 0);
	atomic_store(&nknown, 0);
	pthread_rwlock_unlock(&cache_lock);
	source = NULL;
}

void auth_cache_mark_stale(void)
{
	seen_version = -1;
}

size_t auth_cache_valid_keys(void)
{
	return atomic_load(&nvalid);
}

bool auth_cache_keys_exist(void)
{
	return atomic_load(&nknown) > 0;
}

enum soma_err auth_cache_put(const struct store_key *key)
{
	enum soma_err err = SOMA_OK;
	pthread_rwlock_wrlock(&cache_lock);
	size_t i = 0;
	while (i < nkeys && strcmp(keys[i].id, key->id) != 0)
		i++;
	bool was_active = i < nkeys && keys[i].revoked_ms == 0;
	if (i == nkeys) {
		struct store_key *grown = realloc(keys, (nkeys + 1) * sizeof(*keys));
		if (grown) {
			keys = grown;
			nkeys++;
		} else {
			err = SOMA_ERR_NOMEM;
		}
	}
	if (err == SOMA_OK) {
		keys[i] = *key;
		size_t valid = 0;
		for (size_t j = 0; j < nkeys; j++)
			valid += keys[j].revoked_ms == 0;
		atomic_store(&nvalid, valid);
		if (nkeys > atomic_load(&nknown))
			atomic_store(&nknown, nkeys);
		if (was_active && key->revoked_ms)
			atomic_fetch_add(&revocations, 1);
	}
	pthread_rwlock_unlock(&cache_lock);
	return err;
}

uint64_t auth_cache_revocations(void)
{
	return atomic_load(&revocations);
}

bool auth_cache_key_active(const char *key_id)
{
	bool active = false;
	pthread_rwlock_rdlock(&cache_lock);
	for (size_t i = 0; i < nkeys; i++) {
		if (strcmp(keys[i].id, key_id) == 0) {
			active = keys[i].revoked_ms == 0;
			break;
		}
	}
	pthread_rwlock_unlock(&cache_lock);
	return active;
}

enum auth_result auth_cache_lookup(const char *token, size_t len, struct identity *out)
{
	const size_t plen = strlen(IDENTITY_TOKEN_PREFIX);
	if (len != IDENTITY_TOKEN_LEN || memcmp(token, IDENTITY_TOKEN_PREFIX, plen) != 0 ||
	    token[plen + IDENTITY_KEY_ID_LEN] != '_')
		return AUTH_INVALID;
	unsigned char hash[32];
	SHA256((const unsigned char *)token, len, hash);
	enum auth_result result = AUTH_INVALID;
	pthread_rwlock_rdlock(&cache_lock);
	for (size_t i = 0; i < nkeys; i++) {
		const struct store_key *k = &keys[i];
		if (strlen(k->id) != IDENTITY_KEY_ID_LEN || memcmp(k->id, token + plen, IDENTITY_KEY_ID_LEN) != 0)
			continue;
		if (CRYPTO_memcmp(k->token_hash, hash, sizeof(hash)) != 0)
			break;
		if (k->revoked_ms) {
			result = AUTH_REVOKED;
			break;
		}
		memcpy(out->tenant, k->tenant, sizeof(out->tenant));
		memcpy(out->key_id, k->id, sizeof(out->key_id));
		memcpy(out->scopes, k->scopes, sizeof(out->scopes));
		out->expires_ms = 0;
		snprintf(out->subject, sizeof(out->subject), "key:%.*s", IDENTITY_KEY_ID_LEN, k->id);
		result = AUTH_OK;
		break;
	}
	pthread_rwlock_unlock(&cache_lock);
	return result;
}
