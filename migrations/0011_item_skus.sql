-- 0011: a stock-keeping unit (SKU) per item: the code a warehouse, a supplier and the
-- accounts know an item by ("DESK-TIDY-WAL"), unique in the catalogue, where names need not be.
--
-- The *expand* half of an expand-then-contract change (docs/deploy.md, "Migrations in a
-- release"). `python server.py migrate` runs while the previous release still serves, and
-- until every process is replaced both releases share this schema, so this file may only
-- add what the previous release can ignore:
--   - a nullable column with no default: the previous release's INSERT INTO items names
--     its columns, and no sku among them, so it still works (the new item has no SKU yet);
--     its SELECTs name their columns too, and never see this one;
--   - a UNIQUE index: NULLs never collide, on either engine, so any number of items may
--     have no SKU while the others are filled in.
-- The release after this one reads and writes SKUs. The *contract* half comes once every
-- item has one and no release that writes items without one is running: `sku` becomes
-- NOT NULL. That step is in docs/deploy.md, not here: it breaks the previous release.
--
-- A CHECK on a column added by ALTER TABLE: NULL passes it (length(NULL) is NULL, not false).

ALTER TABLE items ADD COLUMN sku TEXT CHECK (length(sku) BETWEEN 1 AND 64);

-- Two items never share a SKU; and the next release's look-up of an item by its SKU.
CREATE UNIQUE INDEX items_sku ON items (sku);
