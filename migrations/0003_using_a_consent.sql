-- Using a consent (the /api route): tokens refreshed one at a time per consent, across
-- isolates, on a lease every isolate sees; consents that lapse when the provider refuses a
-- refresh.

-- When the provider refused to refresh the consent's tokens (invalid_grant): the consent is
-- expired from then on and its tokens are forgotten.
ALTER TABLE consents ADD COLUMN lapsed_at INTEGER;

-- The refresh lease. refresh_lock_until (from 0001) is the lease's end in milliseconds: a
-- caller takes the lease with one conditional UPDATE (free, and the token set still the
-- generation it read), refreshes, and stores the new token set with generation + 1; callers
-- that find the lease taken wait for that generation instead of refreshing again.
ALTER TABLE token_sets ADD COLUMN refresh_lease TEXT;          -- the holder's random id
ALTER TABLE token_sets ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE token_sets ADD COLUMN refresh_failed_at INTEGER;   -- ms; a failed refresh ends its waiters' wait
