-- 0004: GET /v1/api-keys pages like every other list, sorted by id or by created_at.
--
-- api_keys_user_id_id (0002) serves the caller's keys in id order, and a cursor starts its
-- scan. Sorted by creation, that index finds the caller's keys but not their order: every
-- page would read and sort all of them first. This one gives them in order.

-- GET /v1/api-keys?sort=created_at (and -created_at): the caller's keys by creation.
CREATE INDEX api_keys_user_id_created_at_id ON api_keys (user_id, created_at, id);
