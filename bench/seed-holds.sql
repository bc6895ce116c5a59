-- Active holds for the expiry-lag scenario (BENCHMARKS.md, issue 17): :h
-- holds of 1 unit each, spread over the SKUs LG-000000 .. LG-(n-1)
-- (bench/seed-catalog.sql first), expiring in a day, inserted straight
-- into a migrated PostgreSQL database with `reserved` kept equal to the
-- sum of the active holds, as the server keeps it.
--   psql "$DB_URL" -v n=10000 -v h=100000 -f bench/seed-holds.sql
-- A fixture, not a change: written as the server writes (no events).
SET skuwatch.writer = 'server';
CREATE TEMP TABLE seeded AS
SELECT gen_random_uuid()::text AS id, 'LG-' || lpad((g % :n)::text, 6, '0') AS sku
  FROM generate_series(0, :h - 1) AS g;
INSERT INTO holds (id, status, lines, reference, actor, created_us, expires_us, ended_us, event_ids)
SELECT id, 'active', json_build_array(json_build_object('sku', sku, 'quantity', 1))::text,
       'seed', 'bench', (extract(epoch FROM now()) * 1000000)::bigint,
       (extract(epoch FROM now() + interval '1 day') * 1000000)::bigint, NULL, '[]'
  FROM seeded;
INSERT INTO hold_lines (hold_id, sku, quantity) SELECT id, sku, 1 FROM seeded;
UPDATE skus SET reserved = reserved + c.n
  FROM (SELECT sku, count(*) AS n FROM seeded GROUP BY sku) AS c
 WHERE skus.sku = c.sku;
ANALYZE holds;
ANALYZE hold_lines;
