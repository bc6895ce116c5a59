-- Days of cover (issue 18).
--
-- `sales_rate`: the running state of the SKU's sales rate (JSON of
-- `SalesRate` in actors/src/domain/forecast.rs), written with each change
-- by the server; NULL until the server first needs it, when it is rebuilt
-- from the SKU's events. `cover_tenths`: the days of cover (tenths) as of
-- the SKU's last change, for `/summary`; NULL without a forecast.
-- `lead_time_days` and `alert_rule`: NULL follows the server's settings.
ALTER TABLE skus
    ADD COLUMN sales_rate TEXT NULL,
    ADD COLUMN cover_tenths BIGINT NULL,
    ADD COLUMN lead_time_days BIGINT NULL
        CONSTRAINT lead_time_valid CHECK (lead_time_days BETWEEN 0 AND 365),
    ADD COLUMN alert_rule TEXT NULL
        CONSTRAINT alert_rule_valid CHECK (alert_rule IN ('threshold', 'forecast', 'both'));

ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check
    CHECK (kind IN ('low_stock', 'out_of_stock', 'price_anomaly', 'stockout_forecast'));

-- The sweep that re-reads forecasts looks up open forecast alerts.
CREATE INDEX alerts_forecast_active ON alerts (sku)
    WHERE kind = 'stockout_forecast' AND status <> 'resolved';

-- External writers (migration 0007) may not change the forecast columns:
-- the rate is the server's running state, and lead time and rule change
-- through PATCH (an event, alerts re-judged).
CREATE FUNCTION skuwatch_external_forecast_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'skuwatch: the forecast settings of SKU % change only through the API', OLD.sku
        USING ERRCODE = 'check_violation',
              HINT = 'Use PATCH /api/v1/skus/{sku} with lead_time_days or alert_rule.';
END
$$;

CREATE TRIGGER skus_external_forecast_guard
    BEFORE UPDATE ON skus
    FOR EACH ROW
    WHEN (current_setting('skuwatch.writer', true) IS DISTINCT FROM 'server'
          AND (NEW.sales_rate IS DISTINCT FROM OLD.sales_rate
               OR NEW.lead_time_days IS DISTINCT FROM OLD.lead_time_days
               OR NEW.alert_rule IS DISTINCT FROM OLD.alert_rule))
    EXECUTE FUNCTION skuwatch_external_forecast_guard();

-- The event state of an external change carries the forecast columns, so
-- the server shows (and judges the alerts of) the SKU with its sales rate.
CREATE OR REPLACE FUNCTION skuwatch_external_append(
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
                'price_minor', s.price_minor, 'stock', s.stock, 'reserved', s.reserved,
                'sales_rate', s.sales_rate, 'lead_time_days', s.lead_time_days,
                'alert_rule', s.alert_rule,
                'low_stock_threshold', s.low_stock_threshold,
                'guard_max_change_pct', s.guard_max_change_pct,
                'guard_min_price', s.guard_min_price, 'guard_max_price', s.guard_max_price,
                'version', s.version, 'updated_us', s.updated_us)::text,
            s.stock, s.price_minor, NULL, 1);
END
$$;
