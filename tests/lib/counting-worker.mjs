// The consentry Worker as built (build/index.js), with what its requests cost counted around
// it, for the subrequest test (H5): every fetch it makes (the Free plan allows 50 per
// request), the most open at once (6 allowed; a fetch is open until its body has been read
// to the end or cancelled, or for good if it never is), and every D1 statement it runs (50
// per request on Free; a batch counts each of its statements). Test only: the harness serves
// it with `startWorker({ main: COUNTING_WORKER })`, beside the real one.
//
//   GET /auth/__counts            the tally since the last read, as JSON, and a fresh one
//                                 (`?peek`: the tally, kept)
//   GET /auth/__d1?n=N            N trivial D1 statements, uncounted: what the platform's
//                                 side of a statement costs, to set beside the Worker's
//   GET /auth/__fetch?url=U&n=N   N fetches of U, each body read, uncounted: likewise
//
// Everything else goes to the Worker unchanged, with an `env` whose DB counts.

import { WorkerEntrypoint } from 'cloudflare:workers';

import ConsentryWorker from '../../build/index.js';

let tally = freshTally();

function freshTally() {
  return { fetches: [], open: 0, maxOpen: 0, d1: [] };
}

const realFetch = globalThis.fetch;
globalThis.fetch = async function countedFetch(input, init) {
  const request = new Request(input, init);
  const counted = tally;
  counted.fetches.push(`${request.method} ${new URL(request.url).pathname}`);
  counted.open += 1;
  counted.maxOpen = Math.max(counted.maxOpen, counted.open);
  let closed = false;
  const close = () => {
    if (!closed) counted.open -= 1;
    closed = true;
  };
  let response;
  try {
    response = await realFetch(request);
  } catch (error) {
    close();
    throw error;
  }
  // A body that cannot be wrapped (none, or a status that must have none) is done with.
  if (!response.body || [101, 204, 205, 304].includes(response.status)) {
    close();
    return response;
  }
  const body = response.body.pipeThrough(new TransformStream({ flush: close, cancel: close }));
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
};

// The names worker's bindings check (`constructor.name`).
class D1PreparedStatement {
  #real;
  #sql;
  constructor(real, sql) {
    this.#real = real;
    this.#sql = sql;
  }
  get sql() { return this.#sql.split(/\s+/, 1)[0]; }
  unwrap() { return this.#real; }
  #ran() { tally.d1.push(this.sql); }
  bind(...values) { return new D1PreparedStatement(this.#real.bind(...values), this.#sql); }
  first(column) { this.#ran(); return this.#real.first(column); }
  run() { this.#ran(); return this.#real.run(); }
  all() { this.#ran(); return this.#real.all(); }
  raw(options) { this.#ran(); return this.#real.raw(options); }
}

class D1Database {
  #real;
  constructor(real) { this.#real = real; }
  prepare(sql) { return new D1PreparedStatement(this.#real.prepare(sql), sql); }
  batch(statements) {
    for (const statement of statements) tally.d1.push(`batch ${statement.sql}`);
    return this.#real.batch(statements.map((statement) => statement.unwrap()));
  }
  exec(sql) { tally.d1.push('exec'); return this.#real.exec(sql); }
}

export default class CountingWorker extends WorkerEntrypoint {
  async fetch(request) {
    const url = new URL(request.url);
    const n = Number(url.searchParams.get('n') ?? 0);
    if (url.pathname === '/auth/__counts') {
      const counts = tally;
      if (!url.searchParams.has('peek')) tally = freshTally();
      return Response.json(counts);
    }
    if (url.pathname === '/auth/__d1') {
      for (let i = 0; i < n; i += 1) await this.env.DB.prepare('SELECT ?1 AS text').bind(i).first();
      return new Response(null, { status: 204 });
    }
    if (url.pathname === '/auth/__fetch') {
      for (let i = 0; i < n; i += 1) await (await realFetch(url.searchParams.get('url'))).arrayBuffer();
      return new Response(null, { status: 204 });
    }
    const db = new D1Database(this.env.DB);
    const env = new Proxy(this.env, { get: (target, name) => (name === 'DB' ? db : Reflect.get(target, name)) });
    return new ConsentryWorker(this.ctx, env).fetch(request);
  }
}
