-- bench/ingest_pg_insert.sql - pgbench script for bench/ingest_pg.sh: one transaction per message,
-- one row of the size our events rows have into a table shaped like `events`
-- (src/store/migrations/postgres/0001_core.sql: primary key (session_id, seq), unique event_id,
-- foreign key to sessions), over 300 sessions.
\set sid random(0, 299)
INSERT INTO events_bench(session_id, seq, event_id, tenant, type, body, created_ms)
VALUES ('pgb-' || :sid, nextval('events_bench_seq'), gen_random_uuid()::text, 'default', 'user',
  '{"event_id":"01JDXQ7Z5K3M8N2P4R6T8V0W2Y","type":"user","role":"user","content":"hello, this is message number 123456","seq":42,"session_id":"chat-1-123","created_at":"2026-11-27T19:13:28.123Z","tenant":"default","subject":"","metadata":{}}',
  (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
