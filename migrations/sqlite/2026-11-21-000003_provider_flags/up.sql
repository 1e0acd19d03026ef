-- Providers whose client credentials a provider rejected (invalid_client):
-- an operator error, shown by /readyz, `tether doctor` and the metrics.
CREATE TABLE provider_flags (
    provider   TEXT PRIMARY KEY NOT NULL,
    error      TEXT NOT NULL,
    flagged_at TIMESTAMP NOT NULL
);
