-- Holds (issue 17); see the PostgreSQL migration of the same number.
ALTER TABLE skus ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0);

-- Events of `reserved`: SQLite cannot change a CHECK in place, so the
-- table is rebuilt (the SQLite manual's "Making Other Kinds Of Table Schema
-- Changes"). The legacy rename keeps the triggers of migration 0007, which
-- write `events` by name, pointing at the new table.
PRAGMA legacy_alter_table = ON;
ALTER TABLE events RENAME TO events_before_holds;
CREATE TABLE events (
    event_id  BIGINT PRIMARY KEY,
    sku       TEXT NOT NULL REFERENCES skus (sku),
    version   BIGINT NOT NULL,
    at_us     BIGINT NOT NULL,
    field     TEXT   NOT NULL CHECK (field IN ('stock', 'price', 'meta', 'reserved')),
    old_value TEXT   NULL,     -- JSON
    new_value TEXT   NOT NULL, -- JSON
    delta     BIGINT NULL,
    reason    TEXT   NULL,
    actor     TEXT   NULL,
    state     TEXT   NOT NULL, -- JSON of the SKU right after this event
    stock_after BIGINT NULL,
    price_after BIGINT NULL,
    alerts    TEXT NULL,
    alerts_pending BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT one_event_per_version UNIQUE (sku, version)
);
INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason,
                    actor, state, stock_after, price_after, alerts, alerts_pending)
SELECT event_id, sku, version, at_us, field, old_value, new_value, delta, reason,
       actor, state, stock_after, price_after, alerts, alerts_pending
FROM events_before_holds;
DROP TABLE events_before_holds;
-- The `checkout` role: the holds routes only.
ALTER TABLE users RENAME TO users_before_holds;
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT   NOT NULL, -- Argon2id, PHC string format
    role          TEXT   NOT NULL CHECK (role IN ('admin', 'viewer', 'checkout')),
    created_us    BIGINT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);
INSERT INTO users (username, password_hash, role, created_us, disabled)
SELECT username, password_hash, role, created_us, disabled FROM users_before_holds;
DROP TABLE users_before_holds;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX events_by_sku_time ON events (sku, at_us);
CREATE INDEX events_history ON events (sku, field, at_us, event_id);
CREATE INDEX events_alerts_pending ON events (event_id) WHERE alerts_pending = 1;

CREATE TABLE holds (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('active', 'released', 'expired', 'committed')),
    lines      TEXT NOT NULL,
    reference  TEXT,
    actor      TEXT,
    created_us BIGINT NOT NULL,
    expires_us BIGINT NOT NULL,
    ended_us   BIGINT,
    event_ids  TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX holds_active_expiry ON holds (expires_us) WHERE status = 'active';
CREATE INDEX holds_ended ON holds (ended_us) WHERE status <> 'active';

-- Rows are deleted with their hold by the server (foreign keys are not
-- enforced on every SQLite connection).
CREATE TABLE hold_lines (
    hold_id  TEXT NOT NULL REFERENCES holds (id),
    sku      TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (hold_id, sku)
);
CREATE INDEX hold_lines_sku ON hold_lines (sku, hold_id);

CREATE INDEX alerts_resolved ON alerts (resolved_us) WHERE status = 'resolved';

-- External writers (migration 0007) may not touch `reserved`: only holds
-- change it, through the server (whose writes step the version).
CREATE TRIGGER skus_external_reserved BEFORE UPDATE OF reserved ON skus
WHEN NEW.version = OLD.version AND NEW.reserved <> OLD.reserved
BEGIN
    SELECT RAISE(ABORT, 'skuwatch: the reserved units of a SKU change only through holds (the holds API)');
END;

-- The event state of an external change now carries `reserved`: the
-- trigger of migration 0007, re-created with it.
DROP TRIGGER skus_external_update;

-- An external UPDATE: the version goes up by one per event (price, then
-- name/threshold/guard, then stock: the order of an API upsert), the time
-- never goes back, and each event takes the next id from the clock.
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
           json_object('sku', OLD.sku, 'name', OLD.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'reserved', OLD.reserved, 'low_stock_threshold', OLD.low_stock_threshold, 'guard_max_change_pct', OLD.guard_max_change_pct, 'guard_min_price', OLD.guard_min_price, 'guard_max_price', OLD.guard_max_price, 'version', OLD.version + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
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
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'reserved', OLD.reserved, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           OLD.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price);
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1 AND (NEW.stock <> OLD.stock);
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), NEW.sku, OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, (SELECT updated_us FROM skus WHERE sku = NEW.sku), 'stock',
           json(OLD.stock), json(NEW.stock), NEW.stock - OLD.stock, 'external', 'sqlite',
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', NEW.stock, 'reserved', OLD.reserved, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           NEW.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.stock <> OLD.stock);
END;
