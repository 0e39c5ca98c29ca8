/*
 * fuzz_celery.c - libFuzzer harness: arbitrary bytes as a message popped from a Celery queue,
 * fed to both envelope readers (src/queue/celery_scan.c, the fast one, and the jansson reader
 * of src/queue/celery_wire.c). Invariants: no crash, no sanitizer report; the fast reader reads
 * nothing the jansson reader refuses, and what it reads it reads the same way (every field, and
 * the tree celery_msg_tree builds); celery_envelope_decode refuses exactly what the jansson
 * reader refuses, with its reason; a decoded message has a task name, an id of at most 64
 * characters, a priority within 0..9, args an array and kwargs an object; and a decoded message
 * encoded again decodes to the same task, id and arguments.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/celery_same.h"
#include "queue/celery_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fast reader against the jansson reader on the same bytes. */
static void differential(const char *text, size_t size)
{
	struct celery_msg fast, tree, both;
	char why_tree[256] = "", why_both[256] = "";
	bool scanned = celery_envelope_scan(text, size, &fast);
	enum soma_err et = celery_envelope_decode_tree(text, size, &tree, why_tree, sizeof(why_tree));
	enum soma_err eb = celery_envelope_decode(text, size, &both, why_both, sizeof(why_both));
	if (eb != et || (et != SOMA_OK && strcmp(why_tree, why_both) != 0))
		abort();
	if (scanned && (et != SOMA_OK || celery_msg_differs(&fast, &tree) || celery_msg_tree(&fast) != SOMA_OK ||
			celery_msg_differs(&fast, &tree)))
		abort();
	celery_msg_deinit(&fast);
	celery_msg_deinit(&tree);
	celery_msg_deinit(&both);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	differential((const char *)data, size);
	struct celery_msg m;
	char why[256] = "";
	if (celery_envelope_decode((const char *)data, size, &m, why, sizeof(why)) != SOMA_OK) {
		if (!why[0])
			abort();
		celery_msg_deinit(&m);
		return 0;
	}
	if (!m.task || !m.task[0] || !m.id || !celery_id_ok(m.id) || m.priority < 0 || m.priority > 9 ||
	    !json_is_array(m.args) || !json_is_object(m.kwargs) || celery_msg_tree(&m) != SOMA_OK)
		abort();
	json_t *body = json_pack("[O, O, O]", m.args, m.kwargs, m.embed ? m.embed : json_null());
	char *text = celery_envelope_encode(body, m.headers, m.properties);
	struct celery_msg again;
	if (text && celery_envelope_decode(text, strlen(text), &again, why, sizeof(why)) == SOMA_OK) {
		if (strcmp(again.task, m.task) != 0 || strcmp(again.id, m.id) != 0 || !json_equal(again.args, m.args) ||
		    !json_equal(again.kwargs, m.kwargs))
			abort();
		celery_msg_deinit(&again);
	}
	free(text);
	json_decref(body);
	celery_msg_deinit(&m);
	return 0;
}
