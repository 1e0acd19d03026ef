-- Connect sessions: a token the CRM's page holds for minutes, good for a
-- number of connects of the providers it lists (space separated), each of
-- which becomes a single-use connect link when the person goes on.
CREATE TABLE connect_sessions (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    providers   TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    email       TEXT,
    tags        TEXT,
    uses_left   INTEGER NOT NULL CHECK (uses_left >= 0),
    expires_at  TIMESTAMP NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE INDEX connect_sessions_expiry ON connect_sessions (expires_at);
