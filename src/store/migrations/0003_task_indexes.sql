-- 0003: reservations find expired leases through an index of their own, and the per-session
-- index is gone (deleting a session's queued tasks scans the small set of queued tasks).
CREATE INDEX tasks_expiry ON tasks(queue, state, reserved_until_ms);
DROP INDEX tasks_session;
