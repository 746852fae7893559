-- The providers themselves (TrueLayer, Moneyhub, Connect): an app user's Moneyhub profile is
-- made once, by whichever start claims it first.

-- A start making the app user's profile at a provider holds this claim (a random id, until
-- until_ms, in milliseconds) while it calls the provider; another start for the same user and
-- provider waits for the profile instead of making a second one. A claim whose holder died
-- lapses, and the next start takes it.
CREATE TABLE provider_user_claims (
  user_id   TEXT NOT NULL REFERENCES users (id),
  provider  TEXT NOT NULL,
  claim     TEXT NOT NULL,
  until_ms  INTEGER NOT NULL,
  PRIMARY KEY (user_id, provider)
);
