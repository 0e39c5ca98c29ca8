/*
 * jwt_int.h - internals shared by the JWT files: verification keys, base64url, the JWKS set.
 *
 * DESIGN: a key is held as SubjectPublicKeyInfo PEM text because that is what libjwt 1.10
 * verifies with (it parses the PEM on each check; the per-thread token cache in jwt.c keeps
 * that off the common path). Each key records its type, and a token's alg is matched to the
 * key before libjwt sees anything: HS* only ever uses the configured secret, RS* only RSA keys,
 * ES256 only P-256 keys, ES384 only P-384 keys. So no token can make a public key serve as an
 * HMAC secret, and a key set can never hold a symmetric key (JWKS "oct" keys are skipped).
 * The JWKS set is replaced as a whole, under a rwlock, by the JWKS thread (jwks.c); each
 * replacement that changes it bumps a generation, and cached tokens verified against an older
 * generation are verified again.
 */
#ifndef SOMA_IDENTITY_JWT_INT_H
#define SOMA_IDENTITY_JWT_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "identity/identity.h"

#define JWT_KID_MAX   128	   /* longest kid we keep or look up */
#define JWT_PEM_MAX   4096	   /* a 8192-bit RSA key's PEM is ~1.5 KB */
#define JWKS_MAX_KEYS 32	   /* keys kept from one JWKS document; the rest are ignored */
#define JWKS_DOC_MAX  (256 * 1024) /* a larger JWKS response is refused */

enum jwt_key_type { JWT_KEY_RSA, JWT_KEY_EC_P256, JWT_KEY_EC_P384 };

struct jwt_key {
	char kid[JWT_KID_MAX + 1]; /* key id; "" when the key has none (the PEM key) */
	enum jwt_key_type type;	   /* which algs it may verify */
	char alg[8];		   /* the JWK's own alg when it names one, else "" */
	char pem[JWT_PEM_MAX];	   /* SubjectPublicKeyInfo PEM, NUL-terminated */
	int pem_len;		   /* bytes of pem without the NUL */
};

/* ---- jwk.c: decoding keys -------------------------------------------------------------------- */

/* Decodes unpadded (or '='-padded) base64url in[0..len) into out[cap]; false on a character
 * outside the alphabet, an impossible length, or when the result does not fit. */
bool jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len);
/* The key type an asymmetric alg needs; false for algs other than RS256/384/512, ES256, ES384. */
bool jwt_alg_key_type(const char *alg, enum jwt_key_type *type);
/* A PEM public key or certificate -> *out (normalised to SubjectPublicKeyInfo PEM). False with a
 * sentence in why for anything else, or RSA under 2048 bits, or an EC curve other than P-256/384. */
bool jwt_pem_to_key(const char *pem, size_t len, struct jwt_key *out, char *why, size_t cap);
/* One JWK object -> *out. False (with why) for keys we cannot or must not use: kty other than
 * RSA/EC, use other than sig, an alg that does not fit the key, bad sizes, points off the curve. */
bool jwk_to_key(const json_t *jwk, struct jwt_key *out, char *why, size_t cap);
/* A JWKS document {"keys":[...]} -> up to max usable keys into keys[]; *n receives how many.
 * Unusable keys are skipped (logged at debug). SOMA_ERR_INVALID with why when the document is
 * malformed or holds no usable key. */
enum soma_err jwks_parse(const char *doc, size_t len, struct jwt_key *keys, size_t max, size_t *n, char *why,
			 size_t cap) SOMA_MUST_CHECK;

/* ---- jwt_claims.c: what a verified token says ------------------------------------------------ */

#define JWT_TENANT_CLAIMS_MAX 8 /* names in auth.jwt_tenant_claims */
#define JWT_CACHE_TTL_MS      60000

struct jwt_rules {
	const char *issuer;		  /* required iss, or "" */
	const char *audience;		  /* required aud, or "" */
	int leeway_s;			  /* skew allowed on exp and nbf */
	const char *const *tenant_claims; /* claim names, in order */
	size_t ntenant_claims;		  /* entries in tenant_claims */
};

/* Checks the claims of a token whose signature verified (exp, nbf, iss, aud, sub, tenant) and
 * fills *out (tenant, "jwt:<sub>", scopes from scope/scp). *until_ms receives when the result
 * may stop being trusted: min(exp + leeway, now + JWT_CACHE_TTL_MS). */
enum jwt_verdict jwt_claims_check(const json_t *claims, const struct jwt_rules *r, int64_t now_ms, struct identity *out,
				  int64_t *until_ms);

/* ---- jwt_cache.c: verified tokens, per thread ---------------------------------------------- */

/* The identity a token (by its SHA-256) was verified to under this epoch and key generation,
 * while now_ms is before its until_ms; false otherwise. This thread's table only. */
bool jwt_cache_get(const unsigned char hash[32], uint64_t epoch, uint64_t gen, int64_t now_ms, struct identity *out);
/* Remembers a verified token's identity in this thread's table (the least recently used entry
 * of its set goes). */
void jwt_cache_put(const unsigned char hash[32], uint64_t epoch, uint64_t gen, int64_t until_ms,
		   const struct identity *ident);
/* Frees this thread's table (other threads' are freed when they exit). */
void jwt_cache_release(void);

/* ---- jwks.c: the key set and its refresh thread ------------------------------------------- */

enum jwks_find { JWKS_FOUND, JWKS_NOT_FOUND, JWKS_AMBIGUOUS };

/* Starts the thread that fetches url now and every refresh_s seconds (sooner after failures),
 * and waits up to wait_ms for the first attempt; a fetch gives up after fetch_timeout_ms (0: 5 s).
 * Main thread. */
enum soma_err jwks_start(const char *url, int refresh_s, int wait_ms, int fetch_timeout_ms) SOMA_MUST_CHECK;
/* Stops the thread (aborting a transfer in flight) and drops the key set. Accepts no start. */
void jwks_stop(void);
/* With kid: the key of that kid (of any type: the caller checks it fits the alg). Without kid
 * (NULL): the only key of the given type, JWKS_AMBIGUOUS when there are several. Copies into
 * *out. Any thread; takes the set's read lock. */
enum jwks_find jwks_key_find(const char *kid, enum jwt_key_type type, struct jwt_key *out);
/* Asks the thread to fetch now; at most once every 10 s, else ignored. Never blocks on I/O. */
void jwks_refresh_soon(void);
/* Bumped on every change of the key set. */
uint64_t jwks_generation(void);
/* Replaces the key set with a copy of keys[0..n) (the JWKS thread; unit tests). */
void jwks_install(const struct jwt_key *keys, size_t n);
/* State of the key set for health; false when a JWKS is configured but was never loaded. */
bool jwks_describe(char *detail, size_t cap);

#endif
