-- 0011 (PostgreSQL): as SQLite's 0015. The retention sweep finds idle sessions through
-- sessions_tenant_updated (tenant, updated_ms, id), tenant by tenant (pg_retention.c); the index
-- 0010 added on updated_ms alone cost every session update (two per chat message) one more index
-- write. May run again.
DROP INDEX IF EXISTS sessions_updated;
