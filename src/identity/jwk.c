/*
 * jwk.c - verification keys from PEM files and JWK objects (see jwt_int.h).
 *
 * DESIGN: every key, whatever it came from, is turned into an OpenSSL EVP_PKEY, checked (RSA of
 * at least 2048 bits; EC on P-256 or P-384 with a point on the curve), and written back out as
 * SubjectPublicKeyInfo PEM, the one form libjwt 1.10 verifies with. JWK -> key uses the
 * OpenSSL 3 provider API (EVP_PKEY_fromdata): RSA from (n, e), EC from (crv, x, y). Pure
 * functions of their input; any thread.
 */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "identity/jwt_int.h"

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

bool jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
	for (int pad = 0; pad < 2 && len > 0 && in[len - 1] == '='; pad++)
		len--;
	if (len % 4 == 1)
		return false;
	size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
	if (need > cap)
		return false;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value(in[i]);
		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	*out_len = o;
	return true;
}

bool jwt_alg_key_type(const char *alg, enum jwt_key_type *type)
{
	if (strcmp(alg, "RS256") == 0 || strcmp(alg, "RS384") == 0 || strcmp(alg, "RS512") == 0)
		*type = JWT_KEY_RSA;
	else if (strcmp(alg, "ES256") == 0)
		*type = JWT_KEY_EC_P256;
	else if (strcmp(alg, "ES384") == 0)
		*type = JWT_KEY_EC_P384;
	else
		return false;
	return true;
}

/* Checks pkey and writes it into out as PEM. Does not take pkey. */
static bool key_from_pkey(EVP_PKEY *pkey, struct jwt_key *out, char *why, size_t cap)
{
	int id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_RSA) {
		if (EVP_PKEY_get_bits(pkey) < 2048) {
			snprintf(why, cap, "RSA key of %d bits; at least 2048 are required", EVP_PKEY_get_bits(pkey));
			return false;
		}
		out->type = JWT_KEY_RSA;
	} else if (id == EVP_PKEY_EC) {
		char group[64] = "";
		size_t glen = 0;
		if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &glen))
			group[0] = '\0';
		if (strcmp(group, "prime256v1") == 0) {
			out->type = JWT_KEY_EC_P256;
		} else if (strcmp(group, "secp384r1") == 0) {
			out->type = JWT_KEY_EC_P384;
		} else {
			snprintf(why, cap, "EC curve %s is not supported (P-256 or P-384)", group[0] ? group : "?");
			return false;
		}
	} else {
		snprintf(why, cap, "only RSA and EC public keys are supported");
		return false;
	}
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long n = b && PEM_write_bio_PUBKEY(b, pkey) == 1 ? BIO_get_mem_data(b, &data) : -1;
	bool ok = n > 0 && n < JWT_PEM_MAX;
	if (ok) {
		memcpy(out->pem, data, (size_t)n);
		out->pem[n] = '\0';
		out->pem_len = (int)n;
	} else {
		snprintf(why, cap, "cannot write the key as PEM (too large or out of memory)");
	}
	BIO_free(b);
	return ok;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1; /* public keys are never encrypted; never prompt on a terminal */
}

bool jwt_pem_to_key(const char *pem, size_t len, struct jwt_key *out, char *why, size_t cap)
{
	memset(out, 0, sizeof(*out));
	if (len > (size_t)1 << 20) {
		snprintf(why, cap, "the file is larger than 1 MB; expected one PEM public key");
		return false;
	}
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pkey = b ? PEM_read_bio_PUBKEY(b, NULL, no_password, NULL) : NULL;
	if (!pkey && b && BIO_reset(b) == 1) { /* a certificate carries the key as well */
		X509 *cert = PEM_read_bio_X509(b, NULL, no_password, NULL);
		pkey = cert ? X509_get_pubkey(cert) : NULL;
		X509_free(cert);
	}
	BIO_free(b);
	ERR_clear_error();
	if (!pkey) {
		snprintf(why, cap, "no PEM public key (BEGIN PUBLIC KEY) or certificate found");
		return false;
	}
	bool ok = key_from_pkey(pkey, out, why, cap);
	EVP_PKEY_free(pkey);
	return ok;
}

/* A base64url member of a JWK decoded into out[cap], exactly `want` bytes unless want is 0. */
static bool member_bytes(const json_t *jwk, const char *name, unsigned char *out, size_t cap, size_t want, size_t *len,
			 char *why, size_t why_cap)
{
	const char *v = json_string_value(json_object_get(jwk, name));
	if (!v || !jwt_b64url_decode(v, strlen(v), out, cap, len) || *len == 0 || (want && *len != want)) {
		snprintf(why, why_cap, "member %s is missing or not base64url of the right size", name);
		return false;
	}
	return true;
}

/* An EC coordinate member into out[size], big-endian. RFC 7518 says it holds the full size, but
 * some libraries (PyJWT before 2.8, among others) drop its leading zero bytes, about one key in
 * 128: a shorter value is left-padded with zeros (the point is checked on the curve anyway). */
static bool ec_coord(const json_t *jwk, const char *name, unsigned char *out, size_t size, char *why, size_t why_cap)
{
	unsigned char raw[48];
	size_t len;
	if (!member_bytes(jwk, name, raw, sizeof(raw), 0, &len, why, why_cap))
		return false;
	if (len > size) {
		snprintf(why, why_cap, "member %s is longer than a coordinate of the curve (%zu bytes)", name, size);
		return false;
	}
	memset(out, 0, size - len);
	memcpy(out + size - len, raw, len);
	return true;
}

/* Builds a public key of type ("RSA" or "EC") from params; NULL when OpenSSL refuses them. */
static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = bld ? OSSL_PARAM_BLD_to_param(bld) : NULL;
	EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
	EVP_PKEY *pkey = NULL;
	if (ctx && EVP_PKEY_fromdata_init(ctx) == 1 && EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	if (pkey) { /* e.g. an EC point off the curve */
		EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
		if (!check || EVP_PKEY_public_check(check) != 1) {
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
		EVP_PKEY_CTX_free(check);
	}
	ERR_clear_error();
	return pkey;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk, char *why, size_t cap)
{
	unsigned char n[1024], e[16];
	size_t nlen, elen;
	if (!member_bytes(jwk, "n", n, sizeof(n), 0, &nlen, why, cap) ||
	    !member_bytes(jwk, "e", e, sizeof(e), 0, &elen, why, cap))
		return NULL;
	BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
	OSSL_PARAM_BLD *bld = bn && be ? OSSL_PARAM_BLD_new() : NULL;
	EVP_PKEY *pkey = NULL;
	if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
		pkey = from_params("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	if (!pkey)
		snprintf(why, cap, "OpenSSL refused the RSA modulus and exponent");
	return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk, char *why, size_t cap)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	const char *group = NULL;
	size_t size = 0;
	if (crv && strcmp(crv, "P-256") == 0)
		group = "prime256v1", size = 32;
	else if (crv && strcmp(crv, "P-384") == 0)
		group = "secp384r1", size = 48;
	if (!group) {
		snprintf(why, cap, "crv %s is not supported (P-256 or P-384)", crv ? crv : "(missing)");
		return NULL;
	}
	unsigned char pub[1 + 2 * 48];
	pub[0] = 0x04; /* uncompressed point: 04 || x || y */
	if (!ec_coord(jwk, "x", pub + 1, size, why, cap) || !ec_coord(jwk, "y", pub + 1 + size, size, why, cap))
		return NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	EVP_PKEY *pkey = NULL;
	if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * size))
		pkey = from_params("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	if (!pkey)
		snprintf(why, cap, "the point (x, y) is not on curve %s", crv);
	return pkey;
}

bool jwk_to_key(const json_t *jwk, struct jwt_key *out, char *why, size_t cap)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(jwk)) {
		snprintf(why, cap, "not a JSON object");
		return false;
	}
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	const char *alg = json_string_value(json_object_get(jwk, "alg"));
	const json_t *kid = json_object_get(jwk, "kid");
	if (kid && (!json_is_string(kid) || json_string_length(kid) > JWT_KID_MAX)) {
		snprintf(why, cap, "kid is not a string of at most %d characters", JWT_KID_MAX);
		return false;
	}
	if (use && strcmp(use, "sig") != 0) {
		snprintf(why, cap, "use is %s, not sig", use);
		return false;
	}
	EVP_PKEY *pkey = NULL;
	if (kty && strcmp(kty, "RSA") == 0) {
		pkey = rsa_from_jwk(jwk, why, cap);
	} else if (kty && strcmp(kty, "EC") == 0) {
		pkey = ec_from_jwk(jwk, why, cap);
	} else {
		snprintf(why, cap, "kty %.16s is not supported (RSA or EC)", kty ? kty : "(missing)");
		return false;
	}
	bool ok = pkey && key_from_pkey(pkey, out, why, cap);
	EVP_PKEY_free(pkey);
	enum jwt_key_type t;
	if (ok && alg && (strlen(alg) >= sizeof(out->alg) || !jwt_alg_key_type(alg, &t) || t != out->type)) {
		snprintf(why, cap, "alg %.16s does not fit a key of kty %s", alg, kty);
		ok = false;
	}
	if (ok && alg)
		snprintf(out->alg, sizeof(out->alg), "%s", alg);
	if (ok && kid)
		snprintf(out->kid, sizeof(out->kid), "%s", json_string_value(kid));
	return ok;
}

enum soma_err jwks_parse(const char *doc, size_t len, struct jwt_key *keys, size_t max, size_t *n, char *why,
			 size_t cap)
{
	*n = 0;
	json_error_t jerr;
	json_t *root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *arr = json_object_get(root, "keys");
	if (!json_is_array(arr)) {
		snprintf(why, cap, "not a JWKS document (a JSON object with a \"keys\" array)");
		json_decref(root);
		return SOMA_ERR_INVALID;
	}
	size_t i;
	json_t *jwk;
	json_array_foreach(arr, i, jwk)
	{
		char skip[160];
		if (*n == max) {
			log_warn("auth", "the JWKS holds more than %zu keys; the rest are ignored", max);
			break;
		}
		if (jwk_to_key(jwk, &keys[*n], skip, sizeof(skip)))
			(*n)++;
		else
			log_debug("auth", "JWKS key %zu skipped: %s", i, skip);
	}
	json_decref(root);
	if (*n == 0) {
		snprintf(why, cap, "the JWKS holds no usable key (RSA of 2048+ bits, or EC P-256/P-384, for use sig)");
		return SOMA_ERR_INVALID;
	}
	return SOMA_OK;
}
