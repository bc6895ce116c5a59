-- Changes written straight into the database (issue 16): any SQL session
-- that INSERTs or UPDATEs `skus` gets events exactly like an API change,
-- written in its own transaction. The server marks its own write
-- transactions with `SET LOCAL skuwatch.writer = 'server'` (a setting that
-- ends with the transaction, so a pooler in transaction mode cannot leak
-- it to another client, and an ERP sharing the server's credentials is
-- still told apart); every trigger below is skipped for them.

-- Currencies the server knows: ISO 4217 codes that have a minor unit, with
-- their decimal places (the `iso_currency` crate's list; a test compares
-- the two). `factor` is 10^exponent, for formatting prices in SQL.
CREATE TABLE currencies (
    code     TEXT PRIMARY KEY,
    exponent SMALLINT NOT NULL,
    factor   BIGINT   NOT NULL
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

-- The rules of API.md, kept by the database itself, so that an external
-- writer is refused with the constraint's name rather than leaving a row
-- the server cannot read.
ALTER TABLE skus
    ADD CONSTRAINT sku_code_valid CHECK (
        char_length(sku) BETWEEN 1 AND 64
        AND sku NOT IN ('.', '..')
        AND sku !~ '[[:space:][:cntrl:]/\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF\u00AD]'),
    ADD CONSTRAINT currency_known FOREIGN KEY (currency) REFERENCES currencies (code),
    ADD CONSTRAINT name_valid CHECK (
        char_length(name) BETWEEN 1 AND 500 AND name = btrim(name) AND name !~ '[[:cntrl:]]'),
    ADD CONSTRAINT guard_valid CHECK (
        (guard_max_change_pct IS NULL OR guard_max_change_pct BETWEEN 1 AND 10000)
        AND (guard_min_price IS NULL OR guard_min_price > 0)
        AND (guard_max_price IS NULL OR guard_max_price > 0)
        AND (guard_min_price IS NULL OR guard_max_price IS NULL
             OR guard_min_price <= guard_max_price));

-- 1 while the alerts of an external event are still to be evaluated: the
-- server does it in a follow-up transaction that claims the event with a
-- conditional update (`alerts_pending = 1` -> 0), so exactly one instance
-- raises them, with the rules of `decide()`/`evaluate()` in Rust.
ALTER TABLE events ADD COLUMN alerts_pending BIGINT NOT NULL DEFAULT 0;
CREATE INDEX events_alerts_pending ON events (event_id) WHERE alerts_pending = 1;

-- A price in minor units as API.md writes it: a decimal string with the
-- currency's decimal places ("3.99", "399" for JPY, "1.250" for KWD).
CREATE FUNCTION skuwatch_money(minor BIGINT, currency TEXT) RETURNS TEXT
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN minor IS NULL THEN NULL
        WHEN c.exponent = 0 THEN minor::text
        ELSE CASE WHEN minor < 0 THEN '-' ELSE '' END
             || (abs(minor) / c.factor)::text || '.'
             || lpad((abs(minor) % c.factor)::text, c.exponent, '0')
    END
    FROM currencies c WHERE c.code = currency
$$;

-- The `price_guard` object of API.md.
CREATE FUNCTION skuwatch_guard(s skus) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'max_change_pct', s.guard_max_change_pct,
        'min_price', skuwatch_money(s.guard_min_price, s.currency),
        'max_price', skuwatch_money(s.guard_max_price, s.currency))
$$;

-- Stamps an external change before it is written: a SKU's code and
-- currency never change (prices and guards are in it), and its version goes
-- up by one per event the change makes (price, then name/threshold/guard,
-- then stock: the order of an API upsert), its time never going back.
CREATE FUNCTION skuwatch_external_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    now_us BIGINT := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    changes INT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'skuwatch: SKU % cannot be deleted: its events refer to it', OLD.sku
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Set its stock to 0 instead.';
    END IF;
    -- The search text as SQL lower-cases it; the server writes its own
    -- (Unicode's rules, as for every change) when it settles the change.
    NEW.search_text := lower(NEW.sku || ' ' || NEW.name);
    IF TG_OP = 'INSERT' THEN
        NEW.version := 1;
        NEW.updated_us := now_us;
        RETURN NEW;
    END IF;
    IF NEW.sku <> OLD.sku OR NEW.currency <> OLD.currency THEN
        RAISE EXCEPTION 'skuwatch: the code and currency of SKU % cannot change', OLD.sku
            USING ERRCODE = 'check_violation',
                  HINT = 'Create a new SKU instead.';
    END IF;
    changes := (NEW.price_minor <> OLD.price_minor)::int
        + (NEW.name <> OLD.name
           OR NEW.low_stock_threshold <> OLD.low_stock_threshold
           OR NEW.guard_max_change_pct IS DISTINCT FROM OLD.guard_max_change_pct
           OR NEW.guard_min_price IS DISTINCT FROM OLD.guard_min_price
           OR NEW.guard_max_price IS DISTINCT FROM OLD.guard_max_price)::int
        + (NEW.stock <> OLD.stock)::int;
    NEW.version := OLD.version + changes;
    NEW.updated_us := CASE WHEN changes = 0 THEN OLD.updated_us
                           ELSE greatest(now_us, OLD.updated_us) END;
    RETURN NEW;
END
$$;

CREATE TRIGGER skus_external_stamp
    BEFORE INSERT OR UPDATE OR DELETE ON skus
    FOR EACH ROW
    WHEN (current_setting('skuwatch.writer', true) IS DISTINCT FROM 'server')
    EXECUTE FUNCTION skuwatch_external_stamp();

-- Appends one event of an external change, taking its id from the clock.
CREATE FUNCTION skuwatch_external_append(
    s skus, field TEXT, old_value JSONB, new_value JSONB, delta BIGINT
) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    id BIGINT;
BEGIN
    UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE event_clock.id = 1
        RETURNING last_event_id INTO id;
    INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta,
                        reason, actor, state, stock_after, price_after, alerts, alerts_pending)
    VALUES (id, s.sku, s.version, s.updated_us, field, old_value::text, new_value::text, delta,
            'external', current_user,
            -- The row's own columns: the server reads this form back into
            -- the API's SKU object with the same code as every other row.
            jsonb_build_object(
                'sku', s.sku, 'name', s.name, 'currency', s.currency,
                'price_minor', s.price_minor, 'stock', s.stock,
                'low_stock_threshold', s.low_stock_threshold,
                'guard_max_change_pct', s.guard_max_change_pct,
                'guard_min_price', s.guard_min_price, 'guard_max_price', s.guard_max_price,
                'version', s.version, 'updated_us', s.updated_us)::text,
            s.stock, s.price_minor, NULL, 1);
END
$$;

-- Writes the events of one external change. A deferred constraint trigger:
-- it runs at COMMIT, so the event clock's row (which orders every write's
-- ids) is locked only for the commit itself, and an external transaction
-- left open in psql does not hold up the API's writes of other SKUs.
CREATE FUNCTION skuwatch_external_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s skus;
    old_meta JSONB := '{}';
    new_meta JSONB := '{}';
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM skuwatch_external_append(NEW, 'meta', NULL,
            jsonb_build_object(
                'sku', NEW.sku, 'name', NEW.name, 'currency', NEW.currency,
                'price', skuwatch_money(NEW.price_minor, NEW.currency), 'stock', NEW.stock,
                'low_stock_threshold', NEW.low_stock_threshold,
                'price_guard', skuwatch_guard(NEW)),
            NULL);
        PERFORM pg_notify('skuwatch_external', '');
        RETURN NULL;
    END IF;
    IF NEW.version = OLD.version THEN
        RETURN NULL;
    END IF;
    s := OLD;
    s.updated_us := NEW.updated_us;
    IF NEW.price_minor <> OLD.price_minor THEN
        s.price_minor := NEW.price_minor;
        s.version := s.version + 1;
        PERFORM skuwatch_external_append(s, 'price',
            to_jsonb(skuwatch_money(OLD.price_minor, OLD.currency)),
            to_jsonb(skuwatch_money(NEW.price_minor, NEW.currency)), NULL);
    END IF;
    IF NEW.name <> OLD.name THEN
        old_meta := old_meta || jsonb_build_object('name', OLD.name);
        new_meta := new_meta || jsonb_build_object('name', NEW.name);
    END IF;
    IF NEW.low_stock_threshold <> OLD.low_stock_threshold THEN
        old_meta := old_meta || jsonb_build_object('low_stock_threshold', OLD.low_stock_threshold);
        new_meta := new_meta || jsonb_build_object('low_stock_threshold', NEW.low_stock_threshold);
    END IF;
    IF skuwatch_guard(NEW) <> skuwatch_guard(OLD) THEN
        old_meta := old_meta || jsonb_build_object('price_guard', skuwatch_guard(OLD));
        new_meta := new_meta || jsonb_build_object('price_guard', skuwatch_guard(NEW));
    END IF;
    IF new_meta <> '{}' THEN
        s.name := NEW.name;
        s.low_stock_threshold := NEW.low_stock_threshold;
        s.guard_max_change_pct := NEW.guard_max_change_pct;
        s.guard_min_price := NEW.guard_min_price;
        s.guard_max_price := NEW.guard_max_price;
        s.version := s.version + 1;
        PERFORM skuwatch_external_append(s, 'meta', old_meta, new_meta, NULL);
    END IF;
    IF NEW.stock <> OLD.stock THEN
        s.stock := NEW.stock;
        s.version := s.version + 1;
        PERFORM skuwatch_external_append(s, 'stock', to_jsonb(OLD.stock), to_jsonb(NEW.stock),
                                         NEW.stock - OLD.stock);
    END IF;
    -- Identical notifications of one transaction are delivered once: one
    -- wake-up per external transaction, whatever its size.
    PERFORM pg_notify('skuwatch_external', '');
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER skus_external_events
    AFTER INSERT OR UPDATE ON skus
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (current_setting('skuwatch.writer', true) IS DISTINCT FROM 'server')
    EXECUTE FUNCTION skuwatch_external_events();
