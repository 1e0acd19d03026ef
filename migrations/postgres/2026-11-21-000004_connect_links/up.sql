-- Single-use links that let a person connect a provider for a tenant without
-- signing in (sent by the CRM's chatbot). The link token is stored as a hash.
CREATE TABLE connect_links (
    token_hash TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at    TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX connect_links_expiry ON connect_links (expires_at);
