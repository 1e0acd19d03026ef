DROP TABLE sso_nonces;
