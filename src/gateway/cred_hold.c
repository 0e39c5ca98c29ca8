/*
 * cred_hold.c - the credential check of long-lived answers (cred_hold.h tells the design).
 */
#include "gateway/cred_hold.h"

#include <string.h>

#include "core/clock.h"

void cred_hold_init(struct cred_hold *h, const struct identity *ident)
{
	memset(h, 0, sizeof(*h));
	size_t id_len = strnlen(ident->key_id, sizeof(h->key_id) - 1); /* ids are 16 hex */
	memcpy(h->key_id, ident->key_id, id_len);
	h->key_id[id_len] = '\0';
	h->expires_ms = ident->expires_ms;
	h->anonymous = strcmp(ident->subject, "anonymous") == 0; /* JWT subjects are "jwt:..." */
	h->revocations = auth_cache_revocations() - 1;		 /* the first check looks the key up */
}

bool cred_hold_check(struct cred_hold *h)
{
	if (h->gone)
		return false;
	if (h->expires_ms && clock_wall_ms() >= h->expires_ms) {
		h->gone = "credentials_expired";
		return false;
	}
	if (h->anonymous && auth_cache_keys_exist()) { /* anonymous requests now get 401 */
		h->gone = "credentials_revoked";
		return false;
	}
	uint64_t revocations = auth_cache_revocations();
	if (h->key_id[0] && revocations != h->revocations) {
		h->revocations = revocations;
		if (!auth_cache_key_active(h->key_id))
			h->gone = "credentials_revoked";
	}
	return h->gone == NULL;
}

const char *cred_hold_message(const struct cred_hold *h)
{
	/* (said of a session stream, an A2A stream and an A2A blocking send alike) */
	if (h->gone && strcmp(h->gone, "credentials_expired") == 0)
		return "the token this stream or request was made with has expired; send it again with a new one";
	if (h->anonymous)
		return "this stream or request was made without credentials and an API key now exists, so anonymous "
		       "access has ended; send it again with Authorization: Bearer <api key>";
	return "the API key this stream or request was made with has been revoked; send it again with another";
}
