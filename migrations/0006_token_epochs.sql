-- 0006: a token epoch per user, so that a password change or a logout everywhere ends every
-- access token of the account on the very next request.
--
-- An access token carries the epoch its user had when it was made (the "ep" claim, auth.py);
-- a password change and POST /v1/auth/logout-all add one to users.token_epoch, and every
-- request with an older token is refused (accounts.token_user). Tokens made before this
-- migration carry no "ep" and count as epoch 0, every account's first, so they keep working
-- until the account's first such event.
--
-- No new index: the epoch is read with the role by the primary key (sql_users.get_token_state),
-- and bumped by it.

ALTER TABLE users ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0 CHECK (token_epoch >= 0);
