-- The security review's mends (issue 14): sessions that really end when a grant replaces
-- them, and the app user's profile at a provider kept by the Worker, never chosen by the
-- browser.

-- The session cookie's hash the browser sent to /auth/start (a same-site request, so the
-- SameSite=Strict cookie comes along; the provider's cross-site redirect never carries it).
ALTER TABLE transactions ADD COLUMN replaces_session TEXT;
-- The profile at the provider the flow asked for (Moneyhub: the claims request's sub); the
-- id_token must name exactly it.
ALTER TABLE transactions ADD COLUMN provider_subject TEXT;

-- The session a grant's new session replaced: a grant ends the session its flow started
-- from and every session that directly replaced that one (flows started side by side).
ALTER TABLE sessions ADD COLUMN replaces TEXT;
CREATE INDEX sessions_by_replaced ON sessions (replaces);

-- An app user's profile at a provider that keeps one (Moneyhub's userId, made once per app
-- user with a client_credentials user:create token).
CREATE TABLE provider_users (
  user_id     TEXT NOT NULL REFERENCES users (id),
  provider    TEXT NOT NULL,
  subject     TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (user_id, provider)
);
