-- Tether schema, SQLite flavour. Keep in step with ../postgres (same version names).
-- Ids are text (UUIDs), times are UTC TIMESTAMPs, ciphertexts are BLOBs.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    external_id TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('admin')),
    created_at    TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP
);
CREATE INDEX users_tenant ON users (tenant_id);

CREATE TABLE connections (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider           TEXT NOT NULL,
    account_id         TEXT NOT NULL,
    account_name       TEXT,
    status             TEXT NOT NULL CHECK (status IN ('connected', 'needs_reconnect', 'error', 'disconnected')),
    scopes             TEXT NOT NULL,
    token_ciphertext   BLOB,
    key_id             TEXT,
    expires_at         TIMESTAMP,
    refresh_expires_at TIMESTAMP,
    next_refresh_at    TIMESTAMP,
    version            BIGINT NOT NULL,
    lease_owner        TEXT,
    lease_until        TIMESTAMP,
    failure_count      INTEGER NOT NULL,
    last_error         TEXT,
    metadata           TEXT NOT NULL,
    last_refreshed_at  TIMESTAMP,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL,
    UNIQUE (tenant_id, provider, account_id),
    CHECK ((token_ciphertext IS NULL) = (key_id IS NULL))
);
-- The scheduler's "due for refresh" scan; rows that never need a refresh keep
-- next_refresh_at NULL and stay out of the index.
CREATE INDEX connections_due ON connections (next_refresh_at) WHERE next_refresh_at IS NOT NULL;
CREATE INDEX connections_key ON connections (key_id) WHERE key_id IS NOT NULL;

CREATE TABLE oauth_states (
    id              TEXT PRIMARY KEY NOT NULL,
    state_hash      TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         TEXT REFERENCES users(id) ON DELETE CASCADE,
    session_binding TEXT,
    provider        TEXT NOT NULL,
    pkce_ciphertext BLOB,
    key_id          TEXT,
    redirect_uri    TEXT NOT NULL,
    return_to       TEXT,
    popup           BOOLEAN NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    consumed_at     TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    CHECK ((pkce_ciphertext IS NULL) = (key_id IS NULL))
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);
CREATE INDEX oauth_states_key ON oauth_states (key_id) WHERE key_id IS NOT NULL;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  TEXT NOT NULL,
    tenant_id    TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    is_admin     BOOLEAN NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at   TIMESTAMP
);

CREATE TABLE events (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    connection_id TEXT REFERENCES connections(id) ON DELETE SET NULL,
    provider      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    detail        TEXT,
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX events_by_provider ON events (tenant_id, provider, created_at);

CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    event_id        TEXT REFERENCES events(id) ON DELETE SET NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL
);
CREATE INDEX webhook_outbox_pending ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- One sealed constant per encryption key id: proves at start that a key ring
-- still opens the data it wrote.
CREATE TABLE key_checks (
    key_id     TEXT PRIMARY KEY NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
