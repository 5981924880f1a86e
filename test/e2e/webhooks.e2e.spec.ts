import {
  MessageRepository,
  WebhookRepository,
  deliveryCreatedMs,
  newEventId,
  shardOf,
} from '@app/status-store';
import { WebhookConsumer } from '../../apps/worker/src/webhooks/webhook-consumer.service.js';
import { eventually } from '../support/eventually.js';
import { parsePrometheus } from '../support/prometheus.js';
import { Stack, useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';
import { PRIVATE_URLS } from '../support/private-urls.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const OTHER_SECRET = 'whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkh';

const WEBHOOK_ENV = {
  WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
  WEBHOOK_BACKOFF_MS: '20',
  WEBHOOK_TIMEOUT_MS: '2000',
};

const setTargets = (stack: Stack, targets: unknown, sessionId = 'main') =>
  stack.call('PUT', `/api/v1/sessions/${sessionId}/webhooks`, targets);

describe('webhooks', () => {
  const receivers: WebhookReceiver[] = [];
  const receiver = async (...args: Parameters<typeof WebhookReceiver.start>) => {
    const started = await WebhookReceiver.start(...args);
    receivers.push(started);
    return started;
  };

  const stack = useStack(WEBHOOK_ENV);
  beforeAll(async () => {
    await stack.waitReady();
  });
  /** A message received from `from`, whose delivery to `hook` (its only target) failed. */
  const failedDelivery = async (
    hook: WebhookReceiver,
    from: string,
    text: string,
    sessionId = 'main',
  ) => {
    await setTargets(
      stack,
      [{ url: hook.url, events: ['message.received'], secret: SECRET }],
      sessionId,
    );
    await stack.call('POST', `/api/v1/sessions/${sessionId}/sandbox/incoming`, { from, text });
    return eventually(async () => {
      const list = await stack.call('GET', '/api/v1/webhooks/deliveries?status=failed');
      const found = list.body.data.find((d: any) => d.url === hook.url);
      expect(found).toBeDefined();
      return found;
    });
  };
  afterEach(async () => {
    await setTargets(stack, []);
    for (const r of receivers.splice(0)) await r.close();
  });

  it("delivers a text's whole life in order, each signed so standardwebhooks verifies it", async () => {
    const hook = await receiver();
    const put = await setTargets(stack, [
      { url: hook.url, events: ['message.status'], secret: SECRET },
    ]);
    expect(put.status).toBe(200);
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'hello',
    });
    const id = sent.body.data.id;
    await eventually(() =>
      expect(hook.statuses(id)).toEqual(['queued', 'sending', 'sent', 'delivered', 'read']),
    );
    const verified = hook.verified(SECRET);
    expect(verified).toHaveLength(5);
    for (const request of hook.requests)
      expect(request.headers['webhook-id']).toBe(request.body.id);
    const sequences = hook.events().map((event) => event.sequence);
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
    expect(hook.events()[4]).toMatchObject({
      type: 'message.status',
      sessionId: 'main',
      data: { id, status: 'read', to: '4915123456789', error: null },
    });
    expect(() => hook.verified(OTHER_SECRET)).toThrow();
  });

  it('sends an injected incoming message as message.received and lists it', async () => {
    const hook = await receiver();
    await setTargets(stack, [{ url: hook.url, events: ['message.received'], secret: SECRET }]);
    const injected = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915111111111',
      text: 'where is my order?',
    });
    await eventually(() => expect(hook.events()).toHaveLength(1));
    expect(hook.verified(SECRET)[0]).toMatchObject({
      type: 'message.received',
      sessionId: 'main',
      data: {
        id: injected.body.data.id,
        direction: 'in',
        from: '4915111111111@c.us',
        body: 'where is my order?',
        type: 'text',
      },
    });
    const list = await stack.call('GET', '/api/v1/sessions/main/messages?direction=in&limit=1');
    expect(list.body.data.items[0].id).toBe(injected.body.data.id);
    // Delivered everywhere: the event is not kept for the whole retention.
    const eventKey = stack.keys.webhookEvent(hook.events()[0].id);
    await eventually(async () =>
      expect(await stack.redis.pttl(eventKey)).toBeLessThanOrEqual(3_600_000),
    );
  });

  it("sends in message.received our id of the message a reply quotes and a reaction is on, and in message.status WhatsApp's id of ours", async () => {
    const hook = await receiver();
    await setTargets(stack, [
      { url: hook.url, events: ['message.received', 'message.status'], secret: SECRET },
    ]);
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915111111112',
      text: 'Your order shipped',
    });
    const ours = sent.body.data.id as string;
    await stack.waitForStatus(ours, ['sent', 'delivered', 'read']);
    const engineMessageId = (await stack.redis.hget(stack.keys.message(ours), 'engineMessageId'))!;
    const inject = (body: object) =>
      stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '4915111111112',
        ...body,
      });
    const reply = await inject({ text: 'thanks!', quotedId: engineMessageId });
    const reaction = await inject({ reaction: { emoji: '👍', targetId: engineMessageId } });
    const receivedOf = (id: string) =>
      eventually(() => {
        const event = hook.events().find((e) => e.type === 'message.received' && e.data.id === id);
        expect(event).toBeDefined();
        return event;
      });
    expect((await receivedOf(reply.body.data.id)).data).toMatchObject({
      quotedId: engineMessageId,
      quotedMessageId: ours,
    });
    expect((await receivedOf(reaction.body.data.id)).data).toMatchObject({
      reaction: { emoji: '👍', targetId: engineMessageId, targetMessageId: ours },
    });
    const statuses = hook
      .verified(SECRET)
      .filter((event) => event.type === 'message.status' && event.data.id === ours);
    expect(statuses.find((event) => event.data.status === 'queued')?.data.engineMessageId).toBe(
      null,
    );
    expect(statuses.find((event) => event.data.status === 'sent')?.data.engineMessageId).toBe(
      engineMessageId,
    );
  });

  it('retries 500 three times, then delivers once: 4 attempts with the same webhook-id', async () => {
    const hook = await receiver((n) => (n <= 3 ? 500 : 200));
    await setTargets(stack, [{ url: hook.url, events: ['message.received'], secret: SECRET }]);
    await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915122222222',
      text: 'retry me',
    });
    await eventually(() => expect(hook.requests).toHaveLength(4));
    expect(new Set(hook.requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
    const [delivery] = (
      await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main&limit=1')
    ).body.data;
    expect(delivery).toMatchObject({ status: 'delivered', attempts: 4, lastStatusCode: 200 });
    expect(delivery.id).toBe(`${hook.requests[0].headers['webhook-id']}_${delivery.targetId}`);
  });

  it('takes a 400 as final, lists it as failed, and delivers it on replay with the same id', async () => {
    const hook = await receiver((n) => (n === 1 ? 400 : 200));
    const failed = await failedDelivery(hook, '4915133333333', 'refused once');
    expect(failed).toMatchObject({ attempts: 1, lastStatusCode: 400 });
    expect(failed.lastError).toMatch(/HTTP 400/);
    expect(hook.requests).toHaveLength(1);

    const replay = await stack.call('POST', `/api/v1/webhooks/deliveries/${failed.id}/replay`);
    expect(replay.status).toBe(202);
    await eventually(async () => {
      const one = await stack.call('GET', `/api/v1/webhooks/deliveries/${failed.id}`);
      expect(one.body.data).toMatchObject({ status: 'delivered', replays: 1 });
    });
    expect(hook.requests).toHaveLength(2);
    expect(hook.requests[1].headers['webhook-id']).toBe(hook.requests[0].headers['webhook-id']);
    // Delivered at last, its event is kept no longer than one delivered at once.
    expect(await stack.redis.pttl(stack.keys.webhookEvent(failed.eventId))).toBeLessThanOrEqual(
      3_600_000,
    );
    const again = await stack.call('POST', `/api/v1/webhooks/deliveries/${failed.id}/replay`);
    expect(again.status).toBe(409);
  });

  it('answers the replay of a failed delivery of a deleted session with 404', async () => {
    const hook = await receiver(() => 400);
    await stack.call('POST', '/api/v1/sessions', { id: 'short-lived' });
    await stack.waitReady('short-lived');
    const failed = await failedDelivery(hook, '4915133333335', 'then deleted', 'short-lived');
    expect((await stack.call('DELETE', '/api/v1/sessions/short-lived')).status).toBeLessThan(300);
    const replay = await stack.call('POST', `/api/v1/webhooks/deliveries/${failed.id}/replay`);
    expect(replay.status).toBe(404);
    expect(replay.body.error.message).toMatch(/Session short-lived does not exist/);
    // Nor is it listed any longer, failed or among the newest, once the session is purged.
    await eventually(async () => {
      for (const query of ['?status=failed', '?limit=200']) {
        const listed = await stack.call('GET', `/api/v1/webhooks/deliveries${query}`);
        expect(listed.body.data.map((d: any) => d.id)).not.toContain(failed.id);
      }
    });
  });

  it('refuses to replay a failed delivery whose target was removed, or whose URL changed, with 409', async () => {
    const hook = await receiver(() => 400);
    const failed = await failedDelivery(hook, '4915133333334', 'refused, then its target changed');
    // The receiver's URL changes (a new token in its query): a new target.
    await setTargets(stack, [
      { url: `${hook.url}?token=new`, events: ['message.received'], secret: SECRET },
    ]);
    const replay = await stack.call('POST', `/api/v1/webhooks/deliveries/${failed.id}/replay`);
    expect(replay.status).toBe(409);
    expect(replay.body.error.message).toMatch(/was removed, or its URL changed/);
    expect(
      (await stack.call('GET', `/api/v1/webhooks/deliveries/${failed.id}`)).body.data,
    ).toMatchObject({
      status: 'failed',
      replays: 0,
    });
  });

  it('keeps delivered deliveries and their event an hour, failed ones for WEBHOOK_RETENTION_MS', async () => {
    const ok = await receiver();
    const refusing = await receiver(() => 410);
    await setTargets(stack, [
      { url: ok.url, events: ['message.received'], secret: SECRET },
      { url: refusing.url, events: ['message.received'], secret: SECRET },
    ]);
    await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915188888888',
      text: 'kept how long?',
    });
    await eventually(() => {
      expect(ok.events()).toHaveLength(1);
      expect(refusing.events()).toHaveLength(1);
    });
    const eventId = ok.events()[0].id;
    const deliveries = await eventually(async () => {
      const list = (await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main&limit=2'))
        .body.data;
      expect(list.map((d: any) => d.status).sort()).toEqual(['delivered', 'failed']);
      return list;
    });
    const ttl = (key: string) => stack.redis.pttl(key);
    const delivered = deliveries.find((d: any) => d.status === 'delivered');
    const failed = deliveries.find((d: any) => d.status === 'failed');
    expect(await ttl(stack.keys.webhookDelivery(delivered.id))).toBeLessThanOrEqual(3_600_000);
    expect(await ttl(stack.keys.webhookDelivery(failed.id))).toBeGreaterThan(6 * 86_400_000);
    // The failed delivery may be replayed: its event stays as long.
    expect(await ttl(stack.keys.webhookEvent(eventId))).toBeGreaterThan(6 * 86_400_000);
    // One that waited in line (behind a delivery being retried) fails long after its event
    // happened: both are kept WEBHOOK_RETENTION_MS from its failure, not from the event.
    await stack.redis.pexpire(stack.keys.webhookDelivery(failed.id), 5_000);
    await stack.redis.pexpire(stack.keys.webhookEvent(eventId), 5_000);
    await stack
      .worker!.get(WebhookRepository)
      .markFailed(failed, { statusCode: 410, error: 'HTTP 410' });
    expect(await ttl(stack.keys.webhookDelivery(failed.id))).toBeGreaterThan(6 * 86_400_000);
    expect(await ttl(stack.keys.webhookEvent(eventId))).toBeGreaterThan(6 * 86_400_000);
    // Never shortened: the event is shared, and another target's delivery may wait longer.
    await stack.redis.pexpire(stack.keys.webhookEvent(eventId), 9 * 86_400_000);
    await stack
      .worker!.get(WebhookRepository)
      .markFailed(failed, { statusCode: 410, error: 'HTTP 410' });
    expect(await ttl(stack.keys.webhookEvent(eventId))).toBeGreaterThan(8 * 86_400_000);
    // Nor by a replay of the failed one.
    const replay = await stack.call('POST', `/api/v1/webhooks/deliveries/${failed.id}/replay`);
    expect(replay.status).toBe(202);
    expect(await ttl(stack.keys.webhookEvent(eventId))).toBeGreaterThan(8 * 86_400_000);
  });

  it('lists the deliveries of every session a limited key may use, not only its first', async () => {
    const hook = await receiver();
    await stack.call('POST', '/api/v1/sessions', { id: 'hooked2' });
    await stack.waitReady('hooked2');
    for (const sessionId of ['main', 'hooked2'])
      await setTargets(
        stack,
        [{ url: hook.url, events: ['message.received'], secret: SECRET }],
        sessionId,
      );
    for (const sessionId of ['main', 'hooked2'])
      await stack.call('POST', `/api/v1/sessions/${sessionId}/sandbox/incoming`, {
        from: '4915177777777',
        text: `to ${sessionId}`,
      });
    await eventually(() => expect(hook.events()).toHaveLength(2));
    const made = await stack.call('POST', '/api/v1/keys', {
      name: 'two sessions',
      scopes: ['read', 'sessions'],
      sessions: ['hooked2', 'main'],
    });
    const listed = await stack.call('GET', '/api/v1/webhooks/deliveries?limit=50', undefined, {
      'x-api-key': made.body.data.key,
    });
    expect(listed.status).toBe(200);
    const sessions = new Set(listed.body.data.map((d: { sessionId: string }) => d.sessionId));
    expect(sessions).toEqual(new Set(['main', 'hooked2']));
  });

  it('answers the deliveries of a session that does not exist with 404, as its other routes do (403 to a key not of it)', async () => {
    for (const query of ['sessionId=ghost', 'sessionId=ghost&status=failed']) {
      const answer = await stack.call('GET', `/api/v1/webhooks/deliveries?${query}`);
      expect({ query, status: answer.status, body: answer.body }).toEqual({
        query,
        status: 404,
        body: { ok: false, error: { code: 'NOT_FOUND', message: 'Session ghost does not exist' } },
      });
    }
    const made = await stack.call('POST', '/api/v1/keys', {
      name: 'main only',
      scopes: ['read'],
      sessions: ['main'],
    });
    const other = await stack.call(
      'GET',
      '/api/v1/webhooks/deliveries?sessionId=ghost',
      undefined,
      {
        'x-api-key': made.body.data.key,
      },
    );
    expect(other.status).toBe(403);
    const own = await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main', undefined, {
      'x-api-key': made.body.data.key,
    });
    expect(own.status).toBe(200);
  });

  it('waits at least what Retry-After asks after a 429', async () => {
    const hook = await receiver((n) =>
      n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : 200,
    );
    await setTargets(stack, [{ url: hook.url, events: ['message.received'], secret: SECRET }]);
    await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915144444444',
      text: 'slow down',
    });
    // Waiting for its next attempt, the delivery and its event are kept WEBHOOK_RETENTION_MS
    // (7 days here) past it, not counted from when the event happened.
    const waiting = await eventually(async () => {
      const [pending] = (
        await stack.call('GET', '/api/v1/webhooks/deliveries?status=pending&sessionId=main')
      ).body.data;
      expect(pending?.nextAttemptAt).toBeTruthy();
      return pending;
    });
    const week = 7 * 86_400_000;
    expect(await stack.redis.pttl(stack.keys.webhookDelivery(waiting.id))).toBeGreaterThan(week);
    expect(await stack.redis.pttl(stack.keys.webhookEvent(waiting.eventId))).toBeGreaterThan(week);
    await eventually(() => expect(hook.requests).toHaveLength(2));
    expect(hook.requests[1].at - hook.requests[0].at).toBeGreaterThanOrEqual(950);
  });

  it('keeps delivering to one target and sending while another target never answers', async () => {
    const stuck = await receiver(() => 'hang');
    const healthy = await receiver();
    await setTargets(stack, [
      { url: stuck.url, events: ['message.status'], secret: SECRET },
      { url: healthy.url, events: ['message.status'], secret: SECRET },
    ]);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const sent = await stack.call('POST', '/api/v1/messages/text', {
        to: `491515555555${i}`,
        text: `while stuck ${i}`,
      });
      ids.push(sent.body.data.id);
    }
    for (const id of ids) await stack.waitForStatus(id, 'read');
    await eventually(() => {
      for (const id of ids)
        expect(healthy.statuses(id)).toEqual(['queued', 'sending', 'sent', 'delivered', 'read']);
    });
    // The stuck target still holds its first event; nothing behind it overtook it.
    expect(stuck.events()).toHaveLength(1);
    expect(stuck.events()[0].data).toMatchObject({ id: ids[0], status: 'queued' });
  });

  it('sends session.status on every change, with the QR only to targets that ask for it', async () => {
    const plain = await receiver();
    const withQr = await receiver();
    await setTargets(stack, [
      { url: plain.url, events: ['session.status'], secret: SECRET },
      { url: withQr.url, events: ['session.status'], secret: SECRET, includeQr: true },
    ]);
    await stack.call('POST', '/api/v1/sessions/main/logout');
    const seen = (hook: WebhookReceiver) => hook.events().map((event) => event.data.status);
    await eventually(() => {
      expect(seen(plain)).toContain('QR');
      expect(seen(plain).at(-1)).toBe('READY');
      expect(seen(withQr).at(-1)).toBe('READY');
    });
    expect(seen(plain)).toEqual(seen(withQr));
    const qrOf = (hook: WebhookReceiver) =>
      hook.events().find((event) => event.data.status === 'QR').data;
    expect(qrOf(plain)).not.toHaveProperty('qr');
    expect(qrOf(withQr).qr).toMatch(/^sandbox:main:/);
    await stack.waitReady();
  });

  it('counts deliveries by result, their latency, and the backlog per target in the worker metrics', async () => {
    const scrape = async () =>
      parsePrometheus(await (await fetch(`${stack.workerUrl}/metrics`)).text());
    const value = (samples: Awaited<ReturnType<typeof scrape>>, name: string, labels = {}) =>
      samples
        .filter(
          (s) => s.name === name && Object.entries(labels).every(([key, v]) => s.labels[key] === v),
        )
        .reduce((sum, s) => sum + s.value, 0);
    const before = await scrape();
    const hook = await receiver((n) => (n === 1 ? 503 : n === 2 ? 'hang' : 200));
    await setTargets(stack, [{ url: hook.url, events: ['message.received'], secret: SECRET }]);
    for (const text of ['one', 'two', 'three'])
      await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '4915177777777',
        text,
      });
    // First attempt 503 (retry), second hangs: all three wait in the target's chain.
    await eventually(() => expect(hook.requests).toHaveLength(2));
    const target = (await stack.call('GET', '/api/v1/sessions/main/webhooks')).body.data[0].id;
    await stack.worker!.get(WebhookConsumer).sweep();
    const during = await scrape();
    expect(value(during, 'wa_webhook_backlog', { target })).toBe(3);
    expect(
      value(during, 'wa_webhook_deliveries_total', { result: 'retry', event: 'message.received' }) -
        value(before, 'wa_webhook_deliveries_total', {
          result: 'retry',
          event: 'message.received',
        }),
    ).toBe(1);
  });

  it('keeps a target secret when a PUT omits it (hidden in the answer), makes one when new (shown once), and hides it on GET', async () => {
    const first = await setTargets(stack, [
      { url: 'http://127.0.0.1:9/a', events: ['message.status'], secret: SECRET },
      { url: 'http://127.0.0.1:9/b', events: ['message.status'] },
    ]);
    expect(first.body.data[0].secret).toBe(SECRET);
    expect(first.body.data[1].secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const second = await setTargets(stack, [
      { url: 'http://127.0.0.1:9/a', events: ['message.received', 'message.status'] },
    ]);
    expect(second.body.data[0]).toMatchObject({
      secret: `${SECRET.slice(0, 10)}…`,
      events: ['message.received', 'message.status'],
      scope: 'session',
    });
    const got = await stack.call('GET', '/api/v1/sessions/main/webhooks');
    expect(got.body.data).toHaveLength(1);
    expect(got.body.data[0].secret).toBe(`${SECRET.slice(0, 10)}…`);
  });

  it("names the target and the field of a bad target, in the field's own words", async () => {
    const target = { url: 'https://example.com/hook', events: ['message.status'] };
    const badSecret = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      target,
      { ...target, url: 'https://example.com/other', secret: 'hunter2' },
    ]);
    expect(badSecret.status).toBe(400);
    expect(badSecret.body.error.message).toBe(
      '[1] secret must be whsec_ followed by base64 of 24 to 64 random bytes',
    );
    // Base64 without its padding: Node would sign with it, a Python or Go receiver could not
    // decode it.
    const unpadded = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { ...target, secret: `whsec_${Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '')}` },
    ]);
    expect(unpadded.status).toBe(400);
    expect(unpadded.body.error.message).toMatch(/^\[0\] secret must be base64 with its = padding/);
    const two = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { ...target, extra: 1 },
      'https://example.com/hook',
    ]);
    expect(two.status).toBe(400);
    expect(two.body.error.message).toBe(
      '[0] extra: property extra should not exist; [1] each target must be an object',
    );
    const notArray = await stack.call('PUT', '/api/v1/sessions/main/webhooks', target);
    expect(notArray.body.error.message).toBe('the body must be a JSON array of targets');
  });

  it('refuses more targets than a session may have by their count, before reading any of them', async () => {
    // 990 KB of `[{},{},...]`: each item read would be a problem to name.
    const answer = await stack.call(
      'PUT',
      '/api/v1/sessions/main/webhooks',
      Array.from({ length: 330_000 }, () => ({})),
    );
    expect(answer.status).toBe(400);
    expect(answer.body.error).toEqual({
      code: 'BAD_REQUEST',
      message: 'the body holds at most 10 targets; it has 330000',
    });
  });

  it('answers bad targets, filters and delivery ids with 400/404/409 in the envelope', async () => {
    const target = { url: 'https://example.com/hook', events: ['message.status'] };
    const cases: [string, string, unknown, number][] = [
      ['PUT', '/api/v1/sessions/main/webhooks', { ...target }, 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, url: 'not a url' }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, url: 'ftp://example.com/x' }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, events: [] }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, events: ['message.sent'] }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, secret: 'hunter2' }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [{ ...target, extra: 1 }], 400],
      ['PUT', '/api/v1/sessions/main/webhooks', [target, target], 400],
      [
        'PUT',
        '/api/v1/sessions/main/webhooks',
        Array(11)
          .fill(0)
          .map((_, i) => ({ ...target, url: `https://example.com/${i}` })),
        400,
      ],
      ['PUT', '/api/v1/sessions/nope/webhooks', [target], 404],
      ['GET', '/api/v1/sessions/nope/webhooks', undefined, 404],
      ['GET', '/api/v1/webhooks/deliveries?status=lost', undefined, 400],
      ['GET', '/api/v1/webhooks/deliveries?limit=1000', undefined, 400],
      ['GET', '/api/v1/webhooks/deliveries?sessionId=a%20b', undefined, 400],
      ['GET', '/api/v1/webhooks/deliveries/nope', undefined, 400],
      [
        'GET',
        '/api/v1/webhooks/deliveries/evt_000000000aaaaaaaaaaaaaaaa_s000000000000',
        undefined,
        404,
      ],
      [
        'POST',
        '/api/v1/webhooks/deliveries/evt_000000000aaaaaaaaaaaaaaaa_s000000000000/replay',
        undefined,
        404,
      ],
    ];
    for (const [method, path, body, status] of cases) {
      const answer = await stack.call(method, path, body);
      expect({ path, body, status: answer.status }).toEqual({ path, body, status });
      expect(answer.body.ok).toBe(false);
    }
  });
});

describe('paging the webhook deliveries (before)', () => {
  const stack = useStack({}, { worker: false });
  const OWN = 's0123456789ab';

  /** A delivery of main made at `ms`, listed as the publishing script lists one (`legacy`: made before shards, the root's list). */
  const made = async (ms: number, legacy = false) => {
    const eventId = legacy ? newEventId(ms) : `${newEventId(ms)}${shardOf('main')}`;
    const id = `${eventId}_${OWN}`;
    await stack.redis
      .multi()
      .hset(stack.keys.webhookDelivery(id), {
        id,
        eventId,
        eventType: 'message.received',
        sessionId: 'main',
        targetId: OWN,
        url: 'https://example.com/hook',
        status: 'delivered',
        attempts: '1',
        replays: '0',
        createdAt: new Date(ms).toISOString(),
      })
      .zadd(stack.keys.webhookRecent(legacy ? null : shardOf('main')), ms, id)
      .zadd(stack.keys.webhookSessionRecent('main'), ms, id)
      .exec();
    return { id, eventId, sessionId: 'main', score: ms };
  };
  const byNewest = (made: { id: string; score: number }[]) =>
    [...made]
      .sort((a, b) => b.score - a.score || (a.id < b.id ? 1 : -1))
      .map((delivery) => delivery.id);
  /** Every page from `first` on, each `before` the last id of the one before, to an empty one. */
  const pagesFrom = async (query: string, first: string[]) => {
    const listed = [...first];
    for (let before = first.at(-1); before;) {
      const page = await stack.call('GET', `/api/v1/webhooks/deliveries?${query}&before=${before}`);
      expect(page.status).toBe(200);
      listed.push(...page.body.data.map((delivery: { id: string }) => delivery.id));
      before = page.body.data.at(-1)?.id;
    }
    return listed;
  };

  it('pages with before: newest first, each delivery once though many share a millisecond, pages unmoved by deliveries made meanwhile; 400 for a malformed cursor, 404 for a failed one no longer known', async () => {
    const at = Date.now() - 60_000;
    const all = [];
    // 3 milliseconds for 30 deliveries, in main's shard's list and the root's.
    for (let i = 0; i < 30; i++) all.push(await made(at + (i % 3), i % 4 === 0));
    const expected = byNewest(all);
    const queries = ['limit=4', 'limit=7&sessionId=main', 'limit=1&status=delivered'];
    for (const [q, query] of queries.entries()) {
      const listing = byNewest(all);
      const first = await stack.call('GET', `/api/v1/webhooks/deliveries?${query}`);
      expect(first.status).toBe(200);
      const shown = first.body.data.map((delivery: { id: string }) => delivery.id);
      // Made while the client pages: newer than all, they come before its first page.
      for (let i = 0; i < 5; i++) all.push(await made(at + 10_000 * (q + 1) + i));
      expect(await pagesFrom(query, shown), query).toEqual(listing);
    }

    // Failed ones page by when they failed, the worker's script recording it.
    const webhooks = stack.api!.get(WebhookRepository);
    const failed = all.slice(0, 9);
    for (const [i, delivery] of failed.entries())
      await webhooks.markFailed(
        delivery,
        { statusCode: 410, error: 'HTTP 410' },
        new Date(at + 2_000 + (i % 2)),
      );
    const byFailure = byNewest(
      failed.map((delivery, i) => ({ ...delivery, score: at + 2_000 + (i % 2) })),
    );
    const firstFailed = await stack.call(
      'GET',
      '/api/v1/webhooks/deliveries?status=failed&limit=2',
    );
    const shownFailed = firstFailed.body.data.map((delivery: { id: string }) => delivery.id);
    expect(await pagesFrom('status=failed&limit=2', shownFailed)).toEqual(byFailure);

    // Any delivery id marks a place by when it was made, kept or not; a failed listing's is
    // when it failed, which one never failed (or no longer kept) does not tell.
    const unknown = `${newEventId(at + 1)}${shardOf('main')}_${OWN}`;
    const after = await stack.call(
      'GET',
      `/api/v1/webhooks/deliveries?limit=200&before=${unknown}`,
    );
    expect(after.status).toBe(200);
    expect(after.body.data.map((delivery: { id: string }) => delivery.id)).toEqual(
      expected.filter(
        (id) =>
          deliveryCreatedMs(id) < at + 1 || (deliveryCreatedMs(id) === at + 1 && id < unknown),
      ),
    );
    const notFailed = await stack.call(
      'GET',
      `/api/v1/webhooks/deliveries?status=failed&before=${unknown}`,
    );
    expect(notFailed.status).toBe(404);
    expect(notFailed.body).toEqual({
      ok: false,
      error: {
        code: 'NOT_FOUND',
        message: `before: delivery ${unknown} is not (or no longer) a failed one, nor one replayed since, so where its page ended is not known: list again without before`,
      },
    });
    for (const before of ['nope', `${all[0].id}x`, '1764580800000-0', '']) {
      const malformed = await stack.call('GET', `/api/v1/webhooks/deliveries?before=${before}`);
      expect({ before, status: malformed.status, body: malformed.body }).toEqual({
        before,
        status: 400,
        body: {
          ok: false,
          error: { code: 'BAD_REQUEST', message: 'before must be a delivery id (evt_..._...)' },
        },
      });
    }

    // Documented: the cursor, with an example, and the route's paging.
    const document = (await stack.call('GET', '/api/openapi')).body;
    const route = document.paths['/api/v1/webhooks/deliveries'].get;
    expect(route.parameters.find((p: { name: string }) => p.name === 'before')).toMatchObject({
      in: 'query',
      required: false,
      schema: { example: expect.stringMatching(/^evt_/) },
    });
    expect(route.description).toMatch(/`before`/);
  });
});

describe('webhook targets on private addresses', () => {
  const stack = useStack({}, { worker: false });

  it('refuses loopback, private, link-local and metadata targets unless allowed', async () => {
    for (const url of [
      ...PRIVATE_URLS.map((url) => `${url}hook`),
      'http://user:pw@example.com/hook',
      'http://example.com:0/hook',
    ]) {
      const answer = await setTargets(stack, [{ url, events: ['message.status'] }]);
      expect({ url, status: answer.status }).toEqual({ url, status: 400 });
      expect(answer.body.error.code).toBe('BAD_REQUEST');
    }
    // A receiver on this machine (the README's example listens on localhost:4000) is told
    // what allows it.
    const local = await setTargets(stack, [
      { url: 'http://localhost:4000/hook', events: ['message.status'] },
    ]);
    expect(local.body.error.message).toBe(
      '[0] url names a local host (private addresses are refused unless WEBHOOK_ALLOW_PRIVATE_URLS=true)',
    );
    const ok = await setTargets(stack, [
      { url: 'https://example.com/hook', events: ['session.status'] },
    ]);
    expect(ok.status).toBe(200);
  });
});

describe('global webhook targets', () => {
  let hook: WebhookReceiver;
  beforeAll(async () => {
    hook = await WebhookReceiver.start();
  });
  afterAll(() => hook.close());
  const stack = useStack(() => ({
    ...WEBHOOK_ENV,
    WEBHOOK_URLS: hook.url,
    WEBHOOK_SECRET: SECRET,
  }));
  beforeAll(() => stack.waitReady());

  it('sends every session event to WEBHOOK_URLS, signed with WEBHOOK_SECRET, without the QR', async () => {
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915166666666',
      text: 'x',
    });
    await stack.waitForStatus(sent.body.data.id, 'read');
    await eventually(() =>
      expect(hook.statuses(sent.body.data.id)).toEqual([
        'queued',
        'sending',
        'sent',
        'delivered',
        'read',
      ]),
    );
    const types = new Set(hook.verified(SECRET).map((event) => event.type));
    expect(types).toContain('session.status');
    const qr = hook.events().find((event) => event.data.status === 'QR');
    expect(qr?.data).not.toHaveProperty('qr');
    const targets = await stack.call('GET', '/api/v1/sessions/main/webhooks');
    expect(targets.body.data).toEqual([
      expect.objectContaining({
        url: hook.url,
        scope: 'global',
        secret: `${SECRET.slice(0, 10)}…`,
      }),
    ]);
  });

  it("shows a key limited to some sessions their own targets and deliveries, not WEBHOOK_URLS'", async () => {
    const made = await stack.call('POST', '/api/v1/keys', {
      name: 'tenant',
      scopes: ['send', 'read', 'sessions'],
      sessions: ['main'],
    });
    const tenant = { 'x-api-key': made.body.data.key as string };
    const own = await WebhookReceiver.start();
    try {
      const put = await stack.call(
        'PUT',
        '/api/v1/sessions/main/webhooks',
        [{ url: own.url, events: ['message.received'] }],
        tenant,
      );
      expect(put.status).toBe(200);
      await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '4915166666667',
        text: 'to both targets',
      });
      const all = await eventually(async () => {
        const listed = await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main');
        const received = listed.body.data.filter(
          (d: any) => d.eventType === 'message.received' && d.status === 'delivered',
        );
        expect(received.map((d: any) => d.url).sort()).toEqual([hook.url, own.url].sort());
        return received;
      });
      const targets = await stack.call('GET', '/api/v1/sessions/main/webhooks', undefined, tenant);
      expect(targets.body.data.map((t: any) => [t.url, t.scope])).toEqual([[own.url, 'session']]);
      for (const query of ['?sessionId=main', '']) {
        const listed = await stack.call(
          'GET',
          `/api/v1/webhooks/deliveries${query}`,
          undefined,
          tenant,
        );
        expect(listed.status).toBe(200);
        expect(listed.body.data.length).toBeGreaterThan(0);
        expect(listed.body.data.every((d: any) => d.url !== hook.url)).toBe(true);
      }
      const global = all.find((d: any) => d.url === hook.url);
      const one = await stack.call(
        'GET',
        `/api/v1/webhooks/deliveries/${global.id}`,
        undefined,
        tenant,
      );
      expect(one.status).toBe(404);
      const replay = await stack.call(
        'POST',
        `/api/v1/webhooks/deliveries/${global.id}/replay`,
        undefined,
        tenant,
      );
      expect(replay.status).toBe(404);
      // The operator's key still sees it.
      expect((await stack.call('GET', `/api/v1/webhooks/deliveries/${global.id}`)).status).toBe(
        200,
      );
    } finally {
      await own.close();
    }
  });
});

describe('webhooks of a message WhatsApp never acknowledged (ACK_TIMEOUT_MS)', () => {
  let hook: WebhookReceiver;
  beforeAll(async () => {
    hook = await WebhookReceiver.start();
  });
  afterAll(() => hook.close());
  const stack = useStack({ ...WEBHOOK_ENV, ACK_TIMEOUT_MS: '1000' });
  beforeAll(() => stack.waitReady());

  it('sends message.status when a sent message is flagged ackOverdueAt, and again when a late ack clears it', async () => {
    const put = await setTargets(stack, [
      { url: hook.url, events: ['message.status'], secret: SECRET },
    ]);
    expect(put.status).toBe(200);
    // The sandbox takes messages to 999000... but never acknowledges them.
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '999000000003',
      text: 'into the void',
    });
    const id = sent.body.data.id as string;
    const ofMessage = () =>
      hook
        .verified(SECRET)
        .filter((event) => event.type === 'message.status' && event.data.id === id);
    const overdue = await eventually(() => {
      const flagged = ofMessage().find((event) => event.data.ackOverdueAt !== null);
      expect(flagged).toBeDefined();
      return flagged;
    }, 10_000);
    expect(overdue.data).toMatchObject({ status: 'sent', ackOverdueAt: expect.any(String) });
    const record = (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;
    expect(overdue.data.ackOverdueAt).toBe(record.ackOverdueAt);
    expect(hook.statuses(id)).toEqual(['queued', 'sending', 'sent', 'sent']);
    const sequences = ofMessage().map((event) => event.sequence);
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b));

    // WhatsApp's server acknowledges it after all: no longer one to resend, and told so.
    const engineId = (await stack.redis.hget(stack.keys.message(id), 'engineMessageId'))!;
    await stack.worker!.get(MessageRepository).applyEngineAck('main', engineId, 'sent');
    await eventually(() => expect(ofMessage()).toHaveLength(5));
    expect(ofMessage()[4].data).toMatchObject({ status: 'sent', ackOverdueAt: null });
    // Once: a repeated ack tells nothing new.
    await stack.worker!.get(MessageRepository).applyEngineAck('main', engineId, 'sent');
    const control = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000301',
      text: 'after',
    });
    await eventually(() => expect(hook.statuses(control.body.data.id)).toContain('read'));
    expect(ofMessage()).toHaveLength(5);
  });
});

describe('a receiver that never answers (a global target), with few delivery slots', () => {
  let stuck: WebhookReceiver;
  let healthy: WebhookReceiver;
  beforeAll(async () => {
    stuck = await WebhookReceiver.start(() => 'hang');
    healthy = await WebhookReceiver.start();
  });
  afterAll(async () => {
    await stuck.close();
    await healthy.close();
  });
  const stack = useStack(() => ({
    ...WEBHOOK_ENV,
    WEBHOOK_TIMEOUT_MS: '30000',
    WEBHOOK_CONCURRENCY: '4',
    WEBHOOK_URLS: stuck.url,
    WEBHOOK_SECRET: SECRET,
  }));
  beforeAll(() => stack.waitReady());

  /** A message of main whose every status reaches `healthy`, past the stuck receiver. */
  const deliveredPastStuck = async (text: string) => {
    await setTargets(stack, [{ url: healthy.url, events: ['message.status'], secret: SECRET }]);
    const sent = await stack.call('POST', '/api/v1/messages/text', { to: '4915100000042', text });
    await eventually(() =>
      expect(healthy.statuses(sent.body.data.id)).toEqual([
        'queued',
        'sending',
        'sent',
        'delivered',
        'read',
      ]),
    );
  };

  it('holds only its part of the slots: other targets are delivered while it hangs on every session', async () => {
    // Five sessions, so five chains hang on the stuck target: more than the 4 slots.
    for (const id of ['h1', 'h2', 'h3', 'h4']) await stack.call('POST', '/api/v1/sessions', { id });
    for (const id of ['h1', 'h2', 'h3', 'h4']) await stack.waitReady(id);
    await eventually(() => expect(stuck.requests.length).toBeGreaterThanOrEqual(1));
    await deliveredPastStuck('past a stuck target');
    // WEBHOOK_CONCURRENCY 4 gives one target at most 1 slot: one request hangs, not four.
    expect(stuck.requests).toHaveLength(1);
  });

  it('holds only its part of the slots however many of its URLs hang: other receivers are delivered meanwhile', async () => {
    // A multi-tenant app: each session its own path on the stuck backend. Chains to four URLs
    // of it besides WEBHOOK_URLS' (more than the slots), none of them another's URL.
    for (const id of ['p1', 'p2', 'p3', 'p4']) {
      await stack.call('POST', '/api/v1/sessions', { id });
      await stack.waitReady(id);
      await setTargets(
        stack,
        [{ url: `${stuck.url}/${id}`, events: ['message.received'], secret: SECRET }],
        id,
      );
      await stack.call('POST', `/api/v1/sessions/${id}/sandbox/incoming`, {
        from: '4915100000043',
        text: `to tenant ${id}`,
      });
    }
    await eventually(() => expect(stuck.requests.length).toBeGreaterThanOrEqual(1));
    await deliveredPastStuck('past a stuck receiver');
    // One receiver (scheme, host, port) has 1 slot, whatever its paths: still one request.
    expect(stuck.requests).toHaveLength(1);
  });

  it('breaks off the hanging delivery when the worker shuts down, keeping it for the next worker', async () => {
    const [hanging] = (
      await stack.call('GET', '/api/v1/webhooks/deliveries?status=pending&limit=200')
    ).body.data.filter((d: { url: string; attempts: number }) => d.url === stuck.url && d.attempts);
    // WEBHOOK_TIMEOUT_MS is 30 s: a shutdown that waited for the receiver would outlast the test.
    await stack.stopWorker();
    const after = (await stack.call('GET', `/api/v1/webhooks/deliveries/${hanging.id}`)).body.data;
    expect(after).toMatchObject({
      status: 'pending',
      lastError: expect.stringMatching(/shutting down/),
    });
  });
});

describe('deliveries queued up behind a target failing, slow or removed', () => {
  const stack = useStack({ ...WEBHOOK_ENV, WEBHOOK_BACKLOG_MAX: '3', WEBHOOK_FAILED_MAX: '2' });
  beforeAll(() => stack.waitReady());
  const receivers: WebhookReceiver[] = [];
  afterEach(async () => {
    for (const r of receivers.splice(0)) await r.close();
  });

  const dropsCounted = async () =>
    parsePrometheus(await (await fetch(`${stack.workerUrl}/metrics`)).text())
      .filter((s) => s.name === 'wa_webhook_deliveries_total' && s.labels.result === 'dropped')
      .reduce((sum, s) => sum + s.value, 0);

  /**
   * A target of `sessionId` that holds its first delivery (m0) until `answerFirst` is called,
   * m1 to m`behind` queued behind it meanwhile; it answers every later attempt 200.
   */
  const lineBehindFirst = async (sessionId: string, behind = 6) => {
    let answerFirst!: (status: number) => void;
    const first = new Promise<number>((resolve) => (answerFirst = resolve));
    const hook = await WebhookReceiver.start((n) => (n === 1 ? first : 200));
    receivers.push(hook);
    await setTargets(
      stack,
      [{ url: hook.url, events: ['message.received'], secret: SECRET }],
      sessionId,
    );
    const targetId = (await stack.call('GET', `/api/v1/sessions/${sessionId}/webhooks`)).body
      .data[0].id;
    const incoming = (text: string) =>
      stack.call('POST', `/api/v1/sessions/${sessionId}/sandbox/incoming`, {
        from: '4915166666666',
        text,
      });
    await incoming('m0');
    await eventually(() => expect(hook.requests).toHaveLength(1));
    for (let i = 1; i <= behind; i++) await incoming(`m${i}`);
    const chain = stack.keys.webhookChain(sessionId, targetId);
    await eventually(async () => expect(await stack.redis.llen(chain)).toBe(behind + 1));
    const delivered = () => hook.events().map((event) => event.data.body);
    return { hook, chain, answerFirst, delivered };
  };

  it('keeps at most WEBHOOK_BACKLOG_MAX waiting: the oldest beyond are dropped at the failed attempt, counted and never sent', async () => {
    const dropsBefore = await dropsCounted();
    const { answerFirst, delivered } = await lineBehindFirst('main');
    answerFirst(503);
    await eventually(() => expect(delivered()).toEqual(['m0', 'm4', 'm5', 'm6']));
    expect(await dropsCounted()).toBe(dropsBefore + 3);
    const listed = (await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main&limit=20'))
      .body.data;
    expect(listed.map((d: any) => d.status)).toEqual(Array(4).fill('delivered'));
  });

  it('keeps at most WEBHOOK_BACKLOG_MAX waiting behind a target that never fails but is slower than its events: the oldest beyond are dropped after a delivery, counted and never sent', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'slow' });
    await stack.waitReady('slow');
    const dropsBefore = await dropsCounted();
    const { answerFirst, delivered } = await lineBehindFirst('slow');
    answerFirst(200);
    // m1 comes next once m0 is delivered: it and the newest 3 are kept.
    await eventually(() => expect(delivered()).toEqual(['m0', 'm1', 'm4', 'm5', 'm6']));
    expect(await dropsCounted()).toBe(dropsBefore + 2);
    const listed = (await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=slow&limit=20'))
      .body.data;
    expect(listed.map((d: any) => d.status)).toEqual(Array(5).fill('delivered'));
  });

  it("drops, counted and not failed, what was pending for a target a PUT removed, keeping the session's replayable failures within WEBHOOK_FAILED_MAX", async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'rotating' });
    await stack.waitReady('rotating');
    const failedIds = async () =>
      (
        await stack.call('GET', '/api/v1/webhooks/deliveries?status=failed&sessionId=rotating')
      ).body.data.map((d: any) => d.id);
    // Two deliveries refused by another target: as many failures as the session keeps.
    const refusing = await WebhookReceiver.start(() => 400);
    receivers.push(refusing);
    await setTargets(
      stack,
      [{ url: refusing.url, events: ['message.received'], secret: SECRET }],
      'rotating',
    );
    for (const text of ['f1', 'f2'])
      await stack.call('POST', '/api/v1/sessions/rotating/sandbox/incoming', {
        from: '4915166666667',
        text,
      });
    const refused = await eventually(async () => {
      const ids = await failedIds();
      expect(ids).toHaveLength(2);
      return ids;
    });
    const dropsBefore = await dropsCounted();
    const { hook, chain, answerFirst, delivered } = await lineBehindFirst('rotating', 3);
    // The PUT rotates the token in the receiver's URL: a new target, the old one removed.
    await setTargets(
      stack,
      [{ url: `${hook.url}?token=new`, events: ['message.received'], secret: SECRET }],
      'rotating',
    );
    answerFirst(200);
    await eventually(async () => expect(await stack.redis.llen(chain)).toBe(0));
    expect(delivered()).toEqual(['m0']);
    expect(await failedIds()).toEqual(refused);
    expect(await dropsCounted()).toBe(dropsBefore + 3);
  });
});

describe('deleting a session while deliveries of its events wait', () => {
  // A held delivery stays one attempt: nothing behind it moves until the test lets it go.
  const stack = useStack({ ...WEBHOOK_ENV, WEBHOOK_TIMEOUT_MS: '30000' });
  beforeAll(() => stack.waitReady());
  const receivers: WebhookReceiver[] = [];
  afterEach(async () => {
    for (const r of receivers.splice(0)) await r.close();
  });

  const send = (sessionId: string, text: string, sendAt?: Date) =>
    stack.call('POST', '/api/v1/messages/text', {
      sessionId,
      to: '4915177777777',
      text,
      sendAt: sendAt?.toISOString(),
    });

  it("delivers what was pending, and the failures the delete made, to the session's targets as they were; a session made again at once with the id gets only its own events, not held up by them", async () => {
    let answerFirst!: (status: number) => void;
    const first = new Promise<number>((resolve) => (answerFirst = resolve));
    const old = await WebhookReceiver.start((n) => (n === 1 ? first : 200));
    const fresh = await WebhookReceiver.start();
    receivers.push(old, fresh);
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'leaving' })).status).toBe(201);
    await stack.waitReady('leaving');
    await setTargets(
      stack,
      [{ url: old.url, events: ['message.status'], secret: SECRET }],
      'leaving',
    );
    // One sent before the delete, one still waiting for its time: the delete fails it.
    const sent = (await send('leaving', 'sent before the delete')).body.data.id as string;
    await stack.waitForStatus(sent, 'read');
    const unsent = (await send('leaving', 'later', new Date(Date.now() + 3_600_000))).body.data
      .id as string;
    // The receiver holds the first event (`sent` queued): every other one waits in line.
    expect(old.events()).toHaveLength(1);

    expect((await stack.call('DELETE', '/api/v1/sessions/leaving')).status).toBe(202);
    expect((await stack.waitForStatus(unsent, 'failed')).error.code).toBe('SESSION_LOGGED_OUT');
    await eventually(async () =>
      expect(await stack.redis.exists(stack.keys.session('leaving'))).toBe(0),
    );

    // Made again at once, with a target of its own: its events reach it while the old line waits.
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'leaving' })).status).toBe(201);
    await setTargets(
      stack,
      [{ url: fresh.url, events: ['message.status'], secret: OTHER_SECRET }],
      'leaving',
    );
    await stack.waitReady('leaving');
    const again = (await send('leaving', 'after it was made again')).body.data.id as string;
    await eventually(() =>
      expect(fresh.statuses(again)).toEqual(['queued', 'sending', 'sent', 'delivered', 'read']),
    );
    expect(old.events()).toHaveLength(1);

    answerFirst(200);
    await eventually(() => {
      expect(old.statuses(sent)).toEqual(['queued', 'sending', 'sent', 'delivered', 'read']);
      expect(old.statuses(unsent)).toEqual(['scheduled', 'failed']);
    });
    // Signed with the secret the target had, each event once; none of the other session's.
    const events = old.verified(SECRET);
    expect(
      events.find((e) => e.data.id === unsent && e.data.status === 'failed').data,
    ).toMatchObject({ error: { code: 'SESSION_LOGGED_OUT' } });
    expect(old.events()).toHaveLength(7);
    expect(fresh.verified(OTHER_SECRET).map((e) => e.data.id)).toEqual(Array(5).fill(again));
    const sequences = old.events().map((e) => e.sequence);
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
    expect(Math.min(...fresh.events().map((e) => e.sequence))).toBeGreaterThan(
      Math.max(...sequences),
    );
    expect((await stack.call('DELETE', '/api/v1/sessions/leaving')).status).toBe(202);
  });
});
