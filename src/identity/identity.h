/*
 * identity.h - who is calling: API keys and the resolved identity of a request.
 *
 * DESIGN: a token is "sa01_<id>_<secret>": the id (16 hex) is public and names the key in lists
 * and logs; the secret (40 hex, 160 bits from the kernel CSPRNG) is shown once at creation.
 * Only SHA-256(token) is stored. Verification never touches the disk on an event loop: the
 * auth cache holds a snapshot of all keys, refreshed by the main thread every
 * auth.key_refresh_ms when the store's data_version changed; io threads look tokens up in it
 * under a read lock and compare hashes in constant time.
 */
#ifndef SOMA_IDENTITY_IDENTITY_H
#define SOMA_IDENTITY_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "store/store.h"

#define IDENTITY_TOKEN_PREFIX "sa01_"
#define IDENTITY_KEY_ID_LEN   16
#define IDENTITY_SECRET_LEN   40
#define IDENTITY_TOKEN_LEN    (5 + IDENTITY_KEY_ID_LEN + 1 + IDENTITY_SECRET_LEN)

struct identity {
	char tenant[STORE_ID_MAX + 1];	   /* tenant the request acts for */
	char subject[STORE_ID_MAX + 1];	   /* "key:<id>", "admin_token" or "anonymous" */
	char key_id[STORE_ID_MAX + 1];	   /* key id, empty when not a key */
	char scopes[STORE_SCOPES_MAX + 1]; /* space-separated scopes */
};

/* True when the space-separated scope list contains scope. */
bool identity_has_scope(const struct identity *id, const char *scope);

/* Creates a key for tenant with the given scopes (space-separated, may be ""). Writes the token
 * (shown once) into token[IDENTITY_TOKEN_LEN + 1] and the stored row into *key. */
enum soma_err identity_key_create(struct store *st, const char *tenant, const char *scopes, const char *name,
				  char token[IDENTITY_TOKEN_LEN + 1], struct store_key *key) SOMA_MUST_CHECK;

/* ---- the auth cache (used by the auth middleware) ----------------------------------------- */

enum auth_result { AUTH_OK, AUTH_INVALID, AUTH_REVOKED };

/* Loads every key from st; st must outlive the cache. Main thread. */
enum soma_err auth_cache_init(struct store *st) SOMA_MUST_CHECK;
/* Re-reads the keys when the store changed. Main thread, on a timer. */
enum soma_err auth_cache_refresh(void) SOMA_MUST_CHECK;
void auth_cache_deinit(void);
/* Forces the next refresh to re-read the keys. A writer on the cache's own store connection must
 * call it: PRAGMA data_version only changes for commits made by other connections. */
void auth_cache_mark_stale(void);
/* Resolves a bearer token. Any thread; never blocks on I/O. */
enum auth_result auth_cache_lookup(const char *token, size_t len, struct identity *out);
/* Number of valid (unrevoked) keys in the snapshot. */
size_t auth_cache_valid_keys(void);

#endif
