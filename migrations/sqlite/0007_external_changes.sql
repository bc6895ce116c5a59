-- Changes written straight into the database (issue 16), SQLite: another
-- process writing the database file (the sqlite3 shell, a sync job) gets
-- events exactly like an API change, written in its own transaction by the
-- triggers below; the server notices them through `PRAGMA data_version`.
-- `search_text` is set here with SQLite's lower() (ASCII only); the server
-- writes its own (Unicode's rules) when it settles the change.
--
-- SQLite has no transaction-local settings, so the server's writes are
-- told apart by what only the server writes: every server UPDATE of a SKU
-- raises its `version`, every server INSERT gives one. An external writer
-- leaves `version` and `updated_us` alone (an INSERT omits them); a
-- writer that sets `version` itself is taken for the server.

-- Currencies the server knows: ISO 4217 codes that have a minor unit, with
-- their decimal places (the `iso_currency` crate's list; a test compares
-- the two). `factor` is 10^exponent, for formatting prices in SQL.
CREATE TABLE currencies (
    code     TEXT PRIMARY KEY,
    exponent BIGINT NOT NULL,
    factor   BIGINT NOT NULL
);
INSERT INTO currencies (code, exponent, factor) VALUES
    ('AED', 2, 100),
    ('AFN', 2, 100),
    ('ALL', 2, 100),
    ('AMD', 2, 100),
    ('XCG', 2, 100),
    ('AOA', 2, 100),
    ('ARS', 2, 100),
    ('AUD', 2, 100),
    ('AWG', 2, 100),
    ('AZN', 2, 100),
    ('BAM', 2, 100),
    ('BBD', 2, 100),
    ('BDT', 2, 100),
    ('BGN', 2, 100),
    ('BHD', 3, 1000),
    ('BIF', 0, 1),
    ('BMD', 2, 100),
    ('BND', 2, 100),
    ('BOB', 2, 100),
    ('BOV', 2, 100),
    ('BRL', 2, 100),
    ('BSD', 2, 100),
    ('BTN', 2, 100),
    ('BWP', 2, 100),
    ('BYN', 2, 100),
    ('BZD', 2, 100),
    ('CAD', 2, 100),
    ('CDF', 2, 100),
    ('CHE', 2, 100),
    ('CHF', 2, 100),
    ('CHW', 2, 100),
    ('CLF', 4, 10000),
    ('CLP', 0, 1),
    ('CNY', 2, 100),
    ('COP', 2, 100),
    ('COU', 2, 100),
    ('CRC', 2, 100),
    ('CUC', 2, 100),
    ('CUP', 2, 100),
    ('CVE', 2, 100),
    ('CZK', 2, 100),
    ('DJF', 0, 1),
    ('DKK', 2, 100),
    ('DOP', 2, 100),
    ('DZD', 2, 100),
    ('EGP', 2, 100),
    ('ERN', 2, 100),
    ('ETB', 2, 100),
    ('EUR', 2, 100),
    ('FJD', 2, 100),
    ('FKP', 2, 100),
    ('GBP', 2, 100),
    ('GEL', 2, 100),
    ('GHS', 2, 100),
    ('GIP', 2, 100),
    ('GMD', 2, 100),
    ('GNF', 0, 1),
    ('GTQ', 2, 100),
    ('GYD', 2, 100),
    ('HKD', 2, 100),
    ('HNL', 2, 100),
    ('HRK', 2, 100),
    ('HTG', 2, 100),
    ('HUF', 2, 100),
    ('IDR', 2, 100),
    ('ILS', 2, 100),
    ('INR', 2, 100),
    ('IQD', 3, 1000),
    ('IRR', 2, 100),
    ('ISK', 0, 1),
    ('JMD', 2, 100),
    ('JOD', 3, 1000),
    ('JPY', 0, 1),
    ('KES', 2, 100),
    ('KGS', 2, 100),
    ('KHR', 2, 100),
    ('KMF', 0, 1),
    ('KPW', 2, 100),
    ('KRW', 0, 1),
    ('KWD', 3, 1000),
    ('KYD', 2, 100),
    ('KZT', 2, 100),
    ('LAK', 2, 100),
    ('LBP', 2, 100),
    ('LKR', 2, 100),
    ('LRD', 2, 100),
    ('LSL', 2, 100),
    ('LYD', 3, 1000),
    ('MAD', 2, 100),
    ('MDL', 2, 100),
    ('MGA', 2, 100),
    ('MKD', 2, 100),
    ('MMK', 2, 100),
    ('MNT', 2, 100),
    ('MOP', 2, 100),
    ('MRU', 2, 100),
    ('MUR', 2, 100),
    ('MVR', 2, 100),
    ('MWK', 2, 100),
    ('MXN', 2, 100),
    ('MXV', 2, 100),
    ('MYR', 2, 100),
    ('MZN', 2, 100),
    ('NAD', 2, 100),
    ('NGN', 2, 100),
    ('NIO', 2, 100),
    ('NOK', 2, 100),
    ('NPR', 2, 100),
    ('NZD', 2, 100),
    ('OMR', 3, 1000),
    ('PAB', 2, 100),
    ('PEN', 2, 100),
    ('PGK', 2, 100),
    ('PHP', 2, 100),
    ('PKR', 2, 100),
    ('PLN', 2, 100),
    ('PYG', 0, 1),
    ('QAR', 2, 100),
    ('RON', 2, 100),
    ('RSD', 2, 100),
    ('RUB', 2, 100),
    ('RWF', 0, 1),
    ('SAR', 2, 100),
    ('SBD', 2, 100),
    ('SCR', 2, 100),
    ('SDG', 2, 100),
    ('SEK', 2, 100),
    ('SGD', 2, 100),
    ('SHP', 2, 100),
    ('SLE', 2, 100),
    ('SLL', 2, 100),
    ('SOS', 2, 100),
    ('SRD', 2, 100),
    ('SSP', 2, 100),
    ('STN', 2, 100),
    ('SVC', 2, 100),
    ('SYP', 2, 100),
    ('SZL', 2, 100),
    ('THB', 2, 100),
    ('TJS', 2, 100),
    ('TMT', 2, 100),
    ('TND', 3, 1000),
    ('TOP', 2, 100),
    ('TRY', 2, 100),
    ('TTD', 2, 100),
    ('TWD', 2, 100),
    ('TZS', 2, 100),
    ('UAH', 2, 100),
    ('UGX', 0, 1),
    ('USD', 2, 100),
    ('USN', 2, 100),
    ('UYI', 0, 1),
    ('UYU', 2, 100),
    ('UYW', 4, 10000),
    ('UZS', 2, 100),
    ('VED', 2, 100),
    ('VES', 2, 100),
    ('VND', 0, 1),
    ('VUV', 0, 1),
    ('WST', 2, 100),
    ('XAF', 0, 1),
    ('XCD', 2, 100),
    ('XOF', 0, 1),
    ('XPF', 0, 1),
    ('YER', 2, 100),
    ('ZAR', 2, 100),
    ('ZMW', 2, 100),
    ('ZWL', 2, 100),
    ('ZWG', 2, 100);

-- 1 while the alerts of an external event are still to be evaluated (see
-- the PostgreSQL migration of the same number).
ALTER TABLE events ADD COLUMN alerts_pending BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_alerts_pending ON events (event_id) WHERE alerts_pending = 1;

-- A SKU's events refer to it: refused for every writer.
CREATE TRIGGER skus_no_delete BEFORE DELETE ON skus
BEGIN
    SELECT RAISE(ABORT, 'skuwatch: a SKU cannot be deleted: its events refer to it; set its stock to 0 instead');
END;

-- An external INSERT (no version): the row as the server would write it,
-- then its creation event; the original row is dropped (RAISE(IGNORE)).
CREATE TRIGGER skus_external_insert BEFORE INSERT ON skus
WHEN NEW.version IS NULL
BEGIN
    SELECT RAISE(ABORT, 'skuwatch: sku_code_valid: a SKU code is 1-64 characters without spaces, control characters or /')
        WHERE length(NEW.sku) NOT BETWEEN 1 AND 64 OR NEW.sku IN ('.', '..') OR NEW.sku GLOB ('*[ /' || char(9,10,11,12,13,133,160,173,8203,8204,8205,8206,8207,8232,8233,8234,8235,8236,8237,8238,8288,8289,8290,8291,8292,65279,1,2,3,4,5,6,7,8,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127) || ']*');
    SELECT RAISE(ABORT, 'skuwatch: currency_known: unknown currency')
        WHERE NOT EXISTS (SELECT 1 FROM currencies WHERE code = NEW.currency);
    SELECT RAISE(ABORT, 'skuwatch: name_valid: a name is 1-500 characters, trimmed, without control characters')
        WHERE length(NEW.name) NOT BETWEEN 1 AND 500 OR NEW.name <> trim(NEW.name) OR NEW.name GLOB ('*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127) || ']*');
    SELECT RAISE(ABORT, 'skuwatch: guard_valid: max_change_pct is 1-10000, bounds are > 0 and min <= max')
        WHERE (NEW.guard_max_change_pct IS NOT NULL AND NEW.guard_max_change_pct NOT BETWEEN 1 AND 10000) OR NEW.guard_min_price <= 0 OR NEW.guard_max_price <= 0 OR NEW.guard_min_price > NEW.guard_max_price;
    INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold,
                      guard_max_change_pct, guard_min_price, guard_max_price, version, updated_us,
                      search_text)
    VALUES (NEW.sku, NEW.name, NEW.currency, NEW.price_minor, NEW.stock, NEW.low_stock_threshold,
            NEW.guard_max_change_pct, NEW.guard_min_price, NEW.guard_max_price, 1, CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER),
            lower(NEW.sku || ' ' || NEW.name));
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1;
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), s.sku, 1, s.updated_us, 'meta', NULL,
           json_object('sku', s.sku, 'name', s.name, 'currency', s.currency,
                       'price', (SELECT CASE WHEN s.price_minor IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(s.price_minor AS TEXT) ELSE (s.price_minor / x.factor) || '.' || substr('0000' || (s.price_minor % x.factor), -x.exponent) END FROM currencies x WHERE x.code = s.currency), 'stock', s.stock,
                       'low_stock_threshold', s.low_stock_threshold,
                       'price_guard', json(json_object('max_change_pct', s.guard_max_change_pct, 'min_price', (SELECT CASE WHEN s.guard_min_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(s.guard_min_price AS TEXT) ELSE (s.guard_min_price / x.factor) || '.' || substr('0000' || (s.guard_min_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = s.currency), 'max_price', (SELECT CASE WHEN s.guard_max_price IS NULL THEN NULL WHEN x.exponent = 0 THEN CAST(s.guard_max_price AS TEXT) ELSE (s.guard_max_price / x.factor) || '.' || substr('0000' || (s.guard_max_price % x.factor), -x.exponent) END FROM currencies x WHERE x.code = s.currency)))),
           NULL, 'external', 'sqlite',
           json_object('sku', s.sku, 'name', s.name, 'currency', s.currency, 'price_minor', s.price_minor, 'stock', s.stock, 'low_stock_threshold', s.low_stock_threshold, 'guard_max_change_pct', s.guard_max_change_pct, 'guard_min_price', s.guard_min_price, 'guard_max_price', s.guard_max_price, 'version', s.version, 'updated_us', s.updated_us),
           s.stock, s.price_minor, NULL, 1
    FROM skus s WHERE s.sku = NEW.sku;
    SELECT RAISE(IGNORE);
END;

-- The rules of an external UPDATE (a SKU's code and currency never change).
CREATE TRIGGER skus_external_rules BEFORE UPDATE ON skus
WHEN NEW.version = OLD.version
BEGIN
    SELECT RAISE(ABORT, 'skuwatch: the code and currency of a SKU cannot change; create a new SKU instead')
        WHERE NEW.sku <> OLD.sku OR NEW.currency <> OLD.currency;
    SELECT RAISE(ABORT, 'skuwatch: name_valid: a name is 1-500 characters, trimmed, without control characters')
        WHERE length(NEW.name) NOT BETWEEN 1 AND 500 OR NEW.name <> trim(NEW.name) OR NEW.name GLOB ('*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127) || ']*');
    SELECT RAISE(ABORT, 'skuwatch: guard_valid: max_change_pct is 1-10000, bounds are > 0 and min <= max')
        WHERE (NEW.guard_max_change_pct IS NOT NULL AND NEW.guard_max_change_pct NOT BETWEEN 1 AND 10000) OR NEW.guard_min_price <= 0 OR NEW.guard_max_price <= 0 OR NEW.guard_min_price > NEW.guard_max_price;
END;

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
           json_object('sku', OLD.sku, 'name', OLD.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'low_stock_threshold', OLD.low_stock_threshold, 'guard_max_change_pct', OLD.guard_max_change_pct, 'guard_min_price', OLD.guard_min_price, 'guard_max_price', OLD.guard_max_price, 'version', OLD.version + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
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
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', OLD.stock, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           OLD.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price);
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1 AND (NEW.stock <> OLD.stock);
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    SELECT (SELECT last_event_id FROM event_clock WHERE id = 1), NEW.sku, OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, (SELECT updated_us FROM skus WHERE sku = NEW.sku), 'stock',
           json(OLD.stock), json(NEW.stock), NEW.stock - OLD.stock, 'external', 'sqlite',
           json_object('sku', OLD.sku, 'name', NEW.name, 'currency', OLD.currency, 'price_minor', NEW.price_minor, 'stock', NEW.stock, 'low_stock_threshold', NEW.low_stock_threshold, 'guard_max_change_pct', NEW.guard_max_change_pct, 'guard_min_price', NEW.guard_min_price, 'guard_max_price', NEW.guard_max_price, 'version', OLD.version + (NEW.price_minor <> OLD.price_minor) + (NEW.name <> OLD.name OR NEW.low_stock_threshold <> OLD.low_stock_threshold OR NEW.guard_max_change_pct IS NOT OLD.guard_max_change_pct OR NEW.guard_min_price IS NOT OLD.guard_min_price OR NEW.guard_max_price IS NOT OLD.guard_max_price) + 1, 'updated_us', (SELECT updated_us FROM skus WHERE sku = NEW.sku)),
           NEW.stock, NEW.price_minor, NULL, 1
    WHERE (NEW.stock <> OLD.stock);
END;
