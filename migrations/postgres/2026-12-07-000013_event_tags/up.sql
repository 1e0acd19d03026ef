-- Events that name what they concern (issue 20, point 5). Tags are a small
-- JSON object the CRM sets on a connect link (a conversation id, a user id):
-- carried by the link and the pending authorization to the connection, and
-- echoed in its events. `error_since` is when a connection's current streak
-- of failing refreshes began, so that `refresh_failing` is said once a
-- streak has lasted TETHER_REFRESH_FAILING_AFTER.
ALTER TABLE connect_links ADD COLUMN tags TEXT;
ALTER TABLE oauth_states ADD COLUMN tags TEXT;
ALTER TABLE connections ADD COLUMN tags TEXT;
ALTER TABLE connections ADD COLUMN error_since TIMESTAMP;
