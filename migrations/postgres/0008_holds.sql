-- Holds (issue 17): units kept for a checkout until it commits, releases
-- them, or its time runs out. `skus.reserved` is the sum of the SKU's
-- active holds' quantities, written by the server in the same transaction
-- as the hold row; `available` (= stock - reserved) is computed, never
-- stored. A physical count may set stock below reserved: no CHECK ties
-- the two.
ALTER TABLE skus ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0
    CONSTRAINT reserved_not_negative CHECK (reserved >= 0);

-- Events of `reserved` (reasons hold, hold_released, hold_expired,
-- hold_committed). NOT VALID: every stored event already passes, and
-- checking would read the whole table under a lock.
ALTER TABLE events DROP CONSTRAINT events_field_check;
ALTER TABLE events ADD CONSTRAINT events_field_check
    CHECK (field IN ('stock', 'price', 'meta', 'reserved')) NOT VALID;

-- The `checkout` role: the holds routes only.
ALTER TABLE users DROP CONSTRAINT users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check
    CHECK (role IN ('admin', 'viewer', 'checkout'));

CREATE TABLE holds (
    -- A UUIDv7 (ids sort by creation time: keyset pages).
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL
        CONSTRAINT hold_status_known CHECK (status IN ('active', 'released', 'expired', 'committed')),
    -- JSON [{"sku": "A", "quantity": 2}], in the request's order.
    lines      TEXT NOT NULL,
    reference  TEXT,
    actor      TEXT,
    -- Microseconds since the Unix epoch on the database's clock.
    created_us BIGINT NOT NULL,
    expires_us BIGINT NOT NULL,
    ended_us   BIGINT,
    -- JSON array: the events of the hold's latest change of `reserved`.
    event_ids  TEXT NOT NULL DEFAULT '[]'
);
-- The sweeper's question: which active holds are due.
CREATE INDEX holds_active_expiry ON holds (expires_us) WHERE status = 'active';
-- Pruning ended holds.
CREATE INDEX holds_ended ON holds (ended_us) WHERE status <> 'active';

-- One row per line: `GET /holds?sku=` without reading every hold's JSON.
CREATE TABLE hold_lines (
    hold_id  TEXT NOT NULL REFERENCES holds (id) ON DELETE CASCADE,
    sku      TEXT NOT NULL,
    quantity BIGINT NOT NULL CONSTRAINT hold_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (hold_id, sku)
);
CREATE INDEX hold_lines_sku ON hold_lines (sku, hold_id);

-- Pruning resolved alerts.
CREATE INDEX alerts_resolved ON alerts (resolved_us) WHERE status = 'resolved';

-- External writers (migration 0007) may not touch `reserved`: only holds
-- change it, and only through the server. An external INSERT starts at 0.
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
    -- The search text as SQL lower-cases it; the server writes its own
    -- (Unicode's rules, as for every change) when it settles the change.
    NEW.search_text := lower(NEW.sku || ' ' || NEW.name);
    IF TG_OP = 'INSERT' THEN
        NEW.version := 1;
        NEW.updated_us := now_us;
        NEW.reserved := 0;
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

-- The event state of an external change now carries `reserved`.
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
                'low_stock_threshold', s.low_stock_threshold,
                'guard_max_change_pct', s.guard_max_change_pct,
                'guard_min_price', s.guard_min_price, 'guard_max_price', s.guard_max_price,
                'version', s.version, 'updated_us', s.updated_us)::text,
            s.stock, s.price_minor, NULL, 1);
END
$$;
