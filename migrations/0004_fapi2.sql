-- FAPI 2.0 at the edge: a DPoP key pair per consent, made at /auth/start. Its private JWK is
-- sealed with the flow (AES-GCM, AAD "dpop:" + state_key) until the code is exchanged, then
-- with the token set; the column is cleared when the flow ends, as the verifier is.
ALTER TABLE transactions ADD COLUMN sealed_dpop_key TEXT;
