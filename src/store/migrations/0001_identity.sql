-- 0001: tenants and API keys (the identity store of the foundation).
CREATE TABLE tenants (
  id         TEXT PRIMARY KEY,
  created_ms INTEGER NOT NULL
);

CREATE TABLE api_keys (
  id         TEXT PRIMARY KEY,              -- public part of the token, shown by `keys list`
  tenant_id  TEXT NOT NULL REFERENCES tenants(id),
  name       TEXT NOT NULL DEFAULT '',
  scopes     TEXT NOT NULL DEFAULT '',      -- space-separated, e.g. "admin"
  token_hash BLOB NOT NULL,                 -- SHA-256 of the whole token; the token is never stored
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER                        -- NULL while the key is valid
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);
