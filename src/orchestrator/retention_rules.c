/*
 * retention_rules.c - the pure parts of the retention sweeper (retention.h): what is old, whether
 * retention is on, how a sweep's counts are written. Kept apart from retention.c (the thread and
 * the service, which need the whole process) so unit tests link them alone.
 */
#include <stdio.h>

#include "core/config.h"
#include "orchestrator/retention.h"

static const char *const kind_names[RETENTION_KINDS] = {"sessions", "audit", "dead_letters"};

const char *retention_kind_name(int kind)
{
	return kind >= 0 && kind < RETENTION_KINDS ? kind_names[kind] : "?";
}

int64_t retention_cutoff_ms(int64_t now_ms, int64_t keep_s)
{
	if (keep_s <= 0 || now_ms <= 0)
		return 0;
	int64_t keep_ms = keep_s > INT64_MAX / 1000 ? INT64_MAX : keep_s * 1000;
	return now_ms > keep_ms ? now_ms - keep_ms : 0;
}

bool retention_configured(void)
{
	return cfg_int(CFG_RETENTION_SESSIONS_IDLE_S) > 0 || cfg_int(CFG_RETENTION_AUDIT_S) > 0 ||
	       cfg_int(CFG_RETENTION_DEAD_LETTERS_S) > 0;
}

void retention_summary(char *out, size_t cap, const int64_t counts[RETENTION_KINDS])
{
	snprintf(out, cap, "%s=%lld %s=%lld %s=%lld", kind_names[0], (long long)counts[0], kind_names[1],
		 (long long)counts[1], kind_names[2], (long long)counts[2]);
}
