-- Core schema, PostgreSQL. Times are integer microseconds since the Unix
-- epoch (UTC), money is integer minor units: both exact.

CREATE TABLE skus (
    -- "C" collation: byte order, the same order SQLite uses for keyset paging.
    sku                  TEXT COLLATE "C" PRIMARY KEY,
    name                 TEXT   NOT NULL,
    currency             TEXT   NOT NULL CHECK (length(currency) = 3),
    price_minor          BIGINT NOT NULL CHECK (price_minor > 0),
    stock                BIGINT NOT NULL CONSTRAINT stock_never_negative CHECK (stock >= 0),
    low_stock_threshold  BIGINT NOT NULL CHECK (low_stock_threshold >= 0),
    guard_max_change_pct BIGINT NULL,
    guard_min_price      BIGINT NULL,
    guard_max_price      BIGINT NULL,
    version              BIGINT NOT NULL CHECK (version >= 1),
    updated_us           BIGINT NOT NULL
);

-- One row. Taking the next event ids by updating it, as the last step of a
-- write transaction, holds its row lock until commit: ids are gap-free and
-- become visible in id order, so "events after N" never skips a late commit.
CREATE TABLE event_clock (
    id            SMALLINT PRIMARY KEY CHECK (id = 1),
    last_event_id BIGINT NOT NULL
);
INSERT INTO event_clock (id, last_event_id) VALUES (1, 0);

CREATE TABLE events (
    event_id  BIGINT PRIMARY KEY,
    sku       TEXT COLLATE "C" NOT NULL REFERENCES skus (sku),
    version   BIGINT NOT NULL,
    at_us     BIGINT NOT NULL,
    field     TEXT   NOT NULL CHECK (field IN ('stock', 'price', 'meta')),
    old_value TEXT   NULL,     -- JSON
    new_value TEXT   NOT NULL, -- JSON
    delta     BIGINT NULL,
    reason    TEXT   NULL,
    actor     TEXT   NULL,
    state     TEXT   NOT NULL, -- JSON of the SKU right after this event
    CONSTRAINT one_event_per_version UNIQUE (sku, version)
);
CREATE INDEX events_by_sku_time ON events (sku, at_us);

CREATE TABLE idempotency_keys (
    scope       TEXT   NOT NULL,
    key         TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    status      BIGINT NULL,
    body        TEXT   NULL,
    created_us  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_us);
