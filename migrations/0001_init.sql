-- consentry's D1 schema. Times are Unix seconds (UTC). No table holds a session id, a
-- binding cookie, a verifier or a token in clear: session ids and binding cookies are stored
-- as SHA-256 hashes (base64url), token sets and PKCE verifiers as AES-GCM ciphertexts
-- (base64url) under CONSENTRY_KEY, bound to their row by the associated data. Transactions
-- are keyed by SHA-256(state); the raw state appears only inside a finished flow's outcome,
-- once the flow is consumed and its state can no longer be used.

-- The app's own users (the demo seeds three; a real app asserts its users with HS256).
CREATE TABLE users (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);

-- Flows between /auth/start and /auth/callback, and what became of them. A callback
-- consumes its row exactly once (UPDATE ... WHERE consumed_at IS NULL RETURNING), so two
-- concurrent callbacks give one code exchange; the row then keeps the outcome for
-- GET /auth/outcome until it is purged an hour after expires_at.
CREATE TABLE transactions (
  state_key        TEXT PRIMARY KEY,          -- SHA-256(state), base64url
  binding_hash     TEXT NOT NULL,             -- SHA-256 of the __Host- binding cookie value
  provider         TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  origin           TEXT NOT NULL,             -- the SPA origin that receives the outcome
  scopes           TEXT NOT NULL,
  nonce            TEXT,
  sealed_verifier  TEXT,                      -- AES-GCM(code_verifier), AAD = state_key; NULL once used
  created_at       INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,          -- created_at + 10 minutes
  consumed_at      INTEGER,                   -- set by the one callback that consumed it
  outcome          TEXT                       -- the outcome JSON: never a code or a token
);
CREATE INDEX transactions_expiry ON transactions (expires_at);

-- A consent is revoked once revoked_at is set and expired once expires_at has passed; the
-- status is computed on read (consentry_core::ConsentStatus), never stored.
CREATE TABLE consents (
  id                   TEXT PRIMARY KEY,
  user_id              TEXT NOT NULL REFERENCES users (id),
  provider             TEXT NOT NULL,
  scopes               TEXT NOT NULL,
  granted_at           INTEGER NOT NULL,
  expires_at           INTEGER,
  revoked_at           INTEGER,
  provider_subject     TEXT,                  -- the id_token's sub, when there is one
  provider_consent_id  TEXT                   -- e.g. Moneyhub's mh:con_id
);
CREATE INDEX consents_by_user ON consents (user_id, provider);

-- One token set per consent, sealed; refreshed one at a time (refresh_lock_until).
CREATE TABLE token_sets (
  consent_id          TEXT PRIMARY KEY REFERENCES consents (id) ON DELETE CASCADE,
  sealed              TEXT NOT NULL,          -- AES-GCM(token set JSON), AAD = consent_id
  access_expires_at   INTEGER,
  refresh_lock_until  INTEGER NOT NULL DEFAULT 0,
  updated_at          INTEGER NOT NULL
);

CREATE TABLE sessions (
  id_hash     TEXT PRIMARY KEY,               -- SHA-256 of the __Host- session cookie value
  user_id     TEXT NOT NULL REFERENCES users (id),
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
);

-- The seed scenario's three demo users.
INSERT INTO users (id, name, created_at) VALUES
  ('usr_alice', 'Alice Martin', 1790000000),
  ('usr_bob',   'Bob Nguyen',   1790000000),
  ('usr_carol', 'Carol Okafor', 1790000000);
