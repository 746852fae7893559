// The demo app: three people, each connecting a bank through consentry's popup, with their
// consents listed from the Worker. Only the package's public API is used.
import { ConsentClient, ConsentError, init } from './vendor/consentry/consentry.js';

// What a person should read for each error code; the code itself is shown beside it.
const MESSAGES = {
  access_denied: ['warn', 'The bank connection was cancelled at the bank. Nothing was shared.'],
  popup_blocked: ['warn', 'Your browser blocked the bank\'s window. Allow popups for this site and try again.'],
  popup_closed: ['warn', 'The bank window was closed before the connection finished.'],
  timeout: ['warn', 'The bank connection took too long and was stopped. Please try again.'],
  flow_in_progress: ['warn', 'A bank connection is already open in another window; finish it first.'],
  not_initialized: ['bad', 'The page did not finish loading. Reload and try again.'],
  network_error: ['bad', 'We could not reach our server. Check your connection and try again.'],
  state_mismatch: ['bad', 'The bank\'s answer did not match this connection, so it was refused.'],
  invalid_state: ['bad', 'The bank\'s answer did not match this connection, so it was refused.'],
  iss_mismatch: ['bad', 'The answer did not come from the expected bank, so it was refused.'],
  iss_missing: ['bad', 'The bank did not identify itself, so its answer was refused.'],
  unknown_transaction: ['bad', 'This connection attempt is unknown or already finished. Please start again.'],
  transaction_not_bound: ['bad', 'This connection was started in another browser. Please start again here.'],
  transaction_expired: ['warn', 'The connection attempt expired. Please start again.'],
  transaction_replayed: ['bad', 'This bank answer was already used. Please start again.'],
  outcome_pending: ['warn', 'The bank has not answered yet.'],
  exchange_interrupted: ['bad', 'The bank answered, but finishing the connection was cut off. Please try again.'],
  duplicate_parameter: ['bad', 'The bank sent a malformed answer.'],
  missing_parameter: ['bad', 'The bank sent an incomplete answer.'],
  forbidden_parameter: ['bad', 'The bank sent an answer we cannot accept.'],
  invalid_verifier: ['bad', 'The connection could not be secured. Please try again.'],
  token_exchange_failed: ['bad', 'The bank approved, but finishing the connection failed. Please try again.'],
  invalid_token_response: ['bad', 'The bank\'s reply could not be read. Please try again later.'],
  id_token_missing: ['bad', 'The bank did not confirm who signed in.'],
  id_token_invalid: ['bad', 'The bank\'s sign-in confirmation failed its checks.'],
  jwt_malformed: ['bad', 'The bank\'s sign-in confirmation was malformed.'],
  jwt_alg_not_allowed: ['bad', 'The bank signed with a method we do not accept.'],
  jwt_crit_unsupported: ['bad', 'The bank\'s confirmation needs features we do not support.'],
  jwt_signature_invalid: ['bad', 'The bank\'s signature did not verify.'],
  jwk_not_found: ['bad', 'The bank\'s signing key could not be found.'],
  jwk_not_yet_known: ['warn', 'The bank has just changed its signing key. Please try again in a minute.'],
  jwk_invalid: ['bad', 'The bank published an unusable signing key.'],
  discovery_invalid: ['bad', 'The bank\'s configuration could not be read.'],
  pkce_not_supported: ['bad', 'This bank does not support the secure sign-in we require.'],
  invalid_configuration: ['bad', 'This bank connection is not set up correctly. Please contact support.'],
  invalid_provider_response: ['bad', 'The bank sent an answer outside the protocol, so it was refused.'],
  provider_mismatch: ['bad', 'The answer came back from a different bank than the one you chose, so it was refused.'],
  provider_user_missing: ['warn', 'Your profile at this provider could not be set up just now. Please try again.'],
  provider_user_pending: ['warn', 'Your profile at this provider is being set up in another window. Try again in a moment.'],
  unknown_provider: ['bad', 'This bank is not available.'],
  par_failed: ['bad', 'The bank refused to start the connection. Please try again later.'],
  invalid_url: ['bad', 'A bank address is misconfigured. Please contact support.'],
  origin_not_allowed: ['bad', 'This site is not allowed to connect banks.'],
  csrf_header_missing: ['bad', 'The request was refused for safety. Reload and try again.'],
  invalid_outcome: ['bad', 'The result could not be read.'],
  invalid_user: ['bad', 'This person is not known to the bank connection service.'],
  invalid_parameter: ['bad', 'Something in the request was not valid.'],
  session_required: ['warn', 'Please connect a bank first.'],
  consent_not_found: ['warn', 'That connection no longer exists.'],
  consent_ambiguous: ['warn', 'Several bank connections could answer; pick one.'],
  consent_expired: ['warn', 'The bank no longer accepts this connection: connect the bank again.'],
  invalid_api_path: ['bad', 'That bank data is not available through this app.'],
  refresh_failed: ['warn', 'The bank could not renew access just now. Please try again.'],
  upstream_redirect: ['bad', 'The bank\'s data service answered unexpectedly.'],
  upstream_unreachable: ['bad', 'The bank\'s data service is not reachable right now.'],
  upstream_timeout: ['warn', 'The bank\'s data service took too long. Please try again.'],
  rate_limited: ['warn', 'Too many attempts. Please wait a minute and try again.'],
  upstream_too_large: ['bad', 'The bank sent more data than we accept.'],
  upstream_error: ['bad', 'The bank\'s data service refused the request.'],
  revocation_failed: ['warn', 'The bank did not confirm the disconnection.'],
  provider_unreachable: ['bad', 'The bank is not reachable right now. Please try again later.'],
  storage_failed: ['bad', 'We could not save the connection. Please try again.'],
  record_unreadable: ['bad', 'This connection\'s stored data cannot be read. Please connect the bank again.'],
  not_found: ['bad', 'That page of our service does not exist.'],
  invalid_request: ['bad', 'The bank refused the request as invalid.'],
  unauthorized_client: ['bad', 'The bank does not allow this app to connect.'],
  invalid_scope: ['bad', 'The bank refused the requested access.'],
  server_error: ['bad', 'The bank had a problem. Please try again later.'],
  temporarily_unavailable: ['warn', 'The bank is busy. Please try again in a moment.'],
  invalid_client: ['bad', 'The bank did not recognise this app.'],
  invalid_grant: ['bad', 'The bank rejected the approval. Please try again.'],
  login_required: ['warn', 'Please sign in at the bank.'],
  consent_required: ['warn', 'The bank needs your approval to continue.'],
  interaction_required: ['warn', 'The bank needs you to complete a step.'],
  account_selection_required: ['warn', 'The bank needs you to choose an account.'],
  unsupported_response_type: ['bad', 'The bank does not support this kind of connection.'],
  unsupported_grant_type: ['bad', 'The bank does not support this kind of connection.'],
  unsupported_token_type: ['warn', 'The bank could not revoke this kind of access.'],
  invalid_request_uri: ['bad', 'The bank could not find the connection request. Please start again.'],
  invalid_request_object: ['bad', 'The bank refused the signed connection request.'],
  request_not_supported: ['bad', 'The bank does not accept signed connection requests.'],
  request_uri_not_supported: ['bad', 'The bank does not accept pushed connection requests.'],
  registration_not_supported: ['bad', 'The bank does not support this app\'s registration.'],
  invalid_dpop_proof: ['bad', 'The bank refused the connection\'s proof of possession.'],
  use_dpop_nonce: ['warn', 'The bank asked for a retry. Please try again.'],
};

const client = new ConsentClient();
const notice = document.getElementById('notice');
const cards = new Map(); // user id -> card element
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function say(kind, text, code) {
  notice.dataset.kind = kind;
  notice.replaceChildren(text);
  if (code) {
    const tag = document.createElement('code');
    tag.textContent = code;
    notice.append(tag);
  }
  notice.hidden = false;
}

function sayError(error) {
  const [kind, text] = MESSAGES[error.code] ?? ['bad', error.description || 'Something went wrong.'];
  say(kind, text, error.code);
}

function when(value) {
  return value ? dateFormat.format(new Date(value)) : '—';
}

function cell(content) {
  const td = document.createElement('td');
  if (typeof content === 'string') td.textContent = content;
  else td.append(content);
  return td;
}

function row(consent, user) {
  const scopes = document.createElement('div');
  scopes.className = 'scopes';
  for (const scope of consent.scopes) {
    const tag = document.createElement('span');
    tag.className = 'scope';
    tag.textContent = scope;
    scopes.append(tag);
  }
  const status = document.createElement('span');
  status.className = `status ${consent.status}`;
  status.textContent = consent.status === 'expired' ? 'reconnect' : consent.status;
  const actions = document.createElement('span');
  if (consent.status === 'active') {
    const revoke = document.createElement('button');
    revoke.className = 'revoke';
    revoke.type = 'button';
    revoke.textContent = 'Disconnect';
    revoke.addEventListener('click', () => disconnect(consent, user, revoke));
    actions.append(revoke);
  }
  const tr = document.createElement('tr');
  tr.dataset.consent = consent.id;
  tr.append(cell(consent.provider_name), cell(consent.account ?? '—'), cell(scopes), cell(status), cell(when(consent.granted_at)), cell(when(consent.expires_at)), cell(actions));
  return tr;
}

const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'GBP' });

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// What each provider's data API answers, read into one shape: accounts, each with its
// balance and latest transactions (`{ accounts }`), or, from an identity provider (Connect),
// the person's profile (`{ profile }`). Every call goes through the Worker's /api.
const READERS = {
  // The local bank and the Open Finance hub (bank/data-api.mjs).
  bank: async (api) => {
    const { accounts } = await api('/accounts');
    return {
      accounts: await Promise.all(accounts.map(async (account) => {
        const id = encodeURIComponent(account.id);
        const [balance, { transactions }] = await Promise.all([
          api(`/accounts/${id}/balance`),
          api(`/accounts/${id}/transactions?limit=5`),
        ]);
        return {
          id: account.id,
          name: account.name,
          balance: balance.current,
          transactions: transactions.map((txn) => ({ date: txn.booked_on, description: txn.description, amount: txn.amount })),
        };
      })),
    };
  },
  // TrueLayer's Data API: every answer in its `results` envelope.
  truelayer: async (api) => {
    const { results } = await api('/accounts');
    return {
      accounts: await Promise.all(results.map(async (account) => {
        const id = encodeURIComponent(account.account_id);
        const [balance, transactions] = await Promise.all([
          api(`/accounts/${id}/balance`),
          api(`/accounts/${id}/transactions`),
        ]);
        return {
          id: account.account_id,
          name: account.display_name,
          balance: balance.results[0].current,
          transactions: transactions.results.slice(0, 5).map((txn) => ({ date: txn.timestamp.slice(0, 10), description: txn.description, amount: txn.amount })),
        };
      })),
    };
  },
  // Moneyhub's data token reads the whole profile: this consent shows its own connection's
  // accounts (amounts in minor units).
  moneyhub: async (api, consent) => {
    const { data } = await api('/accounts');
    return {
      accounts: await Promise.all(data.filter((account) => account.connectionId === consent.account).map(async (account) => {
        const { data: transactions } = await api(`/transactions?accountId=${encodeURIComponent(account.id)}&limit=5`);
        return {
          id: account.id,
          name: account.accountName,
          balance: account.balance.amount.value / 100,
          transactions: transactions.map((txn) => ({ date: txn.date.slice(0, 10), description: txn.shortDescription, amount: txn.amount.value / 100 })),
        };
      })),
    };
  },
  connect: async (api) => ({ profile: await api('/userinfo') }),
};

function accountsView({ accounts }) {
  const list = element('div', 'accounts');
  for (const account of accounts) {
    const item = element('article', 'account');
    item.dataset.account = account.id;
    const top = element('div', 'account-head');
    top.append(element('span', 'account-name', account.name), element('span', 'balance', money.format(account.balance)));
    const rows = element('ul', 'transactions');
    for (const txn of account.transactions) {
      const li = element('li');
      li.append(element('span', 'date', txn.date), element('span', 'what', txn.description), element('span', txn.amount < 0 ? 'amount out' : 'amount in', money.format(txn.amount)));
      rows.append(li);
    }
    item.append(top, rows);
    list.append(item);
  }
  return list;
}

function profileView({ profile }) {
  const list = element('dl', 'profile');
  for (const [label, value] of [['Name', profile.name], ['Email', profile.email], ['Connect id', profile.sub]]) {
    if (value) list.append(element('dt', '', label), element('dd', '', value));
  }
  return list;
}

// One consent's data, read through the Worker's /api (the page never holds a token). A
// consent the provider no longer accepts shows "reconnect" instead of numbers.
async function showData(consent, user, box) {
  const api = (path) => client.api(consent.provider, path, { consent: consent.id, user: user.id });
  const section = element('section', 'data');
  section.dataset.consent = consent.id;
  const head = element('div', 'data-head');
  head.append(element('h3', '', `${consent.provider_name}${consent.account ? ` · ${consent.account}` : ''}`));
  const reload = element('button', 'reload', 'Refresh');
  reload.type = 'button';
  reload.addEventListener('click', () => showData(consent, user, box));
  head.append(reload);
  section.append(head);
  try {
    const read = await (READERS[consent.provider] ?? READERS.bank)(api, consent);
    section.append(read.profile ? profileView(read) : accountsView(read), element('p', 'as-of', `Read ${dateFormat.format(new Date())}`));
  } catch (error) {
    if (error.code === 'consent_expired') {
      section.append(element('p', 'reconnect', 'The provider no longer accepts this connection: connect again to see fresh data.'));
      section.dataset.state = 'reconnect';
    } else {
      const [, text] = MESSAGES[error.code] ?? ['bad', error.description || 'The data could not be read.'];
      section.append(element('p', 'data-error', `${text} (${error.code})`));
    }
  }
  const old = box.querySelector(`section.data[data-consent="${CSS.escape(consent.id)}"]`);
  if (old) old.replaceWith(section); else box.append(section);
  if (section.dataset.state === 'reconnect') await refresh(user, { data: false });
}

async function refresh(user, { data = true } = {}) {
  const card = cards.get(user.id);
  try {
    const { consents } = await client.consents({ user: user.id });
    consents.sort((a, b) => b.granted_at.localeCompare(a.granted_at));
    card.querySelector('tbody').replaceChildren(...consents.map((consent) => row(consent, user)));
    card.classList.toggle('has-consents', consents.length > 0);
    const active = consents.filter((consent) => consent.status === 'active');
    card.querySelector('.summary').textContent =
      active.length === 0 ? 'No active bank connection' : `${active.length} active bank connection${active.length === 1 ? '' : 's'}`;
    if (data) {
      const box = card.querySelector('.money');
      for (const section of box.querySelectorAll('section.data')) {
        if (!active.some((consent) => consent.id === section.dataset.consent) && section.dataset.state !== 'reconnect') section.remove();
      }
      await Promise.all(active.map((consent) => showData(consent, user, box)));
    }
  } catch (error) {
    sayError(error);
  }
}

async function disconnect(consent, user, button) {
  button.disabled = true;
  try {
    const result = await client.revoke(consent.id, { user: user.id });
    say(result.provider_revoked ? 'ok' : 'warn', result.provider_revoked
      ? `${consent.provider_name} was disconnected for ${user.name}; the bank revoked access.`
      : `${consent.provider_name} was disconnected for ${user.name}; the bank did not confirm, but we no longer hold access.`);
  } catch (error) {
    sayError(error);
  }
  await refresh(user);
}

function card(user) {
  const node = document.getElementById('user-card').content.firstElementChild.cloneNode(true);
  node.dataset.user = user.id;
  node.querySelector('.name').textContent = user.name;
  node.querySelector('.avatar').textContent = user.name.slice(0, 1).toUpperCase();
  // A provider's bank picker sets its button's provider-hint (TrueLayer's provider_id,
  // Moneyhub's bank id, the hub's dp_id).
  for (const select of node.querySelectorAll('select[data-hint-for]')) {
    select.addEventListener('change', () => {
      node.querySelector(`consentry-connect[provider="${select.dataset.hintFor}"]`).setAttribute('provider-hint', select.value);
    });
  }
  for (const connect of node.querySelectorAll('consentry-connect')) {
    connect.setAttribute('user', user.id);
    connect.addEventListener('consentry-granted', (event) => {
      say('ok', `Connected for ${user.name} (${connect.textContent.trim()}): ${event.detail.scopes.join(', ')}.`);
      refresh(user);
    });
    connect.addEventListener('consentry-failed', (event) => {
      sayError(event.detail);
      refresh(user); // a flow can end at the bank after its window was closed
    });
  }
  cards.set(user.id, node);
  return node;
}

async function main() {
  const list = document.getElementById('users');
  try {
    await init();
    const response = await fetch('/auth/demo/users', { headers: { 'X-Consentry': '1' } });
    const users = await response.json();
    if (!response.ok) throw new ConsentError(users.code, users.description);
    users.sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(...users.map(card));
    list.removeAttribute('aria-busy');
    await Promise.all(users.map(refresh));
    window.addEventListener('focus', () => users.forEach(refresh));
    document.body.dataset.ready = 'true';
  } catch (error) {
    list.replaceChildren();
    sayError(error instanceof ConsentError ? error : new ConsentError('network_error', String(error)));
  }
}

main();
