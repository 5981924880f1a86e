import { request as httpRequest } from 'node:http';
import { useStack } from '../support/stack.js';

const USER = 'admin';
const PASSWORD = 'correct horse battery staple';
const basic = (password: string) =>
  `Basic ${Buffer.from(`${USER}:${password}`).toString('base64')}`;

/** Raw HTTP against the stack, as some client address (X-Forwarded-For, believed from loopback). */
async function get(
  base: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: Headers; body: any }> {
  const response = await fetch(`${base}${path}`, { headers });
  return { status: response.status, headers: response.headers, body: await response.json() };
}

const METRICS_TOKEN = 'metrics-token-0123456789';

describe('rate limits: per API key, and failed logins per client address', () => {
  const stack = useStack(
    {
      RATE_LIMIT_PER_MINUTE: '600',
      AUTH_FAILURES_PER_MINUTE: '10',
      ADMIN_USERNAME: USER,
      ADMIN_PASSWORD: PASSWORD,
      METRICS_TOKEN,
    },
    { worker: false },
  );

  it('answers the 601st request of a key in a minute with 429 RATE_LIMITED and Retry-After', async () => {
    const key = { 'x-api-key': stack.env.API_KEY, 'x-forwarded-for': '203.0.113.10' };
    // Another key, made with this one (its first request of the minute).
    const made = await fetch(`${stack.url}/api/v1/keys`, {
      method: 'POST',
      headers: { ...key, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'other', scopes: ['read'] }),
    });
    const otherKey = ((await made.json()) as { data: { key: string } }).data.key;
    const statuses: number[] = [];
    for (let batch = 0; batch < 6; batch++)
      statuses.push(
        ...(await Promise.all(
          Array.from({ length: batch < 5 ? 100 : 98 }, () =>
            get(stack.url, '/api/v1/sessions', key).then((answer) => answer.status),
          ),
        )),
      );
    expect(statuses.filter((status) => status !== 200)).toEqual([]);
    const six100th = await get(stack.url, '/api/v1/sessions', key);
    expect(six100th.status).toBe(200);
    expect(six100th.headers.get('x-ratelimit-remaining')).toBe('0');

    const limited = await get(stack.url, '/api/v1/sessions', key);
    expect(limited.status).toBe(429);
    expect(limited.body.error.code).toBe('RATE_LIMITED');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);

    // Another key is not affected, nor the admin.
    const other = await get(stack.url, '/api/v1/sessions', {
      'x-api-key': otherKey,
      'x-forwarded-for': '203.0.113.10',
    });
    expect(other.status).toBe(200);
    const admin = await get(stack.url, '/api/admin/sessions', {
      authorization: basic(PASSWORD),
      'x-forwarded-for': '203.0.113.10',
    });
    expect(admin.status).toBe(200);
  });

  it('slows a key-guessing loop: past the limit an address waits, even with the right key', async () => {
    const from = (address: string, apiKey: string) => ({
      'x-api-key': apiKey,
      'x-forwarded-for': address,
    });
    for (let i = 0; i < 10; i++) {
      const wrong = await get(stack.url, '/api/v1/sessions', from('198.51.100.7', `guess-${i}`));
      expect(wrong.status).toBe(401);
    }
    const blocked = await get(stack.url, '/api/v1/sessions', from('198.51.100.7', 'guess-10'));
    expect(blocked.status).toBe(429);
    expect(blocked.body.error.message).toContain('failed logins');
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    // Its guesses are no longer looked at: not even the right key gets in now.
    const right = await get(stack.url, '/api/v1/sessions', from('198.51.100.7', stack.env.API_KEY));
    expect(right.status).toBe(429);
    // Another address is not affected.
    const other = await get(stack.url, '/api/v1/workers', from('198.51.100.8', 'guess'));
    expect(other.status).toBe(401);
  });

  it('counts the guesses of an IPv6 network together: a new address of the same /64 each time waits too', async () => {
    for (let i = 1; i <= 10; i++) {
      const wrong = await get(stack.url, '/api/v1/sessions', {
        'x-api-key': `v6-guess-${i}`,
        'x-forwarded-for': `2001:db8:0:7::${i.toString(16)}`,
      });
      expect(wrong.status).toBe(401);
    }
    const blocked = await get(stack.url, '/api/v1/sessions', {
      'x-api-key': 'v6-guess-11',
      'x-forwarded-for': '2001:db8:0:7:ffff::b',
    });
    expect(blocked.status).toBe(429);
    // The next /64 is another network.
    const other = await get(stack.url, '/api/v1/sessions', {
      'x-api-key': 'v6-guess',
      'x-forwarded-for': '2001:db8:0:8::1',
    });
    expect(other.status).toBe(401);
  });

  it('answers 400 to a request that gives x-api-key twice, tries neither key and counts no failed login', async () => {
    // Raw HTTP: fetch would join the two into one header line itself.
    const twice = (keys: string[]) =>
      new Promise<{ status: number; body: any }>((resolve, reject) => {
        const outgoing = httpRequest(
          `${stack.url}/api/v1/sessions`,
          { headers: { 'x-api-key': keys, 'x-forwarded-for': '198.51.100.30' } },
          (answer) => {
            let text = '';
            answer.on('data', (chunk: Buffer) => (text += chunk.toString()));
            answer.on('end', () =>
              resolve({ status: answer.statusCode ?? 0, body: JSON.parse(text) }),
            );
          },
        );
        outgoing.on('error', reject).end();
      });
    for (const keys of [
      ...Array.from({ length: 11 }, () => [stack.env.API_KEY, stack.env.API_KEY]),
      ['guess', stack.env.API_KEY],
    ]) {
      const answer = await twice(keys);
      expect(answer).toEqual({
        status: 400,
        body: {
          ok: false,
          error: { code: 'BAD_REQUEST', message: 'Send one x-api-key header: this request has 2' },
        },
      });
    }
    // None counted towards AUTH_FAILURES_PER_MINUTE (10): the address's guesses still get 401.
    for (let i = 0; i < 10; i++) {
      const wrong = await get(stack.url, '/api/v1/workers', {
        'x-api-key': `twice-${i}`,
        'x-forwarded-for': '198.51.100.30',
      });
      expect(wrong.status).toBe(401);
    }
  });

  it('tells apart at most the limit of guesses sent all at once, and never refuses right keys for their number', async () => {
    const from = (address: string, apiKey: string) => ({
      'x-api-key': apiKey,
      'x-forwarded-for': address,
    });
    const burst = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        get(stack.url, '/api/v1/workers', from('198.51.100.20', `burst-${i}`)),
      ),
    );
    const statuses = burst.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 401).length).toBeLessThanOrEqual(10);
    expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(40);
    const right = await Promise.all(
      Array.from({ length: 50 }, () =>
        get(stack.url, '/api/v1/workers', from('198.51.100.21', stack.env.API_KEY)),
      ),
    );
    // (This key spent its rate limit above: what matters is that none is a failed-login refusal.)
    const refusedAsGuesses = right.filter((answer) =>
      String(answer.body.error?.message).includes('failed logins'),
    );
    expect(refusedAsGuesses).toEqual([]);
  });

  it('slows an admin password-guessing loop the same way', async () => {
    const as = (password: string) => ({
      authorization: basic(password),
      'x-forwarded-for': '192.0.2.44',
    });
    for (let i = 0; i < 10; i++)
      expect((await get(stack.url, '/api/admin/sessions', as(`guess-${i}`))).status).toBe(401);
    const blocked = await get(stack.url, '/api/admin/sessions', as(PASSWORD));
    expect(blocked.status).toBe(429);
    expect(blocked.body.error.code).toBe('RATE_LIMITED');
    // bull-board's routes count and refuse the same way.
    const board = await fetch(`${stack.url}/admin/queues/api/queues`, { headers: as(PASSWORD) });
    expect(board.status).toBe(429);
  });

  it('slows a metrics-token-guessing loop the same way', async () => {
    const as = (token: string) => ({
      authorization: `Bearer ${token}`,
      'x-forwarded-for': '192.0.2.45',
    });
    const scrape = (token: string) => fetch(`${stack.url}/metrics`, { headers: as(token) });
    for (let i = 0; i < 10; i++) expect((await scrape(`guess-${i}`)).status).toBe(401);
    const blocked = await scrape(METRICS_TOKEN);
    expect(blocked.status).toBe(429);
    expect(((await blocked.json()) as { error: { code: string } }).error.code).toBe('RATE_LIMITED');
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another address scrapes as before.
    const other = await fetch(`${stack.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}`, 'x-forwarded-for': '192.0.2.46' },
    });
    expect(other.status).toBe(200);
  });
});

describe("failed logins on a worker's port (WORKER_TOKEN), counted with the api's", () => {
  const WORKER_TOKEN = 'worker-token-0123456789';
  const stack = useStack({ AUTH_FAILURES_PER_MINUTE: '10', WORKER_TOKEN, METRICS_TOKEN });

  /** A GET to the worker's port from a loopback address of our choosing: an address of its own. */
  const fromWorker = (from: string, path: string, token?: string) =>
    new Promise<{ status: number; retryAfter?: string; body: any }>((resolve, reject) => {
      const outgoing = httpRequest(
        `${stack.workerUrl}${path}`,
        { localAddress: from, headers: token ? { authorization: `Bearer ${token}` } : {} },
        (answer) => {
          let text = '';
          answer.on('data', (chunk: Buffer) => (text += chunk.toString()));
          answer.on('end', () => {
            let body: unknown = text;
            try {
              body = JSON.parse(text);
            } catch {
              // Prometheus text
            }
            const retryAfter = answer.headers['retry-after'];
            resolve({ status: answer.statusCode ?? 0, retryAfter, body });
          });
        },
      );
      outgoing.on('error', reject).end();
    });

  it('slows a worker-token-guessing loop as the api does: past the limit an address waits, even with the right token', async () => {
    for (let i = 0; i < 10; i++)
      expect((await fromWorker('127.0.0.2', '/metrics', `guess-${i}`)).status).toBe(401);
    const blocked = await fromWorker('127.0.0.2', '/metrics', 'guess-10');
    expect(blocked.status).toBe(429);
    expect(blocked.body).toMatchObject({ ok: false, error: { code: 'RATE_LIMITED' } });
    expect(blocked.body.error.message).toContain('failed logins');
    expect(Number(blocked.retryAfter)).toBeGreaterThan(0);
    // Its guesses are no longer looked at: neither token the port takes gets in now.
    for (const token of [WORKER_TOKEN, METRICS_TOKEN])
      expect((await fromWorker('127.0.0.2', '/metrics', token)).status).toBe(429);
    // Health stays open; another address scrapes as before.
    expect((await fromWorker('127.0.0.2', '/health/live')).status).toBe(200);
    expect((await fromWorker('127.0.0.3', '/metrics', WORKER_TOKEN)).status).toBe(200);
  });

  it("counts an address's wrong tokens on the worker's port and wrong keys on the api together", async () => {
    for (let i = 0; i < 5; i++) {
      const wrongKey = await get(stack.url, '/api/v1/sessions', {
        'x-api-key': `guess-${i}`,
        'x-forwarded-for': '127.0.0.4',
      });
      expect(wrongKey.status).toBe(401);
      expect((await fromWorker('127.0.0.4', '/metrics', `guess-${i}`)).status).toBe(401);
    }
    expect((await fromWorker('127.0.0.4', '/metrics', WORKER_TOKEN)).status).toBe(429);
    const right = await get(stack.url, '/api/v1/sessions', {
      'x-api-key': stack.env.API_KEY,
      'x-forwarded-for': '127.0.0.4',
    });
    expect(right.status).toBe(429);
  });
});

describe('the api without API_KEY (development)', () => {
  const FRONTEND = 'http://localhost:5173';
  const stack = useStack(
    { NODE_ENV: 'development', API_KEY: '', CORS_ORIGINS: FRONTEND },
    { worker: false },
  );

  /** A request as a browser would send it: its Host is the name in the address bar. */
  const send = (method: string, path: string, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; body: any }>((resolve, reject) => {
      const outgoing = httpRequest(
        `${stack.url}${path}`,
        { method, headers: { 'content-type': 'application/json', ...headers } },
        (answer) => {
          let text = '';
          answer.on('data', (chunk: Buffer) => (text += chunk.toString()));
          answer.on('end', () =>
            resolve({ status: answer.statusCode ?? 0, body: text ? JSON.parse(text) : null }),
          );
        },
      );
      outgoing.on('error', reject).end(body);
    });
  const made = (id: string) => JSON.stringify({ id });

  it("takes a browser's state-changing request only from its own pages and CORS_ORIGINS', and answers only to an IP, localhost or BASE_URL", async () => {
    const port = new URL(stack.url).port;
    // Not a browser (curl, an SDK): no Sec-Fetch-Site, no Origin.
    expect((await send('POST', '/api/v1/sessions', {}, made('plain'))).status).toBe(201);
    // The Swagger UI of this server, opened at localhost.
    const own = {
      'sec-fetch-site': 'same-origin',
      origin: `http://localhost:${port}`,
      host: `localhost:${port}`,
    };
    expect((await send('POST', '/api/v1/sessions', own, made('own'))).status).toBe(201);
    // The developer's frontend, allowed by CORS_ORIGINS: another port is another site.
    const frontend = { 'sec-fetch-site': 'same-site', origin: FRONTEND };
    expect((await send('POST', '/api/v1/sessions', frontend, made('frontend'))).status).toBe(201);
    // Any other site's page: a form post or a no-cors fetch, which needs no preflight.
    for (const headers of <Record<string, string>[]>[
      { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' },
      { 'sec-fetch-site': 'same-site', origin: `http://other.localhost:${port}` },
      { origin: 'https://evil.example' },
    ]) {
      const refused = await send('POST', '/api/v1/sessions', headers, made('forged'));
      expect(refused.status, JSON.stringify(headers)).toBe(403);
      expect(refused.body.error.message).toMatch(
        /^Without API_KEY the api takes a browser's request only from its own pages/,
      );
    }
    // A file upload, refused before its body is read.
    const upload = await send(
      'POST',
      '/api/v1/messages/media',
      { 'sec-fetch-site': 'cross-site', 'content-type': 'multipart/form-data; boundary=x' },
      '--x--',
    );
    expect(upload.status).toBe(403);
    // A page of a name made to resolve here (DNS rebinding) is same-origin with the api, and
    // its browser sends it no Sec-Fetch-Site over plain http: it may neither send nor read.
    for (const method of ['POST', 'GET']) {
      const rebound = await send(
        method,
        '/api/v1/sessions',
        { host: `rebound.example:${port}` },
        method === 'POST' ? made('rebound') : undefined,
      );
      expect(rebound.status, method).toBe(403);
      expect(rebound.body.error.message).toMatch(
        /^Without API_KEY the api answers only to an IP address, localhost or BASE_URL's host, not "rebound\.example/,
      );
    }
    // Reading from an IP or localhost is not refused (another site's page cannot read the answer).
    expect((await send('GET', '/api/v1/sessions', { 'sec-fetch-site': 'cross-site' })).status).toBe(
      200,
    );
    const ids = (await send('GET', '/api/v1/sessions', {})).body.data.map(
      (s: { id: string }) => s.id,
    );
    expect(ids).toEqual(expect.arrayContaining(['plain', 'own', 'frontend']));
    expect(ids).not.toContain('forged');
    expect(ids).not.toContain('rebound');
  });
});
