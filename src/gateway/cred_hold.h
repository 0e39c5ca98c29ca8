/*
 * cred_hold.h - is the credential a long-lived answer was opened with still good? Shared by the
 * session event stream (stream.c) and the A2A runs (a2a_run.c).
 *
 * DESIGN: the answer remembers the API key id (or the JWT's exp + leeway, or that it was opened
 * anonymously) when it opens, and checks on its own io thread before it sends anything and on
 * its tick: one atomic load of the auth cache's revocation counter while nothing was revoked (the
 * key is looked up only when the counter moved), the wall clock against the JWT's exp, and for an
 * anonymous answer whether a key now exists (anonymous requests then get 401). Once gone it
 * stays gone. Nothing is posted across threads; the struct is owned by its answer.
 */
#ifndef SOMA_GATEWAY_CRED_HOLD_H
#define SOMA_GATEWAY_CRED_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "identity/identity.h"

struct cred_hold {
	char key_id[IDENTITY_KEY_ID_LEN + 1]; /* the API key the answer was opened with, or "" */
	int64_t expires_ms;		      /* its JWT is refused from this wall ms on; 0: never */
	bool anonymous;			      /* opened without credentials (anonymous mode) */
	uint64_t revocations;		      /* auth_cache_revocations() when the key was last checked */
	const char *gone;		      /* NULL, "credentials_revoked" or "credentials_expired"; static */
};

/* Remembers ident's credential (borrowed, copied). The first check looks the key up. */
void cred_hold_init(struct cred_hold *h, const struct identity *ident);
/* True while the credential is still good; once false it stays false and h->gone names why. */
bool cred_hold_check(struct cred_hold *h);
/* Why it is gone, for the client (static): what to do next. */
const char *cred_hold_message(const struct cred_hold *h);

#endif
