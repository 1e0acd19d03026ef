ALTER TABLE oauth_states DROP COLUMN embed_origin;
