-- 0005 (PostgreSQL): a task's reply is stored once (as SQLite's 0008). A conversation task's
-- outcome event (assistant.final, assistant.error, policy.denied) names the task it answers in
-- `outcome_of`; at most one event per task id. The relay publishes a task again when a crash lost
-- its delete (src/queue/relay.c), so a task can be delivered twice: the second copy sees the
-- outcome when it reads its context and stops, and if two copies race, the second commit's INSERT
-- is a unique violation and is refused (src/tasks/conversation.c). Adding a NULL column rewrites
-- nothing; other events stay out of the partial index.
ALTER TABLE events ADD COLUMN outcome_of TEXT;
CREATE UNIQUE INDEX events_outcome_of ON events(outcome_of) WHERE outcome_of IS NOT NULL;
