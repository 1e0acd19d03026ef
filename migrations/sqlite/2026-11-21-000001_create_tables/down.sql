DROP TABLE key_checks;
DROP TABLE webhook_outbox;
DROP TABLE events;
DROP TABLE api_keys;
DROP TABLE oauth_states;
DROP TABLE connections;
DROP TABLE users;
DROP TABLE tenants;
