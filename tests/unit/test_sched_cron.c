/*
 * test_sched_cron.c - cron expressions (src/sched/cron.c): parsing of every field form, the
 * errors, and next times across minutes, hours, month ends, leap years and the day-of-month /
 * day-of-week rule; and beat's interval due times (src/sched/beat_file.c).
 */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "sched/cron.h"
#include "sched/sched_int.h"

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
	return (int64_t)timegm(&tm);
}

static struct cron_expr parse_ok(const char *text)
{
	struct cron_expr e;
	char why[256];
	cr_assert(cron_parse(text, &e, why, sizeof(why)), "%s: %s", text, why);
	return e;
}

static int64_t next_of(const char *text, int64_t after)
{
	struct cron_expr e = parse_ok(text);
	return cron_next(&e, after);
}

Test(cron, fields_ranges_steps_lists)
{
	struct cron_expr e = parse_ok("*/15 1-3,22 1 jan-mar/2 MON-fri");
	cr_assert_eq(e.minute, (1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45));
	cr_assert_eq(e.hour, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 22));
	cr_assert_eq(e.dom, 1u << 1);
	cr_assert_eq(e.month, (1u << 1) | (1u << 3));
	cr_assert_eq(e.dow, 0x3e);
	cr_assert(!e.dom_any && !e.dow_any);
	e = parse_ok("5/20 * * * 7");
	cr_assert_eq(e.minute, (1ull << 5) | (1ull << 25) | (1ull << 45));
	cr_assert_eq(e.dow, 1u, "7 is Sunday");
	cr_assert(e.dom_any);
	e = parse_ok("@hourly");
	cr_assert_eq(e.minute, 1ull);
}

Test(cron, rejects_bad_expressions)
{
	const char *bad[] = {"",	  "* * * *",	  "* * * * * *", "60 * * * *",	"* 24 * * *",
			     "* * 0 * *", "* * * 13 *",	  "* * * * 8",	 "5-1 * * * *", "*/0 * * * *",
			     "a * * * *", "1,,2 * * * *", "* * * foo *", "-1 * * * *",	"1- * * * *",
			     "*/ * * * *"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cron_expr e;
		char why[256] = "";
		cr_assert(!cron_parse(bad[i], &e, why, sizeof(why)), "accepted \"%s\"", bad[i]);
		cr_assert(why[0], "no reason for \"%s\"", bad[i]);
	}
}

Test(cron, next_times)
{
	int64_t t = utc(2026, 11, 27, 10, 7) + 30;
	cr_assert_eq(next_of("* * * * *", t), utc(2026, 11, 27, 10, 8));
	cr_assert_eq(next_of("* * * * *", utc(2026, 11, 27, 10, 8)), utc(2026, 11, 27, 10, 9), "strictly after");
	cr_assert_eq(next_of("*/15 * * * *", t), utc(2026, 11, 27, 10, 15));
	cr_assert_eq(next_of("0 9 * * *", t), utc(2026, 11, 28, 9, 0));
	cr_assert_eq(next_of("30 23 31 12 *", t), utc(2026, 12, 31, 23, 30));
	cr_assert_eq(next_of("0 0 1 * *", utc(2026, 12, 31, 23, 59)), utc(2027, 1, 1, 0, 0), "year wraps");
	cr_assert_eq(next_of("0 0 29 2 *", t), utc(2028, 2, 29, 0, 0), "leap day");
	cr_assert_eq(next_of("0 0 31 * *", utc(2026, 4, 1, 0, 0)), utc(2026, 5, 31, 0, 0), "skips 30-day months");
	cr_assert_eq(next_of("0 0 30 2 *", t), -1, "never");
	/* 2026-11-27 is a Friday */
	cr_assert_eq(next_of("0 12 * * mon", t), utc(2026, 11, 30, 12, 0));
	cr_assert_eq(next_of("0 12 * * 0,6", t), utc(2026, 11, 28, 12, 0));
	/* both restricted: the 1st of the month OR a Monday, whichever comes first */
	cr_assert_eq(next_of("0 0 1 * 1", t), utc(2026, 11, 30, 0, 0));
	cr_assert_eq(next_of("0 0 1 * 1", utc(2026, 11, 30, 0, 0)), utc(2026, 12, 1, 0, 0));
	cr_assert_eq(next_of("@daily", t), utc(2026, 11, 28, 0, 0));
}

/* cronie (entry.c): a day field whose text starts with '*' is a star, so `*\/2` in day-of-month
 * with a restricted day-of-week means both must match (odd days that are Mondays), not either. */
Test(cron, star_step_day_field_counts_as_star)
{
	struct cron_expr e = parse_ok("0 0 */2 * mon");
	cr_assert(e.dom_any, "*/2 is a star for the day rule");
	cr_assert(!e.dow_any);
	/* 2026-11-27 is a Friday; Mondays: 11-30 (even), 12-07 (odd) */
	int64_t t = utc(2026, 11, 27, 10, 7);
	cr_assert_eq(next_of("0 0 */2 * mon", t), utc(2026, 12, 7, 0, 0), "an odd day that is a Monday");
	cr_assert_eq(next_of("0 0 * * */2", t), utc(2026, 11, 28, 0, 0), "sun, tue, thu, sat");
	cr_assert_eq(next_of("0 0 1 * */2", t), utc(2026, 12, 1, 0, 0), "the 1st AND an even weekday");
	cr_assert_eq(next_of("0 0 2 * mon", t), utc(2026, 11, 30, 0, 0), "both restricted: either");
}

Test(beat, interval_due_times_are_epoch_multiples)
{
	struct beat_entry e = {.every_s = 10};
	cr_assert_eq(beat_next_due(&e, 1000), 1010);
	cr_assert_eq(beat_next_due(&e, 1009), 1010);
	cr_assert(beat_is_due_time(&e, 1010));
	cr_assert(!beat_is_due_time(&e, 1011));
	struct beat_entry c = {.every_s = 0};
	c.cron = parse_ok("*/5 * * * *");
	int64_t t = utc(2026, 11, 27, 10, 7);
	cr_assert_eq(beat_next_due(&c, t), utc(2026, 11, 27, 10, 10));
	cr_assert(beat_is_due_time(&c, utc(2026, 11, 27, 10, 10)));
	cr_assert(!beat_is_due_time(&c, t));
}
