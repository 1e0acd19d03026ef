-- The account a reconnect link is for (its provider id): the link made for
-- a needs_reconnect event reconnects exactly that account, with the
-- provider's login hint, and refuses a callback with another.
ALTER TABLE connect_links ADD COLUMN account TEXT;
