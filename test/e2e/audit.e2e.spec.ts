import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

const USER = 'admin';
const PASSWORD = 'correct horse battery staple';
const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

describe('the audit log: admin actions and key changes', () => {
  const stack = useStack(
    { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD, SANDBOX_LINK_DELAY_MS: 'manual' },
    { worker: false },
  );
  const entries = async () => (await stack.call('GET', '/api/v1/audit?limit=200')).body.data;

  it('records who changed which key, from where, with the result, and never the key', async () => {
    const made = await stack.call(
      'POST',
      '/api/v1/keys',
      { name: 'shop', scopes: ['send'] },
      { 'x-forwarded-for': '203.0.113.9' },
    );
    const { key, record } = made.body.data;
    await stack.call('DELETE', `/api/v1/keys/${record.id}`);
    await stack.call('DELETE', '/api/v1/keys/0123456789abcdef'); // no such key: 404, still logged
    await stack.call('GET', '/api/v1/keys'); // a read: not logged

    const logged = await eventually(async () => {
      const list = await entries();
      expect(list.length).toBeGreaterThanOrEqual(3);
      return list;
    });
    expect(logged.slice(0, 3)).toMatchObject([
      {
        actor: 'key:env',
        action: 'DELETE /api/v1/keys/:id',
        target: { id: '0123456789abcdef' },
        status: 404,
      },
      {
        actor: 'key:env',
        action: 'DELETE /api/v1/keys/:id',
        target: { id: record.id },
        status: 200,
      },
      {
        actor: 'key:env',
        action: 'POST /api/v1/keys',
        target: { id: record.id },
        from: '203.0.113.9',
        status: 201,
      },
    ]);
    expect(logged.some((entry: { action: string }) => entry.action.startsWith('GET'))).toBe(false);
    expect(JSON.stringify(logged)).not.toContain(key.slice(13));
    expect(Date.parse(logged[0].at)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('records a second revoke of a key as one that found it revoked: its entry names when it was first', async () => {
    const made = await stack.call('POST', '/api/v1/keys', { name: 'twice', scopes: ['read'] });
    const id = made.body.data.record.id as string;
    const first = await stack.call('DELETE', `/api/v1/keys/${id}`);
    const second = await stack.call('DELETE', `/api/v1/keys/${id}`);
    expect([first.status, second.status]).toEqual([200, 200]);
    const revokedAt = first.body.data.revokedAt as string;
    expect(second.body.data.revokedAt).toBe(revokedAt);
    await eventually(async () =>
      expect((await entries()).slice(0, 2)).toMatchObject([
        { action: 'DELETE /api/v1/keys/:id', target: { id, alreadyRevokedAt: revokedAt } },
        { action: 'DELETE /api/v1/keys/:id', target: { id }, status: 200 },
      ]),
    );
    // The first is the revocation, and does not say otherwise.
    expect((await entries())[1].target).toEqual({ id });
  });

  it('records what the admin does through its pages and JSON routes, by admin user', async () => {
    const csrf = await fetch(`${stack.url}/api/admin/csrf-token`, {
      headers: { authorization: basic },
    });
    const token = ((await csrf.json()) as { data: { token: string } }).data.token;
    const cookie = csrf.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    const created = await fetch(`${stack.url}/api/admin/sessions`, {
      method: 'POST',
      headers: {
        authorization: basic,
        cookie,
        'x-csrf-token': token,
        origin: stack.url,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ id: 'audited' }),
    });
    expect(created.status).toBe(201);
    await eventually(async () =>
      expect((await entries())[0]).toMatchObject({
        actor: `admin:${USER}`,
        action: 'POST /api/admin/sessions',
        target: { id: 'audited' },
        status: 201,
      }),
    );
    // A form post answers a redirect either way; the log keeps how it went.
    const revoke = await fetch(`${stack.url}/admin/keys/0123456789abcdef/revoke`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        authorization: basic,
        cookie,
        origin: stack.url,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ _csrf: token }).toString(),
    });
    expect(revoke.status).toBe(303);
    await eventually(async () =>
      expect((await entries())[0]).toMatchObject({
        action: 'POST /admin/keys/:id/revoke',
        target: { id: '0123456789abcdef' },
        status: 404,
      }),
    );
    const page = await fetch(`${stack.url}/admin/audit`, { headers: { authorization: basic } });
    expect(page.status).toBe(200);
    // A route on the page may break after its slashes (<wbr>).
    const html = (await page.text()).replaceAll('<wbr>', '');
    expect(html).toContain('POST /api/admin/sessions');
    expect(html).toContain(`admin:${USER}`);
  });

  it('names the session made or made active, and records a key refused a route it may not use', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'named' });
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'named' });
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'main' });
    const made = (await stack.call('POST', '/api/v1/keys', { name: 'sender', scopes: ['send'] }))
      .body.data;
    const as = { 'x-api-key': made.key };
    expect(
      (await stack.call('POST', '/api/v1/keys', { name: 'x', scopes: ['admin'] }, as)).status,
    ).toBe(403);
    expect((await stack.call('DELETE', '/api/v1/sessions/named', undefined, as)).status).toBe(403);
    expect((await stack.call('GET', '/api/v1/keys', undefined, as)).status).toBe(403); // a read
    // Unknown callers are not written: a flood of them must not fill the log.
    expect(
      (await stack.call('DELETE', '/api/v1/sessions/named', undefined, { 'x-api-key': 'wag_nope' }))
        .status,
    ).toBe(401);
    const logged = await eventually(async () => {
      const list = await entries();
      expect(list[0]?.action).toBe('DELETE /api/v1/sessions/:id');
      return list;
    });
    expect(logged.slice(0, 6)).toMatchObject([
      {
        actor: `key:${made.record.id}`,
        action: 'DELETE /api/v1/sessions/:id',
        target: { id: 'named' },
        status: 403,
      },
      { actor: `key:${made.record.id}`, action: 'POST /api/v1/keys', status: 403 },
      {
        actor: 'key:env',
        action: 'POST /api/v1/keys',
        target: { id: made.record.id },
        status: 201,
      },
      { action: 'PUT /api/v1/sessions/active', target: { id: 'main' }, status: 200 },
      { action: 'PUT /api/v1/sessions/active', target: { id: 'named' }, status: 200 },
      { action: 'POST /api/v1/sessions', target: { id: 'named' }, status: 201 },
    ]);
  });

  // Refused by the scope guard (403), or by the handler (a session that does not exist, 404).
  it.each([
    {
      refused: 'outside its scopes',
      scopes: ['send'],
      route: 'DELETE /api/v1/keys/:id',
      status: 403,
    },
    {
      refused: 'by the handler',
      scopes: ['sessions'],
      route: 'DELETE /api/v1/sessions/:id',
      status: 404,
    },
  ])(
    'keeps refusals ($refused) from flooding the log: one entry per key, route and minute, never pushing an action off',
    async ({ scopes, route, status }) => {
      const made = `operator-made-${status}`;
      expect((await stack.call('POST', '/api/v1/sessions', { id: made })).status).toBe(201);
      const key = (await stack.call('POST', '/api/v1/keys', { name: 'flood', scopes })).body.data;
      const as = { 'x-api-key': key.key };
      const path = (n: number) =>
        route.startsWith('DELETE /api/v1/keys')
          ? `/api/v1/keys/${n.toString(16).padStart(16, '0')}`
          : `/api/v1/sessions/nobody-${n}`;
      for (let round = 0; round < 10; round++) {
        const answers = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            stack.call('DELETE', path(round * 20 + i), undefined, as),
          ),
        );
        expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => status));
      }
      const refused = await eventually(async () => {
        const mine = (await entries()).filter(
          (entry: { actor: string }) => entry.actor === `key:${key.record.id}`,
        );
        expect(
          mine.reduce((sum: number, entry: { count?: number }) => sum + (entry.count ?? 1), 0),
        ).toBe(200);
        return mine;
      });
      // One entry a minute (two if the minute turned during the flood), the last refusal's.
      expect(refused.length).toBeLessThanOrEqual(2);
      expect(refused[0]).toMatchObject({ action: route, status });
      const html = await (
        await fetch(`${stack.url}/admin/audit`, { headers: { authorization: basic } })
      ).text();
      expect(html).toContain(`id=${made}`);
    },
  );

  it('lists newest first in pages, for the admin scope only', async () => {
    const all = await entries();
    const first = (await stack.call('GET', '/api/v1/audit?limit=1')).body.data;
    expect(first).toEqual([all[0]]);
    const next = (await stack.call('GET', `/api/v1/audit?limit=1&before=${first[0].id}`)).body.data;
    expect(next).toEqual([all[1]]);
    expect((await stack.call('GET', '/api/v1/audit?before=nope')).status).toBe(400);
    // Before the smallest id there is nothing (Redis refuses that range: it was a 500).
    for (const before of ['0-0', '00-0'])
      expect((await stack.call('GET', `/api/v1/audit?before=${before}`)).body).toEqual({
        ok: true,
        data: [],
      });
    const reader = (await stack.call('POST', '/api/v1/keys', { name: 'r', scopes: ['read'] })).body
      .data.key;
    expect(
      (await stack.call('GET', '/api/v1/audit', undefined, { 'x-api-key': reader })).status,
    ).toBe(403);
  });
});
