-- 0009 (PostgreSQL): as SQLite's 0013. Which sessions of a tenant name an attachment in their
-- messages: a message's transaction adds a row per attachment it names (pg_chat.c); deleting a
-- session deletes its attachments only when no other session of the tenant has a row for them,
-- else hands each to one of those, and drops the session's rows (a reset too). Rows of messages
-- stored before are filled in from their events' "attachments" arrays (read as json: only
-- checked, never converted to jsonb, which would refuse a \u0000 escape in any older body). The
-- named ids are a subquery kept apart by OFFSET 0 (the planner does not pull it up), then joined to
-- the attachments as a whole (a hash join on id): flattened, the planner read the event's tenant's
-- attachments again for every event, quadratic on a large database.
CREATE TABLE IF NOT EXISTS attachment_refs (
  tenant        TEXT NOT NULL,
  attachment_id TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  PRIMARY KEY (tenant, attachment_id, session_id)
);
CREATE INDEX IF NOT EXISTS attachment_refs_session ON attachment_refs(tenant, session_id);
INSERT INTO attachment_refs(tenant, attachment_id, session_id)
  SELECT DISTINCT n.tenant, n.id, n.session_id
  FROM (SELECT e.tenant, j.id, e.session_id
        FROM events e
        CROSS JOIN LATERAL json_array_elements_text(
          CASE WHEN json_typeof(e.body::json -> 'attachments') = 'array' THEN e.body::json -> 'attachments'
               ELSE '[]'::json END) AS j(id)
        WHERE e.body LIKE '%"attachments"%'
        OFFSET 0) AS n
  JOIN attachments a ON a.id = n.id AND a.tenant = n.tenant
  ON CONFLICT DO NOTHING;
