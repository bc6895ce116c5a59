-- Pre-aggregated history (issue 15, target 4; src/store/history.rs): per
-- SKU and field, blocks of 256 * 4^(level - 1) consecutive versions, each
-- with its number of points and the event ids of its first, last, lowest
-- and highest point (ties: the earliest). A block is written once, after
-- the SKU's next block has begun, from the events table (so events written
-- by any path are in it), and never changes. A block with no point of the
-- field has points = 0 and NULLs.
CREATE TABLE history_blocks (
    sku         TEXT COLLATE "C" NOT NULL,
    field       TEXT   NOT NULL CHECK (field IN ('stock', 'price')),
    level       BIGINT NOT NULL,
    block       BIGINT NOT NULL,
    points      BIGINT NOT NULL,
    first_event BIGINT NULL,
    last_event  BIGINT NULL,
    low_value   BIGINT NULL,
    low_event   BIGINT NULL,
    high_value  BIGINT NULL,
    high_event  BIGINT NULL,
    PRIMARY KEY (sku, field, level, block)
);

-- One row: every event up to `upto` has been looked at by the roll-up.
CREATE TABLE history_rollup (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    upto BIGINT NOT NULL
);
INSERT INTO history_rollup (id, upto) VALUES (1, 0);
