-- Retention deletes by age: these keep it an index range scan.
CREATE INDEX events_by_age ON events (created_at);
CREATE INDEX webhook_outbox_by_age ON webhook_outbox (created_at);
