-- Alerts (alerts issue) and numeric values on events for chart queries.

ALTER TABLE events ADD COLUMN stock_after BIGINT NULL;
ALTER TABLE events ADD COLUMN price_after BIGINT NULL; -- minor units
-- The state's price string has exactly the currency's decimals, so
-- dropping the point gives minor units.
UPDATE events SET
    stock_after = CAST(json_extract(state, '$.stock') AS INTEGER),
    price_after = CAST(replace(json_extract(state, '$.price'), '.', '') AS INTEGER);
CREATE INDEX events_history ON events (sku, field, at_us, event_id);

CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sku             TEXT   NOT NULL REFERENCES skus (sku),
    kind            TEXT   NOT NULL CHECK (kind IN ('low_stock', 'out_of_stock', 'price_anomaly')),
    status          TEXT   NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    message         TEXT   NOT NULL,
    value           TEXT   NOT NULL, -- JSON
    threshold       TEXT   NOT NULL, -- JSON
    raised_us       BIGINT NOT NULL,
    acknowledged_by TEXT   NULL,
    acknowledged_us BIGINT NULL,
    resolved_us     BIGINT NULL
);
-- One active alert per SKU and kind, whatever the number of instances.
CREATE UNIQUE INDEX alerts_one_active ON alerts (sku, kind) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON alerts (status, id);
