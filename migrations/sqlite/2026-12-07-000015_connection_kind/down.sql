ALTER TABLE connections DROP COLUMN kind;
