-- pgbench script: an external writer (issue 16), one SKU per transaction,
-- straight into a skuwatch PostgreSQL database holding LG-000000 ..
-- LG-009999 (bench/seed-catalog.sql), e.g. 200 commits/s:
--   pgbench -n -c 4 -j 2 -R 200 -T 30 -f bench/pgbench-external.sql "$DB_URL"
\set n random(0, 9999)
UPDATE skus SET stock = stock + 1 WHERE sku = 'LG-' || lpad(:n::text, 6, '0');
