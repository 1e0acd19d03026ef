-- The account a reconnect was started for (its provider id), so that a
-- callback that comes back with another account is refused rather than
-- added beside the broken one.
ALTER TABLE oauth_states ADD COLUMN reconnect_account TEXT;
