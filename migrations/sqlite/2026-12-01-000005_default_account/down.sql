DROP INDEX connections_default;
ALTER TABLE connections DROP COLUMN is_default;
