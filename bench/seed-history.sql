-- One SKU with a long history for the chart scenario (BENCHMARKS.md,
-- issue 15 target 4), written straight into a migrated skuwatch PostgreSQL
-- database: events written by another path than the API, as an ERP or a
-- migration would. SKU LG-000000, created at version 1, then n - 1 stock
-- changes one second apart ending now: a wave between 100 and 900, one
-- stock-out and one spike. Event ids continue the event clock.
--   psql "$DB_URL" -v n=1000000 -f bench/seed-history.sql
BEGIN;
SELECT last_event_id AS base, (extract(epoch FROM now()) * 1000000)::bigint - :n::bigint * 1000000 AS t0
  FROM event_clock WHERE id = 1 \gset
CREATE TEMP TABLE seed AS
SELECT g AS version,
       CASE WHEN g = 1 THEN 500
            WHEN g = (:n * 7) / 10 THEN 0
            WHEN g = (:n * 3) / 10 THEN 5000
            ELSE 100 + (g * 37) % 800 END AS stock,
       :t0 + g::bigint * 1000000 AS at_us
  FROM generate_series(1, :n) AS g;
-- Written as the server writes: the events below are the SKU's own.
SET skuwatch.writer = 'server';
INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold,
                  guard_max_change_pct, guard_min_price, guard_max_price, version,
                  updated_us, search_text)
SELECT 'LG-000000', 'HISTORY ITEM', 'GBP', 999, stock, 0, 50, NULL, NULL, version, at_us,
       'lg-000000 history item'
  FROM seed WHERE version = :n;
INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta,
                    reason, actor, state, stock_after, price_after)
SELECT :base + s.version, 'LG-000000', s.version, s.at_us,
       CASE WHEN s.version = 1 THEN 'meta' ELSE 'stock' END,
       CASE WHEN s.version = 1 THEN NULL ELSE p.stock::text END,
       s.stock::text, NULL, 'seed', 'bench',
       json_build_object('sku', 'LG-000000', 'name', 'HISTORY ITEM', 'currency', 'GBP',
                         'price', '9.99', 'stock', s.stock, 'low_stock_threshold', 0,
                         'price_guard', json_build_object('max_change_pct', 50,
                                                          'min_price', NULL, 'max_price', NULL),
                         'version', s.version,
                         'updated_at', to_char(to_timestamp(s.at_us / 1000000.0) AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text,
       s.stock, 999
  FROM seed s LEFT JOIN seed p ON p.version = s.version - 1;
UPDATE event_clock SET last_event_id = last_event_id + :n WHERE id = 1;
COMMIT;
ANALYZE events;
