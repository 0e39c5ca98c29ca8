-- 0005: tenants get a display name (the admin API's POST /v1/tenants {id, name}).
ALTER TABLE tenants ADD COLUMN name TEXT NOT NULL DEFAULT '';
