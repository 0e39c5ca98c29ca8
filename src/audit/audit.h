/*
 * audit.h - the append-only audit trail: who did what to which resource, and what was decided.
 *
 * DESIGN: a row per audited action (admin actions, policy denials, key changes, deletions) in the
 * store's audit table, appended through the store writer without waiting (the io loop never
 * blocks; a row that cannot be written is logged at error level with its content). Rows are
 * never updated or deleted through the API. GET /v1/admin/audit lists them (admin, paginated).
 */
#ifndef SOMA_AUDIT_AUDIT_H
#define SOMA_AUDIT_AUDIT_H

#include "core/err.h"
#include "store/store.h"

struct identity;

struct audit_entry {
	const char *tenant;	/* whose resource (the tenant whose data changed) */
	const char *subject;	/* who: "key:<id>", "jwt:<sub>", "admin_token", "anonymous", "cli" */
	const char *key_id;	/* API key id, or NULL */
	const char *action;	/* e.g. "key.create", "session.delete", "policy.denied:memory.write" */
	const char *resource;	/* e.g. "session:<id>", "key:<id>", or NULL */
	const char *decision;	/* "allow" | "deny" | "done" */
	const char *request_id; /* X-Request-Id, or NULL */
	const char *detail;	/* free text (a denial's reason), or NULL; never a secret */
};

/* Starts auditing into st (the orchestrator, after the store). */
void audit_init(struct store *st);
/* Appends one row; every string is copied. Any thread; does not wait for the commit. */
void audit_record(const struct audit_entry *e);
/* Appends one row at once on the store's main connection (the CLI, whose store runs no
 * threads); SOMA_OK once it is committed. */
enum soma_err audit_record_now(struct store *st, const struct audit_entry *e) SOMA_MUST_CHECK;
/* The same, with tenant, subject and key id taken from an authenticated identity. */
void audit_record_identity(const struct identity *who, const char *action, const char *resource, const char *decision,
			   const char *request_id, const char *detail);
/* The same for a change to tenant's data (an admin's action on another tenant's row): the row is
 * tenant's (docs/security.md: the tenant whose data changed; NULL or "": who's own), the subject
 * and key id who's. */
void audit_record_change(const struct identity *who, const char *tenant, const char *action, const char *resource,
			 const char *decision, const char *request_id, const char *detail);

#endif
