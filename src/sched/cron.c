/*
 * cron.c - parsing and next-time of five-field cron expressions (see cron.h).
 */
#include "sched/cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define FIELD_TEXT_MAX 256 /* one field's text */

struct field_def {
	const char *name;	  /* for messages */
	int lo, hi;		  /* value range */
	const char *const *names; /* names of lo.., or NULL */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
					  "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field_def fields[5] = {
	{"minute", 0, 59, NULL},	  {"hour", 0, 23, NULL},
	{"day of month", 1, 31, NULL},	  {"month", 1, 12, month_names},
	{"day of week", 0, 7, dow_names},
};

/* A number or a name of the field; false when s[0..n) is neither. */
static bool parse_value(const struct field_def *f, const char *s, size_t n, int *out)
{
	if (n == 0)
		return false;
	if (f->names && n == 3) {
		for (int i = 0; f->names[i]; i++) {
			if (strncasecmp(s, f->names[i], 3) == 0) {
				*out = f->lo + i;
				return true;
			}
		}
	}
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || i >= 3)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return v >= f->lo && v <= f->hi;
}

/* One comma-separated item: `*`, `a`, `a-b`, with an optional `/step`. Sets bits in *bits. */
static bool parse_item(const struct field_def *f, const char *s, size_t n, uint64_t *bits)
{
	const char *slash = memchr(s, '/', n);
	size_t range_len = slash ? (size_t)(slash - s) : n;
	int lo = f->lo, hi = f->hi, step = 1;
	if (slash) {
		struct field_def num = {f->name, 1, f->hi + 1, NULL};
		if (!parse_value(&num, slash + 1, n - range_len - 1, &step))
			return false;
	}
	if (!(range_len == 1 && s[0] == '*')) {
		const char *dash = memchr(s, '-', range_len);
		if (!parse_value(f, s, dash ? (size_t)(dash - s) : range_len, &lo))
			return false;
		if (dash) {
			if (!parse_value(f, dash + 1, range_len - (size_t)(dash - s) - 1, &hi) || hi < lo)
				return false;
		} else if (!slash) {
			hi = lo;
		}
	}
	for (int v = lo; v <= hi; v += step)
		*bits |= 1ull << v;
	return true;
}

static bool parse_field(const struct field_def *f, const char *s, uint64_t *bits, bool *any)
{
	*bits = 0;
	*any = s[0] == '*'; /* as Vixie cron and cronie: `*`, `*\/n`, `*,5` count as a star */
	for (const char *p = s;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (!parse_item(f, p, n, bits))
			return false;
		if (!comma)
			return true;
		p = comma + 1;
	}
}

static const char *expand_shorthand(const char *text)
{
	static const char *const map[][2] = {
		{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
		{"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
		{"@hourly", "0 * * * *"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcasecmp(text, map[i][0]) == 0)
			return map[i][1];
	return text;
}

bool cron_parse(const char *text, struct cron_expr *out, char *why, size_t why_cap)
{
	memset(out, 0, sizeof(*out));
	char buf[FIELD_TEXT_MAX * 2];
	if (!text || strlen(text) >= sizeof(buf)) {
		snprintf(why, why_cap, "a cron expression is 5 fields: minute hour day-of-month month day-of-week");
		return false;
	}
	snprintf(buf, sizeof(buf), "%s", expand_shorthand(text));
	char *parts[6] = {0}, *save = NULL;
	int n = 0;
	for (char *t = strtok_r(buf, " \t", &save); t && n < 6; t = strtok_r(NULL, " \t", &save))
		parts[n++] = t;
	if (n != 5) {
		snprintf(why, why_cap,
			 "\"%.64s\" has %s5 fields; a cron expression is minute hour day-of-month month "
			 "day-of-week",
			 text, n < 5 ? "fewer than " : "more than ");
		return false;
	}
	uint64_t bits[5];
	bool any[5];
	for (int i = 0; i < 5; i++) {
		if (!parse_field(&fields[i], parts[i], &bits[i], &any[i])) {
			snprintf(why, why_cap,
				 "cron field %s \"%.32s\": expected *, %d-%d, a range a-b, a step /n or a "
				 "list of those",
				 fields[i].name, parts[i], fields[i].lo, fields[i].hi);
			return false;
		}
	}
	out->minute = bits[0];
	out->hour = (uint32_t)bits[1];
	out->dom = (uint32_t)bits[2];
	out->month = (uint16_t)bits[3];
	out->dow = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
	out->dom_any = any[2];
	out->dow_any = any[4];
	return true;
}

static bool day_matches(const struct cron_expr *e, const struct tm *tm)
{
	bool dom = (e->dom >> tm->tm_mday) & 1, dow = (e->dow >> tm->tm_wday) & 1;
	if (e->dom_any || e->dow_any)
		return dom && dow;
	return dom || dow;
}

int64_t cron_next(const struct cron_expr *e, int64_t after)
{
	time_t t = (time_t)(after - (after % 60 + 60) % 60 + 60); /* the next whole minute */
	struct tm tm;
	gmtime_r(&t, &tm);
	tm.tm_sec = 0;
	int year_limit = tm.tm_year + 5;
	while (tm.tm_year <= year_limit) {
		if (!((e->month >> (tm.tm_mon + 1)) & 1)) {
			tm.tm_mon++, tm.tm_mday = 1, tm.tm_hour = 0, tm.tm_min = 0;
		} else if (!day_matches(e, &tm)) {
			tm.tm_mday++, tm.tm_hour = 0, tm.tm_min = 0;
		} else if (!((e->hour >> tm.tm_hour) & 1)) {
			tm.tm_hour++, tm.tm_min = 0;
		} else if (!((e->minute >> tm.tm_min) & 1)) {
			tm.tm_min++;
		} else {
			return (int64_t)timegm(&tm);
		}
		t = timegm(&tm); /* normalises overflowed fields and recomputes the weekday */
		gmtime_r(&t, &tm);
	}
	return -1;
}
