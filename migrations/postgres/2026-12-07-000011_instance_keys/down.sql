ALTER TABLE instances DROP COLUMN session_key_check;
ALTER TABLE instances DROP COLUMN key_ids;
