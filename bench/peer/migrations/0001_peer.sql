-- The benchmark peer's tables (bench/peer/worker.mjs): what it keeps for a flow, a consent
-- and its sealed tokens, as consentry's migrations keep them.
CREATE TABLE flows (
  state_key TEXT PRIMARY KEY,
  binding_hash TEXT NOT NULL,
  user_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  sealed_verifier TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  consumed_at INTEGER
);
CREATE TABLE consents (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  provider TEXT NOT NULL,
  subject TEXT NOT NULL,
  scopes TEXT NOT NULL,
  granted_at INTEGER NOT NULL
);
CREATE INDEX consents_by_user ON consents (user_id, provider, granted_at);
CREATE TABLE token_sets (
  consent_id TEXT PRIMARY KEY REFERENCES consents (id),
  sealed TEXT NOT NULL,
  access_expires_at INTEGER NOT NULL
);
