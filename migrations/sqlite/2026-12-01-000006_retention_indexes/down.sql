DROP INDEX webhook_outbox_by_age;
DROP INDEX events_by_age;
