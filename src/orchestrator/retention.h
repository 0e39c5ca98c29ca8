/*
 * retention.h - the retention sweeper: bounds what the platform keeps (retention.* settings).
 *
 * DESIGN: see retention.c (the sweeper thread and its service); the pure parts are in
 * retention_rules.c, which unit tests link alone.
 */
#ifndef SOMA_ORCHESTRATOR_RETENTION_H
#define SOMA_ORCHESTRATOR_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "orchestrator/registry.h"

#define RETENTION_BATCH	   500 /* audit rows or dead letters per transaction */
#define RETENTION_SESSIONS 50  /* sessions per transaction (each with its events and files) */
#define RETENTION_PAUSE_MS 5   /* between batches: the writer commits what queued meanwhile alone */
#define RETENTION_KINDS	   3   /* sessions, audit, dead_letters */

/* "sessions", "audit" or "dead_letters" (the kind label of soma_retention_deleted_total). Static. */
const char *retention_kind_name(int kind);
/* What is kept: rows older than now_ms - keep_s seconds go; keep_s 0 keeps everything (returns
 * 0: no row is older than that). */
int64_t retention_cutoff_ms(int64_t now_ms, int64_t keep_s);
/* Whether any retention.* setting asks for deletes (the service exists only then). */
bool retention_configured(void);
/* "sessions=N audit=N dead_letters=N" of counts[RETENTION_KINDS] into out (cap bytes). */
void retention_summary(char *out, size_t cap, const int64_t counts[RETENTION_KINDS]);

/* The service (services.c registers it when retention_configured()). */
enum soma_err retention_svc_start(void *ctx, char *why, size_t cap);
void retention_svc_stop(void *ctx);
enum svc_status retention_svc_health(void *ctx, char *detail, size_t cap);

#endif
