-- How a connection's token came: an OAuth grant ('oauth'), or a token the
-- account's owner created at the provider and gave Tether
-- ('private_token': a GoHighLevel Private Integration Token, an API key),
-- which is never refreshed and gives way to an OAuth grant of the account.
ALTER TABLE connections ADD COLUMN kind TEXT NOT NULL DEFAULT 'oauth';
