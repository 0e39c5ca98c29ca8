/*
 * jwt.c - JWT bearer tokens: configuration, verification and the per-thread cache of verified
 * tokens (see identity.h; keys in jwk.c and jwks.c, claims in jwt_claims.c).
 *
 * DESIGN: verification (any io thread, never blocking) goes
 *   SHA-256(token) -> this thread's cache -> split and decode header and claims -> alg and key
 *   chosen by us (never by the token alone) -> signature (libjwt) -> claims -> identity,
 * and caches the identity until min(exp + leeway, now + 60 s) in jwt_cache.c, tagged with the
 * JWKS generation (a key set change re-verifies) and the configuration epoch. The configuration is written
 * by jwt_auth_init/deinit on the main thread while no io thread runs, and only read after.
 * libjwt 1.10 takes the algorithm from the token's header and the key from us, so the key is
 * picked to fit the alg first: HS* uses the secret only, RS* and ES* an asymmetric key of the
 * matching type only; alg "none" never reaches it. Its HMAC check compares with strcmp, so HS*
 * signatures are checked here first in constant time. Tokens never reach a log or a message.
 */
#include <errno.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/log.h"
#include "identity/jwt_int.h"

#define HEADER_MAX 1024 /* decoded JOSE header */

static struct {
	bool enabled;				       /* some way of verifying is configured */
	char *secret;				       /* HS* secret (malloc'd, wiped on deinit), or NULL */
	size_t secret_len;			       /* bytes of secret */
	bool have_pem;				       /* pem_key is set */
	struct jwt_key pem_key;			       /* auth.jwt_public_key */
	bool have_jwks;				       /* the JWKS thread runs */
	char issuer[256], audience[256];	       /* "" when not checked */
	char claim_names[JWT_TENANT_CLAIMS_MAX][64];   /* auth.jwt_tenant_claims */
	const char *claim_ptrs[JWT_TENANT_CLAIMS_MAX]; /* pointers into claim_names */
	struct jwt_rules rules;			       /* what jwt_claims_check enforces */
	char no_tenant[400];			       /* message of JWT_NO_TENANT */
	uint64_t epoch;				       /* bumped by every init: old cache entries die */
} jc;

static const char *const messages[JWT_VERDICT_COUNT] = {
	[JWT_OK] = "ok",
	[JWT_MALFORMED] = "the bearer token is not a well-formed JWT (three base64url parts of JSON objects, at "
			  "most 8192 bytes)",
	[JWT_UNSIGNED] = "unsigned JWTs (alg none) are refused; sign tokens with HS256, RS256 or ES256",
	[JWT_UNSUPPORTED] = "the JWT's alg, typ or crit header is not supported; use alg HS256/384/512, "
			    "RS256/384/512, ES256 or ES384 and typ JWT",
	[JWT_NO_KEY_FOR_ALG] = "this server has no key for the JWT's alg: HS* tokens need auth.jwt_secret, "
			       "RS*/ES* tokens auth.jwt_public_key or auth.jwt_jwks_url",
	[JWT_KEY_MISMATCH] = "the JWT's alg does not fit the type of the key it names; the token is refused",
	[JWT_UNKNOWN_KID] = "unknown key id (kid): no key of the JWKS has it; the server is refreshing its key set, "
			    "retry in a few seconds",
	[JWT_NO_KID] = "the JWT has no key id (kid) and several keys could verify it; issue tokens with a kid",
	[JWT_BAD_SIGNATURE] = "the JWT signature is invalid (signed with another key, or altered)",
	[JWT_NO_EXP] = "the JWT has no exp claim; tokens must expire",
	[JWT_EXPIRED] = "the JWT has expired (exp); get a new token",
	[JWT_NOT_YET_VALID] = "the JWT is not valid yet (nbf); wait, or check the issuer's clock",
	[JWT_WRONG_ISSUER] = "the JWT's issuer (iss) is not the one this server trusts (auth.jwt_issuer)",
	[JWT_WRONG_AUDIENCE] = "the JWT's audience (aud) does not include this server (auth.jwt_audience)",
	[JWT_NO_SUBJECT] = "the JWT has no subject (sub) of 1 to 60 characters",
	[JWT_NO_TENANT] = "the JWT has no tenant claim (auth.jwt_tenant_claims)",
	[JWT_BAD_TENANT] = "the JWT's tenant claim is not a valid tenant id (1 to 64 characters of A-Za-z0-9._-)",
	[JWT_DISABLED] = "JWT bearer tokens are not accepted here; use an API key, or configure auth.jwt_secret, "
			 "auth.jwt_public_key or auth.jwt_jwks_url",
};

const char *jwt_verdict_message(enum jwt_verdict v)
{
	if (v == JWT_NO_TENANT && jc.no_tenant[0])
		return jc.no_tenant;
	return (unsigned)v < JWT_VERDICT_COUNT ? messages[v] : "the JWT was refused";
}

bool jwt_auth_enabled(void)
{
	return jc.enabled;
}

bool identity_token_is_jwt(const char *token, size_t len)
{
	int dots = 0;
	for (size_t i = 0; i < len; i++)
		dots += token[i] == '.';
	return dots == 2;
}

/* ---- verification -------------------------------------------------------------------------- */

/* Decodes one base64url part into a JSON object (duplicate names refused). Caller decrefs. */
static json_t *decode_part(const char *p, size_t n, unsigned char *buf, size_t cap)
{
	size_t len;
	if (!jwt_b64url_decode(p, n, buf, cap, &len))
		return NULL;
	json_t *v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
	if (v && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

/* alg and kid from the header; typ, if any, must be JWT; crit is never understood. */
static enum jwt_verdict check_header(const json_t *hdr, const char **alg, const char **kid)
{
	const json_t *a = json_object_get(hdr, "alg"), *k = json_object_get(hdr, "kid");
	const char *typ = json_string_value(json_object_get(hdr, "typ"));
	if (!json_is_string(a) || (k && (!json_is_string(k) || json_string_length(k) > JWT_KID_MAX)))
		return JWT_MALFORMED;
	*alg = json_string_value(a);
	*kid = json_string_value(k);
	if (strcasecmp(*alg, "none") == 0)
		return JWT_UNSIGNED;
	if (json_object_get(hdr, "crit") || (json_object_get(hdr, "typ") && (!typ || strcasecmp(typ, "JWT") != 0)))
		return JWT_UNSUPPORTED;
	return JWT_OK;
}

/* The asymmetric key for alg (and kid): the JWKS key of that kid, else the PEM key. */
static enum jwt_verdict pick_key(const char *alg, const char *kid, struct jwt_key *key)
{
	enum jwt_key_type type;
	if (!jwt_alg_key_type(alg, &type))
		return JWT_UNSUPPORTED;
	if (!jc.have_pem && !jc.have_jwks)
		return JWT_NO_KEY_FOR_ALG;
	enum jwks_find found = jc.have_jwks ? jwks_key_find(kid, type, key) : JWKS_NOT_FOUND;
	if (found == JWKS_NOT_FOUND && kid && jc.have_jwks)
		jwks_refresh_soon(); /* perhaps a key the issuer just rotated in */
	if (found != JWKS_FOUND) {
		if (!jc.have_pem)
			return found == JWKS_AMBIGUOUS ? JWT_NO_KID : kid ? JWT_UNKNOWN_KID : JWT_NO_KEY_FOR_ALG;
		*key = jc.pem_key;
	}
	if (key->type != type || (key->alg[0] && strcmp(key->alg, alg) != 0))
		return JWT_KEY_MISMATCH;
	return JWT_OK;
}

static const EVP_MD *hmac_md(const char *alg)
{
	if (strcmp(alg, "HS256") == 0)
		return EVP_sha256();
	if (strcmp(alg, "HS384") == 0)
		return EVP_sha384();
	return strcmp(alg, "HS512") == 0 ? EVP_sha512() : NULL;
}

/* Constant-time HMAC check of "header.payload" against the decoded signature. */
static bool hmac_ok(const EVP_MD *md, const char *token, size_t signed_len, const char *sig, size_t sig_len)
{
	unsigned char want[EVP_MAX_MD_SIZE], got[EVP_MAX_MD_SIZE];
	unsigned int want_len = 0;
	size_t got_len = 0;
	if (!HMAC(md, jc.secret, (int)jc.secret_len, (const unsigned char *)token, signed_len, want, &want_len))
		return false;
	if (!jwt_b64url_decode(sig, sig_len, got, sizeof(got), &got_len) || got_len != want_len)
		return false;
	return CRYPTO_memcmp(want, got, want_len) == 0;
}

/* The signature of token[0..len) (dot2 = offset of the second dot) under alg. */
static enum jwt_verdict check_signature(const char *token, size_t len, size_t dot2, const char *alg, const char *kid)
{
	struct jwt_key key;
	const unsigned char *k;
	int klen;
	const EVP_MD *md = hmac_md(alg);
	if (md) {
		if (!jc.secret)
			return JWT_NO_KEY_FOR_ALG;
		if (!hmac_ok(md, token, dot2, token + dot2 + 1, len - dot2 - 1))
			return JWT_BAD_SIGNATURE;
		k = (const unsigned char *)jc.secret, klen = (int)jc.secret_len;
	} else {
		enum jwt_verdict v = pick_key(alg, kid, &key);
		if (v != JWT_OK)
			return v;
		k = (const unsigned char *)key.pem, klen = key.pem_len;
	}
	char text[JWT_TOKEN_MAX + 1]; /* libjwt wants a C string */
	memcpy(text, token, len);
	text[len] = '\0';
	jwt_t *jwt = NULL;
	int rc = jwt_decode(&jwt, text, k, klen);
	bool ok = rc == 0 && jwt && jwt_get_alg(jwt) == jwt_str_alg(alg);
	jwt_free(jwt);
	OPENSSL_cleanse(text, len);
	return ok ? JWT_OK : JWT_BAD_SIGNATURE;
}

static enum jwt_verdict verify_uncached(const char *token, size_t len, int64_t now_ms, struct identity *out,
					int64_t *until_ms)
{
	const char *d1 = memchr(token, '.', len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
		return JWT_MALFORMED;
	unsigned char hbuf[HEADER_MAX], cbuf[JWT_TOKEN_MAX];
	json_t *hdr = decode_part(token, (size_t)(d1 - token), hbuf, sizeof(hbuf));
	json_t *claims = hdr ? decode_part(d1 + 1, (size_t)(d2 - d1 - 1), cbuf, sizeof(cbuf)) : NULL;
	const char *alg = NULL, *kid = NULL;
	enum jwt_verdict v = claims ? check_header(hdr, &alg, &kid) : JWT_MALFORMED;
	if (v == JWT_OK)
		v = check_signature(token, len, (size_t)(d2 - token), alg, kid);
	if (v == JWT_OK)
		v = jwt_claims_check(claims, &jc.rules, now_ms, out, until_ms);
	json_decref(hdr);
	json_decref(claims);
	return v;
}

enum jwt_verdict jwt_auth_verify(const char *token, size_t len, struct identity *out)
{
	if (!jc.enabled)
		return JWT_DISABLED;
	if (len == 0 || len > JWT_TOKEN_MAX)
		return JWT_MALFORMED;
	unsigned char hash[32];
	SHA256((const unsigned char *)token, len, hash);
	int64_t now_ms = clock_wall_ms();
	uint64_t gen = jwks_generation();
	if (jwt_cache_get(hash, jc.epoch, gen, now_ms, out))
		return JWT_OK;
	int64_t until_ms = 0;
	enum jwt_verdict v = verify_uncached(token, len, now_ms, out, &until_ms);
	if (v == JWT_OK)
		jwt_cache_put(hash, jc.epoch, gen, until_ms, out);
	return v;
}

/* ---- configuration ------------------------------------------------------------------------- */

static enum soma_err load_pem(const char *path, char *why, size_t cap)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(why, cap, "auth.jwt_public_key: cannot open %s (%s)", path, strerror(errno));
		return SOMA_ERR_CONFIG;
	}
	static char text[64 * 1024]; /* main thread, once */
	size_t n = fread(text, 1, sizeof(text), f);
	fclose(f);
	char reason[200];
	if (n == sizeof(text) || !jwt_pem_to_key(text, n, &jc.pem_key, reason, sizeof(reason))) {
		snprintf(why, cap, "auth.jwt_public_key: %s: %s", path, n == sizeof(text) ? "file too large" : reason);
		return SOMA_ERR_CONFIG;
	}
	jc.have_pem = true;
	return SOMA_OK;
}

/* "tenant, tenant_id,org_id" -> claim names. */
static enum soma_err parse_claims(const char *list, char *why, size_t cap)
{
	size_t n = 0;
	for (const char *p = list; *p;) {
		p += strspn(p, " ,");
		size_t len = strcspn(p, ", ");
		if (len == 0)
			break;
		if (n == JWT_TENANT_CLAIMS_MAX || len >= sizeof(jc.claim_names[0])) {
			snprintf(why, cap, "auth.jwt_tenant_claims: at most %d claim names of at most 63 characters",
				 JWT_TENANT_CLAIMS_MAX);
			return SOMA_ERR_CONFIG;
		}
		memcpy(jc.claim_names[n], p, len);
		jc.claim_names[n][len] = '\0';
		jc.claim_ptrs[n] = jc.claim_names[n];
		n++;
		p += len;
	}
	if (n == 0) {
		snprintf(why, cap, "auth.jwt_tenant_claims: name at least one claim, e.g. tenant");
		return SOMA_ERR_CONFIG;
	}
	jc.rules.tenant_claims = jc.claim_ptrs;
	jc.rules.ntenant_claims = n;
	snprintf(jc.no_tenant, sizeof(jc.no_tenant),
		 "the JWT has no tenant claim; expected one of: %s "
		 "(auth.jwt_tenant_claims)",
		 list);
	return SOMA_OK;
}

static enum soma_err copy_setting(char *dst, size_t cap, const char *v, const char *name, char *why, size_t why_cap)
{
	if (strlen(v ? v : "") >= cap) {
		snprintf(why, why_cap, "%s: at most %zu characters", name, cap - 1);
		return SOMA_ERR_CONFIG;
	}
	snprintf(dst, cap, "%s", v ? v : "");
	return SOMA_OK;
}

enum soma_err jwt_auth_init(const struct jwt_config *c, char *why, size_t cap)
{
	jwt_auth_deinit();
	enum soma_err err = parse_claims(c->tenant_claims ? c->tenant_claims : "", why, cap);
	if (err == SOMA_OK)
		err = copy_setting(jc.issuer, sizeof(jc.issuer), c->issuer, "auth.jwt_issuer", why, cap);
	if (err == SOMA_OK)
		err = copy_setting(jc.audience, sizeof(jc.audience), c->audience, "auth.jwt_audience", why, cap);
	if (err == SOMA_OK && c->public_key_path && c->public_key_path[0])
		err = load_pem(c->public_key_path, why, cap);
	if (err == SOMA_OK && c->secret && c->secret[0]) {
		jc.secret_len = strlen(c->secret);
		if (!(jc.secret = strdup(c->secret)))
			err = SOMA_ERR_NOMEM;
		else if (jc.secret_len < 32)
			log_warn("auth", "auth.jwt_secret has %zu characters; HS256 secrets should have at least 32",
				 jc.secret_len);
	}
	if (err == SOMA_OK && c->jwks_url && c->jwks_url[0]) {
		if ((err = jwks_start(c->jwks_url, c->jwks_refresh_s, c->jwks_wait_ms, c->jwks_fetch_timeout_ms)) !=
		    SOMA_OK)
			snprintf(why, cap, "auth.jwt_jwks_url: cannot start the JWKS thread");
		jc.have_jwks = err == SOMA_OK;
	}
	if (err != SOMA_OK) {
		jwt_auth_deinit();
		return err;
	}
	jc.rules.issuer = jc.issuer;
	jc.rules.audience = jc.audience;
	jc.rules.leeway_s = c->leeway_s;
	jc.enabled = jc.secret || jc.have_pem || jc.have_jwks;
	return SOMA_OK;
}

void jwt_auth_deinit(void)
{
	jwks_stop();
	if (jc.secret) {
		OPENSSL_cleanse(jc.secret, jc.secret_len);
		free(jc.secret);
	}
	uint64_t epoch = jc.epoch + 1;
	memset(&jc, 0, sizeof(jc));
	jc.epoch = epoch;
	jwt_cache_release(); /* this thread's; the io threads' go when they exit */
}

bool jwt_auth_describe(char *detail, size_t cap)
{
	if (!jc.enabled) {
		snprintf(detail, cap, "JWT: off");
		return true;
	}
	char jwks[300] = "";
	bool ok = !jc.have_jwks || jwks_describe(jwks, sizeof(jwks));
	snprintf(detail, cap, "JWT:%s%s%s%s%s", jc.secret ? " HS secret" : "", jc.have_pem ? " PEM key" : "",
		 jc.have_pem && jc.pem_key.type == JWT_KEY_RSA ? " (RSA)"
		 : jc.have_pem				       ? " (EC)"
							       : "",
		 jc.have_jwks ? "; " : "", jwks);
	return ok;
}
