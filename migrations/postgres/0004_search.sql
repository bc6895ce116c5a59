-- Case-insensitive search on code and name (`GET /skus?q=`). Lowercased by
-- the server with Unicode rules, since SQLite's LOWER() only folds ASCII.
ALTER TABLE skus ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE skus SET search_text = LOWER(sku || ' ' || name);
