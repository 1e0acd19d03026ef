-- Per-tenant integration settings: whether the tenant uses a provider the
-- operator enabled, and the tenant's preferences for it (a JSON object of at
-- most 64 KiB, checked against the provider's settings schema when it has
-- one). No row means the defaults: enabled, no settings.
CREATE TABLE integration_settings (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL DEFAULT TRUE,
    settings   TEXT NOT NULL DEFAULT '{}',
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);
