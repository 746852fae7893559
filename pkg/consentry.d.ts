// Types for consentry's browser package (hand-written; the Wasm module's ABI is internal).

/** Where the Wasm module comes from, when not from the package's own file. */
export type WasmSource =
  | WebAssembly.Module
  | BufferSource
  | Response
  | Promise<Response>
  | URL
  | string;

export interface InitOptions {
  /** The Wasm module or its URL; by default the package's own `wasm/consentry_bg.wasm`. */
  wasm?: WasmSource;
  /** The custom element's name (default `consentry-connect`); `null` defines none. */
  elementName?: string | null;
}

/**
 * Loads the Wasm module once (later calls share the first load) and defines the
 * `<consentry-connect>` element. Await it before `connect()`.
 */
export function init(options?: InitOptions): Promise<void>;

/** The SDK's own codes. */
export type ConsentryErrorCode =
  | 'popup_blocked'
  | 'popup_closed'
  | 'timeout'
  | 'flow_in_progress'
  | 'not_initialized'
  | 'network_error'
  | 'state_mismatch'
  | 'invalid_state'
  | 'iss_mismatch'
  | 'iss_missing'
  | 'unknown_transaction'
  | 'transaction_not_bound'
  | 'transaction_expired'
  | 'transaction_replayed'
  | 'outcome_pending'
  | 'exchange_interrupted'
  | 'duplicate_parameter'
  | 'missing_parameter'
  | 'forbidden_parameter'
  | 'invalid_verifier'
  | 'token_exchange_failed'
  | 'invalid_token_response'
  | 'id_token_missing'
  | 'id_token_invalid'
  | 'jwt_malformed'
  | 'jwt_alg_not_allowed'
  | 'jwt_crit_unsupported'
  | 'jwt_signature_invalid'
  | 'jwk_not_found'
  | 'jwk_not_yet_known'
  | 'jwk_invalid'
  | 'discovery_invalid'
  | 'pkce_not_supported'
  | 'invalid_configuration'
  | 'invalid_provider_response'
  | 'provider_mismatch'
  | 'provider_user_missing'
  | 'provider_user_pending'
  | 'unknown_provider'
  | 'par_failed'
  | 'invalid_url'
  | 'origin_not_allowed'
  | 'csrf_header_missing'
  | 'invalid_outcome'
  | 'invalid_user'
  | 'invalid_parameter'
  | 'session_required'
  | 'consent_not_found'
  | 'consent_ambiguous'
  | 'consent_expired'
  | 'invalid_api_path'
  | 'refresh_failed'
  | 'upstream_redirect'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'rate_limited'
  | 'upstream_too_large'
  | 'upstream_error'
  | 'revocation_failed'
  | 'provider_unreachable'
  | 'storage_failed'
  | 'record_unreadable'
  | 'not_found';

/** RFC 6749 / OpenID Connect error strings a provider may send, kept as sent. */
export type OAuthErrorCode =
  | 'access_denied'
  | 'invalid_request'
  | 'unauthorized_client'
  | 'unsupported_response_type'
  | 'invalid_scope'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unsupported_grant_type'
  | 'interaction_required'
  | 'login_required'
  | 'account_selection_required'
  | 'consent_required'
  | 'invalid_request_uri'
  | 'invalid_request_object'
  | 'request_not_supported'
  | 'request_uri_not_supported'
  | 'registration_not_supported'
  | 'unsupported_token_type'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce';

/** Any code: the known ones, or an extension string a provider sent. */
export type ErrorCode = ConsentryErrorCode | OAuthErrorCode | (string & {});

/** The one error shape. `description` explains; it never holds a token, code or verifier. */
export class ConsentError extends Error {
  constructor(code: ErrorCode, description?: string, extra?: { status?: number; body?: unknown });
  readonly name: 'ConsentError';
  readonly code: ErrorCode;
  readonly description: string;
  /** From `api()`: the HTTP status of an answer that was not 2xx. */
  readonly status?: number;
  /** From `api()` with `upstream_error`: the provider's own error body (JSON, or text). */
  readonly body?: unknown;
}

/** A consent as a flow's outcome reports it. Times are RFC 3339 UTC. */
export interface Consent {
  id: string;
  provider: string;
  user: string;
  scopes: string[];
  granted_at: string;
  /** When it lapses, if the provider limits it (e.g. 90 days in open banking). */
  expires_at: string | null;
}

/** A consent as `consents()` lists it. */
export interface ConsentRecord extends Consent {
  provider_name: string;
  /** `expired`: past its limit, or the provider refused to refresh it (connect again). */
  status: 'active' | 'revoked' | 'expired';
  revoked_at: string | null;
  /** The provider-side account or connection it reaches, when the provider tells it. */
  account: string | null;
}

export interface ConsentList {
  user: { id: string; name: string };
  consents: ConsentRecord[];
}

export interface Revocation {
  id: string;
  status: 'revoked';
  revoked_at: string;
  /** Whether the provider confirmed revoking the tokens (RFC 7009); they are forgotten either way. */
  provider_revoked: boolean;
}

export interface PopupOptions {
  /** CSS pixels; default 480. */
  width?: number;
  /** CSS pixels; default 720. */
  height?: number;
}

export interface ClientOptions {
  /** The Worker's auth base, absolute or relative to the page; default `/auth`. */
  authBase?: string;
  /** The Worker's data API base, on the same origin; default `/api`. */
  apiBase?: string;
  /**
   * How long a flow may take, in milliseconds; default 600000 (10 minutes), which is also how
   * long the Worker keeps a flow open: a longer timeout cannot outlast it.
   */
  timeoutMs?: number;
  popup?: PopupOptions;
}

export interface ConnectOptions {
  /** A provider id configured in the Worker. */
  provider: string;
  /** The app user: a user id in the demo, else an HS256 assertion from the app's backend. */
  user: string;
  /** Scopes to ask for, narrower than the provider's configured ones. */
  scope?: string | readonly string[];
  /**
   * Which bank, or a login hint, passed on to the provider: TrueLayer's `provider_id`,
   * Moneyhub's bank id (required there, unless the provider's configuration names one; a
   * malformed one is `invalid_parameter`), an Open Finance hub's `dp_id`, or else
   * `login_hint`. Never a provider-side user: the Worker names that from its own records.
   */
  providerHint?: string;
}

export interface AccountOptions {
  /** Act for this app user (as in `connect`) instead of the session's. */
  user?: string;
}

/** A JSON value, as a data API takes and gives them. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface ApiOptions extends AccountOptions {
  /** The consent to use; without it, the user's one active consent with the provider. */
  consent?: string;
  /** Default `GET`; others only where the Worker's `api_methods` allow them. */
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Sent as JSON. */
  body?: Json;
}

export class ConsentClient {
  /** Throws `invalid_configuration` for a bad `authBase` or `timeoutMs`. */
  constructor(options?: ClientOptions);
  /**
   * Runs one consent flow in a popup; call it from the click handler itself. Resolves to the
   * granted consent, rejects with a ConsentError (`access_denied`, `popup_blocked`,
   * `popup_closed`, `timeout`, `flow_in_progress`, ...).
   */
  connect(options: ConnectOptions): Promise<Consent>;
  consents(options?: AccountOptions): Promise<ConsentList>;
  revoke(id: string, options?: AccountOptions): Promise<Revocation>;
  logout(): Promise<void>;
  /**
   * Calls `path` of the provider's data API through the Worker, which attaches the token.
   * Resolves to the parsed JSON (type it with `T`; a non-JSON answer resolves to its text, a
   * 204 to undefined); rejects with a ConsentError: the
   * Worker's code (`consent_required`, `consent_ambiguous`, `consent_expired`,
   * `invalid_api_path`, `upstream_timeout`, ...) or `upstream_error` with the provider's
   * `status` and `body`.
   */
  api<T = Json>(provider: string, path: string, options?: ApiOptions): Promise<T>;
}

/**
 * `<consentry-connect provider="..." user="..." [scope] [provider-hint] [auth-base]
 * [timeout-ms]>Label</consentry-connect>`: a button that runs the popup flow on click and
 * dispatches `consentry-granted` (detail: Consent) or `consentry-failed` (detail:
 * ConsentError). Its `status` attribute is `granted` or `failed` once a flow ends.
 */
export interface ConsentConnectElement extends HTMLElement {
  /** Runs the flow; call it from a click. */
  connect(): void;
}

declare global {
  interface HTMLElementTagNameMap {
    'consentry-connect': ConsentConnectElement;
  }
  interface HTMLElementEventMap {
    'consentry-granted': CustomEvent<Consent>;
    'consentry-failed': CustomEvent<ConsentError>;
  }
}
