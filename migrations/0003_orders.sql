-- 0003: orders. Idempotency-Key for POST /v1/orders, and the name each line was sold under.
--
-- A client that sent an order and lost the answer (a timeout, a dropped connection) cannot
-- know whether the order was placed. It sends the same request again with the same
-- Idempotency-Key, and gets the first answer back instead of a second order.
--
-- One row per (user, key). While the first request runs, response_status is NULL and
-- locked_at says since when; the 201 is written in the same transaction as the order, so
-- "the order exists" and "the key remembers it" are true together or not at all.

CREATE TABLE idempotency_keys (
    -- Keys are scoped to the user: two users who both pick "order-1" never collide, and
    -- nobody can replay, or even detect, another user's request.
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the method, path and canonical JSON body: the same key with another
    -- request is a client bug (422), not a replay.
    request_hash TEXT NOT NULL,
    -- When the running request took the key. A request that died (the process was killed)
    -- leaves a row with no response; after a lease its key may be taken again.
    locked_at TEXT NOT NULL,
    response_status INTEGER CHECK (response_status BETWEEN 200 AND 499),
    response_headers TEXT,
    response_body TEXT,
    created_at TEXT NOT NULL,
    -- At least 24 hours after created_at; an expired key is a new key again.
    expires_at TEXT NOT NULL,
    -- The primary key is the lookup of every keyed request (and ON CONFLICT's target).
    PRIMARY KEY (user_id, idempotency_key)
);

-- Removing every expired key at once (idempotency.py, at most once a minute per process).
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- A line keeps the item's name as it was when ordered, as it keeps its price: renaming an
-- item later must not rewrite old orders (or make a replayed 201 differ from a GET).
-- SQLite can add a NOT NULL column only with a default; the application writes the name
-- with every line, and lines written before this migration take their item's name now.
ALTER TABLE order_items ADD COLUMN item_name TEXT NOT NULL DEFAULT '';
UPDATE order_items SET item_name = (SELECT name FROM items WHERE items.id = order_items.item_id);
