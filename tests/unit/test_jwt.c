/*
 * test_jwt.c - JWT verification (src/identity/jwt.c, jwt_claims.c) with a secret and with a PEM
 * key, and JWTs in the auth middleware (src/http/middleware.c).
 *
 * DESIGN: tokens are signed with libjwt from keys made at run time (jwt_helpers.h); tokens
 * libjwt will not make (alg none, odd headers, broken parts) are put together by hand. Every
 * verdict of enum jwt_verdict is produced at least once, here or in test_jwks.c (key sets).
 */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "helpers.h"
#include "http/http.h"
#include "identity/identity.h"
#include "jwt_helpers.h"

static struct identity who;
static char pem_path[64];

static void setup(void)
{
	log_setup((enum log_level)(LOG_ERROR + 1), LOG_FORMAT_TEXT);
	pem_path[0] = '\0';
}

static void teardown(void)
{
	jwt_auth_deinit();
	if (pem_path[0])
		unlink(pem_path);
}

TestSuite(jwt, .init = setup, .fini = teardown);

static struct jwt_config config(void)
{
	return (struct jwt_config){.secret = TEST_SECRET,
				   .public_key_path = "",
				   .jwks_url = "",
				   .jwks_refresh_s = 300,
				   .issuer = "",
				   .audience = "",
				   .leeway_s = 30,
				   .tenant_claims = "tenant,tenant_id,org_id"};
}

static void init_with(struct jwt_config c)
{
	char why[256] = "";
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_OK, "%s", why);
}

/* A PEM file of k's public key, used as auth.jwt_public_key (removed by teardown). */
static const char *pem_file(EVP_PKEY *k)
{
	char pem[4096];
	test_key_pem(k, false, pem, sizeof(pem));
	tmpfile_write(pem, pem_path, sizeof(pem_path));
	return pem_path;
}

static enum jwt_verdict check(const char *token)
{
	memset(&who, 0, sizeof(who));
	return jwt_auth_verify(token, strlen(token), &who);
}

/* Verifies an HS256 token with the test secret and claims merged from extra. */
static enum jwt_verdict hs256(const char *extra)
{
	char *claims = test_claims(extra);
	char *t = test_token("HS256", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
	enum jwt_verdict v = check(t);
	free(t);
	free(claims);
	return v;
}

/* Verifies a token signed with the private half of k under alg, with kid (may be NULL). */
static enum jwt_verdict signed_by(EVP_PKEY *k, const char *alg, const char *kid, const char *extra)
{
	char priv[4096];
	test_key_pem(k, true, priv, sizeof(priv));
	char *claims = test_claims(extra);
	char *t = test_token(alg, priv, strlen(priv), kid, claims, NULL);
	enum jwt_verdict v = check(t);
	free(t);
	free(claims);
	return v;
}

Test(jwt, shape_tells_jwts_from_api_keys)
{
	cr_assert(identity_token_is_jwt("a.b.c", 5));
	cr_assert_not(identity_token_is_jwt("a.b", 3));
	cr_assert_not(identity_token_is_jwt("a.b.c.d", 7));
	const char *key = "sa01_0123456789abcdef_0123456789012345678901234567890123456789";
	cr_assert_not(identity_token_is_jwt(key, strlen(key)));
}

Test(jwt, disabled_without_configuration)
{
	struct jwt_config c = config();
	c.secret = "";
	init_with(c);
	cr_assert_not(jwt_auth_enabled());
	cr_assert_eq(check("a.b.c"), JWT_DISABLED);
	cr_assert_not_null(strstr(jwt_verdict_message(JWT_DISABLED), "auth.jwt_secret"));
	char d[200];
	cr_assert(jwt_auth_describe(d, sizeof(d)));
	cr_assert_str_eq(d, "JWT: off");
}

Test(jwt, hs256_resolves_tenant_subject_and_scopes)
{
	init_with(config());
	cr_assert(jwt_auth_enabled());
	cr_assert_eq(hs256("{\"scope\": \"read  admin\"}"), JWT_OK);
	cr_assert_str_eq(who.tenant, "acme");
	cr_assert_str_eq(who.subject, "jwt:alice");
	cr_assert_str_eq(who.scopes, "read admin");
	cr_assert_str_eq(who.key_id, "");
	cr_assert(identity_has_scope(&who, "admin"));
	cr_assert_eq(hs256("{\"scope\": \"read\"}"), JWT_OK, "again, from the cache");
	cr_assert_str_eq(who.scopes, "read");
}

Test(jwt, hs384_and_hs512)
{
	init_with(config());
	char *claims = test_claims("{}");
	for (int i = 0; i < 2; i++) {
		char *t = test_token(i ? "HS512" : "HS384", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
		cr_assert_eq(check(t), JWT_OK);
		free(t);
	}
	free(claims);
}

Test(jwt, scopes_from_scp_array_or_string)
{
	init_with(config());
	cr_assert_eq(hs256("{\"scp\": [\"admin\", \"bad scope\", 7, \"x\\u0001\", \"chat\"]}"), JWT_OK);
	cr_assert_str_eq(who.scopes, "admin chat");
	cr_assert_eq(hs256("{\"scp\": \"a b\"}"), JWT_OK);
	cr_assert_str_eq(who.scopes, "a b");
	cr_assert_eq(hs256("{\"scope\": \"first\", \"scp\": [\"second\"]}"), JWT_OK);
	cr_assert_str_eq(who.scopes, "first", "scope wins over scp");
	cr_assert_eq(hs256("{}"), JWT_OK);
	cr_assert_str_eq(who.scopes, "");
	/* more than fits: whole scopes are dropped, never cut */
	char many[1200] = "{\"scope\": \"";
	for (int i = 0; i < 40; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "scope%02d ", i);
	snprintf(many + strlen(many), sizeof(many) - strlen(many), "\"}");
	cr_assert_eq(hs256(many), JWT_OK);
	cr_assert_leq(strlen(who.scopes), STORE_SCOPES_MAX);
	cr_assert(strncmp(who.scopes, "scope00 scope01", 15) == 0, "%s", who.scopes);
	for (const char *p = who.scopes; *p;) {
		size_t n = strcspn(p, " ");
		cr_assert_eq(n, 7, "a cut scope in %s", who.scopes);
		p += n + (p[n] == ' ');
	}
}

Test(jwt, expiry_with_leeway)
{
	init_with(config()); /* leeway 30 s */
	char extra[64];
	snprintf(extra, sizeof(extra), "{\"exp\": %lld}", (long long)time(NULL) - 10);
	cr_assert_eq(hs256(extra), JWT_OK, "within the leeway");
	snprintf(extra, sizeof(extra), "{\"exp\": %lld}", (long long)time(NULL) - 40);
	cr_assert_eq(hs256(extra), JWT_EXPIRED);
	snprintf(extra, sizeof(extra), "{\"exp\": %lld.5}", (long long)time(NULL) + 100);
	cr_assert_eq(hs256(extra), JWT_OK, "a fractional exp");
	cr_assert_eq(hs256("{\"exp\": 1e300}"), JWT_OK, "a far exp is cached 60 s at most");
	cr_assert_eq(hs256("{\"exp\": null}"), JWT_NO_EXP);
	cr_assert_eq(hs256("{\"exp\": \"tomorrow\"}"), JWT_NO_EXP);
	cr_assert_not_null(strstr(jwt_verdict_message(JWT_EXPIRED), "expired"));
}

Test(jwt, not_before_with_leeway)
{
	init_with(config());
	char extra[64];
	snprintf(extra, sizeof(extra), "{\"nbf\": %lld}", (long long)time(NULL) + 10);
	cr_assert_eq(hs256(extra), JWT_OK, "within the leeway");
	snprintf(extra, sizeof(extra), "{\"nbf\": %lld}", (long long)time(NULL) + 100);
	cr_assert_eq(hs256(extra), JWT_NOT_YET_VALID);
	cr_assert_eq(hs256("{\"nbf\": \"soon\"}"), JWT_MALFORMED);
}

Test(jwt, issuer_and_audience)
{
	struct jwt_config c = config();
	c.issuer = "https://idp.example";
	c.audience = "soma";
	init_with(c);
	cr_assert_eq(hs256("{\"iss\": \"https://idp.example\", \"aud\": \"soma\"}"), JWT_OK);
	cr_assert_eq(hs256("{\"iss\": \"https://idp.example\", \"aud\": [\"other\", \"soma\"]}"), JWT_OK);
	cr_assert_eq(hs256("{\"iss\": \"https://evil.example\", \"aud\": \"soma\"}"), JWT_WRONG_ISSUER);
	cr_assert_eq(hs256("{\"aud\": \"soma\"}"), JWT_WRONG_ISSUER);
	cr_assert_eq(hs256("{\"iss\": \"https://idp.example\", \"aud\": \"other\"}"), JWT_WRONG_AUDIENCE);
	cr_assert_eq(hs256("{\"iss\": \"https://idp.example\", \"aud\": [\"other\"]}"), JWT_WRONG_AUDIENCE);
	cr_assert_eq(hs256("{\"iss\": \"https://idp.example\"}"), JWT_WRONG_AUDIENCE);
}

Test(jwt, audience_and_issuer_unchecked_when_not_configured)
{
	init_with(config());
	cr_assert_eq(hs256("{\"iss\": \"anyone\", \"aud\": [\"x\"]}"), JWT_OK);
}

Test(jwt, subject_rules)
{
	init_with(config());
	cr_assert_eq(hs256("{\"sub\": null}"), JWT_NO_SUBJECT);
	cr_assert_eq(hs256("{\"sub\": \"\"}"), JWT_NO_SUBJECT);
	cr_assert_eq(hs256("{\"sub\": 42}"), JWT_NO_SUBJECT);
	char *t = test_token_raw("{\"alg\":\"HS256\"}", "{\"sub\":\"a\\u0000b\",\"tenant\":\"t\"}", "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "a NUL in a claim");
	free(t);
	char extra[128];
	snprintf(extra, sizeof(extra), "{\"sub\": \"%061d\"}", 0);
	cr_assert_eq(hs256(extra), JWT_NO_SUBJECT, "61 characters");
	snprintf(extra, sizeof(extra), "{\"sub\": \"%060d\"}", 0);
	cr_assert_eq(hs256(extra), JWT_OK, "60 characters");
}

Test(jwt, tenant_from_the_first_present_claim)
{
	struct jwt_config c = config();
	c.tenant_claims = " org_id , tenant";
	init_with(c);
	cr_assert_eq(hs256("{\"org_id\": \"globex\"}"), JWT_OK);
	cr_assert_str_eq(who.tenant, "globex");
	cr_assert_eq(hs256("{}"), JWT_OK);
	cr_assert_str_eq(who.tenant, "acme");
	cr_assert_eq(hs256("{\"tenant\": null}"), JWT_NO_TENANT);
	cr_assert_not_null(strstr(jwt_verdict_message(JWT_NO_TENANT), "org_id"));
	cr_assert_eq(hs256("{\"org_id\": \"bad tenant!\"}"), JWT_BAD_TENANT);
	cr_assert_eq(hs256("{\"org_id\": 12}"), JWT_BAD_TENANT);
	cr_assert_eq(hs256("{\"tenant\": \"\"}"), JWT_BAD_TENANT);
}

Test(jwt, unsigned_tokens_are_refused)
{
	init_with(config());
	char *claims = test_claims("{}");
	static const char *const algs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\",\"typ\":\"JWT\"}",
					   "{\"alg\":\"NONE\"}"};
	for (size_t i = 0; i < 3; i++) {
		char *t = test_token_raw(algs[i], claims, "");
		cr_assert_eq(check(t), JWT_UNSIGNED, "%s", algs[i]);
		free(t);
	}
	char *t = test_token_raw("{\"alg\":\"none\"}", claims, "c2ln");
	cr_assert_eq(check(t), JWT_UNSIGNED);
	free(t);
	free(claims);
	cr_assert_not_null(strstr(jwt_verdict_message(JWT_UNSIGNED), "none"));
}

Test(jwt, wrong_secret_or_altered_token)
{
	init_with(config());
	char *claims = test_claims("{}");
	const char *other = "another-secret-another-secret-another";
	char *t = test_token("HS256", other, strlen(other), NULL, claims, NULL);
	cr_assert_eq(check(t), JWT_BAD_SIGNATURE);
	free(t);
	t = test_token("HS256", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
	char *dot = strchr(t, '.');
	dot[2] = dot[2] == 'A' ? 'B' : 'A'; /* one changed claim byte */
	enum jwt_verdict v = check(t);
	cr_assert(v == JWT_BAD_SIGNATURE || v == JWT_MALFORMED, "verdict %d", v);
	free(t);
	t = test_token("HS256", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
	t[strlen(t) - 1] = '\0'; /* a shorter signature */
	cr_assert_eq(check(t), JWT_BAD_SIGNATURE);
	free(t);
	free(claims);
}

Test(jwt, malformed_tokens)
{
	init_with(config());
	char *claims = test_claims("{}");
	char *t = test_token_raw("{\"alg\":\"HS256\"}", "[1,2]", "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "claims not an object");
	free(t);
	t = test_token_raw("{\"alg\":\"HS256\"", claims, "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "header not JSON");
	free(t);
	t = test_token_raw("{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"sub\":\"b\"}", "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "a claim given twice");
	free(t);
	t = test_token_raw("{\"typ\":\"JWT\"}", claims, "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "no alg");
	free(t);
	t = test_token_raw("{\"alg\":\"HS256\",\"kid\":7}", claims, "c2ln");
	cr_assert_eq(check(t), JWT_MALFORMED, "kid not a string");
	free(t);
	cr_assert_eq(check("a*b.c.d"), JWT_MALFORMED, "not base64url");
	cr_assert_eq(check(".."), JWT_MALFORMED);
	cr_assert_eq(check("a.b"), JWT_MALFORMED);
	cr_assert_eq(jwt_auth_verify("", 0, &who), JWT_MALFORMED);
	char *huge = malloc(JWT_TOKEN_MAX + 2);
	memset(huge, 'A', JWT_TOKEN_MAX + 1);
	huge[10] = huge[20] = '.';
	huge[JWT_TOKEN_MAX + 1] = '\0';
	cr_assert_eq(check(huge), JWT_MALFORMED, "longer than JWT_TOKEN_MAX");
	free(huge);
	free(claims);
}

Test(jwt, unsupported_headers)
{
	init_with(config());
	char *claims = test_claims("{}");
	static const char *const headers[] = {"{\"alg\":\"PS256\"}", "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
					      "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}",
					      "{\"alg\":\"HS256\",\"typ\":5}"};
	for (size_t i = 0; i < 4; i++) {
		char *t = test_token_raw(headers[i], claims, "c2ln");
		cr_assert_eq(check(t), JWT_UNSUPPORTED, "%s", headers[i]);
		free(t);
	}
	free(claims);
	cr_assert_eq(hs256("{}"), JWT_OK);
}

Test(jwt, rs256_and_es256_with_a_pem_key)
{
	EVP_PKEY *rsa = test_key_new("RSA"), *other = test_key_new("RSA"), *ec = test_key_new("P-256");
	struct jwt_config c = config();
	c.secret = "";
	c.public_key_path = pem_file(rsa);
	init_with(c);
	cr_assert_eq(signed_by(rsa, "RS256", NULL, "{}"), JWT_OK);
	cr_assert_str_eq(who.tenant, "acme");
	cr_assert_eq(signed_by(rsa, "RS512", "any-kid", "{}"), JWT_OK, "the PEM key serves every kid");
	cr_assert_eq(signed_by(other, "RS256", NULL, "{}"), JWT_BAD_SIGNATURE);
	cr_assert_eq(signed_by(ec, "ES256", NULL, "{}"), JWT_KEY_MISMATCH);
	cr_assert_eq(hs256("{}"), JWT_NO_KEY_FOR_ALG, "no secret: HS256 is refused");
	char d[200];
	cr_assert(jwt_auth_describe(d, sizeof(d)));
	cr_assert_not_null(strstr(d, "PEM key (RSA)"), "%s", d);

	unlink(pem_path);
	c.public_key_path = pem_file(ec);
	init_with(c);
	cr_assert_eq(signed_by(ec, "ES256", NULL, "{}"), JWT_OK);
	cr_assert_eq(signed_by(ec, "ES256", NULL, "{\"exp\": 1}"), JWT_EXPIRED, "claims checked after the signature");
	cr_assert_eq(signed_by(rsa, "RS256", NULL, "{}"), JWT_KEY_MISMATCH);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(other);
	EVP_PKEY_free(ec);
}

/* The classic confusion: an HS256 token whose "secret" is the server's public key PEM. */
Test(jwt, public_key_never_serves_as_hmac_secret)
{
	EVP_PKEY *rsa = test_key_new("RSA");
	char pub[4096];
	test_key_pem(rsa, false, pub, sizeof(pub));
	struct jwt_config c = config();
	c.secret = "";
	c.public_key_path = pem_file(rsa);
	init_with(c);
	char *claims = test_claims("{}");
	char *t = test_token("HS256", pub, strlen(pub), NULL, claims, NULL);
	cr_assert_eq(check(t), JWT_NO_KEY_FOR_ALG);
	jwt_auth_deinit();
	c.secret = TEST_SECRET; /* with a secret too: HS256 is checked against the secret only */
	init_with(c);
	cr_assert_eq(check(t), JWT_BAD_SIGNATURE);
	free(t);
	free(claims);
	EVP_PKEY_free(rsa);
}

Test(jwt, configuration_errors_name_the_key)
{
	char why[256] = "";
	struct jwt_config c = config();
	c.public_key_path = "/nonexistent/key.pem";
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert_not_null(strstr(why, "auth.jwt_public_key"), "%s", why);
	tmpfile_write("not a key\n", pem_path, sizeof(pem_path));
	c.public_key_path = pem_path;
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert_not_null(strstr(why, "no PEM public key"), "%s", why);
	c = config();
	c.tenant_claims = " , ,";
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert_not_null(strstr(why, "auth.jwt_tenant_claims"), "%s", why);
	c.tenant_claims = "a,b,c,d,e,f,g,h,i";
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_ERR_CONFIG);
	char long_issuer[400];
	memset(long_issuer, 'i', sizeof(long_issuer) - 1);
	long_issuer[sizeof(long_issuer) - 1] = '\0';
	c = config();
	c.issuer = long_issuer;
	cr_assert_eq(jwt_auth_init(&c, why, sizeof(why)), SOMA_ERR_CONFIG);
	cr_assert_not_null(strstr(why, "auth.jwt_issuer"), "%s", why);
	cr_assert_not(jwt_auth_enabled(), "a failed init leaves JWTs off");
}

Test(jwt, a_new_configuration_forgets_cached_tokens)
{
	init_with(config());
	char *claims = test_claims("{}");
	char *t = test_token("HS256", TEST_SECRET, strlen(TEST_SECRET), NULL, claims, NULL);
	cr_assert_eq(check(t), JWT_OK);
	struct jwt_config c = config();
	c.secret = "a-different-secret-a-different-secret";
	init_with(c);
	cr_assert_eq(check(t), JWT_BAD_SIGNATURE, "verified again under the new secret");
	free(t);
	free(claims);
}

Test(jwt, every_verdict_has_a_message_without_the_token)
{
	for (int v = 0; v < JWT_VERDICT_COUNT; v++) {
		const char *m = jwt_verdict_message((enum jwt_verdict)v);
		cr_assert(m && strlen(m) > 1, "verdict %d", v);
	}
	cr_assert_not_null(jwt_verdict_message((enum jwt_verdict)99));
}
