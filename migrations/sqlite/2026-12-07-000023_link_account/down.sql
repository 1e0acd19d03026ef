ALTER TABLE connect_links DROP COLUMN account;
