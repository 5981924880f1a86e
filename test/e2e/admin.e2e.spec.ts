import { request as httpRequest } from 'node:http';
import { eventually } from '../support/eventually.js';
import { Stack, useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';

const USER = 'admin';
const PASSWORD = 'correct horse battery staple';
const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/** Raw HTTP against the stack, with Basic Auth unless told otherwise. */
async function request(
  stack: Stack,
  method: string,
  path: string,
  options: {
    auth?: string | null;
    json?: unknown;
    form?: Record<string, string>;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  const auth = options.auth === undefined ? basic(USER, PASSWORD) : options.auth;
  if (auth) headers.authorization = auth;
  let body: string | undefined;
  if (options.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(options.form).toString();
  }
  const response = await fetch(stack.url + path, { method, headers, body, redirect: 'manual' });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** The workers banners a page shows (`none`, `draining`), hidden ones left out. */
function shownBanners(html: string): string[] {
  return [...html.matchAll(/data-workers-banner="(\w+)"( hidden)?/g)]
    .filter((match) => !match[2])
    .map((match) => match[1]);
}

/** The texts of the session page's shown phase that depend on the workers, hidden ones left out. */
function shownTexts(html: string): string[] {
  const phase = /<div class="phase[^"]*" data-phases="[\w ]+" >([\s\S]*?)<\/div>/.exec(html);
  return [...(phase?.[1] ?? '').matchAll(/<p data-workers="\w+" >([\s\S]*?)<\/p>/g)].map(
    (match) => match[1],
  );
}

/** `name=value` pairs of the Set-Cookie headers, ready for a Cookie header. */
function cookiesOf(answer: Answer): string {
  return answer.headers
    .getSetCookie()
    .map((cookie) => cookie.split(';')[0])
    .join('; ');
}

/** A CSRF token and its cookie, as the pages get them. */
async function csrf(stack: Stack): Promise<{ token: string; cookie: string }> {
  const answer = await request(stack, 'GET', '/api/admin/csrf-token');
  expect(answer.status).toBe(200);
  return { token: answer.json.data.token, cookie: cookiesOf(answer) };
}

describe('admin pages with ADMIN_PASSWORD set (sandbox engine)', () => {
  const stack = useStack({
    ADMIN_USERNAME: USER,
    ADMIN_PASSWORD: PASSWORD,
    SANDBOX_LINK_DELAY_MS: 'manual',
  });

  it.each(['/admin', '/admin/sessions/main', '/api/admin/sessions', '/admin/queues'])(
    'answers %s without credentials with 401 and a Basic WWW-Authenticate challenge',
    async (path) => {
      const answer = await request(stack, 'GET', path, { auth: null });
      expect(answer.status).toBe(401);
      expect(answer.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+"/);
      expect(answer.text).not.toContain('main</');
    },
  );

  it.each([
    '/admin/queues/api/queues',
    '/admin//queues/api/queues',
    '/admin/queues/%61pi/queues',
    '/%61dmin/queues/api/queues',
    '/%61dmin/assets/admin.css',
    '/admin/assets/admin.css',
    '/admin//assets/admin.css',
  ])('never serves %s (another spelling of a protected path) without credentials', async (path) => {
    const answer = await request(stack, 'GET', path, { auth: null });
    expect([401, 404]).toContain(answer.status);
    expect(answer.text).not.toContain('send-main');
    expect(answer.text).not.toContain('.badge');
  });

  it('refuses a wrong password, a wrong user and a malformed header with 401', async () => {
    for (const auth of [basic(USER, 'wrong'), basic('root', PASSWORD), 'Basic !!!', 'Bearer x']) {
      const answer = await request(stack, 'GET', '/api/admin/sessions', { auth });
      expect(answer.status, auth).toBe(401);
      expect(answer.json.error.code).toBe('UNAUTHORIZED');
    }
  });

  it('serves the sessions page with a strict CSP, security headers and the sandbox banner', async () => {
    const answer = await request(stack, 'GET', '/admin');
    expect(answer.status).toBe(200);
    expect(answer.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = answer.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(answer.headers.get('x-content-type-options')).toBe('nosniff');
    expect(answer.headers.get('cache-control')).toBe('no-store');
    expect(answer.text).toContain('No real WhatsApp messages are sent');
    expect(answer.text).not.toContain('These pages are open');
    expect(answer.text).toContain('href="/admin/sessions/main"');
    // No inline script or style anywhere on the page.
    expect(answer.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(answer.text).not.toMatch(/<style|\sstyle=/);
  });

  it("gives bull-board its own CSP, every admin page same-origin referrers and no HSTS, and the API none of helmet's headers", async () => {
    const board = await request(stack, 'GET', '/admin/queues');
    expect(board.status).toBe(200);
    const csp = board.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("style-src 'self' 'unsafe-inline'");
    expect(csp).toContain("img-src 'self' data:");
    expect(csp).toContain("frame-ancestors 'none'");
    for (const answer of [board, await request(stack, 'GET', '/admin')]) {
      expect(answer.headers.get('referrer-policy')).toBe('same-origin');
      expect(answer.headers.get('x-frame-options')).toBe('SAMEORIGIN');
      expect(answer.headers.get('strict-transport-security')).toBeNull();
    }
    const api = await request(stack, 'GET', '/api/v1/sessions', {
      auth: null,
      headers: { 'x-api-key': stack.env.API_KEY },
    });
    expect(api.status).toBe(200);
    expect(api.headers.get('content-security-policy')).toBeNull();
    expect(api.headers.get('x-content-type-options')).toBeNull();
  });

  it('serves the static assets only with credentials', async () => {
    expect((await request(stack, 'GET', '/admin/assets/admin.js', { auth: null })).status).toBe(
      401,
    );
    const script = await request(stack, 'GET', '/admin/assets/admin.js');
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    expect((await request(stack, 'GET', '/admin/assets/admin.css')).status).toBe(200);
  });

  it('refuses a forged cross-site form post (no token, foreign Origin) with 403', async () => {
    const forged = await request(stack, 'POST', '/admin/sessions', {
      form: { id: 'forged' },
      headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
    });
    expect(forged.status).toBe(403);
    const json = await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'forged' },
      headers: { origin: 'https://evil.example' },
    });
    expect(json.status).toBe(403);
    expect(json.json.error.code).toBe('FORBIDDEN');
    expect((await stack.call('GET', '/api/v1/sessions/forged/status')).status).toBe(404);
  });

  it('refuses a state change without a CSRF token, or with a valid token from another site', async () => {
    const noToken = await request(stack, 'POST', '/api/admin/sessions', { json: { id: 'x1' } });
    expect(noToken.status).toBe(403);
    expect(noToken.json.error.message).toContain('CSRF');

    const { token, cookie } = await csrf(stack);
    const wrongToken = await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'x1' },
      headers: { cookie, 'x-csrf-token': `${token}x` },
    });
    expect(wrongToken.status).toBe(403);

    const foreign = await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'x1' },
      headers: { cookie, 'x-csrf-token': token, origin: 'https://evil.example' },
    });
    expect(foreign.status).toBe(403);
    const sameSite = await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'x1' },
      headers: { cookie, 'x-csrf-token': token, 'sec-fetch-site': 'same-site' },
    });
    expect(sameSite.status).toBe(403);

    // The same token and cookie from this site are accepted.
    const ok = await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'x1' },
      headers: {
        cookie,
        'x-csrf-token': token,
        origin: stack.url,
        'sec-fetch-site': 'same-origin',
      },
    });
    expect(ok.status).toBe(201);
    expect(ok.json.data.id).toBe('x1');
  });

  it('serves the session actions of /api/v1 under /api/admin behind the admin login only', async () => {
    const apiKey = { 'x-api-key': stack.env.API_KEY };
    // The admin set takes the admin login, not an API key; the public set the other way round.
    const keyOnAdmin = await request(stack, 'POST', '/api/admin/sessions/main/reconnect', {
      auth: null,
      headers: apiKey,
    });
    expect(keyOnAdmin.status).toBe(401);
    const loginOnPublic = await request(stack, 'POST', '/api/v1/sessions/main/reconnect');
    expect(loginOnPublic.status).toBe(401);
    expect(loginOnPublic.json.error.message).toContain('x-api-key');

    // One definition: the same operations, the same answers, under both prefixes.
    const doc = (await (await fetch(`${stack.url}/api/openapi`)).json()) as {
      paths: Record<string, Record<string, { summary?: string; operationId?: string }>>;
    };
    const operations = (prefix: string, controller: string) =>
      Object.entries(doc.paths)
        .filter(([path]) => path.startsWith(prefix))
        .flatMap(([path, ops]) =>
          Object.entries(ops)
            .filter(([, op]) => op.operationId?.startsWith(`${controller}_`))
            .map(([method, op]) => `${method} ${path.slice(prefix.length)} ${op.summary}`),
        );
    const admin = operations('/api/admin/sessions', 'AdminSessionActionsController');
    expect(admin).toEqual(
      expect.arrayContaining([
        'post  Create a session and start it',
        'post /{id}/reconnect Restart the session (keeps the link)',
        'post /{id}/pairing-code Link by phone number instead of QR',
        'delete /{id} Stop the session, delete its login and unregister it',
      ]),
    );
    expect(admin).toHaveLength(7);
    const publicOnes = operations('/api/v1/sessions', 'SessionsController');
    for (const action of admin) expect(publicOnes).toContain(action);

    const { token, cookie } = await csrf(stack);
    const qr = await request(stack, 'GET', '/api/admin/sessions/nosuch/qr');
    expect(qr.status).toBe(404);
    const reconnect = await request(stack, 'POST', '/api/admin/sessions/main/reconnect', {
      headers: { cookie, 'x-csrf-token': token, origin: stack.url },
    });
    expect(reconnect.status).toBe(202);
    expect(reconnect.json.data).toMatchObject({ id: 'main' });
  });

  it('shows a session WhatsApp restricts on the sessions page, with until when', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'limited' });
    const until = new Date(Date.now() + 3_600_000);
    await stack.redis.hset(stack.keys.session('limited'), {
      restrictedUntil: until.toISOString(),
      restriction: 'error 463',
    });
    const page = await request(stack, 'GET', '/admin');
    const card = page.text.slice(page.text.indexOf('data-session="limited"'));
    const shown = `WhatsApp restricts sending (error 463) until ${until.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
    expect(card.slice(0, card.indexOf('</article>'))).toContain(shown);
    const json = (await request(stack, 'GET', '/api/admin/sessions')).json.data;
    expect(json.find((s: { id: string }) => s.id === 'limited').restriction).toMatchObject({
      code: 'RATE_LIMITED_BY_WHATSAPP',
      until: until.toISOString(),
    });
    await stack.call('DELETE', '/api/v1/sessions/limited');
  });

  it('creates a session with a form post and redirects to its page with a flash message', async () => {
    const page = await request(stack, 'GET', '/admin');
    const token = /name="csrf-token" content="([^"]+)"/.exec(page.text)?.[1];
    expect(token).toBeTruthy();
    const cookie = cookiesOf(page);
    const posted = await request(stack, 'POST', '/admin/sessions', {
      form: { _csrf: token!, id: 'sales' },
      headers: { cookie, origin: stack.url },
    });
    expect(posted.status).toBe(303);
    expect(posted.headers.get('location')).toBe('/admin/sessions/sales');
    const next = await request(stack, 'GET', '/admin/sessions/sales', {
      headers: { cookie: `${cookie}; ${cookiesOf(posted)}` },
    });
    expect(next.status).toBe(200);
    expect(next.text).toContain('Session sales created');
    expect(next.text).toContain('Link now (sandbox)');

    // Refused: the page again, the refusal beside the form (admin-forms.e2e.spec.ts).
    const duplicate = await request(stack, 'POST', '/admin/sessions', {
      form: { _csrf: token!, id: 'sales' },
      headers: { cookie },
    });
    expect(duplicate.status).toBe(409);
    expect(duplicate.text).toContain('Session sales already exists');
  });

  it('gives a pairing code through the JSON route and through the form', async () => {
    const { token, cookie } = await csrf(stack);
    await eventually(async () =>
      expect((await request(stack, 'GET', '/api/admin/sessions/sales')).json.data.status).toBe(
        'QR',
      ),
    );
    const answer = await request(stack, 'POST', '/api/admin/sessions/sales/pairing-code', {
      json: { phone: '+49 151 2345 6789' },
      headers: { cookie, 'x-csrf-token': token },
    });
    expect(answer.status).toBe(200);
    expect(answer.json.data.pairingCode).toMatch(/^[0-9A-F]{8}$/);
    await eventually(async () =>
      expect((await request(stack, 'GET', '/api/admin/sessions/sales')).json.data).toMatchObject({
        status: 'PAIRING_CODE',
        pairingCode: answer.json.data.pairingCode,
      }),
    );
    const page = await request(stack, 'GET', '/admin/sessions/sales');
    expect(page.text).toContain(answer.json.data.pairingCode);

    const form = await request(stack, 'POST', '/admin/sessions/sales/pairing-code', {
      form: { _csrf: token, phone: 'call me' },
      headers: { cookie },
    });
    expect(form.status).toBe(400);
    expect(form.text).toContain('phone must be a phone number');
  });

  it('counts a message scheduled for later apart from the queued ones, on the cards, the session page and in the JSON', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'later' })).status).toBe(201);
    const sendAt = new Date(Date.now() + 3_600_000).toISOString();
    const scheduled = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'later',
      to: '4915100000077',
      text: 'in an hour',
      sendAt,
    });
    expect(scheduled.status).toBe(202);
    expect(scheduled.body.data.status).toBe('scheduled');
    const json = await request(stack, 'GET', '/api/admin/sessions/later');
    // queued keeps counting scheduled ones (as before); scheduled says how many of them.
    expect(json.json.data.counts).toEqual({
      queued: 1,
      scheduled: 1,
      sending: 0,
      sent: 0,
      failed: 0,
    });
    const card = (html: string) =>
      /<ul class="counts"[\s\S]*?<\/ul>/.exec(
        // The card of `later` on the list; the session page has one session's counts.
        html.slice(Math.max(html.indexOf('data-session="later"'), 0)),
      )?.[0] ?? '';
    for (const html of [
      (await request(stack, 'GET', '/admin')).text,
      (await request(stack, 'GET', '/admin/sessions/later')).text,
    ]) {
      const counts = card(html);
      expect(counts).toContain('<span class="count-n" data-count="queuedNow">0</span>');
      expect(counts).toContain(
        '<span class="count-note" data-bind="scheduledNote">+<span data-count="scheduled">1</span> scheduled</span>',
      );
    }
    const other = card((await request(stack, 'GET', '/admin/sessions/main')).text);
    expect(other).toContain('data-bind="scheduledNote" hidden>');
  });

  it('answers an unknown session page with an HTML 404', async () => {
    const answer = await request(stack, 'GET', '/admin/sessions/nosuch');
    expect(answer.status).toBe(404);
    expect(answer.text).toContain('Session nosuch does not exist');
  });

  it.each([
    ['/admin/nope', 404, 'There is no admin page at /admin/nope'],
    ['/admin/sessions/main/qr', 404, 'There is no admin page at /admin/sessions/main/qr'],
    // A route's parameter left empty, which Nest hands to the API's JSON not-found handler.
    ['/admin/sessions/', 404, 'There is no admin page at /admin/sessions/'],
    ['/admin/sessions/%E0%A4%A', 400, 'Malformed percent-encoding in the URL'],
    [`/admin/sessions/${'x'.repeat(101)}`, 400, 'A path parameter is longer than 100 characters'],
  ])(
    "answers %s, which no admin page serves, with the admin's HTML error page (%i)",
    async (path, status, message) => {
      const answer = await request(stack, 'GET', path);
      expect(answer.status).toBe(status);
      expect(answer.headers.get('content-type')).toMatch(/^text\/html/);
      expect(answer.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(answer.headers.get('cache-control')).toBe('no-store');
      expect(answer.text).toContain(`<p>${message}</p>`);
      expect(answer.text).toContain('Back to sessions');
      expect(answer.text).toContain('Engine <code>sandbox</code>');
    },
  );

  it.each([
    ['/api/admin/nope', 404],
    ['/api/admin/sessions/%E0%A4%A', 400],
    ['/api/nope', 404],
  ])('still answers %s with the JSON envelope (%i)', async (path, status) => {
    const answer = await request(stack, 'GET', path);
    expect(answer.status).toBe(status);
    expect(answer.headers.get('content-type')).toMatch(/^application\/json/);
    expect(answer.json.ok).toBe(false);
  });

  it('links, sends a test message through the public send path, and follows it to read', async () => {
    const { token, cookie } = await csrf(stack);
    const headers = { cookie, 'x-csrf-token': token };
    await eventually(async () =>
      expect((await request(stack, 'GET', '/api/admin/sessions/main')).json.data.status).toBe('QR'),
    );
    const qr = await request(stack, 'GET', '/api/admin/sessions/main/qr');
    expect(qr.status).toBe(200);
    expect(qr.headers.get('content-type')).toBe('image/png');
    expect(
      (await request(stack, 'POST', '/api/admin/sessions/main/link', { headers })).status,
    ).toBe(202);
    await stack.waitReady('main');

    const sent = await request(stack, 'POST', '/api/admin/sessions/main/messages', {
      json: { to: '+49 151 2345 6789', text: 'admin test' },
      headers,
    });
    expect(sent.status).toBe(202);
    expect(sent.json.data).toMatchObject({ sessionId: 'main', status: 'queued' });
    await eventually(async () => {
      const message = await request(stack, 'GET', `/api/admin/messages/${sent.json.data.id}`);
      expect(message.json.data.status).toBe('read');
    });
    const detail = (await request(stack, 'GET', '/api/admin/sessions/main')).json.data;
    expect(detail.counts).toEqual({ sent: 1, failed: 0, queued: 0, scheduled: 0, sending: 0 });
    expect(detail.recentMessages[0].id).toBe(sent.json.data.id);

    const invalid = await request(stack, 'POST', '/api/admin/sessions/main/messages', {
      json: { to: 'nobody', text: '' },
      headers,
    });
    expect(invalid.status).toBe(400);
    expect(invalid.json.error.code).toBe('BAD_REQUEST');
  });

  it('lists every session’s send queue in bull-board, including sessions created later', async () => {
    const page = await request(stack, 'GET', '/admin/queues');
    expect(page.status).toBe(200);
    expect(page.text).toContain('<base href="/admin/queues/"');
    const { token, cookie } = await csrf(stack);
    await request(stack, 'POST', '/api/admin/sessions', {
      json: { id: 'later' },
      headers: { cookie, 'x-csrf-token': token },
    });
    await eventually(async () => {
      const queues = await request(stack, 'GET', '/admin/queues/api/queues?activeQueue=&page=1');
      expect(queues.status).toBe(200);
      const names = (queues.json.queues as { name: string }[]).map((queue) => queue.name);
      expect(names.some((name) => name.endsWith('send-main'))).toBe(true);
      expect(names.some((name) => name.endsWith('send-later'))).toBe(true);
    }, 8000);
  });

  it('shows the worker that drives a session as its send queue’s worker in bull-board, not "No workers"', async () => {
    // Every session's queue is consumed through one shared connection, which bull-board's own
    // count (connection names) did not find.
    await eventually(async () => {
      const queues = await request(stack, 'GET', '/admin/queues/api/queues?activeQueue=&page=1');
      const main = (queues.json.queues as { name: string; hasWorkers: boolean | null }[]).find(
        (queue) => queue.name.endsWith('send-main'),
      );
      expect(main?.hasWorkers).toBe(true);
    }, 8000);
  });

  it('documents the /api/admin routes under the admin tag with Basic Auth and the CSRF header', async () => {
    const spec = (await stack.call('GET', '/api/openapi')).body;
    expect(spec.components.securitySchemes.admin).toEqual({ type: 'http', scheme: 'basic' });
    const adminPaths = Object.keys(spec.paths).filter((path) => path.startsWith('/api/admin'));
    expect(adminPaths.length).toBeGreaterThan(5);
    expect(Object.keys(spec.paths).some((path) => path.startsWith('/admin'))).toBe(false);
    for (const path of adminPaths) {
      for (const [method, operation] of Object.entries<any>(spec.paths[path])) {
        expect(operation.tags, `${method} ${path}`).toEqual(['admin']);
        expect(operation.security, `${method} ${path}`).toContainEqual({ admin: [] });
        if (method !== 'get') {
          expect(
            operation.parameters.map((p: { name: string }) => p.name),
            `${method} ${path}`,
          ).toContain('x-csrf-token');
        }
      }
    }
  });

  it('lists the live workers with a badge each, and drains and undrains one with a form post', async () => {
    const { WorkerRepository } = await import('@app/status-store');
    const workers = stack.api!.get(WorkerRepository);
    const beat = (id: string, startsFailing: boolean, maxSessions = startsFailing ? 0 : 12) =>
      workers.beat(
        {
          id,
          host: `host-of-${id}`,
          pid: 7,
          version: '9.9.9',
          startedAt: new Date().toISOString(),
          sessions: startsFailing ? [] : ['main'],
          maxSessions,
          startsFailing,
        },
        60_000,
      );
    const fakes = ['worker-fine', 'worker-broken', 'worker-trying'];
    try {
      await beat('worker-fine', false);
      await beat('worker-broken', true);
      // Its starts fail, but no worker where they start takes sessions: it keeps trying.
      await beat('worker-trying', true, 50);
      const row = (text: string, id: string) =>
        new RegExp(`<article class="card" data-worker="${id}">([\\s\\S]*?)</article>`).exec(
          text,
        )?.[1] ?? '';
      const page = await request(stack, 'GET', '/admin/workers');
      expect(page.status).toBe(200);
      expect(page.text).toContain('aria-current="page">Workers</a>');
      expect(row(page.text, 'worker-fine')).toContain(
        'badge badge-ok" data-bind="state">taking sessions',
      );
      expect(row(page.text, 'worker-fine')).toContain('of at most 12');
      expect(row(page.text, 'worker-fine')).toContain('href="/admin/sessions/main"');
      expect(row(page.text, 'worker-broken')).toContain(
        'badge badge-bad" data-bind="state">starts failing',
      );
      expect(row(page.text, 'worker-broken')).toContain('hands them to the others');
      expect(row(page.text, 'worker-trying')).toContain(
        'badge badge-bad" data-bind="state">starts failing',
      );
      expect(row(page.text, 'worker-trying')).toContain('it keeps trying');
      // The stack's own worker is there too.
      expect(page.text.match(/<article class="card" data-worker=/g)).toHaveLength(4);

      const token = /name="csrf-token" content="([^"]+)"/.exec(page.text)![1];
      const cookie = cookiesOf(page);
      const post = (path: string) =>
        request(stack, 'POST', path, {
          form: { _csrf: token },
          headers: { cookie, origin: stack.url },
        });
      const drained = await post('/admin/workers/worker-fine/drain');
      expect(drained.status).toBe(303);
      expect(drained.headers.get('location')).toBe('/admin/workers');
      const after = await request(stack, 'GET', '/admin/workers', {
        headers: { cookie: `${cookie}; ${cookiesOf(drained)}` },
      });
      expect(after.text).toContain('Worker worker-fine is draining');
      expect(row(after.text, 'worker-fine')).toContain(
        'badge badge-wait" data-bind="state">draining',
      );
      expect(row(after.text, 'worker-fine')).toContain(
        'action="/admin/workers/worker-fine/undrain"',
      );
      expect(await stack.redis.sismember(stack.keys.drainingWorkers(), 'worker-fine')).toBe(1);

      expect((await post('/admin/workers/worker-fine/undrain')).status).toBe(303);
      expect(await stack.redis.sismember(stack.keys.drainingWorkers(), 'worker-fine')).toBe(0);
      const gone = await post('/admin/workers/no-such-worker/drain');
      expect(gone.status).toBe(303);
      expect(decodeURIComponent(cookiesOf(gone))).toContain('No live worker no-such-worker');
      // Each action is in the audit log.
      const audit = await request(stack, 'GET', '/admin/audit');
      // A route on the page may break after its slashes (<wbr>).
      const routes = audit.text.replaceAll('<wbr>', '');
      expect(routes).toContain('POST /admin/workers/:id/drain');
      expect(routes).toContain('POST /admin/workers/:id/undrain');
    } finally {
      // Not left in the stack's placement, whatever failed above.
      for (const id of fakes) await workers.remove(id);
    }
  });

  it('refuses a test message with 503 when no worker is running, as the public API does', async () => {
    const { token, cookie } = await csrf(stack);
    await stack.stopWorker();
    await eventually(async () => {
      const answer = await request(stack, 'POST', '/api/admin/sessions/main/messages', {
        json: { to: '4915123456789', text: 'nobody home' },
        headers: { cookie, 'x-csrf-token': token },
      });
      expect(answer.status).toBe(503);
      expect(answer.json.error.code).toBe('UNAVAILABLE');
    });
  });
});

describe('the session page: received messages and webhooks (sandbox engine)', () => {
  const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
  const GLOBAL_SECRET = 'whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkh';
  const PNG =
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
  const UNKNOWN_DELIVERY = 'evt_000000000aaaaaaaaaaaaaaaa_s000000000000';
  let hook: WebhookReceiver;
  let globalHook: WebhookReceiver;
  let globalUrl: string;
  let headers: Record<string, string>;

  const detail = async () => {
    const answer = await request(stack, 'GET', '/api/admin/sessions/main');
    expect(answer.status).toBe(200);
    return answer.json.data;
  };

  beforeAll(async () => {
    // The session's own target refuses the first delivery (400: final), then accepts.
    hook = await WebhookReceiver.start((n) => (n === 1 ? 400 : 200));
    globalHook = await WebhookReceiver.start();
    // WEBHOOK_URLS may carry a password in the URL: a secret the page must not show either.
    globalUrl = globalHook.url.replace('http://', 'http://ops:pa55word@');
  });
  afterAll(async () => {
    await hook?.close();
    await globalHook?.close();
  });
  const stack = useStack(() => ({
    ADMIN_USERNAME: USER,
    ADMIN_PASSWORD: PASSWORD,
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_BACKOFF_MS: '20',
    WEBHOOK_URLS: globalUrl,
    WEBHOOK_SECRET: GLOBAL_SECRET,
  }));
  beforeAll(async () => {
    await stack.waitReady();
    const { token, cookie } = await csrf(stack);
    headers = { cookie, 'x-csrf-token': token };
  });

  it('receives a test message through the admin route and lists it in the JSON and the page', async () => {
    const answer = await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
      json: { from: '+49 (151) 2345-6789', text: 'Where is my parcel?' },
      headers,
    });
    expect(answer.status).toBe(202);
    expect(answer.json.data.id).toMatch(/^in_[0-9a-f]{27}$/);
    const received = await eventually(async () => {
      const [newest] = (await detail()).recentIncoming;
      expect(newest?.id).toBe(answer.json.data.id);
      return newest;
    });
    expect(received).toEqual({
      id: answer.json.data.id,
      chatId: '4915123456789@c.us',
      from: '4915123456789@c.us',
      fromPhone: '4915123456789',
      isGroup: false,
      type: 'text',
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      receivedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      preview: 'Where is my parcel?',
      media: null,
    });
    const page = await request(stack, 'GET', '/admin/sessions/main');
    expect(page.text).toContain('Last 10 received messages');
    expect(page.text).toContain(
      '<td class="preview" data-label="Message">Where is my parcel?</td>',
    );
    expect(page.text).toContain('<td class="nowrap" data-label="From">+4915123456789</td>');
    expect(page.text).toContain('Receive a test message from');
  });

  it('shows a group message with media by type and size, and cuts a long text', async () => {
    const long = `${'ab '.repeat(100)}end`;
    const injected = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915100000001',
      groupId: '120363025246125486@g.us',
      text: long,
      media: { mimetype: 'image/png', filename: 'dot.png', dataBase64: PNG },
    });
    expect(injected.status).toBe(202);
    const size = Buffer.from(PNG, 'base64').length;
    const received = await eventually(async () => {
      const [newest] = (await detail()).recentIncoming;
      expect(newest?.id).toBe(injected.body.data.id);
      return newest;
    });
    const preview = `${'ab '.repeat(100).replace(/ $/, '')}`.slice(0, 159);
    expect(received).toMatchObject({
      chatId: '120363025246125486@g.us',
      fromPhone: '4915100000001',
      isGroup: true,
      type: 'image',
      preview: `${preview}…`,
      media: { mimetype: 'image/png', size, text: `image/png · ${size} B` },
    });
    // Type and size only: no link to the bytes, which need an API key.
    expect(Object.keys(received.media)).toEqual(['mimetype', 'size', 'text']);
    expect(received.preview).toHaveLength(160);
    const page = await request(stack, 'GET', '/admin/sessions/main');
    expect(page.text).toContain(
      '<td class="nowrap" data-label="From">+4915100000001 <span class="tag" title="120363025246125486@g.us">group</span></td>',
    );
    expect(page.text).toContain(`image<span class="cell-note">image/png · ${size} B</span>`);
    // The media bytes need an API key: the page does not link to them.
    expect(page.text).not.toContain('/media');
  });

  it('refuses a test message without CSRF (403), with a bad body (400), for an unknown session (404)', async () => {
    const before = (await detail()).recentIncoming.length;
    const noToken = await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
      json: { from: '4915123456789', text: 'forged' },
    });
    expect(noToken.status).toBe(403);
    expect(noToken.json).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    const foreign = await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
      json: { from: '4915123456789', text: 'forged' },
      headers: { ...headers, origin: 'https://evil.example' },
    });
    expect(foreign.status).toBe(403);
    for (const body of [
      { from: 'nobody', text: 'x' },
      { from: '4915123456789', text: '' },
      { from: '4915123456789' },
      { from: '4915123456789', text: 'x', groupId: '120363025246125486@g.us' },
    ]) {
      const bad = await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
        json: body,
        headers,
      });
      expect(bad.status, JSON.stringify(body)).toBe(400);
      expect(bad.json.ok).toBe(false);
      expect(bad.json.error.code).toBe('BAD_REQUEST');
    }
    const unknown = await request(stack, 'POST', '/api/admin/sessions/nosuch/sandbox/incoming', {
      json: { from: '4915123456789', text: 'x' },
      headers,
    });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error).toMatchObject({
      code: 'NOT_FOUND',
      message: 'Session nosuch does not exist',
    });
    const malformed = await request(stack, 'POST', '/api/admin/sessions/-x/sandbox/incoming', {
      json: { from: '4915123456789', text: 'x' },
      headers,
    });
    expect(malformed.status).toBe(400);
    expect((await detail()).recentIncoming).toHaveLength(before);
  });

  it.each([
    [
      'text that is not Unicode (half a surrogate pair)',
      { text: 'ok \ud83d' },
      'not valid Unicode',
    ],
    [
      'a key named like an Object.prototype member',
      { text: 'ok', constructor: 'x' },
      'constructor',
    ],
  ])(
    'refuses in the page forms, as the JSON routes do, a body with %s: the page again with the refusal, nothing sent or received',
    async (_what, odd, refusal) => {
      const ids = (listed: { id: string }[]) => listed.map((item) => item.id);
      const before = await detail();
      for (const [form, route, body] of [
        ['sandbox/incoming', 'sandbox/incoming', { from: '+4915100000001', ...odd }],
        ['test-message', 'messages', { to: '+4915100000001', ...odd }],
      ] as [form: string, route: string, body: object][]) {
        const refused = await request(stack, 'POST', `/api/admin/sessions/main/${route}`, {
          json: body,
          headers,
        });
        expect(refused.status, route).toBe(400);
        expect(refused.json.error.message).toContain(refusal);
        // A page form posted with a JSON body (Nest parses one for any route).
        const posted = await request(stack, 'POST', `/admin/sessions/main/${form}`, {
          json: body,
          headers,
        });
        expect(posted.status, form).toBe(400);
        expect(posted.headers.get('location')).toBeNull();
        expect(posted.text).toMatch(/<p class="form-error" id="[a-z-]+-error" role="alert">/);
        expect(posted.text).toContain(refusal);
      }
      const after = await detail();
      expect(after.counts).toEqual(before.counts);
      expect(ids(after.recentMessages)).toEqual(ids(before.recentMessages));
      expect(ids(after.recentIncoming)).toEqual(ids(before.recentIncoming));
    },
  );

  it('lists the webhook targets, global and own, without any secret in the JSON or the page', async () => {
    const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { url: hook.url, events: ['message.received'], secret: SECRET },
    ]);
    expect(put.status).toBe(200);
    const data = await detail();
    expect(data.webhookTargets).toEqual([
      {
        id: expect.stringMatching(/^g[0-9a-f]{12}$/),
        url: globalHook.url.replace('http://', 'http://***:***@'),
        events: ['message.received', 'message.status', 'session.status'],
        includeQr: false,
        scope: 'global',
      },
      {
        id: put.body.data[0].id,
        url: hook.url,
        events: ['message.received'],
        includeQr: false,
        scope: 'session',
      },
    ]);
    const page = await request(stack, 'GET', '/admin/sessions/main');
    expect(page.text).toContain(`<td class="url" data-label="URL">${hook.url}</td>`);
    expect(page.text).toContain('<code class="event">message.received</code>');
    for (const shown of [JSON.stringify(data), page.text]) {
      expect(shown).not.toContain('whsec_');
      expect(shown).not.toContain(SECRET.slice(6, 16));
      expect(shown).not.toContain(GLOBAL_SECRET.slice(6, 16));
      expect(shown).not.toContain('pa55word');
      expect(shown).not.toMatch(/"secret"/);
    }
  });

  it('lists a failed delivery with its badge and answer, and replays it through the admin route', async () => {
    await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
      json: { from: '4915133333333', text: 'refused once' },
      headers,
    });
    const failed = await eventually(async () => {
      const found = (await detail()).recentDeliveries.find((d: any) => d.url === hook.url);
      expect(found?.status).toBe('failed');
      return found;
    });
    expect(failed).toMatchObject({
      sessionId: 'main',
      eventType: 'message.received',
      attempts: 1,
      lastStatusCode: 400,
      lastError: 'answered HTTP 400: nope 400',
      replays: 0,
    });
    // The global target's deliveries are listed too, with the URL's password masked.
    const all = (await detail()).recentDeliveries;
    expect(all.length).toBeLessThanOrEqual(20);
    expect(
      all.some((d: any) => d.url === globalHook.url.replace('http://', 'http://***:***@')),
    ).toBe(true);
    expect(JSON.stringify(all)).not.toContain('pa55word');

    const page = await request(stack, 'GET', '/admin/sessions/main');
    expect(page.text).toContain('<span class="badge badge-bad">failed</span>');
    expect(page.text).toContain(
      '<td class="answer" data-label="Last answer">answered HTTP 400: nope 400</td>',
    );
    const replayPath = `/api/admin/sessions/main/deliveries/${failed.id}/replay`;
    expect(page.text).toContain(`data-api="${replayPath}"`);
    expect(page.text).not.toContain('pa55word');

    const noToken = await request(stack, 'POST', replayPath);
    expect(noToken.status).toBe(403);
    expect(noToken.json.error.code).toBe('FORBIDDEN');
    for (const [path, status, code] of [
      ['/api/admin/sessions/main/deliveries/nope/replay', 400, 'BAD_REQUEST'],
      [`/api/admin/sessions/main/deliveries/${UNKNOWN_DELIVERY}/replay`, 404, 'NOT_FOUND'],
      [`/api/admin/sessions/other/deliveries/${failed.id}/replay`, 404, 'NOT_FOUND'],
      [`/api/admin/sessions/-x/deliveries/${failed.id}/replay`, 400, 'BAD_REQUEST'],
    ] as const) {
      const answer = await request(stack, 'POST', path, { headers });
      expect(answer.status, path).toBe(status);
      expect(answer.json, path).toMatchObject({ ok: false, error: { code } });
    }
    expect(hook.requests).toHaveLength(1);

    const replay = await request(stack, 'POST', replayPath, { headers });
    expect(replay.status).toBe(202);
    expect(replay.json.data).toMatchObject({ id: failed.id, replays: 1 });
    expect(['pending', 'delivered']).toContain(replay.json.data.status);
    const delivered = await eventually(async () => {
      const found = (await detail()).recentDeliveries.find((d: any) => d.id === failed.id);
      expect(found.status).toBe('delivered');
      return found;
    });
    expect(delivered).toMatchObject({ attempts: 1, lastStatusCode: 200, lastError: null });
    expect(hook.requests).toHaveLength(2);
    expect(hook.requests[1].headers['webhook-id']).toBe(hook.requests[0].headers['webhook-id']);

    const again = await request(stack, 'POST', replayPath, { headers });
    expect(again.status).toBe(409);
    expect(again.json).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
  });

  it('replays with a plain form post (no JavaScript) and redirects back with a flash message', async () => {
    hook.answerWith(() => 400);
    await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
      json: { from: '4915144444444', text: 'refused again' },
      headers,
    });
    const failed = await eventually(async () => {
      const found = (await detail()).recentDeliveries.find(
        (d: any) => d.url === hook.url && d.status === 'failed',
      );
      expect(found).toBeDefined();
      return found;
    });
    hook.answerWith(() => 200);
    const page = await request(stack, 'GET', '/admin/sessions/main');
    const token = /name="csrf-token" content="([^"]+)"/.exec(page.text)![1];
    const posted = await request(
      stack,
      'POST',
      `/admin/sessions/main/deliveries/${failed.id}/replay`,
      { form: { _csrf: token }, headers: { cookie: cookiesOf(page), origin: stack.url } },
    );
    expect(posted.status).toBe(303);
    expect(posted.headers.get('location')).toBe('/admin/sessions/main');
    expect(decodeURIComponent(cookiesOf(posted))).toContain(`Delivery ${failed.id} queued again`);
    await eventually(async () =>
      expect((await detail()).recentDeliveries.find((d: any) => d.id === failed.id).status).toBe(
        'delivered',
      ),
    );
  });
});

describe('the session page on another engine than the sandbox', () => {
  it('has no receive form and refuses the admin test-message injection with 409', async () => {
    const stack = await Stack.start(
      { WA_ENGINE: 'wwebjs', ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const page = await request(stack, 'GET', '/admin/sessions/main');
      expect(page.status).toBe(200);
      expect(page.text).toContain('Last 10 received messages');
      expect(page.text).not.toContain('Receive a test message');
      const { token, cookie } = await csrf(stack);
      const answer = await request(stack, 'POST', '/api/admin/sessions/main/sandbox/incoming', {
        json: { from: '4915123456789', text: 'x' },
        headers: { cookie, 'x-csrf-token': token },
      });
      expect(answer.status).toBe(409);
      expect(answer.json).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    } finally {
      await stack.close();
    }
  });
});

describe("the session page's word on a session that is not connected", () => {
  it('says the worker retries when a try is due, and asks for Reconnect when none will come', async () => {
    const stack = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const { WorkerRepository } = await import('@app/status-store');
      const worker = {
        id: 'worker-here',
        host: 'h',
        pid: 1,
        version: '0',
        startedAt: '',
        sessions: ['main'],
      };
      await stack.api!.get(WorkerRepository).beat(worker, 60_000, Date.now() + 60_000);
      const phaseOf = async (fields: Record<string, string>) => {
        await stack.redis.hset(stack.keys.session('main'), { worker: 'worker-here', ...fields });
        const page = await request(stack, 'GET', '/admin/sessions/main');
        const json = await request(stack, 'GET', '/api/admin/sessions/main');
        const shown = /data-phases="(\w+)"(?! hidden)[^>]*>/.exec(
          page.text.replace(/data-phases="(\w+)" hidden/g, ''),
        );
        return { page: shown?.[1], json: json.json.data.phase };
      };
      const retrying = await phaseOf({
        status: 'FAILED',
        lastError: 'net::ERR_NAME_NOT_RESOLVED',
        nextRetryAt: new Date(Date.now() + 30_000).toISOString(),
      });
      expect(retrying).toEqual({ page: 'problem', json: 'problem' });
      const unlinked = await phaseOf({
        status: 'DISCONNECTED',
        lastError: 'the phone unlinked this device',
        nextRetryAt: '',
      });
      expect(unlinked).toEqual({ page: 'halted', json: 'halted' });
    } finally {
      await stack.close();
    }
  });
});

describe('the sessions pages with no worker running', () => {
  it('say so in a banner, and name a gone worker as where the session was last seen', async () => {
    const stack = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const banner = 'No worker is running:</strong> sessions do not start and sends are refused';
      // As a worker that stopped leaves its sessions.
      await stack.redis.hset(stack.keys.session('main'), {
        worker: 'worker-gone',
        status: 'STOPPED',
      });
      const list = await request(stack, 'GET', '/admin');
      expect(list.text).toContain(banner);
      expect(shownBanners(list.text)).toEqual(['none']);
      expect(list.text).toContain('<dd data-bind="worker">last seen on worker-gone</dd>');
      expect(list.text).not.toContain('data-bind="worker">worker-gone');
      const stopped = await request(stack, 'GET', '/admin/sessions/main');
      expect(stopped.text).toContain(banner);
      expect(shownTexts(stopped.text)).toEqual([
        'Not running: no worker is running to start it. It starts within seconds of a worker starting.',
      ]);

      // As a worker that crashed leaves them.
      await stack.redis.hset(stack.keys.session('main'), { status: 'READY' });
      const crashed = await request(stack, 'GET', '/admin/sessions/main');
      expect(crashed.text).toMatch(
        /worker-gone stopped answering \(no heartbeat within 3 × its WORKER_HEARTBEAT_MS\); no worker is running to take the session over/,
      );
      expect(shownTexts(crashed.text)).toEqual([
        'The session is not connected, and no worker is running to connect it: it connects once a worker starts.',
      ]);

      const { WorkerRepository } = await import('@app/status-store');
      const worker = { id: 'worker-here', host: 'h', pid: 1, version: '0', startedAt: '' };
      await stack
        .api!.get(WorkerRepository)
        .beat({ ...worker, sessions: ['main'] }, 60_000, Date.now() + 60_000);
      const gone = await request(stack, 'GET', '/admin/sessions/main');
      expect(shownBanners(gone.text)).toEqual([]);
      expect(gone.text).toContain('another worker takes the session over');
      await stack.redis.hset(stack.keys.session('main'), { worker: 'worker-here' });
      const running = await request(stack, 'GET', '/admin');
      expect(shownBanners(running.text)).toEqual([]);
      expect(running.text).toContain('<dd data-bind="worker">worker-here</dd>');
      expect((await request(stack, 'GET', '/api/admin/sessions/main')).json.data.workers).toBe(
        'taking',
      );

      // Drained, the only worker stops its sessions and takes none: a live worker, no start.
      await stack.api!.get(WorkerRepository).setDraining('worker-here', true, 60_000);
      await stack.redis.hset(stack.keys.session('main'), { status: 'STOPPED' });
      for (const path of ['/admin', '/admin/sessions/main'])
        expect(shownBanners((await request(stack, 'GET', path)).text), path).toEqual(['draining']);
      const drained = await request(stack, 'GET', '/admin/sessions/main');
      expect(drained.text).toContain(
        '<strong>Every worker is draining:</strong> sessions stay stopped, and messages sent meanwhile are accepted but wait in their queues.',
      );
      expect(shownTexts(drained.text)).toEqual([
        'Not running: every worker is draining, and a draining worker starts no session. It stays stopped until a worker takes sessions again (<em>Take sessions again</em> on <a href="/admin/workers">Workers</a>) or another worker starts; messages sent meanwhile wait in its queue.',
      ]);
      expect((await request(stack, 'GET', '/api/admin/sessions/main')).json.data.workers).toBe(
        'draining',
      );
    } finally {
      await stack.close();
    }
  });

  it('answer the sessions list poll with whether a worker takes sessions in X-Workers, the body still the bare list', async () => {
    const stack = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const { WorkerRepository } = await import('@app/status-store');
      const workers = stack.api!.get(WorkerRepository);
      const poll = async () => {
        const answer = await request(stack, 'GET', '/api/admin/sessions');
        expect(answer.status).toBe(200);
        expect(Array.isArray(answer.json.data)).toBe(true);
        return answer.headers.get('x-workers');
      };
      expect(await poll()).toBe('none');
      const worker = { id: 'worker-here', host: 'h', pid: 1, version: '0', startedAt: '' };
      await workers.beat({ ...worker, sessions: [] }, 60_000, Date.now() + 60_000);
      expect(await poll()).toBe('taking');
      await workers.setDraining('worker-here', true, 60_000);
      expect(await poll()).toBe('draining');
    } finally {
      await stack.close();
    }
  });

  it('say of a session whose worker died, while the only workers left are draining, that it stays stopped until one takes sessions again', async () => {
    const stack = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const { WorkerRepository } = await import('@app/status-store');
      const workers = stack.api!.get(WorkerRepository);
      const worker = { id: 'worker-left', host: 'h', pid: 1, version: '0', startedAt: '' };
      await workers.beat({ ...worker, sessions: [] }, 60_000, Date.now() + 60_000);
      await workers.setDraining('worker-left', true, 60_000);
      // As a worker that crashed leaves its session: READY, its worker no longer beating.
      await stack.redis.hset(stack.keys.session('main'), {
        worker: 'worker-gone',
        status: 'READY',
      });
      const said =
        'worker worker-gone stopped answering (no heartbeat within 3 × its WORKER_HEARTBEAT_MS); the remaining workers are draining, so the session stays stopped until one takes sessions again';
      const json = (await request(stack, 'GET', '/api/admin/sessions/main')).json.data;
      expect(json).toMatchObject({ status: 'DISCONNECTED', lastError: said, workers: 'draining' });
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.lastError).toBe(
        said,
      );
      const page = await request(stack, 'GET', '/admin/sessions/main');
      expect(page.text).toContain('the remaining workers are draining');
      expect(page.text).not.toContain('another worker takes the session over');

      // One takes sessions again: it takes the session over, and says so.
      await workers.setDraining('worker-left', false, 60_000);
      expect((await request(stack, 'GET', '/api/admin/sessions/main')).json.data.lastError).toMatch(
        /stopped answering .*; another worker takes the session over$/,
      );
    } finally {
      await stack.close();
    }
  });
});

describe('draining the only worker that takes sessions', () => {
  it('asks first, and says its sessions stop rather than move to other workers', async () => {
    const stack = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const { WorkerRepository } = await import('@app/status-store');
      const workers = stack.api!.get(WorkerRepository);
      const beat = (id: string) =>
        workers.beat(
          {
            id,
            host: `host-of-${id}`,
            pid: 1,
            version: '0',
            startedAt: '',
            sessions: ['main'],
            maxSessions: 10,
          },
          60_000,
          Date.now() + 60_000,
        );
      await beat('worker-alone');
      const drainForm = (text: string, id: string) =>
        new RegExp(`<form[^>]*action="/admin/workers/${id}/drain"[^>]*>`).exec(text)?.[0] ?? '';
      const page = await request(stack, 'GET', '/admin/workers');
      expect(drainForm(page.text, 'worker-alone')).toContain(
        'data-confirm="Drain host-of-worker-alone? No other worker takes sessions: its sessions stop until it takes sessions again or another worker starts."',
      );

      const drained = await request(stack, 'POST', '/admin/workers/worker-alone/drain', {
        form: { _csrf: /name="csrf-token" content="([^"]+)"/.exec(page.text)![1] },
        headers: { cookie: cookiesOf(page), origin: stack.url },
      });
      expect(drained.status).toBe(303);
      const flash = decodeURIComponent(cookiesOf(drained));
      expect(flash).toContain(
        'Worker worker-alone is draining, and no other worker takes sessions: its sessions stop until it takes sessions again or another worker starts',
      );
      expect(flash).not.toContain('move to the other workers');
      const after = await request(stack, 'GET', '/admin/workers');
      expect(after.text).toContain('its sessions stay stopped until it takes sessions again');

      // With another worker that takes sessions, a drain moves them.
      await beat('worker-other');
      const both = await request(stack, 'GET', '/admin/workers');
      expect(drainForm(both.text, 'worker-other')).toContain(
        'data-confirm="Drain host-of-worker-other? No other worker takes sessions',
      );
      expect(both.text).toContain('Hands its sessions to the others and takes none.');
      await workers.setDraining('worker-alone', false, 60_000);
      const undrained = await request(stack, 'GET', '/admin/workers');
      expect(drainForm(undrained.text, 'worker-alone')).toContain(
        'data-confirm="Drain host-of-worker-alone? Its sessions move to the other workers',
      );
    } finally {
      await stack.close();
    }
  });
});

describe('admin cookies behind a TLS proxy the api does not trust', () => {
  it('are Secure when BASE_URL is https, though the request reached the api over http', async () => {
    const stack = await Stack.start(
      { NODE_ENV: 'development', BASE_URL: 'https://gateway.test' },
      { worker: false },
    );
    try {
      const answer = await request(stack, 'GET', '/api/admin/csrf-token', { auth: null });
      expect(answer.status).toBe(200);
      const cookies = answer.headers.getSetCookie();
      expect(cookies).toHaveLength(1);
      expect(cookies[0]).toMatch(/; Secure/i);
      // The flash cookie of a form's answer too.
      const form = await request(stack, 'POST', '/admin/sessions', {
        auth: null,
        form: { id: 'secure-flash', _csrf: answer.json.data.token },
        headers: { cookie: cookiesOf(answer), origin: 'https://gateway.test' },
      });
      expect(form.status).toBe(303);
      const flash = form.headers.getSetCookie().find((c) => c.startsWith('wa-admin-flash'));
      expect(flash).toMatch(/; Secure/i);
    } finally {
      await stack.close();
    }
  });
});

describe('admin pages without ADMIN_PASSWORD', () => {
  it('work in development, with a warning that they are open', async () => {
    const stack = await Stack.start({ NODE_ENV: 'development' }, { worker: false });
    try {
      const page = await request(stack, 'GET', '/admin', { auth: null });
      expect(page.status).toBe(200);
      expect(page.text).toContain('These pages are open to anyone');
      expect((await request(stack, 'GET', '/api/admin/sessions', { auth: null })).status).toBe(200);
      // Still no state change without the CSRF token.
      const forged = await request(stack, 'POST', '/api/admin/sessions', {
        auth: null,
        json: { id: 'forged' },
      });
      expect(forged.status).toBe(403);
      // A name in a Basic header nothing checks is not who the log says acted.
      const claimed = basic('mallory', 'anything');
      const token = await request(stack, 'GET', '/api/admin/csrf-token', { auth: claimed });
      const made = await request(stack, 'POST', '/api/admin/sessions', {
        auth: claimed,
        json: { id: 'opened' },
        headers: { 'x-csrf-token': token.json.data.token, cookie: cookiesOf(token) },
      });
      expect(made.status).toBe(201);
      await eventually(async () =>
        expect((await stack.call('GET', '/api/v1/audit?limit=1')).body.data[0]).toMatchObject({
          action: 'POST /api/admin/sessions',
          actor: 'admin:(open)',
        }),
      );
    } finally {
      await stack.close();
    }
  });

  it('answer only to an IP address, localhost or BASE_URL, so a rebound name of another site gets 403', async () => {
    const stack = await Stack.start(
      { NODE_ENV: 'development', BASE_URL: 'http://gateway.test:8080' },
      { worker: false },
    );
    // A browser's Host header is the name in its address bar (fetch cannot set it).
    const get = (path: string, host: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const outgoing = httpRequest(`${stack.url}${path}`, { headers: { host } }, (answer) => {
          let body = '';
          answer.on('data', (chunk: Buffer) => (body += chunk.toString()));
          answer.on('end', () => resolve({ status: answer.statusCode ?? 0, body }));
        });
        outgoing.on('error', reject).end();
      });
    const port = new URL(stack.url).port;
    try {
      for (const host of [
        `127.0.0.1:${port}`,
        `localhost:${port}`,
        `[::1]:${port}`,
        'gateway.test',
      ]) {
        expect((await get('/api/admin/sessions', host)).status, host).toBe(200);
      }
      for (const path of [
        '/admin',
        '/api/admin/sessions',
        '/api/admin/csrf-token',
        '/admin/queues',
      ]) {
        const refused = await get(path, `attacker.example:${port}`);
        expect(refused.status, path).toBe(403);
        expect(refused.body, path).toContain('ADMIN_PASSWORD');
        expect(refused.body, path).not.toContain('sessions/main');
      }
      // The public API does not depend on the name.
      expect((await get('/health/live', `attacker.example:${port}`)).status).toBe(200);
    } finally {
      await stack.close();
    }
  });

  it('are not mounted at all in production', async () => {
    const stack = await Stack.start({ NODE_ENV: 'production' }, { worker: false });
    try {
      for (const path of [
        '/admin',
        '/admin/sessions/main',
        '/api/admin/sessions',
        '/admin/queues',
        '/admin/assets/admin.js',
      ]) {
        expect((await request(stack, 'GET', path, { auth: null })).status, path).toBe(404);
      }
      const spec = (await stack.call('GET', '/api/openapi')).body;
      expect(Object.keys(spec.paths).filter((path) => path.includes('admin'))).toEqual([]);
      // The public API is unaffected.
      expect((await stack.call('GET', '/api/v1/sessions')).status).toBe(200);
    } finally {
      await stack.close();
    }
  });
});
