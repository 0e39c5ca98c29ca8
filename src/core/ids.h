/*
 * ids.h - identifiers: request ids, UUIDs, random bytes.
 *
 * DESIGN: secrets (API key tokens) come from the kernel CSPRNG (getrandom). Request ids only need
 * to be unique, so they come from a per-thread generator seeded from the kernel once, which keeps
 * them off the hot path's syscall budget.
 */
#ifndef SOMA_CORE_IDS_H
#define SOMA_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define IDS_UUID_LEN 36

/* Fills buf with len bytes from the kernel CSPRNG. */
enum soma_err ids_random_bytes(void *buf, size_t len) SOMA_MUST_CHECK;
/* A non-cryptographic random number from the per-thread generator (jitter, sampling). */
uint32_t ids_random_u32(void);
/* Writes a random UUIDv4 (36 chars + NUL) into out[37], from the per-thread generator. */
void ids_uuid4(char out[IDS_UUID_LEN + 1]);
/* Writes a UUIDv7 (RFC 9562: 48-bit Unix milliseconds, then random bits) into out[37]. Ids
 * that start with the time sort by creation, so rows keyed by them are appended at the right
 * edge of the store's B-trees instead of landing on random pages: far fewer pages written per
 * commit. Used for every id we store (sessions, events, tasks). */
void ids_uuid7(char out[IDS_UUID_LEN + 1]);
/* Writes len random lower-case hex digits + NUL into out (cap >= len+1), CSPRNG-backed. */
enum soma_err ids_random_hex(char *out, size_t len) SOMA_MUST_CHECK;
/* True when s is an acceptable client-supplied request id: 1..128 chars of [A-Za-z0-9._:-]. */
bool ids_request_id_valid(const char *s, size_t len);

#endif
