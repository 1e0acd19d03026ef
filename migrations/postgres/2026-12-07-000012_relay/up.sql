-- Which rows are a provider's account (any status).
CREATE INDEX connections_account ON connections (provider, account_id);
-- Which tenant holds it, asked for every app event: answered from this
-- index alone (the earliest live row's tenant), without reading the row.
CREATE INDEX connections_holder ON connections (provider, account_id, created_at, id, tenant_id)
    WHERE token_ciphertext IS NOT NULL;
-- Providers' app events relayed to the CRM travel the outbox beside
-- connection events: 'relay' rows go to TETHER_RELAY_URL (else the events
-- URL). One for an account no tenant holds yet is held (held_until set,
-- never claimed) until a tenant comes to hold the account, or dropped then.
ALTER TABLE webhook_outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'events';
ALTER TABLE webhook_outbox ADD COLUMN provider TEXT;
ALTER TABLE webhook_outbox ADD COLUMN account_id TEXT;
ALTER TABLE webhook_outbox ADD COLUMN held_until TIMESTAMP;
CREATE INDEX webhook_outbox_held ON webhook_outbox (provider, account_id) WHERE held_until IS NOT NULL;
-- The business an account belongs to (a GoHighLevel location's company),
-- from the provider's `parent_account` pointer: an agency-level uninstall
-- finds its locations by this index, not by matching JSON text.
ALTER TABLE connections ADD COLUMN parent_account_id TEXT;
CREATE INDEX connections_parent ON connections (provider, parent_account_id) WHERE parent_account_id IS NOT NULL;
ALTER TABLE pending_installs ADD COLUMN parent_account_id TEXT;
CREATE INDEX pending_installs_parent ON pending_installs (provider, parent_account_id) WHERE parent_account_id IS NOT NULL;
-- Rows stored before: the one preset with a parent (GoHighLevel) keeps it
-- as `companyId` in the metadata (always a JSON object written by Tether).
UPDATE connections SET parent_account_id = metadata::jsonb ->> 'companyId'
    WHERE jsonb_typeof(metadata::jsonb -> 'companyId') = 'string';
UPDATE pending_installs SET parent_account_id = metadata::jsonb ->> 'companyId'
    WHERE jsonb_typeof(metadata::jsonb -> 'companyId') = 'string';
-- An account's relayed events go out in order: a delivery waits while an
-- earlier one of its account is undelivered (outbox claim).
CREATE INDEX webhook_outbox_account ON webhook_outbox (provider, account_id, created_at) WHERE delivered_at IS NULL AND account_id IS NOT NULL;
