-- Each running `tether serve` and its last heartbeat. A lapsed refresh lease
-- is taken over only from an instance that stopped beating while the
-- taker could see the database: an instance cut off from the database may
-- hold a provider's answer it could not store yet (docs/design.md, "Held
-- answers"). A graceful stop that stored everything deletes its row.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL
);
