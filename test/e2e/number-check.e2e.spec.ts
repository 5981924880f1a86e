import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

describe('number check: GET /api/v1/sessions/:id/contacts/:number/exists', () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual' });
  beforeAll(async () => {
    await eventually(async () =>
      expect((await stack.call('POST', '/api/v1/sessions/main/link')).status).toBe(202),
    );
    await stack.waitReady();
  });

  const check = (session: string, number: string) =>
    stack.call('GET', `/api/v1/sessions/${session}/contacts/${number}/exists`);

  it('asks the session, then answers from a brief cache', async () => {
    const first = await check('main', '+4915123456789');
    expect(first.status).toBe(200);
    expect(first.body.data).toEqual({
      number: '4915123456789',
      exists: true,
      chatId: '4915123456789@c.us',
      cached: false,
    });
    const ttl = await stack.redis.pttl(stack.keys.numberCheck('main', '4915123456789'));
    expect(ttl).toBeGreaterThan(9 * 60_000);
    expect((await check('main', '4915123456789')).body.data).toMatchObject({
      exists: true,
      cached: true,
    });
  });

  it('checks the number without the bracketed national 0, however the country code is written', async () => {
    for (const written of ['0049 (0)151-2345-6789', '+49.(0)151 2345 6789']) {
      const answer = await check('main', encodeURIComponent(written));
      expect(answer.status, written).toBe(200);
      expect(answer.body.data, written).toMatchObject({
        number: '4915123456789',
        chatId: '4915123456789@c.us',
      });
    }
    const elsewhere = await check('main', encodeURIComponent('+49 30 (0)1234567'));
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body.error.message).toContain(
      'a bracketed (0) only right after the country code',
    );
  });

  it('needs the send scope, not read: the linked account asks WhatsApp', async () => {
    const keyWith = async (scopes: string[]) =>
      (await stack.call('POST', '/api/v1/keys', { name: scopes.join('+'), scopes })).body.data.key;
    const ask = async (key: string) =>
      stack.call('GET', '/api/v1/sessions/main/contacts/4915123456780/exists', undefined, {
        'x-api-key': key,
      });
    const reader = await ask(await keyWith(['read']));
    expect(reader.status).toBe(403);
    expect(reader.body.error.message).toContain('send scope');
    const sender = await ask(await keyWith(['send']));
    expect(sender.status).toBe(200);
    expect(sender.body.data).toMatchObject({ number: '4915123456780', exists: true });
  });

  it('says a number without an account does not exist', async () => {
    const answer = await check('main', '000123456789');
    expect(answer.status).toBe(200);
    expect(answer.body.data).toEqual({
      number: '000123456789',
      exists: false,
      chatId: null,
      cached: false,
    });
  });

  it('answers a bad number 400, an unknown session 404, a session not READY 409', async () => {
    const bad = await check('main', 'call-me');
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toContain('number');
    expect((await check('nosuch', '4915123456789')).status).toBe(404);

    // A new session waits for its QR to be scanned.
    await stack.call('POST', '/api/v1/sessions', { id: 'waiting' });
    await eventually(async () =>
      expect(await stack.redis.get(stack.keys.lease('waiting'))).toBeTruthy(),
    );
    const notReady = await eventually(async () => {
      const answer = await check('waiting', '4915000000001');
      expect(answer.status).toBe(409);
      return answer;
    });
    expect(notReady.body.error.message).toContain('not READY');
  });

  it('answers 503 at once when the worker that holds the session is gone', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'orphan' });
    await eventually(async () =>
      expect(await stack.redis.get(stack.keys.lease('orphan'))).toBeTruthy(),
    );
    // Its lease names a worker that died: nobody listens for its calls.
    await stack.redis.set(stack.keys.lease('orphan'), 'gone-worker', 'PX', 60_000);
    const started = performance.now();
    const answer = await check('orphan', '4915123456789');
    expect(answer.status).toBe(503);
    expect(answer.body.error.code).toBe('UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe('SEND_CHECK_NUMBER=false: no lookup before a send', () => {
  const stack = useStack({ SEND_CHECK_NUMBER: 'false' });
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('sends to a number without WhatsApp, which then stays at sent (WhatsApp drops it)', async () => {
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '000123456789',
      text: 'nobody home',
    });
    expect(sent.status).toBe(202);
    await stack.waitForStatus(sent.body.data.id, 'sent');
    const reached = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'somebody home',
    });
    await stack.waitForStatus(reached.body.data.id, 'read');
    const record = (await stack.call('GET', `/api/v1/messages/${sent.body.data.id}`)).body.data;
    expect(record).toMatchObject({ status: 'sent', error: null });
  });
});
