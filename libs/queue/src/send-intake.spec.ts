import { randomBytes } from 'node:crypto';
import type { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { inject, vi } from 'vitest';
import { loadAppConfig, type AppConfig } from '@app/config';
import {
  EventScriptArgs,
  MessageRepository,
  RedisKeys,
  SendIntake,
  SendQueueBell,
  createRedis,
  newMessageId,
  type NewMessage,
} from '@app/status-store';
import { sendQueueName } from './jobs.js';
import { QueueProducer } from './queue-producer.service.js';

const RETRY = { attempts: 4, backoffMs: 100 };

/**
 * An accepted send is written with its record (an entry of the session's intake, one script),
 * and a worker makes it a job of the session's send queue: against Redis and BullMQ.
 */
describe('SendIntake: accepted sends made jobs', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let messages: MessageRepository;
  let intake: SendIntake;
  let config: AppConfig;
  const producers: QueueProducer[] = [];

  /** A worker's producer (each has its own queues, as two worker processes would). */
  function producer(from: SendIntake = intake): QueueProducer {
    const made = new QueueProducer(
      { connection: redis, prefix: keys.bullPrefix() },
      new SendQueueBell(redis, keys),
      keys,
      redis,
      from,
      config,
    );
    producers.push(made);
    return made;
  }

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'intake-test' });
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    config = loadAppConfig({
      readEnvFile: false,
      overrides: {
        NODE_ENV: 'test',
        SEND_ATTEMPTS: String(RETRY.attempts),
        SEND_BACKOFF_MS: String(RETRY.backoffMs),
      },
    });
    messages = new MessageRepository(redis, keys, config, new EventScriptArgs(keys, [], 60_000));
    intake = new SendIntake(redis, keys);
  });
  afterAll(async () => {
    await Promise.all(producers.map((made) => made.onApplicationShutdown()));
    const left = await redis.keys(`${keys.root.slice(0, -1)}*`);
    for (let i = 0; i < left.length; i += 500) await redis.del(...left.slice(i, i + 500));
    await redis.quit();
  });

  let counter = 0;
  function message(sessionId: string, overrides: Partial<NewMessage> = {}): NewMessage {
    counter++;
    return {
      id: newMessageId(sessionId),
      sessionId,
      to: `49151${String(counter).padStart(8, '0')}`,
      chatId: `49151${String(counter).padStart(8, '0')}@c.us`,
      type: 'text',
      text: `hello ${counter}`,
      ...overrides,
    };
  }

  const jobsOf = async (queue: Queue) =>
    (await queue.getJobs(['waiting', 'delayed', 'prioritized'])).filter(
      (job): job is Job => job !== undefined,
    );

  it("orders the jobs on Redis's clock, not the worker's (workers on hosts with skewed clocks agree)", async () => {
    const sent = [message('intake-clock'), message('intake-clock')];
    await messages.createMany(sent, false, new Date(), {});
    const worker = producer();
    const realNow = Date.now();
    // This worker's clock is an hour behind.
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow - 3_600_000);
    try {
      expect(await worker.moveIntake('intake-clock')).toBe(2);
    } finally {
      clock.mockRestore();
    }
    const [seconds, micros] = await redis.time();
    const redisNow = Number(seconds) * 1_000_000 + Number(micros);
    for (const job of await jobsOf(worker.queueFor('intake-clock'))) {
      expect(job.data.order).toBeGreaterThan(redisNow - 60_000_000);
      expect(job.data.order).toBeLessThanOrEqual(redisNow);
    }
  });

  it('writes the entry with the record, and makes one job per entry, in order, with the request id', async () => {
    const accepted = new Date();
    const sent = [message('intake-a'), message('intake-a'), message('intake-a')];
    await messages.createMany(sent, false, accepted, { requestId: 'req-42' });
    // Written together: the record and its entry.
    const entries = await intake.oldest('intake-a', 10);
    expect(entries.map(({ entry }) => entry?.messageId)).toEqual(sent.map((m) => m.id));
    expect((await messages.get(sent[0].id))?.status).toBe('queued');

    const worker = producer();
    expect(await worker.moveIntake('intake-a')).toBe(3);
    expect(await intake.length('intake-a')).toBe(0);
    const queue = worker.queueFor('intake-a');
    const jobs = await jobsOf(queue);
    // In the order they were accepted: the oldest is taken first.
    expect(await queue.getWaiting()).toHaveLength(3);
    const order = (
      await redis.lrange(
        `${keys.sessionBullPrefix('intake-a')}:${sendQueueName('intake-a')}:wait`,
        0,
        -1,
      )
    ).reverse();
    expect(order).toEqual(sent.map((m) => m.id));
    const byId = new Map(jobs.map((job) => [job.id, job]));
    // Each carries its place in line, increasing in the order accepted (a consumer with
    // several jobs in hand sends by it).
    const orders = sent.map((m) => byId.get(m.id)!.data.order!);
    for (let i = 1; i < orders.length; i++) expect(orders[i]).toBeGreaterThan(orders[i - 1]);

    for (const job of jobs) {
      expect(job.data).toEqual({
        messageId: job.id,
        requestId: 'req-42',
        order: expect.any(Number),
      });
      expect(job.opts.attempts).toBe(RETRY.attempts);
      expect(job.opts.backoff).toEqual({ type: 'exponential', delay: RETRY.backoffMs });
      // Its time in the queue counts from when it was accepted.
      expect(job.timestamp).toBe(accepted.getTime());
    }
    expect(await worker.pendingCount('intake-a')).toBe(3);
  });

  it("delays a scheduled send's job until the message is due, however late it is moved", async () => {
    const accepted = new Date(Date.now() - 5_000);
    const sendAt = new Date(accepted.getTime() + 60_000);
    const scheduled = message('intake-b', { sendAt: sendAt.toISOString() });
    await messages.createMany([scheduled], false, accepted, {});
    const worker = producer();
    await worker.moveIntake('intake-b');
    const job = await worker.queueFor('intake-b').getJob(scheduled.id);
    expect(await job!.getState()).toBe('delayed');
    expect(job!.timestamp + job!.delay).toBe(sendAt.getTime());
    expect(job!.data.requestId).toBeUndefined();
  });

  it('leaves the entries when the queue cannot take them, for the next move', async () => {
    const waiting = [message('intake-c'), message('intake-c')];
    await messages.createMany(waiting, false, new Date(), {});
    const worker = producer();
    const queue = worker.queueFor('intake-c');
    const addBulk = vi.spyOn(queue, 'addBulk').mockRejectedValueOnce(new Error('Redis went away'));
    await expect(worker.moveIntake('intake-c')).rejects.toThrow('Redis went away');
    expect(await intake.length('intake-c')).toBe(2);
    addBulk.mockRestore();
    expect(await worker.moveIntake('intake-c')).toBe(2);
    expect(await intake.length('intake-c')).toBe(0);
    expect(await jobsOf(queue)).toHaveLength(2);
  });

  it('never loses or doubles a send: a move repeated after a worker stopped midway, and two workers moving at once', async () => {
    const many = Array.from({ length: 1_200 }, () => message('intake-d'));
    await messages.createMany(many, false, new Date(), {});
    // Two workers at once (ownership changing hands): batches of 500, read by both.
    const [first, second] = [producer(), producer()];
    await Promise.all([first.moveIntake('intake-d'), second.moveIntake('intake-d')]);
    expect(await intake.length('intake-d')).toBe(0);
    expect(await jobsOf(first.queueFor('intake-d'))).toHaveLength(1_200);
    // A worker that added the jobs and stopped before removing the entries: the next move
    // adds them again, as the same jobs.
    const again = many.slice(0, 3).map((m) => JSON.stringify([m.id, Date.now(), 0, '']));
    await redis.rpush(keys.sendIntake('intake-d'), ...again);
    expect(await first.moveIntake('intake-d')).toBe(3);
    expect(await jobsOf(first.queueFor('intake-d'))).toHaveLength(1_200);
  });

  it('takes a send back while it is not a job; once it is one, it stays accepted', async () => {
    const acceptedAt = new Date();
    const [kept, taken] = [message('intake-g'), message('intake-g')];
    const queue = { requestId: 'req-7' };
    await messages.createMany([kept, taken], false, acceptedAt, queue);
    const worker = producer();
    // A worker made the first a job (and removed its entry); then all are taken back.
    const [first] = await intake.oldest('intake-g', 1);
    expect(first.entry?.messageId).toBe(kept.id);
    await worker
      .queueFor('intake-g')
      .add('send-message', { messageId: kept.id }, { jobId: kept.id });
    await intake.remove('intake-g', [first.raw]);
    expect(await messages.takeBack([kept, taken, message('intake-g')], acceptedAt, queue)).toEqual([
      'queued',
      'taken-back',
      'absent',
    ]);
    expect(await messages.get(kept.id)).not.toBeNull();
    expect(await messages.get(taken.id)).toBeNull();
    expect(await intake.length('intake-g')).toBe(0);
    expect(await messages.counts('intake-g')).toMatchObject({ queued: 1 });
  });

  it('does not take back a send a worker took though its entry is still there (its removal failed): claimed or sent, it stays', async () => {
    const acceptedAt = new Date();
    const [claimed, sent] = [message('intake-t'), message('intake-t')];
    await messages.createMany([claimed, sent], false, acceptedAt, {});
    // Made jobs, the entries' removal failed (Redis failing over): both entries still there.
    const worker = producer();
    for (const m of [claimed, sent])
      await worker.queueFor('intake-t').add('send-message', { messageId: m.id }, { jobId: m.id });
    const claim = { sessionId: 'intake-t', ttlMs: 60_000, intervalMs: 0 };
    for (const m of [claimed, sent])
      expect(await messages.take(m.id, claim)).toMatchObject({ claimed: true });
    await messages.markSent(sent, 'true_x_SENT');
    expect(await messages.takeBack([claimed, sent], acceptedAt, {})).toEqual(['queued', 'queued']);
    expect(await messages.get(claimed.id)).toMatchObject({ status: 'sending' });
    expect(await messages.get(sent.id)).toMatchObject({ status: 'sent' });
    expect(await messages.counts('intake-t')).toMatchObject({ sending: 1, sent: 1 });
  });

  it('takes a scheduled send back from both of its session indexes', async () => {
    const acceptedAt = new Date();
    const scheduled = message('intake-s', {
      sendAt: new Date(acceptedAt.getTime() + 60_000).toISOString(),
    });
    await messages.createMany([scheduled], false, acceptedAt, {});
    const indexes = [keys.sessionMessages('intake-s'), keys.sessionScheduled('intake-s')];
    for (const index of indexes) expect(await redis.zscore(index, scheduled.id)).not.toBeNull();
    expect(await messages.takeBack([scheduled], acceptedAt, {})).toEqual(['taken-back']);
    for (const index of indexes) expect(await redis.zscore(index, scheduled.id)).toBeNull();
    expect(await messages.recentIds('intake-s', 10)).toEqual([]);
  });

  it('counts a send once while it is being moved (made a job, its entry not yet removed)', async () => {
    const waiting = [message('intake-h'), message('intake-h')];
    await messages.createMany(waiting, false, new Date(), {});
    const worker = producer();
    const remove = intake.remove.bind(intake);
    let removing!: () => void;
    const removeStarted = new Promise<void>((resolve) => (removing = resolve));
    vi.spyOn(intake, 'remove').mockImplementationOnce(async (...args) => {
      removing();
      await new Promise((resolve) => setTimeout(resolve, 100));
      return remove(...args);
    });
    const moving = worker.moveIntake('intake-h');
    await removeStarted; // the jobs exist, the entries are still there
    expect(await jobsOf(worker.queueFor('intake-h'))).toHaveLength(2);
    expect(await intake.length('intake-h')).toBe(2);
    expect(await worker.pendingCount('intake-h')).toBe(2);
    await moving;
    expect(await worker.pendingCount('intake-h')).toBe(2);
  });

  it('lets a caller during a move wait for the next pass only, however long rings keep coming', async () => {
    let passes = 0;
    const slow: SendIntake = Object.assign(Object.create(SendIntake.prototype) as SendIntake, {
      oldest: async () => {
        passes++;
        await new Promise((resolve) => setTimeout(resolve, 30));
        return [];
      },
      remove: async () => undefined,
      length: async () => 0,
    });
    const worker = producer(slow);
    void worker.moveIntake('busy'); // pass 1
    const waiting = worker.moveIntake('busy'); // waits for pass 2
    let done = false;
    void waiting.then(() => (done = true));
    // Rings keep coming: each asks for a pass after the one running.
    for (let i = 0; i < 8 && !done; i++) {
      await new Promise((resolve) => setTimeout(resolve, 15));
      void worker.moveIntake('busy');
    }
    await waiting;
    expect(passes).toBeLessThanOrEqual(3);

    // A look after a ring joins the pass the ring asked for: one pass for both.
    await worker.moveIntake('busy');
    const before = passes;
    const ring = worker.moveIntake('quiet-ring');
    const look = worker.moveIntake('quiet-ring', { join: true });
    await Promise.all([ring, look]);
    expect(passes - before).toBe(1);
    // Without a pass asked for, a look makes one.
    await worker.moveIntake('quiet-ring', { join: true });
    expect(passes - before).toBe(2);
  });

  it('drops an entry it cannot read, and moves the rest', async () => {
    const good = message('intake-e');
    await redis.rpush(keys.sendIntake('intake-e'), 'not an entry');
    await messages.createMany([good], false, new Date(), {});
    const worker = producer();
    expect(await worker.moveIntake('intake-e')).toBe(1);
    expect(await intake.length('intake-e')).toBe(0);
    expect((await jobsOf(worker.queueFor('intake-e'))).map((job) => job.id)).toEqual([good.id]);
  });

  it('writes no entry for a record created without a send (a received copy, a test fixture)', async () => {
    await messages.createMany([message('intake-f')], false);
    expect(await intake.length('intake-f')).toBe(0);
  });
});
