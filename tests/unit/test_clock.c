/*
 * test_clock.c - RFC 3339 text of a wall-clock time (src/core/clock.c): the integer formatter must
 * write what gmtime_r and snprintf write, on every kind of day (leap years, century years, month
 * and year ends) and on random times, and the signal-safe form must be the current time's text.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"

static void same(int64_t ms)
{
	char got[CLOCK_RFC3339_LEN + 1], want[64];
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	cr_assert_str_eq(clock_rfc3339(ms, got, sizeof(got)), want, "at %lld ms", (long long)ms);
}

Test(clock, rfc3339_matches_gmtime)
{
	static const int64_t fixed[] = {0,
					999,
					86399999,
					951782400000,
					951868799999,
					4107456000000,
					1709164800123,
					1735689599999,
					253402300799999,
					253402300800000,
					32503680000000};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		same(fixed[i]);
	for (int64_t day = 0; day < 200 * 366; day += 1) /* every day of two centuries, at a changing time */
		same(day * 86400000 + (day * 7919) % 86400000);
	unsigned seed = 3339;
	for (int i = 0; i < 100000; i++)
		same((((int64_t)rand_r(&seed) << 20) ^ rand_r(&seed)) % 253402300800000);
}

Test(clock, signal_safe_is_now)
{
	char a[CLOCK_RFC3339_LEN + 1], b[CLOCK_RFC3339_LEN + 1];
	int64_t before = clock_wall_ms();
	clock_rfc3339_now_signal_safe(a);
	int64_t after = clock_wall_ms();
	cr_assert_eq(strlen(a), CLOCK_RFC3339_TEXT);
	/* the text lies between the two readings (the text orders as the time does) */
	clock_rfc3339(before, b, sizeof(b));
	bool ok = strcmp(a, b) >= 0;
	clock_rfc3339(after, b, sizeof(b));
	cr_assert(ok && strcmp(a, b) <= 0, "%s not between the two readings", a);
}
