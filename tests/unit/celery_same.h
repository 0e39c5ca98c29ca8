/*
 * celery_same.h - for tests: whether two decoded Celery messages are the same reading (every
 * field of struct celery_msg; the jansson trees when both have them). Shared by
 * tests/unit/test_celery_scan.c and tests/fuzz/fuzz_celery.c. Returns NULL when they are the
 * same, else the name of the first field that differs (a static string).
 */
#ifndef SOMA_TESTS_CELERY_SAME_H
#define SOMA_TESTS_CELERY_SAME_H

#include <string.h>

#include "queue/celery_wire.h"

static inline bool celery_same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static inline bool celery_same_json(const json_t *a, const json_t *b)
{
	return (!a && !b) || (a && b && json_equal((json_t *)a, (json_t *)b));
}

static inline const char *celery_msg_differs(const struct celery_msg *a, const struct celery_msg *b)
{
	if (!celery_same_str(a->task, b->task))
		return "task";
	if (!celery_same_str(a->id, b->id))
		return "id";
	if (!celery_same_str(a->delivery_tag, b->delivery_tag))
		return "delivery_tag";
	if (!celery_same_str(a->tenant, b->tenant))
		return "tenant";
	if (!celery_same_str(a->session, b->session))
		return "session";
	if (!celery_same_str(a->traceparent, b->traceparent))
		return "traceparent";
	if (!celery_same_str(a->root_id, b->root_id) || !celery_same_str(a->parent_id, b->parent_id))
		return "root_id/parent_id";
	if (!celery_same_str(a->argsrepr, b->argsrepr) || !celery_same_str(a->kwargsrepr, b->kwargsrepr))
		return "argsrepr/kwargsrepr";
	if (!celery_same_str(a->shadow, b->shadow) || a->ignore_result != b->ignore_result)
		return "shadow/ignore_result";
	if (!celery_same_str(a->eta_text, b->eta_text) || !celery_same_str(a->expires_text, b->expires_text))
		return "eta/expires text";
	if (a->has_max_retries != b->has_max_retries || a->max_retries != b->max_retries)
		return "max_retries";
	if (a->priority != b->priority)
		return "priority";
	if (a->retries != b->retries)
		return "retries";
	if (a->eta_ms != b->eta_ms)
		return "eta_ms";
	if (a->expires_ms != b->expires_ms)
		return "expires_ms";
	if (a->time_limit != b->time_limit || a->soft_time_limit != b->soft_time_limit)
		return "timelimit";
	if (!celery_same_str(a->routing_key, b->routing_key))
		return "routing_key";
	if (!celery_same_str(a->exchange, b->exchange))
		return "exchange";
	if (!celery_same_json(a->args, b->args) || !json_is_array(a->args))
		return "args";
	if (!celery_same_json(a->kwargs, b->kwargs) || !json_is_object(a->kwargs))
		return "kwargs";
	if (!celery_same_json(a->embed, b->embed))
		return "embed";
	if (!celery_same_json(a->payload, b->payload))
		return "payload";
	if (a->text != b->text || a->len != b->len)
		return "text";
	if (a->headers && b->headers && !celery_same_json(a->headers, b->headers))
		return "headers";
	if (a->properties && b->properties && !celery_same_json(a->properties, b->properties))
		return "properties";
	if (a->envelope && b->envelope && !celery_same_json(a->envelope, b->envelope))
		return "envelope";
	return NULL;
}

#endif
