-- 0008: a task's reply is stored once. A conversation task's outcome event (assistant.final,
-- assistant.error, policy.denied) names the task it answers in `outcome_of`; at most one event per
-- task id. With queue.driver=redis a task can be delivered twice (the relay published it again
-- after a crash lost its delete; a reservation ran out): the second copy sees the outcome when it
-- reads its context and stops, and if two copies race, the second commit is refused
-- (src/tasks/conversation.c). Other events have NULL here and are not in the index.
ALTER TABLE events ADD COLUMN outcome_of TEXT;
CREATE UNIQUE INDEX events_outcome_of ON events(outcome_of) WHERE outcome_of IS NOT NULL;
