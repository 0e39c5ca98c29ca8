/*
 * cron.h - five-field cron expressions (minute hour day-of-month month day-of-week), in UTC.
 *
 * DESIGN: an expression is parsed once into bit sets, one per field; cron_next() walks forward
 * from a time, skipping whole months, days and hours that cannot match, so it never steps
 * minute by minute through a year. Fields take `*`, numbers, ranges `a-b`, steps `*\/n` and
 * `a-b/n` (and `a/n`: from a to the field's end), and comma lists of those; months and weekdays
 * also take English names (jan..dec, sun..sat); weekday 7 is Sunday like 0. When both
 * day-of-month and day-of-week are restricted, a day matching either runs (Vixie cron); a day
 * field whose text starts with `*` (`*\/2` too) counts as unrestricted, as in Vixie cron and cronie.
 * Shorthands: @yearly @annually @monthly @weekly @daily @midnight @hourly. Pure functions.
 */
#ifndef SOMA_SCHED_CRON_H
#define SOMA_SCHED_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cron_expr {
	uint64_t minute; /* bit m: minute m (0-59) matches */
	uint32_t hour;	 /* bit h: hour h (0-23) */
	uint32_t dom;	 /* bit d: day of month d (1-31) */
	uint16_t month;	 /* bit m: month m (1-12) */
	uint8_t dow;	 /* bit d: weekday d (0 Sunday - 6) */
	bool dom_any;	 /* day-of-month was `*` */
	bool dow_any;	 /* day-of-week was `*` */
};

/* Parses text into *out. False with a sentence in why (naming the field) when it is not a
 * valid expression. */
bool cron_parse(const char *text, struct cron_expr *out, char *why, size_t why_cap);
/* The first matching minute strictly after `after` (unix seconds, UTC), as unix seconds; -1 when
 * none exists within five years (e.g. "0 0 30 2 *"). */
int64_t cron_next(const struct cron_expr *e, int64_t after);

#endif
