-- Several accounts of one provider per tenant, one of them the default: the
-- one the token API, the proxy and the status hand out when the caller names
-- no account. Chosen by an admin, never moved by a refresh.
ALTER TABLE connections ADD COLUMN is_default BOOLEAN NOT NULL DEFAULT FALSE;

-- Backfill: the row the old "current connection" rule picked (tokens first,
-- then the most recently updated) becomes the default, if it holds tokens.
UPDATE connections SET is_default = TRUE
WHERE token_ciphertext IS NOT NULL
  AND id = (
    SELECT c.id FROM connections c
    WHERE c.tenant_id = connections.tenant_id AND c.provider = connections.provider
    ORDER BY (c.token_ciphertext IS NULL) ASC, c.updated_at DESC, c.id ASC
    LIMIT 1
  );

-- At most one default per (tenant, provider); also the default lookup's index.
CREATE UNIQUE INDEX connections_default ON connections (tenant_id, provider) WHERE is_default;
