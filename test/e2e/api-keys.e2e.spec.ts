import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

describe('API keys as data: made, scoped, revoked and rotated through /api/v1/keys', () => {
  const stack = useStack();
  beforeAll(() => stack.waitReady());

  const as = (key: string) => ({ 'x-api-key': key });
  const make = async (name: string, scopes: string[]) => {
    const made = await stack.call('POST', '/api/v1/keys', { name, scopes });
    expect(made.status).toBe(201);
    return made.body.data as { key: string; record: { id: string; prefix: string } };
  };

  it('shows a key once, keeps only its digest, and lists keys by prefix', async () => {
    const { key, record } = await make('shop backend', ['send', 'read']);
    expect(key).toMatch(/^wag_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(key.startsWith(record.prefix)).toBe(true);
    const stored = await stack.redis.hgetall(stack.keys.apiKey(record.id));
    expect(JSON.stringify(stored)).not.toContain(key.slice(13));
    const listed = (await stack.call('GET', '/api/v1/keys')).body.data;
    expect(listed.find((k: { id: string }) => k.id === record.id)).toMatchObject({
      name: 'shop backend',
      scopes: ['send', 'read'],
      revokedAt: null,
    });
    expect(JSON.stringify(listed)).not.toContain(key.slice(13));
  });

  it('lets a key do what its scopes say, and answers 403 FORBIDDEN outside them', async () => {
    const sender = (await make('sender', ['send'])).key;
    const sent = await stack.call(
      'POST',
      '/api/v1/messages/text',
      { to: '4915100000701', text: 'hi' },
      as(sender),
    );
    expect(sent.status).toBe(202);
    const read = await stack.call(
      'GET',
      `/api/v1/messages/${sent.body.data.id}`,
      undefined,
      as(sender),
    );
    expect(read.status).toBe(403);
    expect(read.body.error).toMatchObject({ code: 'FORBIDDEN' });
    expect(read.body.error.message).toContain('read');
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'x' }, as(sender))).status).toBe(
      403,
    );
    expect((await stack.call('GET', '/api/v1/keys', undefined, as(sender))).status).toBe(403);

    const reader = (await make('dashboard', ['read'])).key;
    // Scanning a QR links a phone: not a read.
    expect(
      (await stack.call('GET', '/api/v1/sessions/main/qr', undefined, as(reader))).status,
    ).toBe(403);
    expect(
      (await stack.call('GET', `/api/v1/messages/${sent.body.data.id}`, undefined, as(reader)))
        .status,
    ).toBe(200);
    expect(
      (
        await stack.call(
          'POST',
          '/api/v1/messages/text',
          { to: '4915100000702', text: 'no' },
          as(reader),
        )
      ).status,
    ).toBe(403);

    // A key made with admin may make keys itself.
    const admin = (await make('ops', ['admin'])).key;
    expect(
      (await stack.call('POST', '/api/v1/keys', { name: 'more', scopes: ['read'] }, as(admin)))
        .status,
    ).toBe(201);
  });

  it('stops a revoked key, and a rotated key keeps working only with its new secret', async () => {
    const made = await make('temporary', ['read']);
    expect((await stack.call('GET', '/api/v1/sessions', undefined, as(made.key))).status).toBe(200);
    const rotated = await stack.call('POST', `/api/v1/keys/${made.record.id}/rotate`);
    expect(rotated.status).toBe(200);
    const fresh = rotated.body.data.key as string;
    expect(fresh).not.toBe(made.key);
    expect((await stack.call('GET', '/api/v1/sessions', undefined, as(made.key))).status).toBe(401);
    expect((await stack.call('GET', '/api/v1/sessions', undefined, as(fresh))).status).toBe(200);

    const revoked = await stack.call('DELETE', `/api/v1/keys/${made.record.id}`);
    expect(revoked.body.data.revokedAt).not.toBeNull();
    // Revoked again: the same answer, the time it was first revoked kept.
    const again = await stack.call('DELETE', `/api/v1/keys/${made.record.id}`);
    expect(again.status).toBe(200);
    expect(again.body.data).toEqual(revoked.body.data);
    const refused = await stack.call('GET', '/api/v1/sessions', undefined, as(fresh));
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe('UNAUTHORIZED');
    expect((await stack.call('POST', `/api/v1/keys/${made.record.id}/rotate`)).status).toBe(404);
  });

  it('scopes idempotency keys per API key', async () => {
    const a = (await make('a', ['send', 'read'])).key;
    const b = (await make('b', ['send', 'read'])).key;
    const body = { to: '4915100000703', text: 'once per caller' };
    const first = await stack.call('POST', '/api/v1/messages/text', body, {
      ...as(a),
      'Idempotency-Key': 'order-1',
    });
    const again = await stack.call('POST', '/api/v1/messages/text', body, {
      ...as(a),
      'Idempotency-Key': 'order-1',
    });
    const other = await stack.call('POST', '/api/v1/messages/text', body, {
      ...as(b),
      'Idempotency-Key': 'order-1',
    });
    expect(again.body.data.id).toBe(first.body.data.id);
    expect(other.body.data.id).not.toBe(first.body.data.id);
  });

  it('keeps a key limited to some sessions to those: sends, reads and management', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'sales' });
    await stack.waitReady('sales');
    const made = await stack.call('POST', '/api/v1/keys', {
      name: 'sales team',
      scopes: ['send', 'read', 'sessions'],
      sessions: ['sales'],
    });
    expect(made.body.data.record.sessions).toEqual(['sales']);
    const key = as(made.body.data.key);
    const text = (sessionId?: string) =>
      stack.call(
        'POST',
        '/api/v1/messages/text',
        { sessionId, to: '4915100000801', text: 'hi' },
        key,
      );

    const own = await text('sales');
    expect(own.status).toBe(202);
    const other = await text('main');
    expect(other.status).toBe(403);
    expect(other.body.error.message).toContain('sales');
    // The active session is main, and a send without sessionId does not name it either.
    const unnamed = await text();
    expect(unnamed.status).toBe(403);
    expect(unnamed.body.error.message).toContain('must give sessionId');
    expect(unnamed.body.error.message).not.toContain('main');
    const mainMessage = (
      await stack.call('POST', '/api/v1/messages/text', { to: '4915100000802', text: 'x' })
    ).body.data.id;
    expect(
      (await stack.call('GET', `/api/v1/messages/${mainMessage}`, undefined, key)).status,
    ).toBe(403);
    expect(
      (await stack.call('DELETE', `/api/v1/messages/${mainMessage}`, undefined, key)).status,
    ).toBe(403);
    // Acting on it refuses before telling its status, or claiming its one resend.
    await stack.waitForStatus(mainMessage, 'read');
    for (const [path, body] of [
      ['resend', undefined],
      ['revoke', undefined],
      ['reaction', { emoji: '👍' }],
    ] as const) {
      const acted = await stack.call('POST', `/api/v1/messages/${mainMessage}/${path}`, body, key);
      expect(acted.status, path).toBe(403);
      expect(acted.body.error.message, path).not.toContain('read');
    }
    expect((await stack.call('POST', `/api/v1/messages/${mainMessage}/revoke`)).status).toBe(202);
    expect(
      (await stack.call('GET', `/api/v1/messages/${own.body.data.id}`, undefined, key)).status,
    ).toBe(200);

    const listed = (await stack.call('GET', '/api/v1/sessions', undefined, key)).body.data;
    expect(listed.map((session: { id: string }) => session.id)).toEqual(['sales']);
    // The workers listing names only its sessions too (main is driven as well).
    // (As its last heartbeat reported them.)
    await eventually(async () => {
      const workers = (await stack.call('GET', '/api/v1/workers', undefined, key)).body.data;
      expect(workers.flatMap((worker: { sessions: string[] }) => worker.sessions)).toEqual([
        'sales',
      ]);
    });
    expect((await stack.call('GET', '/api/v1/sessions/main/status', undefined, key)).status).toBe(
      403,
    );
    expect((await stack.call('GET', '/api/v1/sessions/sales/status', undefined, key)).status).toBe(
      200,
    );
    expect(
      (await stack.call('POST', '/api/v1/sessions/main/reconnect', undefined, key)).status,
    ).toBe(403);
    expect((await stack.call('PUT', '/api/v1/sessions/active', { id: 'sales' }, key)).status).toBe(
      403,
    );
    // Nor is it told which session is active, when that is not one of its own.
    const active = await stack.call('GET', '/api/v1/sessions/active', undefined, key);
    expect(active.status).toBe(403);
    expect(JSON.stringify(active.body)).not.toContain('main');
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'sales' });
    const ownActive = await stack.call('GET', '/api/v1/sessions/active', undefined, key);
    expect(ownActive.body.data).toEqual({ id: 'sales' });
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'main' });
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'elsewhere' }, key)).status).toBe(
      403,
    );
    const batch = await stack.call(
      'POST',
      '/api/v1/messages/batch',
      { messages: [{ type: 'text', sessionId: 'main', to: '4915100000803', text: 'x' }] },
      key,
    );
    expect(batch.status).toBe(400);
    expect(batch.body.error.details[0].message).toContain('sales');
    // A batch through the active session (main) is refused as a single send is, without naming it.
    const unnamedBatch = await stack.call(
      'POST',
      '/api/v1/messages/batch',
      { messages: [{ type: 'text', to: '4915100000801', text: 'hi' }] },
      key,
    );
    expect(unnamedBatch.status).toBe(unnamed.status);
    expect(unnamedBatch.body.error.message).toBe(unnamed.body.error.message);
    expect(JSON.stringify(unnamedBatch.body)).not.toContain('main');
    // A batch's status is read only by a key that may use every session of its messages.
    const batchOf = async (sessionId: string, as?: Record<string, string>) =>
      (
        await stack.call(
          'POST',
          '/api/v1/messages/batch',
          { messages: [{ type: 'text', sessionId, to: '4915100000804', text: 'x' }] },
          as,
        )
      ).body.data.id;
    const mainBatch = await batchOf('main');
    expect((await stack.call('GET', `/api/v1/batches/${mainBatch}`, undefined, key)).status).toBe(
      403,
    );
    expect((await stack.call('GET', `/api/v1/batches/${mainBatch}`)).status).toBe(200);
    const ownBatch = await batchOf('sales', key);
    const ownStatus = await stack.call('GET', `/api/v1/batches/${ownBatch}`, undefined, key);
    expect(ownStatus.status).toBe(200);
    expect(ownStatus.body.data.total).toBe(1);
    // Its messages gone (expired, or never written: an unknown outcome), the batch still says
    // whose it is: the key that may use its sessions follows it, another still may not.
    const expireAll = async (batchId: string) => {
      for (const id of await stack.redis.lrange(stack.keys.batchMessages(batchId), 0, -1))
        await stack.redis.del(stack.keys.message(id));
    };
    const expiredBatch = await batchOf('sales', key);
    await expireAll(expiredBatch);
    const expired = await stack.call('GET', `/api/v1/batches/${expiredBatch}`, undefined, key);
    expect(expired.status).toBe(200);
    expect(expired.body.data).toMatchObject({ id: expiredBatch, total: 1, done: true });
    expect(expired.body.data.counts.expired).toBe(1);
    expect(expired.body.data).not.toHaveProperty('sessions');
    await expireAll(mainBatch);
    const othersExpired = await stack.call('GET', `/api/v1/batches/${mainBatch}`, undefined, key);
    expect(othersExpired.status).toBe(403);
    expect(JSON.stringify(othersExpired.body)).toContain('main');
    // One saved by an earlier version (no sessions) with its messages gone: unlimited keys only.
    await stack.redis.hdel(stack.keys.batch(expiredBatch), 'sessions');
    const unknown = await stack.call('GET', `/api/v1/batches/${expiredBatch}`, undefined, key);
    expect(unknown.status).toBe(403);
    expect(unknown.body.error.message).toContain('does not say whose');
    const unlimited = await stack.call('GET', `/api/v1/batches/${expiredBatch}`);
    expect(unlimited.status).toBe(200);
    expect(unlimited.body.data.counts.expired).toBe(1);
    const deliveries = await stack.call(
      'GET',
      '/api/v1/webhooks/deliveries?sessionId=main',
      undefined,
      key,
    );
    expect(deliveries.status).toBe(403);
    expect((await stack.call('GET', '/api/v1/webhooks/deliveries', undefined, key)).status).toBe(
      200,
    );
    expect(
      (await stack.call('GET', '/api/v1/sessions/sales/qr', undefined, as(made.body.data.key)))
        .status,
    ).not.toBe(403);
  });

  it('refuses a key named with spaces or invisible characters only (400), and drops the spaces around a name', async () => {
    for (const name of ['   ', '\t \u00a0', '\u200b', ' \u200b ', '\u2060\u200d', '\ufeff']) {
      const blank = await stack.call('POST', '/api/v1/keys', { name, scopes: ['read'] });
      expect(blank.status, JSON.stringify(name)).toBe(400);
      expect(blank.body.error).toEqual({ code: 'BAD_REQUEST', message: 'name must not be blank' });
    }
    const made = await stack.call('POST', '/api/v1/keys', {
      name: '  billing  ',
      scopes: ['read'],
    });
    expect(made.status).toBe(201);
    expect(made.body.data.record.name).toBe('billing');
  });

  it('refuses bad keys requests with 400 / 404', async () => {
    expect((await stack.call('POST', '/api/v1/keys', { name: 'x', scopes: [] })).status).toBe(400);
    // An admin key could make itself unlimited keys: it cannot be limited to some sessions.
    expect(
      (
        await stack.call('POST', '/api/v1/keys', {
          name: 'x',
          scopes: ['admin'],
          sessions: ['main'],
        })
      ).status,
    ).toBe(400);
    expect((await stack.call('POST', '/api/v1/keys', { name: 'x', scopes: ['root'] })).status).toBe(
      400,
    );
    expect((await stack.call('POST', '/api/v1/keys', { name: '', scopes: ['read'] })).status).toBe(
      400,
    );
    expect((await stack.call('DELETE', '/api/v1/keys/nope')).status).toBe(400);
    expect(
      (
        await stack.call('POST', '/api/v1/keys', {
          name: 'x',
          scopes: ['read'],
          sessions: ['../x'],
        })
      ).status,
    ).toBe(400);
    expect((await stack.call('DELETE', '/api/v1/keys/0123456789abcdef')).status).toBe(404);
  });
});

describe('API keys on the admin pages', () => {
  const PASSWORD = 'correct horse battery staple';
  const auth = `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}`;
  const stack = useStack({ ADMIN_PASSWORD: PASSWORD }, { worker: false });

  /** The page's CSRF token, cookie and one-time form token, as a browser would hold them. */
  const session = async () => {
    const page = await fetch(`${stack.url}/admin/keys`, { headers: { authorization: auth } });
    expect(page.status).toBe(200);
    const html = await page.text();
    const token = /name="csrf-token" content="([^"]+)"/.exec(html)![1];
    const once = /name="_once" value="([^"]+)"/.exec(html)?.[1] ?? '';
    const cookie = page.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    return { token, once, cookie };
  };
  /** Posts a form of the page; `from`: the page it was on (else the page is loaded now). */
  const post = async (
    path: string,
    form: Record<string, string>,
    from?: Awaited<ReturnType<typeof session>>,
  ) => {
    const { token, once, cookie } = from ?? (await session());
    return fetch(`${stack.url}${path}`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        authorization: auth,
        cookie,
        origin: stack.url,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ _csrf: token, _once: once, ...form }).toString(),
    });
  };
  const flashOf = (answer: Response) =>
    decodeURIComponent(answer.headers.getSetCookie().join('; '));

  it('makes a key (shown once), lists it by prefix, rotates and revokes it', async () => {
    const made = await post('/admin/keys', {
      name: 'crm',
      scope_read: 'on',
      sessions: 'main',
    });
    expect(made.status).toBe(200);
    const html = await made.text();
    const key = /data-new-key>(wag_[^<]+)</.exec(html)![1];
    expect(
      (await stack.call('GET', '/api/v1/sessions', undefined, { 'x-api-key': key })).status,
    ).toBe(200);
    const record = (await stack.call('GET', '/api/v1/keys')).body.data.find(
      (k: { name: string }) => k.name === 'crm',
    );
    expect(record).toMatchObject({ scopes: ['read'], sessions: ['main'] });

    const list = await (
      await fetch(`${stack.url}/admin/keys`, { headers: { authorization: auth } })
    ).text();
    expect(list).toContain(record.prefix);
    expect(list).not.toContain(key);

    const rotated = await post(`/admin/keys/${record.id}/rotate`, {});
    const fresh = /data-new-key>(wag_[^<]+)</.exec(await rotated.text())![1];
    // At once: the api's cache of verified keys is the process's, shared with the pages.
    expect(
      (await stack.call('GET', '/api/v1/sessions', undefined, { 'x-api-key': key })).status,
    ).toBe(401);

    const revoked = await post(`/admin/keys/${record.id}/revoke`, {});
    expect(revoked.status).toBe(303);
    expect(
      (await stack.call('GET', '/api/v1/sessions', undefined, { 'x-api-key': fresh })).status,
    ).toBe(401);
    // Revoked again (a second click): the page says so, and the first time is kept.
    const { revokedAt } = (await stack.call('GET', '/api/v1/keys')).body.data.find(
      (k: { id: string }) => k.id === record.id,
    );
    const again = await post(`/admin/keys/${record.id}/revoke`, {});
    expect(again.status).toBe(303);
    // In the pages' own time format, not the raw ISO string.
    expect(decodeURIComponent(again.headers.getSetCookie().join('; '))).toContain(
      `Key crm was already revoked, at ${(revokedAt as string).slice(0, 19).replace('T', ' ')} UTC`,
    );
    expect(
      (await stack.call('GET', '/api/v1/keys')).body.data.find(
        (k: { id: string }) => k.id === record.id,
      ).revokedAt,
    ).toBe(revokedAt);
  });

  it('makes one key and rotates once when the same form is posted twice, as a reload of the answer does', async () => {
    const keysNamed = async (name: string) =>
      (await stack.call('GET', '/api/v1/keys')).body.data.filter(
        (k: { name: string }) => k.name === name,
      );
    const page = await session();
    const made = await post('/admin/keys', { name: 'twice', scope_read: 'on' }, page);
    expect(made.status).toBe(200);
    const key = /data-new-key>(wag_[^<]+)</.exec(await made.text())![1];
    const again = await post('/admin/keys', { name: 'twice', scope_read: 'on' }, page);
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe('/admin/keys');
    expect(flashOf(again)).toContain('the key was made then, and its secret shown once');
    expect(await again.text()).not.toContain('wag_');
    const [record] = await keysNamed('twice');
    expect(await keysNamed('twice')).toHaveLength(1);

    const rotatePage = await session();
    const rotated = await post(`/admin/keys/${record.id}/rotate`, {}, rotatePage);
    expect(rotated.status).toBe(200);
    const fresh = /data-new-key>(wag_[^<]+)</.exec(await rotated.text())![1];
    expect(fresh).not.toBe(key);
    const rotatedAt = (await keysNamed('twice'))[0].rotatedAt;
    const rotatedAgain = await post(`/admin/keys/${record.id}/rotate`, {}, rotatePage);
    expect(rotatedAgain.status).toBe(303);
    expect(flashOf(rotatedAgain)).toContain('the key was rotated then, and its new secret shown');
    // The secret just copied still works: the repeat rotated nothing.
    expect(
      (await stack.call('GET', '/api/v1/sessions', undefined, { 'x-api-key': fresh })).status,
    ).toBe(200);
    expect((await keysNamed('twice'))[0].rotatedAt).toBe(rotatedAt);
    // The same page's token still serves its other forms once each.
    const other = await post(
      '/admin/keys',
      { name: 'from the same page', scope_read: 'on' },
      rotatePage,
    );
    expect(other.status).toBe(200);
  });

  it('refuses a key form without its one-time token, or with one too old, makes nothing, and keeps the form for sending again', async () => {
    const page = await session();
    const day = 24 * 3600_000;
    for (const once of [
      '',
      'made-up',
      `${(Date.now() - day - 1000).toString(36)}.AAAAAAAAAAAAAAAA`,
    ]) {
      const refused = await post(
        '/admin/keys',
        { name: 'tokenless', scope_read: 'on', _once: once },
        page,
      );
      expect(refused.status, once).toBe(400);
      const html = await refused.text();
      // Not "reload the page": a reload of this answer would post the same token again.
      expect(html, once).toContain('nothing was done: send it again');
      expect(html, once).toContain('value="tokenless"');
      expect(html, once).toMatch(/name="_once" value="[0-9a-z]+\.[\w-]{16}"/);
    }
    expect(
      (await stack.call('GET', '/api/v1/keys')).body.data.filter(
        (k: { name: string }) => k.name === 'tokenless',
      ),
    ).toEqual([]);
  });

  it('refuses a key without scopes, or without the CSRF token', async () => {
    const none = await post('/admin/keys', { name: 'nothing' });
    expect(none.status).toBe(400); // the page again, with the reason beside the form
    const forged = await fetch(`${stack.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=x&scope_admin=on',
    });
    expect(forged.status).toBe(403);
    expect(
      (await stack.call('GET', '/api/v1/keys')).body.data.filter(
        (k: { name: string }) => k.name === 'x' || k.name === 'nothing',
      ),
    ).toEqual([]);
  });
});
