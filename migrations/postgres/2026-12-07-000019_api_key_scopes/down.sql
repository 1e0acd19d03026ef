ALTER TABLE api_keys DROP COLUMN providers;
ALTER TABLE api_keys DROP COLUMN scopes;
