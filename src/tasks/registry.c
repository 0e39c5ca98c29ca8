/*
 * registry.c - the tasks this binary implements, by name.
 */
#include "tasks/tasks.h"

enum soma_err tasks_register_all(void)
{
	enum soma_err err = queue_task_register(TASK_CONVERSATION_PROCESS, task_conversation_process);
	if (err == SOMA_OK)
		err = queue_task_register(TASK_TOOL_RUN, task_tool_run);
	return err == SOMA_OK ? tasks_register_diagnostic() : err;
}
