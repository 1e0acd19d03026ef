ALTER TABLE oauth_states DROP COLUMN reconnect_account;
