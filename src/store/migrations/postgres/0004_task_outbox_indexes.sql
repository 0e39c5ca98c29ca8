-- 0004 (PostgreSQL): the tasks table's indexes hold only the rows their queries look for. With
-- queue.driver=redis the table is the relay's outbox (src/queue/relay.c): every message's task is
-- inserted `queued`, claimed `relaying`, then deleted, and a state change is never a HOT update, so
-- each index entry a row gets is a B-tree insert on every message. The local queue's indexes of
-- 0001 covered every state: tasks_ready (reserve: queued rows of a queue by available_ms) and
-- tasks_expiry (reservations whose worker went silent: reserved rows of a queue by lease). Made
-- partial on the state their query names, a claimed row gets 2 entries (was 3). The relay's claim
-- takes queued rows oldest first: tasks_relay gives that order from the index (the claim used to
-- read the whole table, its dead rows too, and sort it, each time), and its look-up of leases that
-- ran out gets tasks_relay_expiry.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks(queue, available_ms) WHERE state = 'queued';
DROP INDEX tasks_expiry;
CREATE INDEX tasks_expiry ON tasks(queue, reserved_until_ms) WHERE state = 'reserved';
CREATE INDEX tasks_relay_expiry ON tasks(reserved_until_ms) WHERE state = 'relaying';
CREATE INDEX tasks_relay ON tasks(created_ms, id) WHERE state = 'queued';
