-- What a key may do, as scope names separated by spaces (token:read,
-- status:read, directory:read, proxy, links, connections:write, admin), and
-- the providers it is limited to (NULL: every provider). Existing keys keep
-- their rights: every scope but admin, and admin too for --admin keys.
-- is_admin stays, kept equal to "has the admin scope", for the previous
-- release during a rolling upgrade; a key it creates has NULL scopes,
-- which this release reads as is_admin says (the rights keys had before).
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
ALTER TABLE api_keys ADD COLUMN providers TEXT;
UPDATE api_keys SET scopes = CASE WHEN is_admin
    THEN 'token:read status:read directory:read proxy links connections:write admin'
    ELSE 'token:read status:read directory:read proxy links connections:write' END;
