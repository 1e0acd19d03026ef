-- Single use of SSO handoff tokens: each nonce is recorded (hashed) until it expires.
CREATE TABLE sso_nonces (
    nonce_hash TEXT PRIMARY KEY NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sso_nonces_expiry ON sso_nonces (expires_at);
