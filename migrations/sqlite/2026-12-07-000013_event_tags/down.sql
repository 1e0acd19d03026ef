ALTER TABLE connections DROP COLUMN error_since;
ALTER TABLE connections DROP COLUMN tags;
ALTER TABLE oauth_states DROP COLUMN tags;
ALTER TABLE connect_links DROP COLUMN tags;
