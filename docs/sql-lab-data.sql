-- The SQL lab's data set (docs/sql-lab.md): a small tea shop in November 2026.
--
-- Plain INSERTs that run unchanged on SQLite and PostgreSQL against the migrated schema
-- (`python server.py migrate`). The ids are given explicitly so that every query in the
-- lab has one fixed answer. The lab only reads, so PostgreSQL's identity sequences are not
-- moved past these ids; docs/sql-lab.md shows the one statement to run before inserting.
--
-- What the rows are chosen to show:
--   - erin (user 5) has no orders: LEFT JOIN, NOT EXISTS.
--   - the Tea strainer (item 6) was never ordered; Black tea (item 3) is sold out (stock 0);
--     the Porcelain cup set (item 8) is archived (deleted_at) but stays in old orders.
--   - Green tea went from 850 to 900 cents on 2026-11-05: older lines keep the old price.
--   - Green tea and the Honey jar cost the same: ORDER BY needs the id to break the tie.
--   - no order on 2026-11-04 and only a cancelled one on 2026-11-06: a calendar of days.
--   - Teapot and Kettle sold the same number of units: RANK against DENSE_RANK.
--
-- The password hashes are placeholders: nobody can log in as these users.

INSERT INTO users (id, email, password_hash, role, created_at, updated_at) VALUES
    (1, 'alice@example.com', 'pbkdf2_sha256$1000$lab1$not-a-real-hash', 'admin', '2026-10-01T08:00:00.000000Z', '2026-10-01T08:00:00.000000Z'),
    (2, 'bob@example.com', 'pbkdf2_sha256$1000$lab2$not-a-real-hash', 'user', '2026-10-12T17:30:00.000000Z', '2026-10-12T17:30:00.000000Z'),
    (3, 'carol@example.com', 'pbkdf2_sha256$1000$lab3$not-a-real-hash', 'user', '2026-10-20T09:45:00.000000Z', '2026-10-20T09:45:00.000000Z'),
    (4, 'dave@example.com', 'pbkdf2_sha256$1000$lab4$not-a-real-hash', 'user', '2026-10-28T21:10:00.000000Z', '2026-10-28T21:10:00.000000Z'),
    (5, 'erin@example.com', 'pbkdf2_sha256$1000$lab5$not-a-real-hash', 'user', '2026-11-02T12:00:00.000000Z', '2026-11-02T12:00:00.000000Z');

INSERT INTO items (id, name, description, price_cents, stock, version, created_at, updated_at, deleted_at) VALUES
    (1, 'Teapot', 'Cast iron, 0.8 l', 2400, 5, 1, '2026-09-01T10:00:00.000000Z', '2026-09-01T10:00:00.000000Z', NULL),
    (2, 'Green tea 250 g', 'Sencha, loose leaf', 900, 40, 2, '2026-09-01T10:05:00.000000Z', '2026-11-05T07:00:00.000000Z', NULL),
    (3, 'Black tea 250 g', 'Assam, loose leaf', 800, 0, 1, '2026-09-01T10:10:00.000000Z', '2026-09-01T10:10:00.000000Z', NULL),
    (4, 'Mug', 'Stoneware, 350 ml', 1200, 12, 1, '2026-09-02T11:00:00.000000Z', '2026-09-02T11:00:00.000000Z', NULL),
    (5, 'Kettle', 'Electric, 1.5 l', 4500, 3, 1, '2026-09-02T11:30:00.000000Z', '2026-09-02T11:30:00.000000Z', NULL),
    (6, 'Tea strainer', 'Stainless steel', 350, 25, 1, '2026-09-03T09:00:00.000000Z', '2026-09-03T09:00:00.000000Z', NULL),
    (7, 'Honey jar', 'Acacia honey, 500 g', 900, 8, 1, '2026-09-03T09:30:00.000000Z', '2026-09-03T09:30:00.000000Z', NULL),
    (8, 'Porcelain cup set', 'Six cups and saucers', 3900, 2, 2, '2026-09-04T15:00:00.000000Z', '2026-11-06T10:00:00.000000Z', '2026-11-06T10:00:00.000000Z');

-- total_cents is the sum of its lines (quantity * unit_price_cents), as the shop computes it.
INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) VALUES
    (1, 2, 'shipped', 4100, '2026-11-01T09:12:00.000000Z', '2026-11-02T10:00:00.000000Z'),
    (2, 3, 'shipped', 6300, '2026-11-01T14:40:00.000000Z', '2026-11-02T10:05:00.000000Z'),
    (3, 1, 'shipped', 4500, '2026-11-02T08:05:00.000000Z', '2026-11-03T09:00:00.000000Z'),
    (4, 2, 'cancelled', 3900, '2026-11-02T19:30:00.000000Z', '2026-11-02T19:45:00.000000Z'),
    (5, 4, 'shipped', 3350, '2026-11-03T11:00:00.000000Z', '2026-11-04T08:30:00.000000Z'),
    (6, 3, 'paid', 3400, '2026-11-03T16:45:00.000000Z', '2026-11-03T16:46:00.000000Z'),
    (7, 2, 'paid', 2100, '2026-11-05T10:20:00.000000Z', '2026-11-05T10:21:00.000000Z'),
    (8, 4, 'cancelled', 2400, '2026-11-06T12:00:00.000000Z', '2026-11-06T18:00:00.000000Z'),
    (9, 3, 'paid', 3300, '2026-11-07T09:30:00.000000Z', '2026-11-07T09:31:00.000000Z'),
    (10, 1, 'pending', 2700, '2026-11-07T15:10:00.000000Z', '2026-11-07T15:10:00.000000Z'),
    (11, 2, 'pending', 3000, '2026-11-08T08:00:00.000000Z', '2026-11-08T08:00:00.000000Z'),
    (12, 4, 'pending', 6900, '2026-11-08T21:55:00.000000Z', '2026-11-08T21:55:00.000000Z');

INSERT INTO order_items (order_id, item_id, quantity, unit_price_cents) VALUES
    (1, 1, 1, 2400),
    (1, 2, 2, 850),
    (2, 4, 2, 1200),
    (2, 8, 1, 3900),
    (3, 5, 1, 4500),
    (4, 8, 1, 3900),
    (5, 2, 3, 850),
    (5, 3, 1, 800),
    (6, 3, 2, 800),
    (6, 7, 2, 900),
    (7, 2, 1, 900),
    (7, 4, 1, 1200),
    (8, 1, 1, 2400),
    (9, 1, 1, 2400),
    (9, 2, 1, 900),
    (10, 7, 3, 900),
    (11, 2, 2, 900),
    (11, 4, 1, 1200),
    (12, 4, 2, 1200),
    (12, 5, 1, 4500);
