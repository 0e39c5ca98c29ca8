-- store_data_version moves when a key or tenant change COMMITS. The sequence of 0001 moved at the
-- statement, before the commit: a node polling it could reload the keys in between, still see
-- the old rows, remember the new version and never reload again (a revoked key stayed valid on
-- that node). A row updated by the changing transaction becomes visible with the change itself.
CREATE TABLE keys_version_row (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  version BIGINT NOT NULL
);
INSERT INTO keys_version_row VALUES (1, 0);
CREATE OR REPLACE FUNCTION keys_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE keys_version_row SET version = version + 1 WHERE id = 1;
  RETURN NULL;
END $$;
DROP SEQUENCE keys_version;
