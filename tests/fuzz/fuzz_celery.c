/*
 * fuzz_celery.c - libFuzzer harness: arbitrary bytes as a message popped from a Celery queue,
 * fed to the envelope decoder (src/queue/celery_wire.c). Invariants: no crash, no sanitizer
 * report; a decoded message has a task name, an id of at most 64 characters, a priority within
 * 0..9, args an array and kwargs an object; a failure leaves a reason; and a decoded message
 * encoded again decodes to the same task, id and arguments.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/celery_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct celery_msg m;
	char why[256] = "";
	if (celery_envelope_decode((const char *)data, size, &m, why, sizeof(why)) != SOMA_OK) {
		if (!why[0])
			abort();
		celery_msg_deinit(&m);
		return 0;
	}
	if (!m.task || !m.task[0] || !m.id || strlen(m.id) > 64 || m.priority < 0 || m.priority > 9 ||
	    !json_is_array(m.args) || !json_is_object(m.kwargs))
		abort();
	json_t *body = json_pack("[O, O, O]", m.args, m.kwargs, m.embed);
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
