-- Connect links may name the person they are for (shown on the link's page).
ALTER TABLE connect_links ADD COLUMN email TEXT;
-- Bumped to end every session of a user at once (sign-out, sign out everywhere).
ALTER TABLE users ADD COLUMN session_generation BIGINT NOT NULL DEFAULT 0;
