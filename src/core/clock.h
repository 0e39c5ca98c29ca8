/*
 * clock.h - time helpers: monotonic clock for durations, RFC 3339 UTC timestamps for humans.
 */
#ifndef SOMA_CORE_CLOCK_H
#define SOMA_CORE_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC); for durations only. */
uint64_t clock_mono_ns(void);
/* The time ms milliseconds from now on clock id (e.g. CLOCK_MONOTONIC or CLOCK_REALTIME, as the
 * condition variable waiting on it was set up): an absolute deadline for pthread_cond_timedwait. */
struct timespec clock_deadline_in(clockid_t id, int64_t ms);
/* Wall-clock time in milliseconds since the epoch. */
int64_t clock_wall_ms(void);
/* Writes "2026-11-27T12:08:18.123Z" for wall_ms into out (at least 25 bytes). Returns out. */
char *clock_rfc3339(int64_t wall_ms, char *out, size_t cap);

#define CLOCK_RFC3339_LEN  25 /* buffer size for the text below, NUL included */
#define CLOCK_RFC3339_TEXT 24 /* characters of "2026-11-27T12:08:18.123Z" */

/* Like clock_rfc3339 for the current time, but async-signal-safe (integer arithmetic only):
 * for log lines written from a signal handler. out must hold CLOCK_RFC3339_LEN + 1 bytes. */
void clock_rfc3339_now_signal_safe(char out[CLOCK_RFC3339_LEN + 1]);

#endif
