//! D1: transactions, outcomes, consents, sealed token sets, sessions, users and their
//! profiles at providers (`migrations/`). Every write that must not be half-done is one D1 batch,
//! which D1 runs as a single SQL transaction.

use consentry_core::encoding::log_message;
use consentry_core::{Error, ErrorCode, Outcome, Result, StoredConsent};
use js_sys::futures::JsFuture;
use js_sys::{Array, Reflect, JSON};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use worker::worker_sys::D1Database as D1DatabaseSys;
use worker::{D1Database, D1PreparedStatement};

/// Outcomes stay readable this long after their flow's deadline, then are purged.
pub(crate) const OUTCOME_RETENTION_SECS: u64 = 3600;

/// A transaction as `/auth/start` stores it.
pub(crate) struct NewTransaction<'a> {
    pub state_key: &'a str,
    pub binding_hash: &'a str,
    pub provider: &'a str,
    pub user_id: &'a str,
    pub origin: &'a str,
    pub scopes: &'a str,
    pub nonce: Option<&'a str>,
    pub sealed_verifier: &'a str,
    /// The hash of the session cookie this browser sent to `/auth/start` (a same-site
    /// request, so the `SameSite=Strict` cookie comes along): a grant ends that session.
    pub replaces_session: Option<&'a str>,
    /// The profile at the provider the flow asks for (Moneyhub's `sub`), from our records.
    pub provider_subject: Option<&'a str>,
    /// The flow's DPoP private key, sealed (AAD `dpop:` + state key), for DPoP providers.
    pub sealed_dpop_key: Option<&'a str>,
    pub created_at: u64,
    pub expires_at: u64,
}

/// A transaction the callback consumed.
#[derive(Deserialize)]
pub(crate) struct Transaction {
    pub provider: String,
    pub user_id: String,
    pub origin: String,
    pub scopes: String,
    pub nonce: Option<String>,
    pub sealed_verifier: Option<String>,
    pub replaces_session: Option<String>,
    pub provider_subject: Option<String>,
    pub sealed_dpop_key: Option<String>,
    pub expires_at: u64,
}

/// What an attempt to consume a transaction found.
pub(crate) enum Consumed {
    /// This request consumed it; no other request ever will.
    Taken(Transaction),
    /// No transaction has this state.
    Unknown,
    /// It exists, but this browser does not hold its binding cookie.
    NotBound,
    /// It was never consumed and is past its deadline, and this request does not hold its
    /// binding cookie (which lapses with it). Not consumed.
    Expired,
    /// It was started with another provider than the one whose redirect URI the response
    /// came back on: a mix-up. Not consumed.
    ProviderMismatch,
    /// It was consumed before (a replay, or the loser of two concurrent callbacks).
    Replayed,
}

/// A flow's recorded state, for `GET /auth/outcome`.
#[derive(Deserialize)]
pub(crate) struct RecordedFlow {
    pub binding_hash: String,
    pub outcome: Option<String>,
    pub expires_at: u64,
    pub consumed_at: Option<u64>,
}

/// A consent row, as listed to its user.
#[derive(Deserialize)]
pub(crate) struct ConsentRow {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub scopes: String,
    pub granted_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub lapsed_at: Option<u64>,
    pub provider_subject: Option<String>,
    pub provider_consent_id: Option<String>,
}

impl ConsentRow {
    /// The row as the core reads a stored consent.
    pub(crate) fn stored(&self) -> StoredConsent<'_> {
        StoredConsent {
            id: &self.id,
            provider: &self.provider,
            user: &self.user_id,
            scopes: &self.scopes,
            granted_at: self.granted_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            lapsed_at: self.lapsed_at,
            account: self
                .provider_consent_id
                .as_deref()
                .or(self.provider_subject.as_deref()),
        }
    }
}

/// The columns of a consent row, for every query that reads one.
const CONSENT_COLUMNS: &str = "c.id AS id, c.user_id AS user_id, c.provider AS provider, \
     c.scopes AS scopes, c.granted_at AS granted_at, c.expires_at AS expires_at, \
     c.revoked_at AS revoked_at, c.lapsed_at AS lapsed_at, \
     c.provider_subject AS provider_subject, c.provider_consent_id AS provider_consent_id";

/// A consent's sealed token set and its refresh lease.
#[derive(Deserialize)]
pub(crate) struct TokenRow {
    pub sealed: String,
    pub access_expires_at: Option<u64>,
    pub generation: i64,
    /// The lease's end, in milliseconds (0: free).
    pub refresh_lock_until: u64,
    /// When the last refresh failed, in milliseconds.
    pub refresh_failed_at: Option<u64>,
}

/// A refreshed token set, as stored over the one it replaces.
pub(crate) struct RefreshedSet<'a> {
    /// The set, sealed under the consent id.
    pub sealed: &'a str,
    pub access_expires_at: Option<u64>,
    /// When the refresh failed, in milliseconds, for a set stored only to keep what the
    /// provider rotated.
    pub failed_at_ms: Option<u64>,
}

/// A user by id (?1).
const USER_BY_ID: &str = "SELECT id, name FROM users WHERE id = ?1";
/// The user of a live session (?1 its id hash, ?2 now).
const USER_BY_SESSION: &str = "SELECT users.id AS id, users.name AS name FROM sessions \
     JOIN users ON users.id = sessions.user_id WHERE sessions.id_hash = ?1 AND sessions.expires_at > ?2";

/// How a call names its user, for a read of the user together with their consents.
pub(crate) enum UserLookup<'a> {
    /// A user id, which must be a user's.
    Id(&'a str),
    /// A session, by the hash of its cookie value, which must be live.
    Session(&'a str),
}

/// A consent with its token set as it stands (`None`: its tokens are no longer held).
pub(crate) type ConsentWithTokens = (ConsentRow, Option<TokenRow>);

/// A row of one text column, named `text` in the query: one decoder for every such read
/// (each row type's decoder weighs about a kilobyte).
#[derive(Deserialize)]
struct Text {
    text: String,
}

/// An app user.
#[derive(Deserialize)]
pub(crate) struct UserRow {
    pub id: String,
    pub name: String,
}

/// A new consent and its sealed token set.
pub(crate) struct NewConsent<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub provider: &'a str,
    pub scopes: &'a str,
    pub granted_at: u64,
    pub expires_at: Option<u64>,
    pub provider_subject: Option<&'a str>,
    pub provider_consent_id: Option<&'a str>,
    pub sealed_tokens: &'a str,
    pub access_expires_at: Option<u64>,
}

/// A new session for a user.
pub(crate) struct NewSession<'a> {
    pub id_hash: &'a str,
    pub user_id: &'a str,
    pub created_at: u64,
    pub expires_at: u64,
    /// The sessions this browser had before (the hash its flow recorded at `/auth/start`,
    /// and the one the callback carried, if it was same-site), ended as the new one starts,
    /// together with the sessions that directly replaced them (a flow started beside this one
    /// from the same session, which landed first).
    pub replaces: [Option<&'a str>; 2],
}

/// The store over the `DB` binding.
pub(crate) struct Store(D1Database);

impl Store {
    pub(crate) fn new(db: D1Database) -> Self {
        Store(db)
    }

    fn statement(&self, sql: &str, values: &[JsValue]) -> Result<D1PreparedStatement> {
        self.0.prepare(sql).bind(values).map_err(storage)
    }

    /// Runs statements as one D1 batch (one SQL transaction); how many rows each changed.
    async fn batch(&self, statements: Vec<D1PreparedStatement>) -> worker::Result<Vec<usize>> {
        let results = self.batch_results(&statements).await?;
        Ok(results.iter().map(changes).collect())
    }

    /// Runs statements as one D1 batch; D1's result object for each, in order.
    async fn batch_results(
        &self,
        statements: &[D1PreparedStatement],
    ) -> worker::Result<Vec<JsValue>> {
        let database: &D1DatabaseSys = self.0.as_ref().unchecked_ref();
        let statements: Array = statements.iter().map(D1PreparedStatement::inner).collect();
        let results: Array = JsFuture::from(database.batch(statements)?)
            .await?
            .dyn_into()?;
        Ok(results.to_vec())
    }

    /// Stores a new transaction, after purging flows long past their deadline.
    pub(crate) async fn insert_transaction(&self, transaction: &NewTransaction<'_>) -> Result<()> {
        let now = transaction.created_at;
        let purge = self.statement(
            "DELETE FROM transactions WHERE expires_at < ?1",
            &[number(now.saturating_sub(OUTCOME_RETENTION_SECS))],
        )?;
        let insert = self.statement(
            "INSERT INTO transactions (state_key, binding_hash, provider, user_id, origin, scopes, \
             nonce, sealed_verifier, replaces_session, provider_subject, sealed_dpop_key, created_at, \
             expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            &[
                transaction.state_key.into(),
                transaction.binding_hash.into(),
                transaction.provider.into(),
                transaction.user_id.into(),
                transaction.origin.into(),
                transaction.scopes.into(),
                optional(transaction.nonce),
                transaction.sealed_verifier.into(),
                optional(transaction.replaces_session),
                optional(transaction.provider_subject),
                optional(transaction.sealed_dpop_key),
                number(now),
                number(transaction.expires_at),
            ],
        )?;
        self.batch(vec![purge, insert]).await.map_err(|error| {
            if error.to_string().contains("UNIQUE") {
                Error::new(
                    ErrorCode::InvalidState,
                    "this state was already used to start a flow",
                )
            } else {
                storage(error)
            }
        })?;
        Ok(())
    }

    /// Consumes the transaction for `state_key` if `binding_hash` matches, it was started
    /// with `provider` (the one whose redirect URI the response came back on) and nobody has:
    /// one conditional UPDATE, so of two concurrent callbacks exactly one gets `Taken`.
    pub(crate) async fn consume_transaction(
        &self,
        state_key: &str,
        binding_hash: Option<&str>,
        provider: &str,
        now: u64,
    ) -> Result<Consumed> {
        if let Some(binding_hash) = binding_hash {
            let taken = self
                .statement(
                    "UPDATE transactions SET consumed_at = ?1 WHERE state_key = ?2 AND binding_hash = ?3 \
                     AND provider = ?4 AND consumed_at IS NULL RETURNING provider, user_id, origin, \
                     scopes, nonce, sealed_verifier, replaces_session, provider_subject, sealed_dpop_key, \
                     expires_at",
                    &[number(now), state_key.into(), binding_hash.into(), provider.into()],
                )?
                .first_row::<Transaction>()
                .await
                .map_err(storage)?;
            if let Some(transaction) = taken {
                return Ok(Consumed::Taken(transaction));
            }
        }
        // Not taken: tell why, in one read. A bound row of this provider the UPDATE did not
        // take was consumed already. One whose binding this request does not hold (none, or
        // another) and that lapsed unconsumed is expired: a browser's binding cookie lapses
        // with its flow, and a stranger's learns only what its state already says.
        let seen = self
            .statement(
                "SELECT CASE WHEN binding_hash IS NOT ?2 THEN \
                 CASE WHEN consumed_at IS NULL AND expires_at <= ?4 THEN 'expired' ELSE 'unbound' END \
                 WHEN provider <> ?3 THEN 'provider' ELSE 'replayed' END AS text \
                 FROM transactions WHERE state_key = ?1",
                &[
                    state_key.into(),
                    binding_hash.map_or(JsValue::NULL, JsValue::from),
                    provider.into(),
                    number(now),
                ],
            )?
            .first_read::<Text>()
            .await?;
        Ok(match seen.as_ref().map(|seen| seen.text.as_str()) {
            None => Consumed::Unknown,
            Some("expired") => Consumed::Expired,
            Some("unbound") => Consumed::NotBound,
            Some("provider") => Consumed::ProviderMismatch,
            _ => Consumed::Replayed,
        })
    }

    /// Records a failed or denied flow's outcome and forgets its verifier, unless the flow
    /// has an outcome already (the first one recorded stands). Whether it was recorded.
    pub(crate) async fn record_outcome(&self, state_key: &str, outcome_json: &str) -> Result<bool> {
        let changed = self
            .outcome_statement(state_key, outcome_json)?
            .run_changes()
            .await
            .map_err(storage)?;
        Ok(changed > 0)
    }

    fn outcome_statement(
        &self,
        state_key: &str,
        outcome_json: &str,
    ) -> Result<D1PreparedStatement> {
        self.statement(
            "UPDATE transactions SET outcome = ?1, sealed_verifier = NULL, sealed_dpop_key = NULL \
             WHERE state_key = ?2 AND outcome IS NULL",
            &[outcome_json.into(), state_key.into()],
        )
    }

    /// The outcome on record for a flow, if it has one.
    pub(crate) async fn recorded_outcome(&self, state_key: &str) -> Result<Outcome> {
        let unreadable = || {
            Error::new(
                ErrorCode::RecordUnreadable,
                "the recorded outcome is unreadable",
            )
        };
        let flow = self
            .recorded_flow(state_key)
            .await?
            .ok_or_else(unreadable)?;
        Outcome::parse(flow.outcome.as_deref().ok_or_else(unreadable)?).map_err(|_| unreadable())
    }

    /// Whether a consent with this id is stored.
    pub(crate) async fn consent_stored(&self, consent_id: &str) -> Result<bool> {
        let found = self
            .statement(
                "SELECT id AS text FROM consents WHERE id = ?1",
                &[consent_id.into()],
            )?
            .first_read::<Text>()
            .await?;
        Ok(found.is_some())
    }

    /// Records a grant in one batch: the consent, its sealed tokens, the new session (ending
    /// the ones it replaces, and expired ones) and, last, the flow's outcome. Every statement
    /// lands only while the flow has no outcome yet, so a grant whose flow was meanwhile
    /// reported as interrupted stores nothing and is refused here (its tokens are then the
    /// caller's to revoke). All of it lands, or none of it.
    pub(crate) async fn record_grant(
        &self,
        state_key: &str,
        outcome_json: &str,
        consent: &NewConsent<'_>,
        session: &NewSession<'_>,
    ) -> Result<()> {
        const OPEN: &str =
            "EXISTS (SELECT 1 FROM transactions WHERE state_key = ?1 AND outcome IS NULL)";
        let [replaces_a, replaces_b] = session.replaces;
        let batch = vec![
            self.statement(
                &format!(
                    "INSERT INTO consents (id, user_id, provider, scopes, granted_at, expires_at, \
                     provider_subject, provider_consent_id) SELECT ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE {OPEN}"
                ),
                &[
                    state_key.into(),
                    consent.id.into(),
                    consent.user_id.into(),
                    consent.provider.into(),
                    consent.scopes.into(),
                    number(consent.granted_at),
                    consent.expires_at.map_or(JsValue::NULL, number),
                    optional(consent.provider_subject),
                    optional(consent.provider_consent_id),
                ],
            )?,
            self.statement(
                &format!(
                    "INSERT INTO token_sets (consent_id, sealed, access_expires_at, updated_at) \
                     SELECT ?2, ?3, ?4, ?5 WHERE {OPEN}"
                ),
                &[
                    state_key.into(),
                    consent.id.into(),
                    consent.sealed_tokens.into(),
                    consent.access_expires_at.map_or(JsValue::NULL, number),
                    number(consent.granted_at),
                ],
            )?,
            // Before the insert: the new session names what it replaces, too.
            self.statement(
                &format!(
                    "DELETE FROM sessions WHERE {OPEN} AND (id_hash IN (?2, ?3) OR replaces IN (?2, ?3) \
                     OR expires_at <= ?4)"
                ),
                &[
                    state_key.into(),
                    optional(replaces_a),
                    optional(replaces_b),
                    number(session.created_at),
                ],
            )?,
            self.statement(
                &format!(
                    "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, replaces) \
                     SELECT ?2, ?3, ?4, ?5, ?6 WHERE {OPEN}"
                ),
                &[
                    state_key.into(),
                    session.id_hash.into(),
                    session.user_id.into(),
                    number(session.created_at),
                    number(session.expires_at),
                    optional(replaces_a.or(replaces_b)),
                ],
            )?,
            self.outcome_statement(state_key, outcome_json)?,
        ];
        let results = self.batch(batch).await.map_err(storage)?;
        if results.last().copied().unwrap_or(0) == 0 {
            return Err(Error::new(
                ErrorCode::ExchangeInterrupted,
                "the flow was already reported as interrupted; the grant was not kept",
            ));
        }
        Ok(())
    }

    /// The recorded flow for `state_key`, if any.
    pub(crate) async fn recorded_flow(&self, state_key: &str) -> Result<Option<RecordedFlow>> {
        self.statement(
            "SELECT binding_hash, outcome, expires_at, consumed_at FROM transactions WHERE state_key = ?1",
            &[state_key.into()],
        )?
        .first_read::<RecordedFlow>()
        .await
    }

    /// The app user's profile at a provider (Moneyhub's `userId`), if one is recorded.
    pub(crate) async fn provider_user(
        &self,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<String>> {
        let row = self
            .statement(
                "SELECT subject AS text FROM provider_users WHERE user_id = ?1 AND provider = ?2",
                &[user_id.into(), provider.into()],
            )?
            .first_read::<Text>()
            .await?;
        Ok(row.map(|row| row.text))
    }

    /// Claims the making of the app user's profile at a provider until `until_ms`, if no one
    /// holds a live claim: one conditional upsert, so of any number of starts one gets it.
    pub(crate) async fn claim_provider_user(
        &self,
        user_id: &str,
        provider: &str,
        claim: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool> {
        self.changed(
            "INSERT INTO provider_user_claims (user_id, provider, claim, until_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (user_id, provider) DO UPDATE SET claim = excluded.claim, until_ms = excluded.until_ms \
             WHERE provider_user_claims.until_ms <= ?5",
            &[user_id.into(), provider.into(), claim.into(), number(until_ms), number(now_ms)],
        )
        .await
    }

    /// Records the profile made under `claim` and gives the claim up, in one batch. A
    /// profile already recorded stands (the first one made is the user's).
    pub(crate) async fn record_provider_user(
        &self,
        user_id: &str,
        provider: &str,
        subject: &str,
        claim: &str,
        now: u64,
    ) -> Result<()> {
        let batch = vec![
            self.statement(
                "INSERT INTO provider_users (user_id, provider, subject, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (user_id, provider) DO NOTHING",
                &[user_id.into(), provider.into(), subject.into(), number(now)],
            )?,
            self.claim_release(user_id, provider, claim)?,
        ];
        self.batch(batch).await.map_err(storage)?;
        Ok(())
    }

    /// Gives up a claim that made no profile.
    pub(crate) async fn release_provider_user_claim(
        &self,
        user_id: &str,
        provider: &str,
        claim: &str,
    ) -> Result<()> {
        self.claim_release(user_id, provider, claim)?
            .run_changes()
            .await
            .map_err(storage)?;
        Ok(())
    }

    fn claim_release(
        &self,
        user_id: &str,
        provider: &str,
        claim: &str,
    ) -> Result<D1PreparedStatement> {
        self.statement(
            "DELETE FROM provider_user_claims WHERE user_id = ?1 AND provider = ?2 AND claim = ?3",
            &[user_id.into(), provider.into(), claim.into()],
        )
    }

    /// An app user by id.
    pub(crate) async fn user(&self, id: &str) -> Result<Option<UserRow>> {
        self.statement(USER_BY_ID, &[id.into()])?
            .first_read::<UserRow>()
            .await
    }

    /// Records an asserted user the first time it is seen (outside the demo).
    pub(crate) async fn ensure_user(&self, id: &str, name: &str, now: u64) -> Result<()> {
        self.statement(
            "INSERT INTO users (id, name, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[id.into(), name.into(), number(now)],
        )?
        .run_changes()
        .await
        .map_err(storage)?;
        Ok(())
    }

    /// Every app user, for the demo page.
    pub(crate) async fn users(&self) -> Result<Vec<UserRow>> {
        self.statement("SELECT id, name FROM users ORDER BY name", &[])?
            .all_read::<UserRow>()
            .await
    }

    /// The user of a live session.
    pub(crate) async fn session_user(&self, id_hash: &str, now: u64) -> Result<Option<UserRow>> {
        self.statement(USER_BY_SESSION, &[id_hash.into(), number(now)])?
            .first_read::<UserRow>()
            .await
    }

    /// Ends a session.
    pub(crate) async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.statement("DELETE FROM sessions WHERE id_hash = ?1", &[id_hash.into()])?
            .run_changes()
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// A user's consents, newest first.
    pub(crate) async fn consents(&self, user_id: &str) -> Result<Vec<ConsentRow>> {
        self.statement(
            &format!(
                "SELECT {CONSENT_COLUMNS} FROM consents c WHERE c.user_id = ?1 \
                 ORDER BY c.granted_at DESC, c.id"
            ),
            &[user_id.into()],
        )?
        .all_read::<ConsentRow>()
        .await
    }

    /// The consents with `provider` of the user `lookup` names, newest first, each with its
    /// token set: what `/api` needs, in one batch (one round trip, one transaction), the
    /// consents read for the very user the first statement finds. `None`: no such user (or
    /// no live session).
    pub(crate) async fn user_with_consents(
        &self,
        lookup: UserLookup<'_>,
        provider: &str,
        now: u64,
    ) -> Result<Option<Vec<ConsentWithTokens>>> {
        let (user_sql, condition, values) = match lookup {
            UserLookup::Id(id) => (USER_BY_ID, "c.user_id = ?1 AND c.provider = ?3", vec![id.into()]),
            UserLookup::Session(id_hash) => (
                USER_BY_SESSION,
                "c.user_id = (SELECT user_id FROM sessions WHERE id_hash = ?1 AND expires_at > ?2) \
                 AND c.provider = ?3",
                vec![id_hash.into(), number(now)],
            ),
        };
        // The provider is ?3 in both shapes (a user id leaves ?2 unbound: NULL).
        let mut consent_values = values.clone();
        consent_values.resize(2, JsValue::NULL);
        consent_values.push(provider.into());
        let statements = vec![
            self.statement(user_sql, &values)?,
            self.consents_with_token_sets(condition, &consent_values)?,
        ];
        let results = retried(|| self.batch_results(&statements)).await?;
        let (users, consents) = (result_rows(&results, 0)?, result_rows(&results, 1)?);
        let found = decode::<Option<Vec<UserRow>>>(&users)
            .map_err(storage)?
            .is_some_and(|users| !users.is_empty());
        match found {
            true => consent_rows(&consents).map(Some).map_err(storage),
            false => Ok(None),
        }
    }

    /// Consents and their token sets (`None` where no tokens are held) that `condition`
    /// picks, newest first.
    fn consents_with_token_sets(
        &self,
        condition: &str,
        values: &[JsValue],
    ) -> Result<D1PreparedStatement> {
        self.statement(
            &format!(
                "SELECT {CONSENT_COLUMNS}, t.sealed AS sealed, t.access_expires_at AS access_expires_at, \
                 t.generation AS generation, t.refresh_lock_until AS refresh_lock_until, \
                 t.refresh_failed_at AS refresh_failed_at FROM consents c \
                 LEFT JOIN token_sets t ON t.consent_id = c.id WHERE {condition} \
                 ORDER BY c.granted_at DESC, c.id"
            ),
            values,
        )
    }

    /// One of a user's consents and its sealed token set (if still held).
    pub(crate) async fn consent(
        &self,
        user_id: &str,
        consent_id: &str,
    ) -> Result<Option<(ConsentRow, Option<String>)>> {
        let statement = self.consents_with_token_sets(
            "c.id = ?1 AND c.user_id = ?2",
            &[consent_id.into(), user_id.into()],
        )?;
        let results = retried(|| self.batch_results(std::slice::from_ref(&statement))).await?;
        let consent = consent_rows(&result_rows(&results, 0)?)
            .map_err(storage)?
            .into_iter()
            .next();
        Ok(consent.map(|(consent, tokens)| (consent, tokens.map(|tokens| tokens.sealed))))
    }

    /// A consent's token set and lease, if its tokens are still held.
    pub(crate) async fn token_set(&self, consent_id: &str) -> Result<Option<TokenRow>> {
        self.statement(
            "SELECT sealed, access_expires_at, generation, refresh_lock_until, refresh_failed_at \
             FROM token_sets WHERE consent_id = ?1",
            &[consent_id.into()],
        )?
        .first_read::<TokenRow>()
        .await
    }

    /// Replaces a token set's sealed value with the same tokens sealed under the current key,
    /// if it is still `old` (a refresh that landed meanwhile wins).
    pub(crate) async fn reseal(&self, consent_id: &str, old: &str, new: &str) -> Result<bool> {
        self.changed(
            "UPDATE token_sets SET sealed = ?1 WHERE consent_id = ?2 AND sealed = ?3",
            &[new.into(), consent_id.into(), old.into()],
        )
        .await
    }

    /// Takes the refresh lease of a consent's token set until `until_ms`, if it is free at
    /// `now_ms` and the set is still `generation`: one conditional UPDATE, so of any number
    /// of callers in any number of isolates, one gets it.
    pub(crate) async fn take_refresh_lease(
        &self,
        consent_id: &str,
        generation: i64,
        lease: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool> {
        self.changed(
            "UPDATE token_sets SET refresh_lease = ?1, refresh_lock_until = ?2 \
             WHERE consent_id = ?3 AND generation = ?4 AND refresh_lock_until <= ?5",
            &[
                lease.into(),
                number(until_ms),
                consent_id.into(),
                JsValue::from_f64(generation as f64),
                number(now_ms),
            ],
        )
        .await
    }

    /// Stores a refreshed token set over `generation`, moving it on by one and freeing the
    /// lease; with `failed_at_ms`, notes in the same write that the refresh failed then (a
    /// set stored only to keep a rotated refresh token), so that its waiters stop waiting.
    /// `false` when the set is no longer that generation (another refresh landed).
    pub(crate) async fn store_refreshed(
        &self,
        consent_id: &str,
        generation: i64,
        refreshed: &RefreshedSet<'_>,
        now: u64,
    ) -> Result<bool> {
        self.changed(
            "UPDATE token_sets SET sealed = ?1, access_expires_at = ?2, generation = generation + 1, \
             refresh_lease = NULL, refresh_lock_until = 0, refresh_failed_at = ?3, updated_at = ?4 \
             WHERE consent_id = ?5 AND generation = ?6",
            &[
                refreshed.sealed.into(),
                refreshed.access_expires_at.map_or(JsValue::NULL, number),
                refreshed.failed_at_ms.map_or(JsValue::NULL, number),
                number(now),
                consent_id.into(),
                JsValue::from_f64(generation as f64),
            ],
        )
        .await
    }

    /// Frees a refresh lease this caller holds; with `failed_at_ms`, notes that its refresh
    /// failed then (so that callers waiting on it stop waiting).
    pub(crate) async fn release_refresh_lease(
        &self,
        consent_id: &str,
        lease: &str,
        failed_at_ms: Option<u64>,
    ) -> Result<()> {
        self.changed(
            "UPDATE token_sets SET refresh_lease = NULL, refresh_lock_until = 0, \
             refresh_failed_at = COALESCE(?1, refresh_failed_at) WHERE consent_id = ?2 AND refresh_lease = ?3",
            &[failed_at_ms.map_or(JsValue::NULL, number), consent_id.into(), lease.into()],
        )
        .await?;
        Ok(())
    }

    /// Marks a consent lapsed (the provider refused to refresh it) and forgets its tokens,
    /// in one batch, if this caller still holds the refresh `lease`: a holder whose lease
    /// ran out must not wipe a set another one stored since. Whether it lapsed.
    pub(crate) async fn lapse_consent(
        &self,
        consent_id: &str,
        lease: &str,
        now: u64,
    ) -> Result<bool> {
        let batch = vec![
            self.statement(
                "UPDATE consents SET lapsed_at = ?1 WHERE id = ?2 AND lapsed_at IS NULL AND EXISTS \
                 (SELECT 1 FROM token_sets WHERE consent_id = ?2 AND refresh_lease = ?3)",
                &[number(now), consent_id.into(), lease.into()],
            )?,
            self.statement(
                "DELETE FROM token_sets WHERE consent_id = ?1 AND refresh_lease = ?2",
                &[consent_id.into(), lease.into()],
            )?,
        ];
        let results = self.batch(batch).await.map_err(storage)?;
        Ok(results.last().copied().unwrap_or(0) > 0)
    }

    /// Runs one write; whether it changed a row.
    async fn changed(&self, sql: &str, values: &[JsValue]) -> Result<bool> {
        let changed = self.statement(sql, values)?.run_changes().await;
        Ok(changed.map_err(storage)? > 0)
    }

    /// Marks a consent lapsed because its provider said the consent itself is gone (a data
    /// API's answer, not a refresh), unless it lapsed or was revoked before, and forgets its
    /// tokens, in one batch.
    pub(crate) async fn withdraw_consent(&self, consent_id: &str, now: u64) -> Result<()> {
        self.end_consent(
            "lapsed_at = ?1 WHERE id = ?2 AND lapsed_at IS NULL AND revoked_at IS NULL",
            consent_id,
            now,
        )
        .await
    }

    /// Marks a consent revoked and forgets its tokens, in one batch.
    pub(crate) async fn revoke_consent(&self, consent_id: &str, now: u64) -> Result<()> {
        self.end_consent(
            "revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            consent_id,
            now,
        )
        .await
    }

    /// `UPDATE consents SET {set}` (?1 the time, ?2 the consent) and the deletion of its token
    /// set, in one batch.
    async fn end_consent(&self, set: &str, consent_id: &str, now: u64) -> Result<()> {
        let batch = vec![
            self.statement(
                &format!("UPDATE consents SET {set}"),
                &[number(now), consent_id.into()],
            )?,
            self.statement(
                "DELETE FROM token_sets WHERE consent_id = ?1",
                &[consent_id.into()],
            )?,
        ];
        self.batch(batch).await.map_err(storage)?;
        Ok(())
    }
}

fn number(value: u64) -> JsValue {
    // Unix seconds, and milliseconds, fit an f64 exactly (below 2^53) for the next 285
    // thousand years.
    JsValue::from_f64(value as f64)
}

/// Reads retried as D1 retries them in production (up to two more attempts on a failure,
/// with a short backoff): a read has no side effect, and a busy database (two local workerd
/// processes on one SQLite file, say) refuses one now and then.
trait ReadRetry {
    async fn first_read<T: DeserializeOwned>(&self) -> Result<Option<T>>;
    async fn all_read<T: DeserializeOwned>(&self) -> Result<Vec<T>>;
}

impl ReadRetry for D1PreparedStatement {
    async fn first_read<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        retried(|| self.first_row::<T>()).await
    }

    async fn all_read<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        retried(|| self.all_rows::<T>()).await
    }
}

/// D1 through its JavaScript objects rather than worker's typed wrappers: a row goes through
/// `JSON.stringify` into serde_json, which the Worker carries anyway, and a write's count of
/// changed rows is read off its `meta`. worker's wrappers decode with serde_wasm_bindgen,
/// which (with the float formatting it brings) weighs a tenth of the Worker.
trait D1Call {
    async fn first_row<T: DeserializeOwned>(&self) -> worker::Result<Option<T>>;
    async fn all_rows<T: DeserializeOwned>(&self) -> worker::Result<Vec<T>>;
    async fn run_changes(&self) -> worker::Result<usize>;
}

impl D1Call for D1PreparedStatement {
    async fn first_row<T: DeserializeOwned>(&self) -> worker::Result<Option<T>> {
        let row = JsFuture::from(self.inner().first(None)?).await?;
        match row.is_null_or_undefined() {
            true => Ok(None),
            false => decode(&row).map(Some),
        }
    }

    async fn all_rows<T: DeserializeOwned>(&self) -> worker::Result<Vec<T>> {
        let result = JsFuture::from(self.inner().all()?).await?;
        let rows = Reflect::get(&result, &"results".into())?;
        match rows.is_null_or_undefined() {
            true => Ok(Vec::new()),
            false => decode(&rows),
        }
    }

    async fn run_changes(&self) -> worker::Result<usize> {
        let result = JsFuture::from(self.inner().run()?).await?;
        Ok(changes(&result))
    }
}

/// The rows (a JSON array) of a batch's `at`-th statement.
fn result_rows(results: &[JsValue], at: usize) -> Result<JsValue> {
    let result = results.get(at).cloned().unwrap_or(JsValue::NULL);
    Reflect::get(&result, &"results".into()).map_err(|error| storage(error.into()))
}

/// Rows of the consents-with-token-sets query.
fn consent_rows(rows: &JsValue) -> worker::Result<Vec<ConsentWithTokens>> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(flatten)]
        consent: ConsentRow,
        sealed: Option<String>,
        access_expires_at: Option<u64>,
        generation: Option<i64>,
        refresh_lock_until: Option<u64>,
        refresh_failed_at: Option<u64>,
    }
    if rows.is_null_or_undefined() {
        return Ok(Vec::new());
    }
    let rows: Vec<Row> = decode(rows)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let tokens = row.sealed.map(|sealed| TokenRow {
                sealed,
                access_expires_at: row.access_expires_at,
                generation: row.generation.unwrap_or_default(),
                refresh_lock_until: row.refresh_lock_until.unwrap_or_default(),
                refresh_failed_at: row.refresh_failed_at,
            });
            (row.consent, tokens)
        })
        .collect())
}

/// A D1 row (or array of rows) as `T`, through its JSON text: D1 gives plain objects of
/// numbers, strings and nulls, which JSON carries exactly.
fn decode<T: DeserializeOwned>(value: &JsValue) -> worker::Result<T> {
    let text = String::from(JSON::stringify(value)?);
    Ok(serde_json::from_slice(text.as_bytes())?)
}

/// Runs a read up to three times, with a short growing pause and some jitter between.
async fn retried<T, F: std::future::Future<Output = worker::Result<T>>>(
    read: impl Fn() -> F,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt == 2 => return Err(storage(error)),
            Err(_) => attempt += 1,
        }
        let jitter = u64::from(crate::random::random_bytes::<1>().map_or(0, |[byte]| byte)) % 20;
        worker::Delay::from(std::time::Duration::from_millis(
            20 * attempt * attempt + jitter,
        ))
        .await;
    }
}

/// How many rows a statement changed, from a D1 result's `meta.changes`.
fn changes(result: &JsValue) -> usize {
    Reflect::get(result, &"meta".into())
        .and_then(|meta| Reflect::get(&meta, &"changes".into()))
        .ok()
        .and_then(|changes| changes.as_f64())
        .map_or(0, |changes| changes as usize)
}

fn optional(value: Option<&str>) -> JsValue {
    value.map_or(JsValue::NULL, JsValue::from_str)
}

/// A D1 failure, reported as `storage_failed`. D1's messages carry SQL and, for a value of
/// a type it cannot bind, that value; the values bound here are ids, hashes, times and
/// ciphertexts (never a token in clear), so its messages are logged, control characters
/// escaped. A row that failed to decode is logged by kind only, since a decoder's message may
/// quote the value it choked on.
fn storage(error: worker::Error) -> Error {
    match error {
        worker::Error::SerdeJsonError(_) | worker::Error::SerdeWasmBindgenError(_) => {
            worker::console_error!("consentry: storage: a row did not decode");
        }
        error => worker::console_error!("consentry: storage: {}", log_message(&error.to_string())),
    }
    Error::new(
        ErrorCode::StorageFailed,
        "consentry's storage failed; try again",
    )
}
