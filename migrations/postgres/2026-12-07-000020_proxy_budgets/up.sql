-- What the proxy spent of each provider account's declared budgets
-- (GoHighLevel: 100 calls per 10 s, 200,000 per day per location), shared
-- by every instance: one row per (provider, account, budget window,
-- bucket), where a bucket is a tenth of the window (by its index since the
-- epoch). A call is let through while the buckets covering the last window
-- hold fewer calls than the budget (see src/connections/budget.rs); rows
-- are deleted by housekeeping once `expires_at` passes, when no window
-- covers them any more.
CREATE TABLE proxy_budgets (
    provider    TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    window_secs BIGINT NOT NULL,
    bucket      BIGINT NOT NULL,
    spent       BIGINT NOT NULL,
    expires_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (provider, account_id, window_secs, bucket)
);
CREATE INDEX proxy_budgets_by_expiry ON proxy_budgets (expires_at);
