import { vi } from 'vitest';
import type { Redis } from 'ioredis';
import { REDIS } from '@app/status-store';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

const SESSIONS = ['main', 'b1', 'b2', 'b3', 'b4'];
const INTERVAL_MS = 20;

describe('batches: POST /api/v1/messages/batch and GET /api/v1/batches/:id', () => {
  const stack = useStack({ SEND_MIN_INTERVAL_MS: String(INTERVAL_MS), SANDBOX_ACK_DELAY_MS: '5' });
  beforeAll(async () => {
    for (const id of SESSIONS.slice(1)) await stack.call('POST', '/api/v1/sessions', { id });
    for (const id of SESSIONS) await stack.waitReady(id);
  });

  const batchStatus = async (id: string) => (await stack.call('GET', `/api/v1/batches/${id}`)).body;
  const stored = () =>
    Promise.all(SESSIONS.map((id) => stack.redis.zcard(stack.keys.sessionMessages(id)))).then(
      (counts) => counts.reduce((a, b) => a + b, 0),
    );

  it('takes messages of every type in one request and follows them as a batch', async () => {
    const answer = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        { type: 'text', to: '+49 151 0000 0001', text: 'Your order has shipped' },
        { type: 'location', to: '4915100000002', latitude: 52.52, longitude: 13.405, name: 'Shop' },
        {
          type: 'contact',
          to: '4915100000003',
          contacts: [{ name: 'Support', phone: '+49 30 1234567' }],
        },
        {
          type: 'media',
          to: '4915100000004',
          mediaBase64: 'JVBERi0xLjcK',
          mimetype: 'application/pdf',
        },
        { type: 'text', sessionId: 'b1', to: '4915100000005', text: 'from b1' },
      ],
    });
    expect(answer.status).toBe(202);
    const { id, total, messages } = answer.body.data;
    expect(total).toBe(5);
    expect(messages.map((m: { type: string }) => m.type)).toEqual([
      'text',
      'location',
      'contact',
      'media',
      'text',
    ]);
    expect(messages.map((m: { sessionId: string }) => m.sessionId)).toEqual([
      'main',
      'main',
      'main',
      'main',
      'b1',
    ]);
    // Done once none waits to be sent; read once every ack came.
    const done = await eventually(async () => {
      const status = await batchStatus(id);
      expect(status.data.done).toBe(true);
      expect(status.data.counts.read).toBe(5);
      return status.data;
    }, 20_000);
    expect(done).toMatchObject({ id, total: 5, counts: { read: 5, queued: 0, failed: 0 } });
    const one = (await stack.call('GET', `/api/v1/messages/${messages[0].id}`)).body.data;
    expect(one).toMatchObject({ batchId: id, status: 'read' });
  });

  it("answers 503, not a batch's messages expired, when Redis fails the read of their statuses", async () => {
    const answer = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [{ type: 'text', to: '4915100000006', text: 'counted' }],
    });
    expect(answer.status).toBe(202);
    const redis = stack.api!.get<Redis>(REDIS);
    const pipeline = redis.pipeline.bind(redis);
    // As ioredis answers a pipeline whose connection was lost mid-way: an error in each
    // command's place, not a rejection.
    vi.spyOn(redis, 'pipeline').mockImplementationOnce(((
      ...args: Parameters<Redis['pipeline']>
    ) => {
      const lost = pipeline(...args);
      const exec = lost.exec.bind(lost);
      lost.exec = async () =>
        ((await exec()) ?? []).map(() => [new Error('Connection is closed.'), undefined]) as never;
      return lost;
    }) as Redis['pipeline']);
    const failed = await stack.call('GET', `/api/v1/batches/${answer.body.data.id}`);
    expect(failed.status).toBe(503);
    expect(failed.body.error.code).toBe('UNAVAILABLE');
    const status = (await stack.call('GET', `/api/v1/batches/${answer.body.data.id}`)).body.data;
    expect(status.counts.expired).toBe(0);
  });

  it('sends a 500-message batch over 5 sessions: each once, paced per session, in order', async () => {
    const messages = Array.from({ length: 500 }, (_, i) => ({
      type: 'text',
      sessionId: SESSIONS[i % SESSIONS.length],
      to: `49151${String(1_000_000 + i)}`,
      text: `batch message ${i}`,
    }));
    const answer = await stack.call('POST', '/api/v1/messages/batch', { messages });
    expect(answer.status).toBe(202);
    const batchId = answer.body.data.id;
    await eventually(async () => {
      const status = (await batchStatus(batchId)).data;
      expect(status.counts.sent + status.counts.delivered + status.counts.read).toBe(500);
    }, 60_000);
    for (const [index, sessionId] of SESSIONS.entries()) {
      const sends = stack
        .sandbox(sessionId)
        .sends.filter((send) => send.chatId.startsWith('49151') && send.chatId.length === 17);
      const texts = messages.filter((_, i) => i % SESSIONS.length === index).map((m) => m.to);
      // Each exactly once, in the order given.
      expect(sends.map((send) => send.chatId.split('@')[0])).toEqual(texts);
      for (let i = 1; i < sends.length; i++)
        expect(sends[i].atMonotonic - sends[i - 1].atMonotonic).toBeGreaterThanOrEqual(INTERVAL_MS);
    }
  }, 90_000);

  it('refuses the whole batch when any message is invalid, naming each by index', async () => {
    const before = await stored();
    const answer = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        { type: 'text', to: '4915100000010', text: 'fine' },
        { type: 'text', to: 'nobody', text: 'bad number' },
        { type: 'fax', to: '4915100000011' },
        { type: 'location', to: '4915100000012', latitude: 91, longitude: 0 },
        { type: 'text', to: '4915100000013', text: 'fine', colour: 'red' },
        {
          type: 'media',
          to: '4915100000014',
          mediaBase64: 'JVBERg==',
          mimetype: 'image/png',
          asVoice: true,
        },
        { type: 'text', to: '4915100000015', text: 'too late', sendAt: '2020-01-01T00:00:00Z' },
      ],
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('BAD_REQUEST');
    expect(answer.body.error.message).toContain('6 of 7 messages are invalid');
    const details = answer.body.error.details as { index: number; message: string }[];
    expect(details.map((d) => d.index)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(details[1].message).toContain('type must be one of text, media, location, contact');
    expect(details[2].message).toContain('latitude');
    expect(details[3].message).toContain('colour should not exist');
    expect(details[4].message).toContain('audio');
    expect(details[5].message).toContain('sendAt');
    expect(await stored()).toBe(before);
  });

  it('queues nothing when a message names a session that does not exist', async () => {
    const before = await stored();
    const answer = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        { type: 'text', to: '4915100000020', text: 'fine' },
        { type: 'text', sessionId: 'nosuch', to: '4915100000021', text: 'lost' },
      ],
    });
    expect(answer.status).toBe(404);
    expect(answer.body.error.message).toContain('nosuch');
    expect(await stored()).toBe(before);
  });

  it('publishes no event for a refused batch (its sessions are checked before anything is written)', async () => {
    const hooked = await stack.call('PUT', '/api/v1/sessions/b4/webhooks', [
      { url: 'https://example.com/hook', events: ['message.status'] },
    ]);
    expect(hooked.status).toBe(200);
    const events = async () =>
      Number((await stack.redis.get(stack.keys.webhookSequence('b4'))) ?? 0);
    const before = await events();
    const refused = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        ...Array.from({ length: 3 }, (_, i) => ({
          type: 'text',
          sessionId: 'b4',
          to: `491510000004${i}`,
          text: 'never',
        })),
        { type: 'text', sessionId: 'nosuch', to: '4915100000049', text: 'lost' },
      ],
    });
    expect(refused.status).toBe(404);
    expect(await events()).toBe(before);
    // The target listens: an accepted message of b4 is an event at once.
    const accepted = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'b4',
      to: '4915100000048',
      text: 'counted',
    });
    expect(accepted.status).toBe(202);
    expect(await events()).toBeGreaterThan(before);
    expect((await stack.call('PUT', '/api/v1/sessions/b4/webhooks', [])).status).toBe(200);
  });

  it.each<[string, unknown, number]>([
    ['no messages', { messages: [] }, 400],
    [
      'more than 1,000',
      {
        messages: Array.from({ length: 1001 }, () => ({
          type: 'text',
          to: '4915100000030',
          text: 'x',
        })),
      },
      400,
    ],
    ['a message that is not an object', { messages: ['hello'] }, 400],
    [
      'a contact message whose card is an array',
      { messages: [{ type: 'contact', to: '4915100000033', contacts: [[]] }] },
      400,
    ],
    [
      'a type named like an Object member',
      { messages: [{ type: 'toString', to: '4915100000031' }] },
      400,
    ],
    ['a type named __proto__', { messages: [{ type: '__proto__', to: '4915100000032' }] }, 400],
    ['no messages field', {}, 400],
  ])('answers %s with %i', async (_case, body, status) => {
    const answer = await stack.call('POST', '/api/v1/messages/batch', body);
    expect(answer.status).toBe(status);
    expect(answer.body.ok).toBe(false);
  });

  it('names the problems of a message whose array is far over its maximum in a few words', async () => {
    const answer = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        {
          type: 'contact',
          to: '4915100000034',
          contacts: Array.from({ length: 100_000 }, () => ({})),
        },
      ],
    });
    expect(answer.status).toBe(400);
    const [detail] = answer.body.error.details as { index: number; message: string }[];
    expect(detail.message).toMatch(/^contacts must hold one contact card; /);
    expect(detail.message.length).toBeLessThan(1000);
    expect(JSON.stringify(answer.body).length).toBeLessThan(3000);
  });

  it('refuses an Idempotency-Key on a batch, and answers unknown or malformed batch ids', async () => {
    const keyed = await stack.call(
      'POST',
      '/api/v1/messages/batch',
      { messages: [{ type: 'text', to: '4915100000040', text: 'x' }] },
      { 'Idempotency-Key': 'batch-1' },
    );
    expect(keyed.status).toBe(400);
    expect(
      (await stack.call('GET', '/api/v1/batches/00000000-0000-4000-8000-000000000000')).status,
    ).toBe(404);
    expect((await stack.call('GET', '/api/v1/batches/not-a-batch')).status).toBe(400);
  });
});
