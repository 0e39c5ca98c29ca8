/*
 * jwt_helpers.h - keys and tokens for the JWT unit tests (test_jwt.c, test_jwks.c): RSA and EC
 * key pairs made with OpenSSL at run time (no private key is checked in), tokens signed with
 * libjwt, hand-made tokens for what libjwt will not sign (alg none, odd headers), and the JWK
 * form of a public key.
 *
 * DESIGN: header-only (static inline), like helpers.h. Every function that returns memory says
 * who frees it; failures of the test machinery abort the test with cr_assert.
 */
#ifndef SOMA_TESTS_UNIT_JWT_HELPERS_H
#define SOMA_TESTS_UNIT_JWT_HELPERS_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEST_SECRET "0123456789abcdef0123456789abcdef-test"

/* A new key pair: "RSA" (2048 bits), "P-256" or "P-384". Free with EVP_PKEY_free. */
static inline EVP_PKEY *test_key_new(const char *kind)
{
	EVP_PKEY *k = strcmp(kind, "RSA") == 0 ? EVP_RSA_gen(2048) : EVP_EC_gen(kind);
	cr_assert_not_null(k, "cannot generate a %s key", kind);
	return k;
}

/* The private (or public) key as PEM into out[cap]. */
static inline void test_key_pem(EVP_PKEY *k, bool private_key, char *out, size_t cap)
{
	BIO *b = BIO_new(BIO_s_mem());
	cr_assert(private_key ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(b, k));
	char *data;
	long n = BIO_get_mem_data(b, &data);
	cr_assert(n > 0 && (size_t)n < cap);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
}

/* base64url without padding of data[0..len) into out[cap]. */
static inline void test_b64url(const void *data, size_t len, char *out, size_t cap)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = data;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < len ? p[i + 2] : 0);
		size_t chars = len - i >= 3 ? 4 : len - i + 1;
		for (size_t c = 0; c < chars; c++) {
			cr_assert(o + 1 < cap);
			out[o++] = abc[(v >> (18 - 6 * c)) & 63];
		}
	}
	out[o] = '\0';
}

/* A token whose header and claims are the given JSON texts and whose signature part is sig
 * (already base64url), for tokens libjwt will not make. Caller frees. */
static inline char *test_token_raw(const char *header, const char *claims, const char *sig)
{
	size_t cap = 2 * (strlen(header) + strlen(claims)) + strlen(sig) + 16;
	char *t = malloc(cap), *h = malloc(cap), *c = malloc(cap);
	test_b64url(header, strlen(header), h, cap);
	test_b64url(claims, strlen(claims), c, cap);
	snprintf(t, cap, "%s.%s.%s", h, c, sig);
	free(h);
	free(c);
	return t;
}

/* Signs claims (JSON text) with alg and key (the secret, or a private key PEM), adding a kid
 * header unless kid is NULL and extra headers from headers_json (may be NULL). Caller frees. */
static inline char *test_token(const char *alg, const void *key, size_t key_len, const char *kid, const char *claims,
			       const char *headers_json)
{
	jwt_t *j = NULL;
	cr_assert_eq(jwt_new(&j), 0);
	cr_assert_eq(jwt_add_grants_json(j, claims), 0, "claims %s", claims);
	if (kid)
		cr_assert_eq(jwt_add_header(j, "kid", kid), 0);
	if (headers_json)
		cr_assert_eq(jwt_add_headers_json(j, headers_json), 0);
	cr_assert_eq(jwt_set_alg(j, jwt_str_alg(alg), key, (int)key_len), 0, "alg %s", alg);
	char *t = jwt_encode_str(j);
	cr_assert_not_null(t);
	jwt_free(j);
	char *copy = strdup(t);
	free(t);
	return copy;
}

/* Claims for tenant acme, subject alice, valid for 5 minutes, with extra members merged in
 * from extra_json ("{}" for none; a member set to null is removed). Caller frees. */
static inline char *test_claims(const char *extra_json)
{
	json_t *c = json_pack("{s:s, s:s, s:I, s:I}", "sub", "alice", "tenant", "acme", "exp",
			      (json_int_t)time(NULL) + 300, "iat", (json_int_t)time(NULL));
	json_t *extra = json_loads(extra_json, 0, NULL);
	cr_assert_not_null(extra, "bad extra claims %s", extra_json);
	const char *k;
	json_t *v;
	json_object_foreach(extra, k, v)
	{
		if (json_is_null(v))
			json_object_del(c, k);
		else
			json_object_set(c, k, v);
	}
	json_decref(extra);
	char *text = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	return text;
}

/* base64url of a big number, left-padded with zeros to width bytes (0: its own size). */
static inline void test_bn_b64(const BIGNUM *bn, int width, char *out, size_t cap)
{
	unsigned char buf[1024];
	int n = width ? width : BN_num_bytes(bn);
	cr_assert_eq(BN_bn2binpad(bn, buf, n), n);
	test_b64url(buf, (size_t)n, out, cap);
}

/* The public JWK of k with kid (NULL: none). Caller json_decref's it. */
static inline json_t *test_jwk(EVP_PKEY *k, const char *kid)
{
	char a[1400], b[1400];
	json_t *jwk;
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
		BIGNUM *n = NULL, *e = NULL;
		cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n));
		cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e));
		test_bn_b64(n, 0, a, sizeof(a));
		test_bn_b64(e, 0, b, sizeof(b));
		jwk = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", a, "e", b);
		BN_free(n);
		BN_free(e);
	} else {
		BIGNUM *x = NULL, *y = NULL;
		int size = EVP_PKEY_get_bits(k) == 256 ? 32 : 48;
		cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x));
		cr_assert(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &y));
		test_bn_b64(x, size, a, sizeof(a));
		test_bn_b64(y, size, b, sizeof(b));
		jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", size == 32 ? "P-256" : "P-384", "x", a, "y",
				b);
		BN_free(x);
		BN_free(y);
	}
	if (kid)
		json_object_set_new(jwk, "kid", json_string(kid));
	return jwk;
}

#endif
