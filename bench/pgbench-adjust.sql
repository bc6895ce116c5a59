-- pgbench script: the SQL of one stock adjustment as the server ran it
-- before group commit, one transaction per adjustment (BENCHMARKS.md,
-- target 1). Runs against a skuwatch database that holds LG-000000 ..
-- LG-009999 (created by `loadgen --mode writes`):
--   pgbench -n -c 64 -j 2 -T 30 -f bench/pgbench-adjust.sql postgres://postgres@127.0.0.1/DB
\set n random(0, 9999)
\set d random(0, 1) * 2 - 1
BEGIN;
-- As the server marks its writes (sent with its BEGIN in one round trip).
SET LOCAL skuwatch.writer = 'server';
SELECT sku, name, currency, price_minor, stock, low_stock_threshold, guard_max_change_pct,
       guard_min_price, guard_max_price, version, updated_us
  FROM skus WHERE sku = 'LG-' || lpad(:n::text, 6, '0') FOR UPDATE;
SELECT id, kind FROM alerts WHERE sku = 'LG-' || lpad(:n::text, 6, '0') AND status <> 'resolved';
UPDATE skus SET stock = stock + :d, version = version + 1,
       updated_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
 WHERE sku = 'LG-' || lpad(:n::text, 6, '0');
WITH c AS (UPDATE event_clock SET last_event_id = last_event_id + 1 WHERE id = 1
           RETURNING last_event_id)
INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta,
                    reason, actor, state, stock_after, price_after)
SELECT c.last_event_id, s.sku, s.version, s.updated_us, 'stock', (s.stock - :d)::text,
       s.stock::text, :d, 'pgbench', 'pgbench', '{}', s.stock, s.price_minor
  FROM c, skus s WHERE s.sku = 'LG-' || lpad(:n::text, 6, '0');
END;
