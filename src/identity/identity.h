/*
 * identity.h - who is calling: API keys, JWT bearer tokens, and the resolved identity of a request.
 *
 * DESIGN: a token is "sa01_<id>_<secret>": the id (16 hex) is public and names the key in lists
 * and logs; the secret (40 hex, 160 bits from the kernel CSPRNG) is shown once at creation.
 * Only SHA-256(token) is stored. Verification never touches the disk on an event loop: the
 * auth cache holds a snapshot of all keys, refreshed by the main thread every
 * auth.key_refresh_ms when the store's data_version changed; io threads look tokens up in it
 * under a read lock and compare hashes in constant time.
 * JWTs (jwt.c, jwks.c, jwk.c) are verified on the io thread with keys held in memory: the
 * HS256 secret, a PEM public key read at start, and a JWKS key set fetched by a background
 * thread (never on the request path). A verified token's identity is cached per io thread for
 * at most 60 s (never past its exp), keyed by SHA-256 of the token, so a client reusing its
 * token pays one hash per request, not one signature check.
 */
#ifndef SOMA_IDENTITY_IDENTITY_H
#define SOMA_IDENTITY_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	int64_t expires_ms;		   /* wall ms from which the credential is refused (a JWT's
					    * exp + leeway); 0: it does not expire (keys, admin token) */
};

/* True when the space-separated scope list contains scope. */
bool identity_has_scope(const struct identity *id, const char *scope);
/* True for a tenant id we accept: 1 to 64 characters of [A-Za-z0-9._-]. */
bool identity_tenant_valid(const char *s);
/* "admin,chat" or "admin  chat" -> "admin chat" into out[cap]; false when a scope holds
 * characters other than [a-z0-9:_.-] or the list does not fit. */
bool identity_scopes_normalize(const char *in, char *out, size_t cap);

/* Makes a new key for tenant with the given scopes (space-separated, may be "") without storing
 * it: the token (shown once) goes into token[IDENTITY_TOKEN_LEN + 1], the row to store (hash,
 * never the token) into *key. The caller wipes token when done (OPENSSL_cleanse). */
enum soma_err identity_key_new(const char *tenant, const char *scopes, const char *name,
			       char token[IDENTITY_TOKEN_LEN + 1], struct store_key *key) SOMA_MUST_CHECK;
/* identity_key_new, then stores the row in st (synchronously: CLI and tests only). */
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
/* Whether any key was ever created, revoked ones included. Anonymous mode (loopback, no keys)
 * ends with the first key and never comes back: revoking the last key (a rotation that revokes
 * before it creates, or a leaked key revoked) must not open the server to every local caller. */
bool auth_cache_keys_exist(void);
/* Puts a key just committed by this process into the snapshot at once (the admin API: a new key
 * works, a revoked one stops, without waiting for the next refresh). Any thread. */
enum soma_err auth_cache_put(const struct store_key *key) SOMA_MUST_CHECK;
/* A counter that grows whenever a key of the snapshot became revoked (or vanished), by
 * auth_cache_put here or by a refresh that read another node's revocation. Long-lived responses
 * (event streams) opened with a key compare it on their own io thread and, when it moved, ask
 * auth_cache_key_active: one atomic load per check while nothing is revoked. Any thread. */
uint64_t auth_cache_revocations(void);
/* True when the key of this id is in the snapshot and not revoked. Any thread; never blocks on
 * I/O. */
bool auth_cache_key_active(const char *key_id);

/* ---- JWT bearer tokens (jwt.c, jwt_claims.c, jwks.c, jwk.c) ------------------------------- */

#define JWT_TOKEN_MAX 8192 /* longer bearer tokens are refused before any decoding */

struct jwt_config {
	const char *secret;	     /* HS256/384/512 shared secret, or "" */
	const char *public_key_path; /* PEM file of an RSA or EC public key, or "" */
	const char *jwks_url;	     /* JWKS document URL, or "" */
	int jwks_refresh_s;	     /* seconds between JWKS refreshes */
	int jwks_wait_ms;	     /* how long start-up waits for the first JWKS fetch */
	int jwks_fetch_timeout_ms;   /* the limit of one fetch; 0: 5 s */
	const char *issuer;	     /* required iss, or "" (not checked) */
	const char *audience;	     /* required aud (string or member of the array), or "" */
	int leeway_s;		     /* clock skew allowed on exp and nbf */
	const char *tenant_claims;   /* comma list: the first present claim names the tenant */
};

enum jwt_verdict {
	JWT_OK,
	JWT_MALFORMED,	    /* not three base64url parts of JSON, or too long */
	JWT_UNSIGNED,	    /* unsigned token */
	JWT_UNSUPPORTED,    /* alg we do not verify, crit header, or odd typ */
	JWT_NO_KEY_FOR_ALG, /* HS* without a secret, RS/ES* without a public key or JWKS */
	JWT_KEY_MISMATCH,   /* the key named by kid is of another type than alg */
	JWT_UNKNOWN_KID,    /* kid not in the key set (a refresh was asked for) */
	JWT_NO_KID,	    /* no kid and the key set has several candidate keys */
	JWT_BAD_SIGNATURE,  /* signature does not verify */
	JWT_NO_EXP,	    /* exp missing or not a number */
	JWT_EXPIRED,	    /* exp + leeway is past */
	JWT_NOT_YET_VALID,  /* nbf - leeway is in the future */
	JWT_WRONG_ISSUER,   /* iss differs from auth.jwt_issuer */
	JWT_WRONG_AUDIENCE, /* aud lacks auth.jwt_audience */
	JWT_NO_SUBJECT,	    /* sub missing, empty or longer than 60 characters */
	JWT_NO_TENANT,	    /* none of auth.jwt_tenant_claims is present */
	JWT_BAD_TENANT,	    /* the tenant claim is not a valid tenant id */
	JWT_DISABLED,	    /* no JWT verification is configured */
	JWT_VERDICT_COUNT
};

/* Reads the PEM key, starts the JWKS thread (waiting up to jwks_wait_ms for its first fetch).
 * Strings are copied. Main thread, before io threads run. On failure *why names the key at
 * fault. With nothing configured it succeeds and JWTs are refused (JWT_DISABLED). */
enum soma_err jwt_auth_init(const struct jwt_config *c, char *why, size_t cap) SOMA_MUST_CHECK;
/* Stops the JWKS thread and forgets every key and cached token. Accepts no prior init. */
void jwt_auth_deinit(void);
/* True when at least one way of verifying JWTs is configured. */
bool jwt_auth_enabled(void);
/* True when the bearer token has the shape of a JWT (two dots) rather than an API key. */
bool identity_token_is_jwt(const char *token, size_t len);
/* Verifies a JWT and resolves its identity into *out. Any thread; never blocks on I/O (an
 * unknown kid only wakes the JWKS thread, at most every 10 s). */
enum jwt_verdict jwt_auth_verify(const char *token, size_t len, struct identity *out);
/* One sentence for the client on what is wrong and what to do; never contains the token. */
const char *jwt_verdict_message(enum jwt_verdict v);
/* Describes the JWT setup for the health of the auth service; false when a configured JWKS has
 * never been loaded (JWKS-signed tokens are refused until it is). */
bool jwt_auth_describe(char *detail, size_t cap);

#endif
