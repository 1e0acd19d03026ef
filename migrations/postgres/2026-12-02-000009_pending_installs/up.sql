-- Provider-initiated installs (GoHighLevel Marketplace) that no tenant has
-- claimed yet: the grant sealed like connections.token_ciphertext, kept for a
-- day. One per (provider, account): a newer install of the account replaces it.
CREATE TABLE pending_installs (
    id               TEXT PRIMARY KEY NOT NULL,
    provider         TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    account_name     TEXT,
    scopes           TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    token_ciphertext BYTEA NOT NULL,
    key_id           TEXT NOT NULL,
    token_expires_at TIMESTAMP,
    created_at       TIMESTAMP NOT NULL,
    expires_at       TIMESTAMP NOT NULL,
    UNIQUE (provider, account_id)
);
CREATE INDEX pending_installs_expiry ON pending_installs (expires_at);
-- Delivery ids of provider webhooks already taken, until a replay of them
-- would be refused as stale anyway.
CREATE TABLE seen_webhooks (
    provider   TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (provider, webhook_id)
);
CREATE INDEX seen_webhooks_expiry ON seen_webhooks (expires_at);
