// consentry: bank consent in a popup for single-page apps. The Wasm module makes each flow's
// PKCE verifier, challenge and state and checks the start form by the Worker's own rules;
// this file owns the window: the popup, the form posted into it, the listeners and timers.
// The code exchange and every token stay in the consentry Worker.

const OUTCOME_TYPE = 'consentry:outcome';
const OUTCOME_VERSION = 1;
const DEFAULT_TIMEOUT_MS = 10 * 60 * 1000;
const MAX_TIMEOUT_MS = 2 ** 31 - 1; // the largest delay setTimeout honours
const CLOSED_POLL_MS = 250;
const OUTCOME_POLL_MS = 1000;
// A provider page served with `Cross-Origin-Opener-Policy: same-origin` severs the popup
// from this window: from here on the popup reads closed, although the user is still at the
// bank, and its outcome message cannot arrive. Browsers make that look exactly like a close.
// A popup that reads closed this soon after opening is most likely severed (a COOP page
// usually comes first, at the provider's front door): the flow keeps asking the Worker for
// its outcome until it ends or times out, unless this window gets the focus a real close
// gives it. A guess, not knowledge: see "How a flow ends" in the package README.
const SEVERANCE_WINDOW_MS = 10_000;
// A focus this long before the close was seen belongs to the close (closed is polled).
const FOCUS_SLACK_MS = 1_000;
// A popup that was really closed: the Worker is asked for this long (a grant may just have
// landed) before the flow ends with popup_closed.
const CLOSE_GRACE_MS = 2_000;
// After the popup's message, how long the Worker is asked to confirm it (its record exists
// before the page that posts it is served: only the network delays it).
const CONFIRM_MS = 10_000;
const ELEMENT_NAME = 'consentry-connect';
const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1'];

/** The one error shape: a stable `code` and a human `description`. */
export class ConsentError extends Error {
  constructor(code, description = '', { status, body } = {}) {
    super(description ? `${code}: ${description}` : code);
    this.name = 'ConsentError';
    this.code = code;
    this.description = description;
    // For `api()` answers that are not 2xx: the HTTP status, and for `upstream_error` the
    // provider's own body (parsed JSON, or text).
    if (status !== undefined) this.status = status;
    if (body !== undefined) this.body = body;
  }
}

function toConsentError(error) {
  if (error instanceof ConsentError) return error;
  return new ConsentError('invalid_parameter', String(error?.message ?? error));
}

let ready = null;
let wasm = null; // the module's exports, once loaded

// The module's ABI (crates/consentry/src/browser): its one import fills memory with random
// bytes; `input_buffer` takes the four fields, `start_form` answers in lines.
const imports = {
  env: {
    fill_random(at, length) {
      if (!globalThis.crypto?.getRandomValues) {
        throw new ConsentError('invalid_configuration', 'the platform has no cryptographically secure random number generator');
      }
      crypto.getRandomValues(new Uint8Array(wasm.memory.buffer, at, length));
    },
  },
};

async function instantiate(source = new URL('./wasm/consentry_bg.wasm', import.meta.url)) {
  source = await source;
  if (source instanceof WebAssembly.Module) return WebAssembly.instantiate(source, imports);
  if (typeof source === 'string' || source instanceof URL) source = await fetch(source);
  if (!(source instanceof Response)) return (await WebAssembly.instantiate(source, imports)).instance;
  if (!source.ok) throw new Error(`HTTP ${source.status}`);
  // Streaming compiles while the bytes arrive; it needs the application/wasm type.
  if (WebAssembly.instantiateStreaming && source.headers.get('Content-Type')?.startsWith('application/wasm')) {
    return (await WebAssembly.instantiateStreaming(source, imports)).instance;
  }
  return (await WebAssembly.instantiate(await source.arrayBuffer(), imports)).instance;
}

// The start form as alternating names and values, from the module, or a thrown ConsentError.
function startForm(fields) {
  const bytes = fields.map((field) => new TextEncoder().encode(field));
  let at = wasm.input_buffer(bytes.reduce((total, field) => total + field.length, 0));
  const memory = new Uint8Array(wasm.memory.buffer);
  for (const field of bytes) {
    memory.set(field, at);
    at += field.length;
  }
  const length = wasm.start_form(...bytes.map((field) => field.length));
  const [status, ...lines] = new TextDecoder().decode(new Uint8Array(wasm.memory.buffer, wasm.output(), length)).split('\n');
  if (status !== 'ok') throw new ConsentError(lines[0], lines[1]);
  return lines;
}

/**
 * Loads the Wasm module (once; later calls share the first) and defines the
 * `<consentry-connect>` element. `wasm` overrides where the module comes from;
 * `elementName: null` skips the element.
 */
export function init({ wasm: source, elementName = ELEMENT_NAME } = {}) {
  ready ??= instantiate(source).then(
    (instance) => {
      wasm = instance.exports;
    },
    (error) => {
      ready = null; // let a later call try again
      throw new ConsentError('not_initialized', `the Wasm module did not load: ${error?.message ?? error}`);
    },
  );
  return ready.then(() => {
    if (elementName) defineConnectElement(elementName);
  });
}

/** Talks to one consentry Worker: popup flows, consents, the data API, revocation, logout. */
export class ConsentClient {
  #base;
  #apiBase;
  #origin;
  #timeoutMs;
  #popupSize;
  #flow = null;

  constructor({ authBase = '/auth', apiBase = '/api', timeoutMs = DEFAULT_TIMEOUT_MS, popup = {} } = {}) {
    let base;
    try {
      base = new URL(authBase, document.baseURI);
    } catch {
      throw new ConsentError('invalid_configuration', 'authBase is not a URL');
    }
    // The start form carries the verifier and the user reference: plain http only on a
    // loopback host, as the Worker's own URL rule says (consentry-core url.rs).
    const loopback = LOOPBACK_HOSTS.includes(base.hostname.replace(/^\[|\]$/g, ''));
    if (base.protocol !== 'https:' && !(base.protocol === 'http:' && loopback)) {
      throw new ConsentError('invalid_configuration', 'authBase must use https (http only on localhost)');
    }
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
      throw new ConsentError('invalid_configuration', `timeoutMs must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
    }
    this.#base = base.href.replace(/\/+$/, '');
    // The data API lives beside the auth routes, on the same Worker (same origin).
    let api;
    try {
      api = new URL(apiBase, base);
    } catch {
      throw new ConsentError('invalid_configuration', 'apiBase is not a URL');
    }
    if (api.origin !== base.origin) {
      throw new ConsentError('invalid_configuration', 'apiBase must be on the same origin as authBase');
    }
    this.#apiBase = api.href.replace(/\/+$/, '');
    this.#origin = base.origin;
    this.#timeoutMs = timeoutMs;
    this.#popupSize = { width: popup.width ?? 480, height: popup.height ?? 720 };
  }

  /**
   * Runs one consent flow in a popup. Call it from the click handler itself: everything up
   * to `window.open` is synchronous. Resolves to the granted consent; rejects with a
   * ConsentError. While a flow is pending, another call brings its popup to the front and
   * rejects with `flow_in_progress`.
   */
  connect({ provider, user, scope, providerHint } = {}) {
    if (!wasm) {
      return Promise.reject(new ConsentError('not_initialized', 'await init() before connect()'));
    }
    if (this.#flow) {
      this.#flow.focus();
      return Promise.reject(new ConsentError('flow_in_progress', 'a consent flow is already open; its popup was brought to the front'));
    }
    let fields;
    try {
      const scopes = Array.isArray(scope) ? scope.join(' ') : scope;
      fields = startForm([provider, user, scopes, providerHint].map((field) => String(field ?? '')));
    } catch (error) {
      return Promise.reject(toConsentError(error));
    }
    const state = fieldValue(fields, 'state');
    const name = `consentry-${state.slice(0, 16)}`;
    const popup = window.open('', name, this.#popupFeatures());
    if (!popup) {
      return Promise.reject(new ConsentError('popup_blocked', 'the browser blocked the popup: call connect() from a click'));
    }
    postForm(`${this.#base}/start`, name, fields);
    return new Promise((resolve, reject) => {
      this.#flow = this.#watch(popup, state, resolve, reject);
    });
  }

  /** The consents of the session's user, or of `user` (a demo id or a user assertion). */
  consents({ user } = {}) {
    return this.#call('GET', '/consents', user);
  }

  /** Revokes a consent at the provider where it can, and forgets its tokens. */
  revoke(id, { user } = {}) {
    return this.#call('DELETE', `/consents/${encodeURIComponent(id)}`, user);
  }

  /** Ends the session. */
  async logout() {
    await this.#call('POST', '/logout');
  }

  /**
   * Calls the provider's data API through the Worker, which attaches the consent's token:
   * `path` is the provider API's own path (`/accounts/acc-1/balance`, segments already
   * URL-encoded, a query allowed). Resolves to the parsed JSON (text for other types,
   * undefined for 204). Rejects with a ConsentError: the Worker's own code (`consent_required`,
   * `consent_expired`, `invalid_api_path`, ...), or `upstream_error` with the provider's
   * `status` and `body` when its API answered an error.
   */
  async api(provider, path, { consent, method = 'GET', body, user } = {}) {
    if (typeof provider !== 'string' || !/^[a-z0-9-]{1,32}$/.test(provider)) {
      throw new ConsentError('unknown_provider', 'provider must be a configured provider id');
    }
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new ConsentError('invalid_api_path', 'path must start with /');
    }
    const headers = { 'X-Consentry': '1' };
    if (user !== undefined) headers.Authorization = `Bearer ${user}`;
    if (consent !== undefined) headers['X-Consentry-Consent'] = consent;
    const init = { method, headers, credentials: 'include', cache: 'no-store', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${this.#apiBase}/${provider}${path}`, init);
    } catch (error) {
      throw new ConsentError('network_error', `the Worker could not be reached: ${error?.message ?? error}`);
    }
    if (response.status === 204) return undefined;
    const text = await response.text();
    const json = /^application\/(.+\+)?json\b/i.test(response.headers.get('Content-Type') ?? '') ? parseJson(text) : undefined;
    if (response.ok) return json ?? text;
    if (response.headers.get('X-Consentry-Upstream') === '1') {
      throw new ConsentError('upstream_error', `the provider's API answered ${response.status}`, { status: response.status, body: json ?? text });
    }
    throw typeof json?.code === 'string'
      ? new ConsentError(json.code, String(json.description ?? ''), { status: response.status })
      : new ConsentError('network_error', `the Worker answered ${response.status}`, { status: response.status });
  }

  #popupFeatures() {
    const { width, height } = this.#popupSize;
    const left = Math.round(window.screenX + (window.outerWidth - width) / 2);
    const top = Math.round(window.screenY + (window.outerHeight - height) / 2);
    return `popup=yes,width=${width},height=${height},left=${left},top=${top}`;
  }

  #watch(popup, state, resolve, reject) {
    const openedAt = Date.now();
    // A cross-origin isolated page has COOP same-origin: its popup is severed the moment it
    // leaves this origin, so a closed popup is taken for severed, whenever it reads closed.
    const isolated = globalThis.crossOriginIsolated === true;
    let closedAt = 0;
    let severed = false;
    let focusedAt = 0;
    let lastAsked = 0;
    let asking = false;
    let posted = null; // the outcome our popup's last message carried
    let postedAt = 0;
    let done = false;

    const finish = (error, consent) => {
      if (done) return;
      done = true;
      clearInterval(ticker);
      clearTimeout(timer);
      window.removeEventListener('message', onMessage);
      window.removeEventListener('focus', onFocus);
      this.#flow = null;
      if (error) reject(error);
      else resolve(consent);
    };
    const settle = (outcome) => finish(outcome.error, outcome.consent);
    const closed = () => finish(new ConsentError('popup_closed', 'the popup was closed before the provider answered'));

    // The popup's message says the flow has ended, and it settles on the Worker's record,
    // which only this browser's binding cookie reads: a posted grant is never believed. A
    // posted error may settle the flow where the Worker has no flow (a start it refused
    // stores nothing) or cannot answer within CONFIRM_MS: an error can only fail a flow.
    const onMessage = (event) => {
      if (event.origin !== this.#origin || event.source !== popup) return;
      const outcome = readOutcome(event.data, state);
      if (!outcome) return;
      posted = outcome;
      postedAt = Date.now();
      lastAsked = 0;
      tick();
    };
    const onFocus = () => {
      focusedAt = Date.now();
    };
    const tick = async () => {
      const now = Date.now();
      if (!closedAt && popup.closed) {
        closedAt = now;
        severed = isolated || closedAt - openedAt < SEVERANCE_WINDOW_MS;
      }
      if (!closedAt && !posted) return;
      if (asking || now - lastAsked < OUTCOME_POLL_MS) return;
      asking = true;
      lastAsked = now;
      const answer = await this.#askOutcome(state);
      asking = false;
      if (done) return;
      if (answer.outcome) return settle(answer.outcome);
      // While the Worker says the flow is pending, a message is believed neither way.
      if (posted && !answer.pending) {
        if (answer.gone) return posted.error ? settle(posted) : finish(answer.gone);
        if (Date.now() - postedAt < CONFIRM_MS) return;
        return posted.error ? settle(posted) : finish(new ConsentError('network_error', 'the Worker did not confirm the grant its popup posted'));
      }
      if (answer.gone) return closed();
      if (!closedAt) return;
      const closeFocused = focusedAt >= closedAt - FOCUS_SLACK_MS;
      const waitingSince = !severed ? closedAt : closeFocused ? Math.max(focusedAt, closedAt) : 0;
      if (waitingSince && Date.now() - waitingSince >= CLOSE_GRACE_MS) closed();
    };
    const ticker = setInterval(tick, CLOSED_POLL_MS);
    const timer = setTimeout(() => {
      try {
        popup.close();
      } catch {
        // a severed popup cannot be reached; it closes itself when the flow ends
      }
      finish(new ConsentError('timeout', `no outcome within ${this.#timeoutMs} ms`));
    }, this.#timeoutMs);
    window.addEventListener('message', onMessage);
    window.addEventListener('focus', onFocus);
    return {
      focus() {
        try {
          popup.focus();
        } catch {
          // severed or closed: nothing to bring forward
        }
      },
    };
  }

  // The Worker's record of a flow: { outcome }, { gone: the Worker's error } when it never
  // reached the Worker from this browser, { pending } while the provider has not answered,
  // or {} when the Worker could not say.
  async #askOutcome(state) {
    try {
      const body = await this.#call('GET', `/outcome?state=${encodeURIComponent(state)}`);
      const outcome = readOutcome(body, state);
      return outcome ? { outcome } : {};
    } catch (error) {
      if (error.code === 'unknown_transaction' || error.code === 'transaction_not_bound') return { gone: error };
      return error.code === 'outcome_pending' ? { pending: true } : {};
    }
  }

  async #call(method, path, user) {
    const headers = { 'X-Consentry': '1' };
    if (user !== undefined) headers.Authorization = `Bearer ${user}`;
    let response;
    try {
      response = await fetch(this.#base + path, { method, headers, credentials: 'include', cache: 'no-store' });
    } catch (error) {
      throw new ConsentError('network_error', `the Worker could not be reached: ${error?.message ?? error}`);
    }
    if (response.status === 204) return undefined;
    let body;
    try {
      body = await response.json();
    } catch {
      throw new ConsentError('network_error', `the Worker answered ${response.status} without JSON`);
    }
    if (!response.ok) {
      throw typeof body?.code === 'string'
        ? new ConsentError(body.code, String(body.description ?? ''))
        : new ConsentError('network_error', `the Worker answered ${response.status}`);
    }
    return body;
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// Submits the start form into the popup: a POST, so the verifier never enters a URL.
function postForm(action, target, fields) {
  const form = document.createElement('form');
  form.method = 'POST';
  form.action = action;
  form.target = target;
  form.hidden = true;
  for (let i = 0; i < fields.length; i += 2) {
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = fields[i];
    input.value = fields[i + 1];
    form.append(input);
  }
  document.body.append(form);
  try {
    form.submit();
  } finally {
    form.remove();
  }
}

// A value of the start form (alternating names and values, as `startForm` returns it).
function fieldValue(fields, name) {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

const isString = (value) => typeof value === 'string';
const isNullableString = (value) => value === null || value === undefined || isString(value);

// The outcome of the flow named `state`, read strictly by the wire contract, or null for
// anything else (another flow, another sender, a malformed message).
function readOutcome(data, state) {
  if (typeof data !== 'object' || data === null) return null;
  if (data.type !== OUTCOME_TYPE || data.v !== OUTCOME_VERSION || data.state !== state) return null;
  if (data.status === 'granted') {
    const consent = data.consent;
    const valid =
      typeof consent === 'object' &&
      consent !== null &&
      [consent.id, consent.provider, consent.user, consent.granted_at].every(isString) &&
      Array.isArray(consent.scopes) &&
      consent.scopes.every(isString) &&
      isNullableString(consent.expires_at);
    if (!valid) return null;
    const { id, provider, user, scopes, granted_at, expires_at } = consent;
    return { consent: { id, provider, user, scopes: [...scopes], granted_at, expires_at: expires_at ?? null } };
  }
  const described = data.error_description === undefined || isString(data.error_description);
  if ((data.status === 'denied' || data.status === 'failed') && isString(data.error) && data.error && described) {
    return { error: new ConsentError(data.error, data.error_description ?? '') };
  }
  return null;
}

function defineConnectElement(name) {
  if (typeof customElements === 'undefined' || customElements.get(name)) return;
  customElements.define(name, class ConsentConnectElement extends HTMLElement {
    #client = null;
    #clientKey = '';
    #button;

    constructor() {
      super();
      const root = this.attachShadow({ mode: 'open' });
      root.innerHTML =
        '<style>:host{display:inline-block}button{font:inherit;cursor:pointer}' +
        'button:disabled{cursor:progress;opacity:.7}</style>' +
        '<button part="button" type="button"><slot>Connect bank</slot></button>';
      this.#button = root.querySelector('button');
      this.#button.addEventListener('click', () => this.connect());
    }

    /** Runs the popup flow for this element's attributes; call it from a click. */
    connect() {
      if (this.#button.disabled) return; // a flow of this button is pending
      let pending;
      try {
        pending = this.#clientNow().connect({
          provider: this.getAttribute('provider'),
          user: this.getAttribute('user'),
          scope: this.getAttribute('scope') ?? undefined,
          providerHint: this.getAttribute('provider-hint') ?? undefined,
        });
      } catch (error) {
        pending = Promise.reject(toConsentError(error));
      }
      this.#button.disabled = true;
      this.setAttribute('aria-busy', 'true');
      this.removeAttribute('status');
      pending
        .then(
          (consent) => this.#emit('granted', consent),
          (error) => this.#emit('failed', toConsentError(error)),
        )
        .finally(() => {
          this.#button.disabled = false;
          this.removeAttribute('aria-busy');
        });
    }

    #clientNow() {
      const authBase = this.getAttribute('auth-base') ?? '/auth';
      const timeout = this.getAttribute('timeout-ms');
      const key = `${authBase} ${timeout}`;
      if (!this.#client || key !== this.#clientKey) {
        this.#client = new ConsentClient({ authBase, timeoutMs: timeout === null ? undefined : Number(timeout) });
        this.#clientKey = key;
      }
      return this.#client;
    }

    #emit(status, detail) {
      this.setAttribute('status', status);
      this.dispatchEvent(new CustomEvent(`consentry-${status}`, { detail, bubbles: true, composed: true }));
    }
  });
}
