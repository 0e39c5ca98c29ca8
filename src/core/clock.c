/*
 * clock.c - see clock.h.
 */
#include "core/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t clock_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t clock_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_digits(char *p, long v, int n)
{
	for (int i = n - 1; i >= 0; i--, v /= 10)
		p[i] = (char)('0' + v % 10);
}

/* out = wall_ms as RFC 3339 UTC with milliseconds, by integer arithmetic only (no gmtime_r and
 * snprintf: this runs for every event). wall_ms >= 0, before year 10000. */
static void format_ms(long long wall_ms, char out[CLOCK_RFC3339_LEN + 1])
{
	long long secs = wall_ms / 1000, days = secs / 86400, rem = secs % 86400;
	/* civil date from days since 1970-01-01 (proleptic Gregorian) */
	long long z = days + 719468, era = z / 146097, doe = z - era * 146097;
	long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	long long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
	memcpy(out, "0000-00-00T00:00:00.000Z", CLOCK_RFC3339_TEXT);
	put_digits(out, (long)y, 4);
	put_digits(out + 5, (long)m, 2);
	put_digits(out + 8, (long)d, 2);
	put_digits(out + 11, (long)(rem / 3600), 2);
	put_digits(out + 14, (long)(rem / 60 % 60), 2);
	put_digits(out + 17, (long)(rem % 60), 2);
	put_digits(out + 20, (long)(wall_ms % 1000), 3);
	out[CLOCK_RFC3339_TEXT] = '\0';
}

void clock_rfc3339_now_signal_safe(char out[CLOCK_RFC3339_LEN + 1])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	format_ms((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, out);
}

char *clock_rfc3339(int64_t wall_ms, char *out, size_t cap)
{
	if (wall_ms >= 0 && wall_ms < 253402300800000LL && cap > CLOCK_RFC3339_TEXT) { /* 0000..9999 */
		format_ms(wall_ms, out);
		return out;
	}
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
	return out;
}

struct timespec clock_deadline_in(clockid_t id, int64_t ms)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_sec++, ts.tv_nsec -= 1000000000L;
	return ts;
}
