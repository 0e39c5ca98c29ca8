-- 0016: the retention sweep reads the sessions a task still works for through each state's partial
-- index (store_int.h, RETENTION_BUSY_SESSIONS); 'relaying' (queue.driver=redis: a row claimed by
-- the outbox relay, sqlite_task_relay.c) had none, and its scan read every dead letter. The local
-- queue never sets the state, so no row of it enters this index. May run again.
CREATE INDEX IF NOT EXISTS tasks_relaying ON tasks(reserved_until_ms) WHERE state = 'relaying';
