-- The API's write budget (issue 16). PostgreSQL reads, plans and prepares
-- every CHECK constraint and every trigger's WHEN anew for each statement
-- that writes a table: a profile of a PostgreSQL backend during the write
-- benchmark put the constraints of 0007-0009 and a second BEFORE trigger
-- at about 9 us of its CPU per API write, paid for rules the server's own
-- types already keep.
--
-- So the rules on what a column may hold that only an external writer can
-- break (a SKU code, a name, a price guard, the forecast settings) are
-- checked by the trigger that stamps external changes, which server writes
-- skip. A broken rule is refused as a constraint would refuse it: SQLSTATE
-- 23514 (check_violation) with the rule's name as the constraint, and the
-- same names and messages as on SQLite. The invariants every writer must
-- keep stay constraints: stock and reserved not below 0, a price above 0,
-- a known currency (`currency_known`, checked on UPDATE only when the
-- currency changes; it makes 0001's length check redundant).

ALTER TABLE skus
    DROP CONSTRAINT skus_currency_check,
    DROP CONSTRAINT sku_code_valid,
    DROP CONSTRAINT name_valid,
    DROP CONSTRAINT guard_valid,
    DROP CONSTRAINT lead_time_valid,
    DROP CONSTRAINT alert_rule_valid;

DROP TRIGGER skus_external_forecast_guard ON skus;
DROP FUNCTION skuwatch_external_forecast_guard();

-- Refuses an external row that breaks rule `rule` (a former constraint's
-- name), as a CHECK constraint would.
CREATE FUNCTION skuwatch_refuse(rule TEXT, sku TEXT, detail TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'skuwatch: %: %', rule, detail
        USING ERRCODE = 'check_violation', CONSTRAINT = rule, TABLE = 'skus',
              DETAIL = format('Refused for SKU %s.', sku);
END
$$;

-- Stamps an external change before it is written (see 0007), after
-- checking the rules above; NULL passes a rule, as with CHECK, so that a
-- missing value is refused by its NOT NULL.
CREATE OR REPLACE FUNCTION skuwatch_external_stamp() RETURNS trigger
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
    IF NOT coalesce(char_length(NEW.name) BETWEEN 1 AND 500 AND NEW.name = btrim(NEW.name)
                    AND NEW.name !~ '[[:cntrl:]]', true) THEN
        PERFORM skuwatch_refuse('name_valid', NEW.sku,
            'a name is 1-500 characters, trimmed, without control characters');
    END IF;
    IF NOT coalesce((NEW.guard_max_change_pct IS NULL
                     OR NEW.guard_max_change_pct BETWEEN 1 AND 10000)
                    AND (NEW.guard_min_price IS NULL OR NEW.guard_min_price > 0)
                    AND (NEW.guard_max_price IS NULL OR NEW.guard_max_price > 0)
                    AND (NEW.guard_min_price IS NULL OR NEW.guard_max_price IS NULL
                         OR NEW.guard_min_price <= NEW.guard_max_price), true) THEN
        PERFORM skuwatch_refuse('guard_valid', NEW.sku,
            'max_change_pct is 1-10000, bounds are > 0 and min <= max');
    END IF;
    -- The search text as SQL lower-cases it; the server writes its own
    -- (Unicode's rules, as for every change) when it settles the change.
    NEW.search_text := lower(NEW.sku || ' ' || NEW.name);
    IF TG_OP = 'INSERT' THEN
        IF NOT coalesce(char_length(NEW.sku) BETWEEN 1 AND 64 AND NEW.sku NOT IN ('.', '..')
                        AND NEW.sku !~ '[[:space:][:cntrl:]/\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF\u00AD]',
                        true) THEN
            PERFORM skuwatch_refuse('sku_code_valid', NEW.sku,
                'a SKU code is 1-64 characters without spaces, control characters or /');
        END IF;
        IF NOT coalesce(NEW.lead_time_days BETWEEN 0 AND 365, true) THEN
            PERFORM skuwatch_refuse('lead_time_valid', NEW.sku, 'a lead time is 0-365 days');
        END IF;
        IF NOT coalesce(NEW.alert_rule IN ('threshold', 'forecast', 'both'), true) THEN
            PERFORM skuwatch_refuse('alert_rule_valid', NEW.sku,
                'an alert rule is threshold, forecast or both');
        END IF;
        NEW.version := 1;
        NEW.updated_us := now_us;
        NEW.reserved := 0;
        -- The server's running state, rebuilt from the events when NULL.
        NEW.sales_rate := NULL;
        NEW.cover_tenths := NULL;
        RETURN NEW;
    END IF;
    IF NEW.sku <> OLD.sku OR NEW.currency <> OLD.currency THEN
        RAISE EXCEPTION 'skuwatch: the code and currency of SKU % cannot change', OLD.sku
            USING ERRCODE = 'check_violation',
                  HINT = 'Create a new SKU instead.';
    END IF;
    IF NEW.reserved <> OLD.reserved THEN
        RAISE EXCEPTION 'skuwatch: the reserved units of SKU % change only through holds', OLD.sku
            USING ERRCODE = 'check_violation',
                  HINT = 'Use the holds API (POST /api/v1/holds/{id}/release) instead.';
    END IF;
    -- The rate is the server's running state; lead time and rule change
    -- through PATCH (an event, alerts judged again).
    IF NEW.sales_rate IS DISTINCT FROM OLD.sales_rate
       OR NEW.lead_time_days IS DISTINCT FROM OLD.lead_time_days
       OR NEW.alert_rule IS DISTINCT FROM OLD.alert_rule THEN
        RAISE EXCEPTION 'skuwatch: the forecast settings of SKU % change only through the API', OLD.sku
            USING ERRCODE = 'check_violation',
                  HINT = 'Use PATCH /api/v1/skus/{sku} with lead_time_days or alert_rule.';
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
