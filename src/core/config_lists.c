/*
 * config_lists.c - the comma-separated key=value list settings (queue.routes, queue.queues,
 * queue.rate_limits): one reader of their items, shared by the validators here and by the queue
 * module that applies them, and the validators themselves.
 *
 * DESIGN: a list is read one item at a time with spaces around ',' and '=' trimmed, so the value
 * checked at start-up and the value applied later are read alike. Every item must be well formed:
 * a malformed one stops start-up (exit 2, naming the setting and the item) instead of being
 * skipped or read as something else. Pure functions on borrowed strings; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config_int.h"

#define MAX_QUEUES	14  /* queue.queues entries beside conversation and celery */
#define MAX_QUEUE_NAME	63  /* bytes of a queue name */
#define MAX_RATE_LIMITS 32  /* queue.rate_limits entries */
#define MAX_RATE_TASK	127 /* bytes of a rate-limited task name */
#define MAX_QUEUE_CONC	256 /* concurrency of one queue */

static void trim(const char **s, size_t *len)
{
	while (*len && (**s == ' ' || **s == '\t'))
		(*s)++, (*len)--;
	while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

bool cfg_list_next(const char **p, struct cfg_pair *out)
{
	const char *s = *p;
	if (!s || !*s)
		return false;
	const char *comma = strchr(s, ',');
	size_t len = comma ? (size_t)(comma - s) : strlen(s);
	*p = comma ? comma + 1 : s + len;
	const char *eq = memchr(s, '=', len);
	*out = (struct cfg_pair){.key = s, .klen = eq ? (size_t)(eq - s) : len, .has_eq = eq != NULL};
	out->item = s;
	out->ilen = len;
	trim(&out->item, &out->ilen);
	trim(&out->key, &out->klen);
	if (eq) {
		out->val = eq + 1;
		out->vlen = len - (size_t)(eq + 1 - s);
		trim(&out->val, &out->vlen);
	} else {
		out->val = s + len;
	}
	return true;
}

/* A name holds no space, '=' or ','; only a trailing '*' when star is allowed. */
static bool name_ok(const char *s, size_t len, bool star)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == ' ' || c == '\t' || c == '=' || (c == '*' && (!star || i + 1 != len)))
			return false;
	}
	return true;
}

static bool bad_item(const struct cfg_pair *it, const char *expected, char *why, size_t cap)
{
	snprintf(why, cap, "item \"%.*s\" is not %s", (int)(it->ilen > 100 ? 100 : it->ilen), it->item, expected);
	return false;
}

bool cfg_validate_routes(const char *value, char *why, size_t cap)
{
	struct cfg_pair it;
	for (const char *p = value; cfg_list_next(&p, &it);) {
		if (!it.has_eq || !name_ok(it.key, it.klen, true) || !name_ok(it.val, it.vlen, false) ||
		    memchr(it.val, '=', it.vlen))
			return bad_item(&it, "task=queue (a task pattern may end in *, e.g. soma.*=ops)", why, cap);
	}
	return true;
}

static bool parse_count(const char *s, size_t len, long *out)
{
	if (len == 0 || len > 9)
		return false;
	long n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		n = n * 10 + (s[i] - '0');
	}
	*out = n;
	return true;
}

static bool same(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* Was cur's key already the key of an earlier item of value? */
static bool seen_before(const char *value, const struct cfg_pair *cur)
{
	struct cfg_pair it;
	for (const char *p = value; cfg_list_next(&p, &it) && it.item != cur->item;)
		if (same(it.key, it.klen, cur->key, cur->klen))
			return true;
	return false;
}

bool cfg_validate_queues(const char *value, char *why, size_t cap)
{
	struct cfg_pair it;
	int n = 0;
	for (const char *p = value; cfg_list_next(&p, &it); n++) {
		long conc = 0;
		if (!it.has_eq || !name_ok(it.key, it.klen, false) || it.klen > MAX_QUEUE_NAME ||
		    !parse_count(it.val, it.vlen, &conc) || conc < 1 || conc > MAX_QUEUE_CONC)
			return bad_item(&it,
					"name=concurrency (a name of at most 63 bytes, a concurrency from 1 to 256)",
					why, cap);
		if (same(it.key, it.klen, "conversation", 12) || same(it.key, it.klen, "celery", 6)) {
			snprintf(why, cap,
				 "queue \"%.*s\" always exists: set its concurrency with queue.%.*s.concurrency",
				 (int)it.klen, it.key, (int)it.klen, it.key);
			return false;
		}
		if (seen_before(value, &it)) {
			snprintf(why, cap, "queue \"%.*s\" is defined twice", (int)it.klen, it.key);
			return false;
		}
		if (n == MAX_QUEUES) {
			snprintf(why, cap, "at most %d queues", MAX_QUEUES);
			return false;
		}
	}
	return true;
}

/* "N/u": N a positive number, u one of Celery's units s, m, h. */
static bool rate_ok(const char *s, size_t len)
{
	const char *slash = memchr(s, '/', len);
	if (!slash || slash == s || (size_t)(s + len - slash) != 2 || !strchr("smh", slash[1]))
		return false;
	char num[32];
	size_t nlen = (size_t)(slash - s);
	if (nlen >= sizeof(num))
		return false;
	memcpy(num, s, nlen);
	num[nlen] = '\0';
	char *end = NULL;
	double n = strtod(num, &end);
	return end == num + nlen && n > 0 && n < 1e9;
}

bool cfg_validate_rate_limits(const char *value, char *why, size_t cap)
{
	struct cfg_pair it;
	int n = 0;
	for (const char *p = value; cfg_list_next(&p, &it); n++) {
		if (!it.has_eq || !name_ok(it.key, it.klen, false) || it.klen > MAX_RATE_TASK ||
		    !rate_ok(it.val, it.vlen))
			return bad_item(&it,
					"task=N/s, task=N/m or task=N/h (Celery's rate units), e.g. soma.echo=20/m",
					why, cap);
		if (seen_before(value, &it)) {
			snprintf(why, cap, "task \"%.*s\" has two rate limits", (int)it.klen, it.key);
			return false;
		}
		if (n == MAX_RATE_LIMITS) {
			snprintf(why, cap, "at most %d rate limits", MAX_RATE_LIMITS);
			return false;
		}
	}
	return true;
}
