/*
 * test_jwk.c - verification keys (src/identity/jwk.c, jwt.c): base64url, JWK -> PEM for RSA and
 * EC, a certificate's key, and every JWK that is refused and why. The key set and its refresh
 * thread are test_jwks.c's.
 *
 * DESIGN: keys are made with OpenSSL for each test (jwt_helpers.h) and turned into JWKs the way
 * an identity provider publishes them; nothing here touches the network.
 */
#include <criterion/criterion.h>

#include "helpers.h"
#include "identity/jwt_int.h"
#include "jwt_helpers.h"

Test(jwk, base64url_decoding)
{
	unsigned char out[16];
	size_t n;
	cr_assert(jwt_b64url_decode("aGk", 3, out, sizeof(out), &n) && n == 2 && memcmp(out, "hi", 2) == 0);
	cr_assert(jwt_b64url_decode("aGk=", 4, out, sizeof(out), &n) && n == 2, "padding is tolerated");
	cr_assert(jwt_b64url_decode("-_8", 3, out, sizeof(out), &n) && n == 2 && out[0] == 0xfb && out[1] == 0xff);
	cr_assert_not(jwt_b64url_decode("a+b/", 4, out, sizeof(out), &n), "base64, not base64url");
	cr_assert_not(jwt_b64url_decode("abcde", 5, out, sizeof(out), &n), "impossible length");
	cr_assert_not(jwt_b64url_decode("aGVsbG8gd29ybGQh", 16, out, 4, &n), "does not fit");
	cr_assert(jwt_b64url_decode("", 0, out, sizeof(out), &n) && n == 0);
}

Test(jwk, jwk_to_pem_for_rsa_p256_and_p384)
{
	static const char *const kinds[] = {"RSA", "P-256", "P-384"};
	static const enum jwt_key_type types[] = {JWT_KEY_RSA, JWT_KEY_EC_P256, JWT_KEY_EC_P384};
	for (int i = 0; i < 3; i++) {
		EVP_PKEY *k = test_key_new(kinds[i]);
		char pem[4096], why[160] = "";
		test_key_pem(k, false, pem, sizeof(pem));
		json_t *jwk = test_jwk(k, "kid-1");
		json_object_set_new(jwk, "use", json_string("sig"));
		struct jwt_key key;
		cr_assert(jwk_to_key(jwk, &key, why, sizeof(why)), "%s: %s", kinds[i], why);
		cr_assert_eq(key.type, types[i]);
		cr_assert_str_eq(key.kid, "kid-1");
		cr_assert_str_eq(key.pem, pem, "%s: the JWK is the same public key", kinds[i]);
		cr_assert_eq(key.pem_len, (int)strlen(pem));
		struct jwt_key from_pem;
		cr_assert(jwt_pem_to_key(pem, strlen(pem), &from_pem, why, sizeof(why)), "%s", why);
		cr_assert_eq(from_pem.type, types[i]);
		json_decref(jwk);
		EVP_PKEY_free(k);
	}
}

/* A JWK of k with one member changed (value NULL: removed); true when it is accepted. */
static bool jwk_variant(EVP_PKEY *k, const char *member, json_t *value, char *why, size_t cap)
{
	json_t *jwk = test_jwk(k, "k");
	if (value)
		json_object_set_new(jwk, member, value);
	else
		json_object_del(jwk, member);
	struct jwt_key key;
	bool ok = jwk_to_key(jwk, &key, why, cap);
	json_decref(jwk);
	return ok;
}

Test(jwk, unusable_jwks_are_refused_with_a_reason)
{
	EVP_PKEY *rsa = test_key_new("RSA"), *ec = test_key_new("P-256");
	char why[160];
	cr_assert_not(jwk_variant(rsa, "kty", json_string("oct"), why, sizeof(why)));
	cr_assert_not_null(strstr(why, "kty oct"), "%s", why);
	cr_assert_not(jwk_variant(rsa, "kty", NULL, why, sizeof(why)));
	cr_assert_not(jwk_variant(rsa, "use", json_string("enc"), why, sizeof(why)));
	cr_assert_not(jwk_variant(rsa, "alg", json_string("ES256"), why, sizeof(why)), "alg of another type");
	cr_assert_not(jwk_variant(rsa, "alg", json_string("HS256"), why, sizeof(why)), "a symmetric alg");
	cr_assert(jwk_variant(rsa, "alg", json_string("RS384"), why, sizeof(why)), "%s", why);
	cr_assert_not(jwk_variant(rsa, "n", json_string("!!"), why, sizeof(why)));
	cr_assert_not(jwk_variant(rsa, "e", NULL, why, sizeof(why)));
	cr_assert_not(jwk_variant(rsa, "kid", json_integer(3), why, sizeof(why)));
	char long_kid[JWT_KID_MAX + 2];
	memset(long_kid, 'k', sizeof(long_kid) - 1);
	long_kid[sizeof(long_kid) - 1] = '\0';
	cr_assert_not(jwk_variant(rsa, "kid", json_string(long_kid), why, sizeof(why)));
	cr_assert_not(jwk_variant(ec, "crv", json_string("P-521"), why, sizeof(why)));
	cr_assert_not_null(strstr(why, "P-521"), "%s", why);
	cr_assert_not(jwk_variant(ec, "x", json_string("AAAA"), why, sizeof(why)), "x of the wrong size");
	char zeros[64];
	unsigned char z[32] = {0};
	test_b64url(z, sizeof(z), zeros, sizeof(zeros));
	cr_assert_not(jwk_variant(ec, "y", json_string(zeros), why, sizeof(why)), "a point off the curve");
	cr_assert_not(jwk_variant(ec, "alg", json_string("ES384"), why, sizeof(why)), "ES384 on P-256");
	struct jwt_key key;
	json_t *not_object = json_string("x");
	cr_assert_not(jwk_to_key(not_object, &key, why, sizeof(why)));
	json_decref(not_object);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
}

/* About one P-256 key in 128 has a coordinate starting with a zero byte; some libraries (PyJWT
 * before 2.8) publish it without that byte. It is the same key and is accepted (an e2e JWKS test
 * of ours failed on such a key from Debian's PyJWT). */
Test(jwk, ec_coordinates_without_their_leading_zero_bytes_are_accepted)
{
	for (int tries = 0; tries < 5000; tries++) {
		EVP_PKEY *k = test_key_new("P-256");
		json_t *jwk = test_jwk(k, "k");
		static const char *const members[] = {"x", "y"};
		for (int m = 0; m < 2; m++) {
			const char *v = json_string_value(json_object_get(jwk, members[m]));
			unsigned char raw[32];
			size_t len = 0, skip = 0;
			cr_assert(jwt_b64url_decode(v, strlen(v), raw, sizeof(raw), &len) && len == 32);
			while (skip < len && raw[skip] == 0)
				skip++;
			if (skip == 0)
				continue;
			char short_form[64], pem[4096], why[160] = "";
			test_b64url(raw + skip, len - skip, short_form, sizeof(short_form));
			json_object_set_new(jwk, members[m], json_string(short_form));
			struct jwt_key key;
			cr_assert(jwk_to_key(jwk, &key, why, sizeof(why)), "%s without its leading zero: %s",
				  members[m], why);
			test_key_pem(k, false, pem, sizeof(pem));
			cr_assert_str_eq(key.pem, pem, "the padded JWK is the same public key");
			json_decref(jwk);
			EVP_PKEY_free(k);
			return;
		}
		json_decref(jwk);
		EVP_PKEY_free(k);
	}
	cr_assert_fail("no P-256 key with a leading zero byte in 5000");
}

Test(jwk, small_rsa_and_odd_pems_are_refused)
{
	EVP_PKEY *small = EVP_RSA_gen(1024);
	cr_assert_not_null(small);
	char pem[4096], why[160];
	test_key_pem(small, false, pem, sizeof(pem));
	struct jwt_key key;
	cr_assert_not(jwt_pem_to_key(pem, strlen(pem), &key, why, sizeof(why)));
	cr_assert_not_null(strstr(why, "1024 bits"), "%s", why);
	json_t *jwk = test_jwk(small, NULL);
	cr_assert_not(jwk_to_key(jwk, &key, why, sizeof(why)));
	json_decref(jwk);
	EVP_PKEY_free(small);
	EVP_PKEY *p521 = test_key_new("P-521");
	test_key_pem(p521, false, pem, sizeof(pem));
	cr_assert_not(jwt_pem_to_key(pem, strlen(pem), &key, why, sizeof(why)));
	cr_assert_not_null(strstr(why, "not supported"), "%s", why);
	EVP_PKEY_free(p521);
	cr_assert_not(jwt_pem_to_key("garbage", 7, &key, why, sizeof(why)));
}

Test(jwk, a_certificate_gives_its_key)
{
	EVP_PKEY *k = test_key_new("P-256");
	X509 *cert = X509_new();
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), 0);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_set_pubkey(cert, k);
	cr_assert(X509_sign(cert, k, EVP_sha256()) > 0);
	BIO *b = BIO_new(BIO_s_mem());
	cr_assert(PEM_write_bio_X509(b, cert));
	char *data;
	long n = BIO_get_mem_data(b, &data);
	struct jwt_key key;
	char why[160] = "", pem[4096];
	cr_assert(jwt_pem_to_key(data, (size_t)n, &key, why, sizeof(why)), "%s", why);
	test_key_pem(k, false, pem, sizeof(pem));
	cr_assert_str_eq(key.pem, pem);
	BIO_free(b);
	X509_free(cert);
	EVP_PKEY_free(k);
}
