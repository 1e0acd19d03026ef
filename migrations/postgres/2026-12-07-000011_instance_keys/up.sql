-- What each running instance encrypts and signs with, so that instances
-- that disagree are told before it costs anything: the key ids of its ring
-- (primary first, comma-separated; ids only, never key material) and a
-- fingerprint of its session key (HMAC-SHA256 of a fixed text under it,
-- which does not reveal the key). Nullable: instances of the previous
-- release keep inserting rows without them.
ALTER TABLE instances ADD COLUMN key_ids TEXT;
ALTER TABLE instances ADD COLUMN session_key_check TEXT;
