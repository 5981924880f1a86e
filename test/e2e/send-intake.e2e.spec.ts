import { createHash } from 'node:crypto';
import { QueueProducer } from '@app/queue';
import { MessageRepository, SendQueueBell } from '@app/status-store';
import { STALE_CLAIM_MS } from '../../apps/api/src/messages/messages.service.js';
import { vi } from 'vitest';
import { eventually } from '../support/eventually.js';
import { useStack, type ApiAnswer } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';

// The api writes each accepted send with its record (the session's intake); the session's
// worker makes it a job of the send queue when the api rings, whatever the queue is doing.
describe('accepted sends become jobs', () => {
  const stack = useStack({ WEBHOOK_ALLOW_PRIVATE_URLS: 'true' });
  beforeAll(() => stack.waitReady());

  /** The api's next write runs in Redis, then its answer is lost (the connection drops). */
  function loseNextWriteAnswer(): { id?: string } {
    const repository = stack.api!.get(MessageRepository);
    const write = repository.createMany.bind(repository);
    const written: { id?: string } = {};
    vi.spyOn(repository, 'createMany').mockImplementationOnce(async (...args) => {
      const [record] = await write(...args);
      written.id = (record as { id: string }).id;
      throw new Error('Connection is closed.');
    });
    return written;
  }

  it('at once, even while the consumer is busy with a send: a scheduled one is in the queue, delayed, before the send in progress ends', async () => {
    const busy = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000071',
      text: 'typing for a while',
      typingMs: 4_000,
    });
    expect(busy.status).toBe(202);
    // Taken: the consumer is in that job (typing first), and takes nothing else meanwhile.
    const queue = stack.worker!.get(QueueProducer).queueFor('main');
    const busyJob = async () => queue.getJobState(busy.body.data.id);
    await eventually(async () => expect(await busyJob()).toBe('active'));
    const sendAt = new Date(Date.now() + 60_000);
    const scheduled = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000072',
      text: 'later',
      sendAt: sendAt.toISOString(),
    });
    expect(scheduled.status).toBe(202);
    await eventually(async () => {
      const job = await queue.getJob(scheduled.body.data.id);
      expect(await job?.getState()).toBe('delayed');
      expect(job!.timestamp + job!.delay).toBe(sendAt.getTime());
    }, 1_500);
    expect(await stack.redis.llen(stack.keys.sendIntake('main'))).toBe(0);
    // Still typing: the job was not made by the consumer's next look, which waits for it.
    expect(await busyJob()).toBe('active');
    // Sent (its acks may move it on before a look sees `sent`).
    await stack.waitForStatus(busy.body.data.id, ['sent', 'delivered', 'read'], 10_000);
  });

  it('takes back a write whose answer was lost, so a retry with the same key sends once', async () => {
    const written = loseNextWriteAnswer();
    const key = { 'idempotency-key': 'lost-answer-1' };
    const body = { to: '4915100000073', text: 'once' };
    const failed = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(failed.status).toBe(503);
    // Taken back: no record, nothing to send.
    expect(written.id).toBeDefined();
    expect((await stack.call('GET', `/api/v1/messages/${written.id}`)).status).toBe(404);
    const again = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(again.status).toBe(202);
    await stack.waitForStatus(again.body.data.id, 'read');
    expect(
      stack.sandbox().sends.filter((send) => send.chatId === '4915100000073@c.us'),
    ).toHaveLength(1);
  });

  it('tells webhook targets that a message taken back is cancelled, after the queued its write published', async () => {
    const hook = await WebhookReceiver.start();
    try {
      const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
        { url: hook.url, events: ['message.status'] },
      ]);
      expect(put.status).toBe(200);
      const written = loseNextWriteAnswer();
      const failed = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915100000074',
        text: 'taken back',
      });
      expect(failed.status).toBe(503);
      expect(written.id).toBeDefined();
      await eventually(() => expect(hook.statuses(written.id!)).toEqual(['queued', 'cancelled']));
    } finally {
      await stack.call('PUT', '/api/v1/sessions/main/webhooks', []);
      await hook.close();
    }
  });

  it('lets a retry take over an Idempotency-Key whose request wrote nothing and could not give it back', async () => {
    const repository = stack.api!.get(MessageRepository);
    // Redis fails the write (nothing written) and then the taking back: the outcome is unknown.
    vi.spyOn(repository, 'createMany').mockRejectedValueOnce(new Error('Connection is closed.'));
    vi.spyOn(repository, 'takeBack').mockRejectedValueOnce(new Error('Connection is closed.'));
    const key = { 'idempotency-key': 'lost-answer-3' };
    const body = { to: '4915100000075', text: 'stuck key' };
    const unknown = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(unknown.status).toBe(503);
    // Soon after, the first request may still be writing: retry later.
    const soon = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(soon.status).toBe(409);
    // Its claim is older than STALE_CLAIM_MS (aged here, not waited for): the key is taken over.
    // (The scope of the environment's key: the start of its SHA-256, as sendContext makes it.)
    const scope = createHash('sha256').update(stack.env.API_KEY).digest('hex').slice(0, 16);
    const claimKey = stack.keys.idempotency(scope, 'lost-answer-3');
    expect(await stack.redis.exists(claimKey)).toBe(1);
    const ttl = await stack.redis.pttl(claimKey);
    await stack.redis.pexpire(claimKey, ttl - STALE_CLAIM_MS);
    const later = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(later.status).toBe(202);
    await stack.waitForStatus(later.body.data.id, 'read');
    // And it is that message's key now.
    const again = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(again.body.data.id).toBe(later.body.data.id);
    expect(
      stack.sandbox().sends.filter((send) => send.chatId === '4915100000075@c.us'),
    ).toHaveLength(1);
  });

  it('names the message a write of unknown outcome may have queued, so a client without a key can look it up', async () => {
    const repository = stack.api!.get(MessageRepository);
    vi.spyOn(repository, 'createMany').mockRejectedValueOnce(new Error('Connection is closed.'));
    vi.spyOn(repository, 'takeBack').mockRejectedValueOnce(new Error('Connection is closed.'));
    const unknown = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000076',
      text: 'which one?',
    });
    expect(unknown.status).toBe(503);
    const [detail] = unknown.body.error.details;
    const id = detail.message.replace('may have been queued: ', '');
    expect(unknown.body.error.message).toContain(`GET /api/v1/messages/${id}`);
    // Not written after all (the write failed before it ran): the look-up says so.
    expect((await stack.call('GET', `/api/v1/messages/${id}`)).status).toBe(404);
  });

  it('keeps a batch whose write had an unknown outcome, and names it: its messages are followed, not sent again', async () => {
    const repository = stack.api!.get(MessageRepository);
    const write = repository.createMany.bind(repository);
    // Written, its answer lost, and taking it back fails too.
    vi.spyOn(repository, 'createMany').mockImplementationOnce(async (...args) => {
      await write(...args);
      throw new Error('Connection is closed.');
    });
    vi.spyOn(repository, 'takeBack').mockRejectedValueOnce(new Error('Connection is closed.'));
    const unknown = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [
        { type: 'text', to: '4915100000077', text: 'one' },
        { type: 'text', to: '4915100000078', text: 'two' },
      ],
    });
    expect(unknown.status).toBe(503);
    const batchId = /GET \/api\/v1\/batches\/([0-9a-f-]{36})/.exec(unknown.body.error.message)?.[1];
    expect(batchId).toBeDefined();
    expect(unknown.body.error.details).toHaveLength(2);
    await eventually(async () => {
      const batch = await stack.call('GET', `/api/v1/batches/${batchId}`);
      expect(batch.status).toBe(200);
      expect(batch.body.data).toMatchObject({ total: 2, counts: { read: 2 } });
    }, 10_000);
  });

  it('keeps a message a retry with its key was answered with while its write was in doubt: that 202 is sent, once', async () => {
    const repository = stack.api!.get(MessageRepository);
    const write = repository.createMany.bind(repository);
    const key = { 'idempotency-key': 'lost-answer-4' };
    const body = { to: '4915100000079', text: 'answered meanwhile' };
    let retry: ApiAnswer | undefined;
    // Written, and before its lost answer fails this request, the client's retry comes.
    vi.spyOn(repository, 'createMany').mockImplementationOnce(async (...args) => {
      await write(...args);
      retry = await stack.call('POST', '/api/v1/messages/text', body, key);
      throw new Error('Connection is closed.');
    });
    const first = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(retry?.status).toBe(202);
    const id = retry!.body.data.id as string;
    // Not taken back: the first request says it is queued, and the key stays bound to it.
    expect(first.status).toBe(503);
    expect(first.body.error.details).toEqual([{ index: 0, message: `queued: ${id}` }]);
    await stack.waitForStatus(id, 'read');
    const again = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(again.body.data.id).toBe(id);
    expect(
      stack.sandbox().sends.filter((send) => send.chatId === '4915100000079@c.us'),
    ).toHaveLength(1);
  });

  it('keeps the Idempotency-Key when the outcome is unknown: a retry with it answers the message written, sent once', async () => {
    const written = loseNextWriteAnswer();
    vi.spyOn(stack.api!.get(MessageRepository), 'takeBack').mockRejectedValueOnce(
      new Error('Connection is closed.'),
    );
    const key = { 'idempotency-key': 'lost-answer-2' };
    const body = { to: '4915100000074', text: 'maybe' };
    const unknown = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(unknown.status).toBe(503);
    expect(unknown.body.error.message).toMatch(/may have been queued/);
    const again = await stack.call('POST', '/api/v1/messages/text', body, key);
    expect(again.status).toBe(202);
    expect(again.body.data.id).toBe(written.id);
    // Sent at once: the api rang for it though the outcome was unknown (the consumer's idle
    // look, every 15 s, would be later than this wait).
    await stack.waitForStatus(again.body.data.id, 'read');
    expect(
      stack.sandbox().sends.filter((send) => send.chatId === '4915100000074@c.us'),
    ).toHaveLength(1);
  });

  /** A file of a message sent with it, kept until sent: whether it still is. */
  const fileKept = async (messageId: string) =>
    (await stack.redis.exists(stack.keys.messageUpload(messageId))) === 1;
  const pdfFile = { mediaBase64: 'JVBERi0xLjcK', mimetype: 'application/pdf' };
  const pdf = { type: 'media', ...pdfFile };

  it('answers a cancel as done though removing its job or its file then fails: the message is cancelled', async () => {
    const sendAt = new Date(Date.now() + 60_000).toISOString();
    const producer = stack.api!.get(QueueProducer);
    const repository = stack.api!.get(MessageRepository);
    for (const [index, fail] of [
      () =>
        vi.spyOn(producer, 'removeJob').mockRejectedValueOnce(new Error('Connection is closed.')),
      () =>
        vi
          .spyOn(repository, 'dropUpload')
          .mockRejectedValueOnce(new Error('Connection is closed.')),
    ].entries()) {
      const accepted = await stack.call('POST', '/api/v1/messages/media', {
        to: `491510000009${index}`,
        ...pdfFile,
        sendAt,
      });
      expect(accepted.status).toBe(202);
      const spy = fail();
      try {
        const cancelled = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
        expect(cancelled.status).toBe(200);
        expect(cancelled.body.data.status).toBe('cancelled');
      } finally {
        spy.mockRestore();
      }
    }
  });

  /** A batch of `kept` (to main) and one to a session that does not exist, which passes the check. */
  async function refusedBatch(kept: Record<string, unknown>) {
    const repository = stack.api!.get(MessageRepository);
    // Deleted between the check and the writes: the writes refuse it.
    const check = vi.spyOn(repository, 'sessionNotTakingSends').mockResolvedValueOnce(null);
    try {
      return await stack.call('POST', '/api/v1/messages/batch', {
        messages: [kept, { type: 'text', sessionId: 'nosuch', to: '4915100000099', text: 'no' }],
      });
    } finally {
      check.mockRestore();
    }
  }

  it('keeps the file of a refused batch message a worker took meanwhile: it is sent with it', async () => {
    const repository = stack.api!.get(MessageRepository);
    const takeBack = repository.takeBack.bind(repository);
    // Its worker makes its send a job before the others are taken back.
    const spy = vi.spyOn(repository, 'takeBack').mockImplementationOnce(async (...args) => {
      await stack.api!.get(SendQueueBell).ring('main');
      await eventually(async () =>
        expect(await stack.redis.llen(stack.keys.sendIntake('main'))).toBe(0),
      );
      return takeBack(...args);
    });
    try {
      // Due a moment later, so its file is looked at before the worker sends it.
      const sendAt = new Date(Date.now() + 1_500).toISOString();
      const answer = await refusedBatch({ ...pdf, to: '4915100000093', sendAt });
      expect(answer.status).toBe(404);
      const id = /will be sent: ([0-9a-f-]{36})$/.exec(answer.body.error.message)?.[1];
      expect(id).toBeDefined();
      expect(await fileKept(id!)).toBe(true);
      await stack.waitForStatus(id!, 'read');
    } finally {
      spy.mockRestore();
    }
  });

  it('says the messages of a refused batch may have been queued when taking them back fails, and keeps their files', async () => {
    const repository = stack.api!.get(MessageRepository);
    const spy = vi
      .spyOn(repository, 'takeBack')
      .mockRejectedValueOnce(new Error('Connection is closed.'));
    try {
      const sendAt = new Date(Date.now() + 1_500).toISOString();
      const answer = await refusedBatch({ ...pdf, to: '4915100000094', sendAt });
      expect(answer.status).toBe(404);
      expect(answer.body.error.message).toMatch(/may have been queued/);
      const id = /([0-9a-f-]{36})$/.exec(answer.body.error.message)?.[1];
      expect(id).toBeDefined();
      // It was: it is sent, with its file.
      expect(await fileKept(id!)).toBe(true);
      await stack.waitForStatus(id!, 'read');
    } finally {
      spy.mockRestore();
    }
  });
});
