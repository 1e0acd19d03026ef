-- How often the CRM used each connection: per API key name, per kind
-- (`token` read or `proxy` call), per UTC day. Counted in memory and added
-- here in batches (see src/app/usage.rs); kept for 8 days.
CREATE TABLE connection_usage (
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    key_name      TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('token', 'proxy')),
    day           DATE NOT NULL,
    uses          BIGINT NOT NULL,
    last_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (connection_id, key_name, kind, day)
);
CREATE INDEX connection_usage_by_day ON connection_usage (day);
