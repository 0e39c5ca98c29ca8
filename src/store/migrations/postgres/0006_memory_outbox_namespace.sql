-- 0006: the memory outbox is unique on (tenant, namespace, key), as the built-in `memories` table
-- and SomaBrain are. With UNIQUE (tenant, key) a key remembered in namespace a and then in b
-- while SomaBrain was down answered 200 `queued` twice, yet the second row was never written (ON
-- CONFLICT DO NOTHING) and only one memory was delivered.
ALTER TABLE memory_outbox DROP CONSTRAINT memory_outbox_tenant_key_key;
ALTER TABLE memory_outbox ADD CONSTRAINT memory_outbox_tenant_namespace_key_key UNIQUE (tenant, namespace, key);
