DROP TABLE seen_webhooks;
DROP TABLE pending_installs;
