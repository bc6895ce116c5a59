-- Days of cover (issue 18); see the PostgreSQL migration of the same number.
ALTER TABLE skus ADD COLUMN sales_rate TEXT NULL;
ALTER TABLE skus ADD COLUMN cover_tenths BIGINT NULL;
ALTER TABLE skus ADD COLUMN lead_time_days BIGINT NULL
    CHECK (lead_time_days BETWEEN 0 AND 365);
ALTER TABLE skus ADD COLUMN alert_rule TEXT NULL
    CHECK (alert_rule IN ('threshold', 'forecast', 'both'));

-- The new alert kind: SQLite cannot change a CHECK in place, so the table
-- is rebuilt (as in migration 0008).
PRAGMA legacy_alter_table = ON;
ALTER TABLE alerts RENAME TO alerts_before_forecast;
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sku             TEXT   NOT NULL REFERENCES skus (sku),
    kind            TEXT   NOT NULL CHECK (kind IN ('low_stock', 'out_of_stock', 'price_anomaly', 'stockout_forecast')),
    status          TEXT   NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    message         TEXT   NOT NULL,
    value           TEXT   NOT NULL, -- JSON
    threshold       TEXT   NOT NULL, -- JSON
    raised_us       BIGINT NOT NULL,
    acknowledged_by TEXT   NULL,
    acknowledged_us BIGINT NULL,
    resolved_us     BIGINT NULL
);
INSERT INTO alerts (id, sku, kind, status, message, value, threshold, raised_us,
                    acknowledged_by, acknowledged_us, resolved_us)
SELECT id, sku, kind, status, message, value, threshold, raised_us,
       acknowledged_by, acknowledged_us, resolved_us
FROM alerts_before_forecast;
-- Alert ids are never reused, pruned ones included: the new table's
-- AUTOINCREMENT counter goes on from the old one's.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'alerts', seq FROM sqlite_sequence
WHERE name = 'alerts_before_forecast'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts');
UPDATE sqlite_sequence
SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'alerts_before_forecast'))
WHERE name = 'alerts'
  AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'alerts_before_forecast');
DROP TABLE alerts_before_forecast;
PRAGMA legacy_alter_table = OFF;
CREATE UNIQUE INDEX alerts_one_active ON alerts (sku, kind) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON alerts (status, id);
CREATE INDEX alerts_resolved ON alerts (resolved_us) WHERE status = 'resolved';
CREATE INDEX alerts_forecast_active ON alerts (sku)
    WHERE kind = 'stockout_forecast' AND status <> 'resolved';

-- External writers may not change the forecast columns (the server's
-- writes step the version; see the PostgreSQL migration).
CREATE TRIGGER skus_external_forecast_guard BEFORE UPDATE ON skus
WHEN NEW.version = OLD.version
     AND (NEW.sales_rate IS NOT OLD.sales_rate
          OR NEW.lead_time_days IS NOT OLD.lead_time_days OR NEW.alert_rule IS NOT OLD.alert_rule)
BEGIN
    SELECT RAISE(ABORT, 'skuwatch: the forecast settings of a SKU change only through the API (PATCH /api/v1/skus/{sku})');
END;

-- The event state of an external change carries the forecast columns: the
-- trigger of migration 0008, re-created with them.
DROP TRIGGER skus_external_update;

CREATE TRIGGER skus_external_update AFTER UPDATE ON skus
WHEN NEW.version = OLD.version AND ((NEW.price_minor <> OLD.price_minor) OR (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) OR (NEW.stock <> OLD.stock))
BEGIN
    UPDATE skus SET version = OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + (NEW.stock <> OLD.stock),
                    updated_us = max(CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER), OLD.updated_us),
                    search_text = lower(NEW.sku || ' ' || NEW.name)
    WHERE sku = NEW.sku;
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1 AND (NEW.price_minor <> OLD.price_minor);
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), NEW.sku, OLD.version + 1, (SELECT updated_us FROM skus WHERE sku = NEW.sku), 'price',
           json_quote((SELECT CASE WHEN OLD.price_minor IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.price_minor AS TEXT) ELSE (OLD.price_minor / x.factor) || '.' || substr('0000' || (OLD.price_minor % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency)),
           json_quote((SELECT CASE WHEN NEW.price_minor IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.price_minor AS TEXT) ELSE (NEW.price_minor / x.factor) || '.' || substr('0000' || (NEW.price_minor % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency)),
           NULL, 'external', 'sqlite',
           json_object('sku', OLD.sku, 'name', OLD.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'reserved', OLD.reserved, 'sales_rate', OLD.sales_rate, 'lead_time_days', OLD.lead_time_days, 'alert_rule', OLD.alert_rule, 'low_stock_threshold', OLD.low_stock_threshold, 'guard_max_change_pct', OLD.guard_max_change_pct, 'guard_min_price', OLD.guard_min_price, 'guard_max_price', OLD.guard_max_price, 'version', OLD.version + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           OLD.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.price_minor <> OLD.price_minor);
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1 AND (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price);
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), NEW.sku, OLD.version + (NEW.price_minor <> OLD.price_minor) + 1, (SELECT updated_us FROM skus WHERE sku = NEW.sku), 'meta',
           json_remove(json_object('name', OLD.name, 'low_stock_threshold', OLD.low_stock_threshold,
                                   'price_guard', json(json_object('max_change_pct', OLD.guard_max_change_pct, 'min_price', (SELECT CASE WHEN OLD.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_min_price AS TEXT) ELSE (OLD.guard_min_price / x.factor) || '.' || substr('0000' || (OLD.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency), 'max_price', (SELECT CASE WHEN OLD.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_max_price AS TEXT) ELSE (OLD.guard_max_price / x.factor) || '.' || substr('0000' || (OLD.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency)))),
                       CASE WHEN NEW.name = OLD.name THEN '$.name' ELSE '$.unchanged' END,
                       CASE WHEN NEW.low_stock_threshold = OLD.low_stock_threshold
                            THEN '$.low_stock_threshold' ELSE '$.unchanged' END,
                       CASE WHEN json_object('max_change_pct', NEW.guard_max_change_pct, 'min_price', (SELECT CASE WHEN NEW.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_min_price AS TEXT) ELSE (NEW.guard_min_price / x.factor) || '.' || substr('0000' || (NEW.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency), 'max_price', (SELECT CASE WHEN NEW.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_max_price AS TEXT) ELSE (NEW.guard_max_price / x.factor) || '.' || substr('0000' || (NEW.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency)) = json_object('max_change_pct', OLD.guard_max_change_pct, 'min_price', (SELECT CASE WHEN OLD.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_min_price AS TEXT) ELSE (OLD.guard_min_price / x.factor) || '.' || substr('0000' || (OLD.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency), 'max_price', (SELECT CASE WHEN OLD.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_max_price AS TEXT) ELSE (OLD.guard_max_price / x.factor) || '.' || substr('0000' || (OLD.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency))
                            THEN '$.price_guard' ELSE '$.unchanged' END),
           json_remove(json_object('name', NEW.name, 'low_stock_threshold', NEW.low_stock_threshold,
                                   'price_guard', json(json_object('max_change_pct', NEW.guard_max_change_pct, 'min_price', (SELECT CASE WHEN NEW.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_min_price AS TEXT) ELSE (NEW.guard_min_price / x.factor) || '.' || substr('0000' || (NEW.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency), 'max_price', (SELECT CASE WHEN NEW.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_max_price AS TEXT) ELSE (NEW.guard_max_price / x.factor) || '.' || substr('0000' || (NEW.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency)))),
                       CASE WHEN NEW.name = OLD.name THEN '$.name' ELSE '$.unchanged' END,
                       CASE WHEN NEW.low_stock_threshold = OLD.low_stock_threshold
                            THEN '$.low_stock_threshold' ELSE '$.unchanged' END,
                       CASE WHEN json_object('max_change_pct', NEW.guard_max_change_pct, 'min_price', (SELECT CASE WHEN NEW.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_min_price AS TEXT) ELSE (NEW.guard_min_price / x.factor) || '.' || substr('0000' || (NEW.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency), 'max_price', (SELECT CASE WHEN NEW.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(NEW.guard_max_price AS TEXT) ELSE (NEW.guard_max_price / x.factor) || '.' || substr('0000' || (NEW.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = NEW.currency)) = json_object('max_change_pct', OLD.guard_max_change_pct, 'min_price', (SELECT CASE WHEN OLD.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_min_price AS TEXT) ELSE (OLD.guard_min_price / x.factor) || '.' || substr('0000' || (OLD.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency), 'max_price', (SELECT CASE WHEN OLD.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(OLD.guard_max_price AS TEXT) ELSE (OLD.guard_max_price / x.factor) || '.' || substr('0000' || (OLD.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = OLD.currency))
                            THEN '$.price_guard' ELSE '$.unchanged' END),
           NULL, 'external', 'sqlite',
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'reserved', OLD.reserved, 'sales_rate', OLD.sales_rate, 'lead_time_days', OLD.lead_time_days, 'alert_rule', OLD.alert_rule, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           OLD.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price);
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1 AND (NEW.stock <> OLD.stock);
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), NEW.sku, OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, (SELECT updated_us FROM skus WHERE sku = NEW.sku), 'stock',
           json(OLD.stock), json(NEW.stock), NEW.stock - OLD.stock, 'external', 'sqlite',
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', NEW.stock, 'reserved', OLD.reserved, 'sales_rate', OLD.sales_rate, 'lead_time_days', OLD.lead_time_days, 'alert_rule', OLD.alert_rule, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           NEW.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.stock <> OLD.stock);
END;
