-- pgbench script: an external writer (issue 16) changing 10 SKUs per
-- transaction, as a sync job does (consecutive codes, in code order, so
-- two such transactions never deadlock), e.g. 1,000 rows/s:
--   pgbench -n -c 2 -j 2 -R 100 -T 30 -f bench/pgbench-external-10.sql "$DB_URL"
\set n random(0, 999) * 10
BEGIN;
UPDATE skus SET stock = stock + 1
 WHERE sku IN (SELECT 'LG-' || lpad((:n + g)::text, 6, '0') FROM generate_series(0, 9) g);
COMMIT;
