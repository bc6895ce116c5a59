-- The alerts each event raised or resolved, exactly as they were pushed
-- (JSON array of API.md Alert objects; NULL when none). Written in the
-- event's own transaction, so an event read back from the database (feed
-- gap fill, catch-up after a Redis outage, `since` replay) carries the same
-- alerts as the live one: issue 13, fault 1. The alerts table cannot serve
-- for this: its rows change later (acknowledged, resolved).
ALTER TABLE events ADD COLUMN alerts TEXT NULL;
