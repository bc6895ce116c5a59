-- A large catalog for the actor-memory scenario (BENCHMARKS.md, target 5),
-- inserted straight into a migrated skuwatch PostgreSQL database: the
-- import API would activate (and keep in memory) an actor per SKU, which is
-- what this scenario must not start with. SKUs LG-000000 .. LG-(n-1).
--   psql "$DB_URL" -v n=1000000 -f bench/seed-catalog.sql
-- A fixture, not a change: written as the server writes (no events).
SET skuwatch.writer = 'server';
INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold,
                  guard_max_change_pct, guard_min_price, guard_max_price, version,
                  updated_us, search_text)
SELECT 'LG-' || lpad(g::text, 6, '0'), 'LOADGEN ITEM ' || g, 'GBP', 999, 1000000, 0,
       50, NULL, NULL, 1, 1790000000000000, lower('LG-' || lpad(g::text, 6, '0') || ' LOADGEN ITEM ' || g)
  FROM generate_series(0, :n - 1) AS g;
ANALYZE skus;
