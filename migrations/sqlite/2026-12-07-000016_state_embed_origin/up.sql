-- The origin of the CRM page that opened a connect link's flow in a popup,
-- told the outcome when the callback ends. Kept with the flow's state rather
-- than in the browser's session, so a second flow in the same browser cannot
-- redirect the first one's answer.
ALTER TABLE oauth_states ADD COLUMN embed_origin TEXT;
