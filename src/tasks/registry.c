/*
 * registry.c - the tasks this binary implements, by name.
 */
#include "tasks/tasks.h"

enum soma_err tasks_register_all(void)
{
	return queue_task_register(TASK_CONVERSATION_PROCESS, task_conversation_process);
}
