// The local bank's data API: accounts, balances and transactions of its demo account
// holders, answering only to a live access token the bank issued, for that account's owner,
// with the scope each route needs (`accounts`, `balance`, `transactions`).
//
//   GET /data/v1/accounts                          {"accounts":[{id,name,type,currency,...}]}
//   GET /data/v1/accounts/{id}/balance             {"account_id","currency","current","available","as_of"}
//   GET /data/v1/accounts/{id}/transactions[?limit] {"account_id","transactions":[{id,booked_on,description,amount,currency}]}
//
// Errors: 401 with `WWW-Authenticate: Bearer error="invalid_token"` for a missing, unknown or
// expired token; 403 `insufficient_scope`; 404 `not_found` for an account that is not the
// token's owner's. The data is made up but fixed: the same seed gives the same accounts and
// transactions (dated back from the day the bank started).

export const HOLDINGS = {
  alice: [
    { id: 'acc-alice-current', name: 'Everyday Current', type: 'current', opening: 184_250 },
    { id: 'acc-alice-savings', name: 'Rainy Day Saver', type: 'savings', opening: 1_250_000 },
  ],
  bob: [{ id: 'acc-bob-current', name: 'Bob\'s Current', type: 'current', opening: 96_040 }],
  carol: [{ id: 'acc-carol-current', name: 'Main Account', type: 'current', opening: 321_575 }],
};

const MERCHANTS = [
  ['Corner Grocer', -2_000, -6_500], ['Tube fare', -280, -700], ['Coffee Lab', -310, -560],
  ['Book Nook', -899, -2_499], ['City Energy', -6_500, -9_800], ['Streamly', -1_099, -1_099],
  ['Pharmacy', -450, -1_800], ['Bistro Verde', -2_400, -7_200], ['Hardware Hub', -1_200, -5_400],
  ['Refund: Book Nook', 899, 1_999],
];

/** A small seeded PRNG (mulberry32): the same account always gets the same transactions. */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function seedOf(text) {
  let hash = 2_166_136_261;
  for (const char of text) hash = Math.imul(hash ^ char.charCodeAt(0), 16_777_619);
  return hash >>> 0;
}

const pounds = (pence) => Math.round(pence) / 100;

/** Builds the book of every account: 36 transactions over the 90 days before `today`. */
export function buildLedger(today = new Date()) {
  const day = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  const ledger = new Map();
  for (const [owner, accounts] of Object.entries(HOLDINGS)) {
    for (const account of accounts) {
      const next = random(seedOf(account.id));
      const transactions = [];
      const count = account.type === 'savings' ? 12 : 36;
      for (let i = 0; i < count; i += 1) {
        const daysAgo = Math.floor((i * 90) / count + next() * (90 / count));
        let description; let amount;
        if (account.type === 'savings') {
          [description, amount] = i % 4 === 3 ? ['Interest', 180 + Math.floor(next() * 120)] : ['Transfer from current', 10_000 + Math.floor(next() * 4) * 5_000];
        } else if (i % 12 === 5) {
          [description, amount] = ['Salary', 285_000 + Math.floor(next() * 10_000)];
        } else {
          const [name, low, high] = MERCHANTS[Math.floor(next() * MERCHANTS.length)];
          [description, amount] = [name, low + Math.floor(next() * (high - low + 1))];
        }
        transactions.push({
          id: `txn-${account.id.slice(4)}-${String(i).padStart(3, '0')}`,
          booked_on: new Date(day - daysAgo * 86_400_000).toISOString().slice(0, 10),
          description,
          amount_pence: amount,
        });
      }
      transactions.sort((a, b) => (a.booked_on < b.booked_on ? 1 : a.booked_on > b.booked_on ? -1 : a.id < b.id ? 1 : -1));
      const balance = account.opening + transactions.reduce((sum, txn) => sum + txn.amount_pence, 0);
      ledger.set(account.id, { owner, account, transactions, balance, asOf: new Date(day).toISOString() });
    }
  }
  return ledger;
}

/**
 * Answers a data API request. `token` is the oidc-provider AccessToken the bearer value
 * names (undefined if unknown or expired). Resolves to `{ status, body, headers }`.
 */
export function answerDataRequest({ ledger, path, search, token }) {
  const json = (status, body, headers = {}) => ({ status, body: JSON.stringify(body), headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers } });
  if (!token) {
    return json(401, { error: 'invalid_token', error_description: 'the access token is missing, unknown or expired' }, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
  }
  const scopes = new Set(String(token.scope || '').split(' '));
  const needs = (scope) => (scopes.has(scope) ? null : json(403, { error: 'insufficient_scope', error_description: `this needs the ${scope} scope` }, { 'WWW-Authenticate': `Bearer error="insufficient_scope", scope="${scope}"` }));
  const owner = token.accountId;
  if (path === '/data/v1/accounts') {
    return needs('accounts') ?? json(200, {
      accounts: (HOLDINGS[owner] || []).map(({ id, name, type }) => ({ id, name, type, currency: 'GBP' })),
    });
  }
  const match = /^\/data\/v1\/accounts\/([\w-]+)\/(balance|transactions)$/.exec(path);
  const book = match && ledger.get(match[1]);
  if (!book || book.owner !== owner) return json(404, { error: 'not_found', error_description: 'no such account' });
  if (match[2] === 'balance') {
    return needs('balance') ?? json(200, {
      account_id: book.account.id, currency: 'GBP', current: pounds(book.balance), available: pounds(book.balance), as_of: book.asOf,
    });
  }
  const limit = Math.min(Math.max(Number(new URLSearchParams(search).get('limit')) || 50, 1), 100);
  return needs('transactions') ?? json(200, {
    account_id: book.account.id,
    transactions: book.transactions.slice(0, limit).map(({ id, booked_on, description, amount_pence }) => ({ id, booked_on, description, amount: pounds(amount_pence), currency: 'GBP' })),
  });
}
