/*
 * store.h - the durable store of somaagent (embedded driver: SQLite under data.dir).
 *
 * DESIGN: one database file, data.dir/somaagent.db, in WAL mode with synchronous=FULL so that
 * whatever a 2xx acknowledged survives a power cut. Schema changes are versioned migrations
 * compiled into the binary (src/store/migrations/NNNN_name.sql) and applied in order by
 * store_migrate(), each in its own transaction, recorded in schema_migrations.
 * A struct store is safe to use from several threads (SQLite serialized mode); callers on an
 * event loop must not use it (it does disk I/O) - they read caches filled by other threads.
 * Every row that belongs to a tenant is read and written with the tenant as an argument.
 */
#ifndef SOMA_STORE_STORE_H
#define SOMA_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct store;

#define STORE_ID_MAX	 64
#define STORE_SCOPES_MAX 128

struct store_key {
	char id[STORE_ID_MAX + 1];	   /* public key id */
	char tenant[STORE_ID_MAX + 1];	   /* owning tenant */
	char name[STORE_ID_MAX + 1];	   /* label given at creation */
	char scopes[STORE_SCOPES_MAX + 1]; /* space-separated scopes */
	unsigned char token_hash[32];	   /* SHA-256 of the token */
	int64_t created_ms;		   /* creation time, ms since epoch */
	int64_t revoked_ms;		   /* 0 while valid */
};

/* Opens (creating if needed) data_dir/somaagent.db; data_dir is created too. On failure *why
 * receives a sentence for the operator. The caller owns *out and frees it with store_close(). */
enum soma_err store_open(const char *data_dir, struct store **out, char *why, size_t why_cap) SOMA_MUST_CHECK;
void store_close(struct store *st);
/* Applies pending migrations; *applied (may be NULL) receives how many ran. */
enum soma_err store_migrate(struct store *st, int *applied) SOMA_MUST_CHECK;
/* Highest applied migration version and the highest compiled in. */
enum soma_err store_schema_version(struct store *st, int *current, int *latest) SOMA_MUST_CHECK;
/* Cheap check that the database answers (for health). */
enum soma_err store_ping(struct store *st) SOMA_MUST_CHECK;
/* A number that changes whenever another connection commits (PRAGMA data_version). */
enum soma_err store_data_version(struct store *st, int64_t *version) SOMA_MUST_CHECK;

/* Keys. store_key_insert creates the tenant when it does not exist. */
enum soma_err store_key_insert(struct store *st, const struct store_key *key) SOMA_MUST_CHECK;
/* All keys, revoked ones included, oldest first. *keys is malloc'd; the caller frees it. */
enum soma_err store_key_list(struct store *st, struct store_key **keys, size_t *n) SOMA_MUST_CHECK;
/* Marks a key revoked; SOMA_ERR_NOT_FOUND when no valid key has this id. */
enum soma_err store_key_revoke(struct store *st, const char *id) SOMA_MUST_CHECK;

#endif
