/*
 * celery_names.c - which values of a Celery message our code reads as names may not hold U+0000.
 *
 * DESIGN: the jansson reader takes strings with U+0000 (Python writes "a\u0000b"); arguments and
 * results keep them, but a value used as a C string (a task name, an id, a key, a queue) would be
 * read cut short - onto another task, group or queue. Such a message is refused with a reason
 * (celery_wire.c). The fast reader refuses every \u0000 already (it leaves them to jansson).
 */
#include <string.h>

#include "core/json_py.h"
#include "queue/celery_wire.h"

/* An id a canvas follow-up is keyed or routed by holding U+0000, at any depth of the embed (a
 * chain's links, a chord's body): used as a C string it would be read cut short, onto another id. */
static bool embed_ids_hold_nul(const json_t *v, int depth)
{
	static const char *const ids[] = {"task_id", "group_id", "root_id",    "parent_id",
					  "task",    "queue",	 "routing_key"};
	const char *k;
	json_t *x;
	size_t i;
	if (depth > 64 || !(json_is_object(v) || json_is_array(v)))
		return false;
	json_array_foreach(v, i, x) if (embed_ids_hold_nul(x, depth + 1)) return true;
	json_object_foreach((json_t *)v, k, x)
	{
		for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
			if (strcmp(k, ids[i]) == 0 && json_py_has_nul(x))
				return true;
		if (embed_ids_hold_nul(x, depth + 1))
			return true;
	}
	return false;
}

bool celery_names_hold_nul(const struct celery_msg *m)
{
	/* (root_id and parent_id only go to events, which leave a value holding U+0000 out) */
	static const char *const hdr[] = {"task",	 "id",	"soma_tenant", "soma_session",
					  "traceparent", "eta", "expires",     "group"};
	for (size_t i = 0; i < sizeof(hdr) / sizeof(hdr[0]); i++)
		if (json_py_has_nul(json_object_get(m->headers, hdr[i])))
			return true;
	json_t *di = json_object_get(m->properties, "delivery_info");
	return embed_ids_hold_nul(m->embed, 0) || json_py_has_nul(json_object_get(m->properties, "correlation_id")) ||
	       json_py_has_nul(json_object_get(m->properties, "delivery_tag")) ||
	       json_py_has_nul(json_object_get(di, "routing_key")) || json_py_has_nul(json_object_get(di, "exchange"));
}
