/*
 * jwt_claims.c - the claims of a verified JWT: time window, issuer, audience, subject, tenant
 * and scopes (see jwt_int.h).
 *
 * DESIGN: runs only after the signature verified, on the claims as parsed by jansson with
 * duplicate names refused (so no claim can mean one thing to us and another to libjwt). Pure
 * function of its input and the clock value passed in; any thread. Scopes that do not fit the
 * identity's scope list (STORE_SCOPES_MAX) are dropped: a missing scope only ever denies.
 */
#include <stdio.h>
#include <string.h>

#include "identity/jwt_int.h"

#define SUBJECT_MAX (STORE_ID_MAX - 4) /* "jwt:" + sub fits an identity's subject */

static bool audience_matches(const json_t *aud, const char *want)
{
	if (json_is_string(aud))
		return strcmp(json_string_value(aud), want) == 0;
	size_t i;
	json_t *v;
	json_array_foreach(aud, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
			return true;
	}
	return false;
}

/* Appends one scope of n bytes to out[cap] at *pos, space-separated; skips scopes with spaces or
 * control characters and scopes that do not fit. */
static void scope_append(char *out, size_t cap, size_t *pos, const char *s, size_t n)
{
	if (n == 0 || *pos + (*pos ? 1 : 0) + n + 1 > cap)
		return;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
			return;
	}
	if (*pos)
		out[(*pos)++] = ' ';
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
}

/* Space-separated words of a string claim. */
static void scopes_from_string(const char *s, char *out, size_t cap, size_t *pos)
{
	while (*s) {
		while (*s == ' ')
			s++;
		size_t n = strcspn(s, " ");
		scope_append(out, cap, pos, s, n);
		s += n;
	}
}

/* scope (RFC 8693: a space-separated string), else scp (an array of strings, or a string). */
static void collect_scopes(const json_t *claims, char *out, size_t cap)
{
	size_t pos = 0;
	out[0] = '\0';
	const json_t *scope = json_object_get(claims, "scope");
	const json_t *scp = json_object_get(claims, "scp");
	if (json_is_string(scope)) {
		scopes_from_string(json_string_value(scope), out, cap, &pos);
	} else if (json_is_string(scp)) {
		scopes_from_string(json_string_value(scp), out, cap, &pos);
	} else if (json_is_array(scp)) {
		size_t i;
		json_t *v;
		json_array_foreach(scp, i, v)
		{
			if (json_is_string(v))
				scope_append(out, cap, &pos, json_string_value(v), json_string_length(v));
		}
	}
}

static enum jwt_verdict check_time(const json_t *claims, int leeway_s, int64_t now_ms, int64_t *until_ms)
{
	const json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
	if (!json_is_number(exp))
		return JWT_NO_EXP;
	double now_s = (double)now_ms / 1000.0;
	double end_s = json_number_value(exp) + leeway_s;
	if (now_s >= end_s)
		return JWT_EXPIRED;
	if (nbf && !json_is_number(nbf))
		return JWT_MALFORMED;
	if (nbf && now_s + leeway_s < json_number_value(nbf))
		return JWT_NOT_YET_VALID;
	double until = end_s * 1000.0, cap = (double)now_ms + JWT_CACHE_TTL_MS;
	*until_ms = (int64_t)(until < cap ? until : cap); /* in range: now <= until <= cap */
	return JWT_OK;
}

static enum jwt_verdict check_tenant(const json_t *claims, const struct jwt_rules *r, struct identity *out)
{
	for (size_t i = 0; i < r->ntenant_claims; i++) {
		const json_t *t = json_object_get(claims, r->tenant_claims[i]);
		if (!t)
			continue;
		if (!json_is_string(t) || !identity_tenant_valid(json_string_value(t)))
			return JWT_BAD_TENANT;
		snprintf(out->tenant, sizeof(out->tenant), "%s", json_string_value(t));
		return JWT_OK;
	}
	return JWT_NO_TENANT;
}

enum jwt_verdict jwt_claims_check(const json_t *claims, const struct jwt_rules *r, int64_t now_ms, struct identity *out,
				  int64_t *until_ms)
{
	enum jwt_verdict v = check_time(claims, r->leeway_s, now_ms, until_ms);
	if (v != JWT_OK)
		return v;
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	if (r->issuer[0] && (!iss || strcmp(iss, r->issuer) != 0))
		return JWT_WRONG_ISSUER;
	if (r->audience[0] && !audience_matches(json_object_get(claims, "aud"), r->audience))
		return JWT_WRONG_AUDIENCE;
	const json_t *sub = json_object_get(claims, "sub");
	size_t sub_len = json_string_length(sub);
	if (!json_is_string(sub) || sub_len == 0 || sub_len > SUBJECT_MAX || strlen(json_string_value(sub)) != sub_len)
		return JWT_NO_SUBJECT;
	memset(out, 0, sizeof(*out));
	if ((v = check_tenant(claims, r, out)) != JWT_OK)
		return v;
	snprintf(out->subject, sizeof(out->subject), "jwt:%s", json_string_value(sub));
	/* refused from exp + leeway on (check_time): an event stream opened with it ends then */
	double end_ms = (json_number_value(json_object_get(claims, "exp")) + r->leeway_s) * 1000.0;
	out->expires_ms = end_ms < 1.0 ? 1 : end_ms > 9e15 ? INT64_MAX : (int64_t)end_ms;
	collect_scopes(claims, out->scopes, sizeof(out->scopes));
	return JWT_OK;
}
