-- A tenant's settings for one account of a provider (a GoHighLevel
-- location's own pipeline): they override the provider's, key by key.
CREATE TABLE account_settings (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    account_id TEXT NOT NULL,
    settings   TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, provider, account_id)
);
