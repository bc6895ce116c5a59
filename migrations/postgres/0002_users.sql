-- Users of the API (auth issue). `disabled` is 0/1 so both backends read
-- it the same way.
CREATE TABLE users (
    username      TEXT COLLATE "C" PRIMARY KEY,
    password_hash TEXT   NOT NULL, -- Argon2id, PHC string format
    role          TEXT   NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_us    BIGINT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
