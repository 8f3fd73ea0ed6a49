-- 0005: a login's refresh tokens get an absolute lifetime, and browser sessions an idle one.
--
-- Each refresh token carries the moment its family (its login) started, copied from token to
-- token as they rotate: a refresh grants up to 30 days, never past that start plus
-- REFRESH_FAMILY_MAX_SECONDS. Each session carries its last use, written at most once a minute.
--
-- No new index: POST /v1/auth/refresh reads the start off the token row it finds by its hash
-- (refresh_tokens_token_hash_unique), and finds a rotated token's successor the same way;
-- every cookie request reads last_used_at off the session it finds by its hash
-- (sessions_session_hash_unique), and rewrites it by the primary key.
--
-- SQLite cannot add a NOT NULL column without a default. The '' default only lets ALTER TABLE
-- run: the UPDATEs below give every existing row its real value, inserts always name one, and
-- '' sorts before every timestamp, so a row that somehow kept it counts as expired (fail closed).

ALTER TABLE refresh_tokens ADD COLUMN family_started_at TEXT NOT NULL DEFAULT '';

-- A family started when its first token was made.
UPDATE refresh_tokens SET family_started_at = (
    SELECT min(first.created_at) FROM refresh_tokens AS first WHERE first.family_id = refresh_tokens.family_id
);

ALTER TABLE sessions ADD COLUMN last_used_at TEXT NOT NULL DEFAULT '';

-- Never recorded before: a session counts as last used at its login, so one idle since then
-- logs in again once rather than being trusted on no evidence.
UPDATE sessions SET last_used_at = created_at;
