ALTER TABLE users DROP COLUMN session_generation;
ALTER TABLE connect_links DROP COLUMN email;
