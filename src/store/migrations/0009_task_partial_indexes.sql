-- 0009: the local queue's two indexes hold only the rows they are searched for: tasks_ready the
-- queued tasks (the next one to reserve), tasks_expiry the reserved ones (a lease that ran out).
-- A chat task handed straight to a worker (inserted reserved) never enters tasks_ready, and every
-- insert, reservation and delete of a task touches one of them instead of both (the state is no
-- longer a key column, so a state change moves a row from one index to the other).
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks(queue, available_ms) WHERE state = 'queued';
DROP INDEX tasks_expiry;
CREATE INDEX tasks_expiry ON tasks(queue, reserved_until_ms) WHERE state = 'reserved';
