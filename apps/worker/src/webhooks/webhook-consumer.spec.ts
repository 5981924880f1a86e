import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Queue, type QueueOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import type { AppConfig } from '@app/config';
import { JobName, WEBHOOK_QUEUE, webhookChainJobId, type QueueProducer } from '@app/queue';
import {
  createRedis,
  type RedisKeys,
  type RedisSubscriber,
  type WebhookRepository,
} from '@app/status-store';
import { eventually } from '../../../../test/support/eventually.js';
import type { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WebhookConsumer } from './webhook-consumer.service.js';
import type {
  DeliveryJob,
  DeliveryResult,
  WebhookDeliveryService,
} from './webhook-delivery.service.js';
import type { WebhookSender } from './webhook-sender.service.js';
import { RedisServer } from '../../../../test/support/redis-server.js';

type Chain = { sessionId: string; targetId: string };

/**
 * A WebhookConsumer on a real BullMQ queue, everything else stubbed: chain heads read by
 * `chainHead`, deliveries made by `deliver`, chains enqueued by `enqueueChains`.
 */
function webhookConsumer(options: {
  prefix: string;
  redisUrl: string;
  concurrency: number;
  chainHead: (chain: Chain) => Promise<string | null>;
  deliver: (job: DeliveryJob) => Promise<DeliveryResult>;
  queue: Queue;
  enqueueChains: (chains: Chain[]) => Promise<void>;
}): WebhookConsumer {
  return new WebhookConsumer(
    { prefix: options.prefix } as QueueOptions,
    {
      REDIS_URL: options.redisUrl,
      WEBHOOK_CONCURRENCY: options.concurrency,
      WEBHOOK_MAX_ATTEMPTS: 3,
      WEBHOOK_TIMEOUT_MS: 10_000,
      SHUTDOWN_TIMEOUT_MS: 30_000,
    } as AppConfig,
    { webhookKick: () => `${options.prefix}:kick` } as RedisKeys,
    {
      onReconnect: () => undefined,
      subscribe: async () => undefined,
      unsubscribe: async () => undefined,
    } as unknown as RedisSubscriber,
    {
      shards: async () => [],
      chainHeads: async () => [],
      chainHead: options.chainHead,
      delivery: async () => null,
    } as unknown as WebhookRepository,
    { deliver: options.deliver } as unknown as WebhookDeliveryService,
    { finishInFlight: async () => undefined } as unknown as WebhookSender,
    {
      webhookQueue: () => options.queue,
      enqueueChains: options.enqueueChains,
    } as unknown as QueueProducer,
    { setWebhookBacklog: () => undefined } as unknown as WorkerMetrics,
  );
}

describe('WebhookConsumer.sweep and the backlog gauge', () => {
  function consumer(webhooks: Partial<WebhookRepository>) {
    const setWebhookBacklog = vi.fn();
    const made = new WebhookConsumer(
      {} as QueueOptions,
      { WEBHOOK_CONCURRENCY: 10 } as AppConfig,
      {} as RedisKeys,
      {} as RedisSubscriber,
      { shards: async () => [], ...webhooks } as WebhookRepository,
      {} as WebhookDeliveryService,
      {} as WebhookSender,
      { webhookQueue: () => ({ getJobState: async () => 'waiting' }) } as unknown as QueueProducer,
      { setWebhookBacklog } as unknown as WorkerMetrics,
    );
    return { consumer: made, setWebhookBacklog };
  }

  it('sets the backlog per target from the chains it reads', async () => {
    const { consumer: sweeping, setWebhookBacklog } = consumer({
      chainHeads: async () => [
        { targetId: 't1', length: 3, head: null },
        { targetId: 't1', length: 2, head: null },
        { targetId: 't2', length: 1, head: null },
      ],
    } as unknown as Partial<WebhookRepository>);
    await sweeping.sweep();
    expect(setWebhookBacklog).toHaveBeenLastCalledWith(
      new Map([
        ['t1', 5],
        ['t2', 1],
      ]),
    );
  });

  it('reports no backlog rather than the last one when the chains cannot be read', async () => {
    const { consumer: sweeping, setWebhookBacklog } = consumer({
      chainHeads: async () => {
        throw new Error('Connection is closed');
      },
    });
    await sweeping.sweep();
    expect(setWebhookBacklog).toHaveBeenLastCalledWith(new Map());
  });
});

describe('WebhookConsumer: a chain walked by one worker at a time, over real BullMQ', () => {
  const prefix = `{wc${randomBytes(4).toString('hex')}}`;
  const chain = { sessionId: 'main', targetId: 't1' };
  const jobId = webhookChainJobId(chain);
  let redis: Redis;
  let queue: Queue;
  let running: WebhookConsumer | undefined;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'chain-test' });
    queue = new Queue(WEBHOOK_QUEUE, { connection: redis, prefix });
  });
  afterEach(async () => {
    await running?.stop();
    running = undefined;
    await queue.obliterate({ force: true });
  });
  afterAll(async () => {
    await queue.close();
    await redis.quit();
  });

  /** A consumer on the real queue whose chain `heads` are walked by `deliver`. */
  async function start(deliver: (job: DeliveryJob) => Promise<DeliveryResult>, stalls = 0) {
    const added: unknown[] = [];
    const made = webhookConsumer({
      prefix,
      redisUrl: inject('redisUrl'),
      concurrency: 2,
      chainHead: async () => 'd0',
      deliver,
      queue,
      enqueueChains: async (chains) => void added.push(...chains),
    });
    running = made;
    await queue.add(JobName.DeliverWebhook, chain, { jobId, removeOnComplete: true, attempts: 3 });
    if (stalls) await redis.hset(`${prefix}:${WEBHOOK_QUEUE}:${jobId}`, 'stc', stalls);
    await made.start();
    return { added };
  }

  it('lets go of a chain whose lock another worker took, posting nothing more of it', async () => {
    const warn = vi.spyOn(Logger.prototype, 'warn');
    const delivered: string[] = [];
    await start(async ({ deliveryId }) => {
      delivered.push(deliveryId);
      // Meanwhile this worker's lock lapsed and another worker took the job as stalled.
      await redis.set(`${prefix}:${WEBHOOK_QUEUE}:${jobId}:lock`, 'another-worker');
      return { result: 'delivered', next: `d${delivered.length}` };
    });
    await eventually(() =>
      expect(warn).toHaveBeenCalledWith(chain, expect.stringContaining('webhook chain let go')),
    );
    expect(delivered).toEqual(['d0']);
    // Left as it is, the other worker's: not completed, failed nor moved by this one.
    expect(await queue.getJobState(jobId)).toBe('active');
    expect(await redis.get(`${prefix}:${WEBHOOK_QUEUE}:${jobId}:lock`)).toBe('another-worker');
    warn.mockRestore();
  });

  it('ends a batch by completing the job (its stall count with it) and gives the chain a new one', async () => {
    // The job survived 3 stalls (workers killed mid-delivery) earlier in the chain's life.
    let count = 0;
    const { added } = await start(async () => {
      count++;
      return { result: 'delivered', next: `d${count}` };
    }, 3);
    await eventually(() => expect(added).toEqual([chain]));
    // 100 deliveries, or fewer if 2 s passed first (a slow host).
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThanOrEqual(100);
    expect(await queue.getJobState(jobId)).toBe('unknown');
    // Its stalls went with it: the chain's next job starts from none.
    expect(await redis.hget(`${prefix}:${WEBHOOK_QUEUE}:${jobId}`, 'stc')).toBeNull();
  });
});

// Its own Redis: the Redis commands counted are the consumer's alone.
describe('WebhookConsumer: chains waiting for a busy receiver, over real BullMQ', () => {
  const slow = 'https://slow.example';
  const idle = 'https://idle.example';
  let server: RedisServer;
  let redis: Redis;
  let queue: Queue;
  let running: WebhookConsumer | undefined;
  /** Deliveries made, in order, as `${sessionId}/${deliveryId}`. */
  let delivered: string[];
  /** Deliveries of the slow receiver in flight, to be answered. */
  let answers: (() => void)[];

  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false });
    redis = createRedis(server.url, { name: 'busy-test' });
  });
  beforeEach(() => {
    queue = new Queue(WEBHOOK_QUEUE, {
      connection: redis,
      prefix: `{wb${randomBytes(4).toString('hex')}}`,
    });
    delivered = [];
    answers = [];
  });
  afterEach(async () => {
    for (const answer of answers.splice(0)) answer();
    await running?.stop();
    running = undefined;
    await queue.obliterate({ force: true });
    await queue.close();
  });
  afterAll(async () => {
    await redis?.quit();
    await server?.destroy();
  });

  const addChain = (sessionId: string, targetId: string) =>
    queue.add(
      JobName.DeliverWebhook,
      { sessionId, targetId },
      { jobId: webhookChainJobId({ sessionId, targetId }), removeOnComplete: true, attempts: 3 },
    );

  /**
   * A consumer whose chains hold `lines` (session id: its deliveries, `endless` for one that never
   * ends); target `slow` posts to the slow receiver, which answers when `slowAnswer` resolves;
   * any other target to an idle one, at once.
   */
  async function start(
    concurrency: number,
    lines: Map<string, string[] | 'endless'>,
    slowAnswer: () => Promise<void>,
  ) {
    const chainKey = (chain: { sessionId: string; targetId: string }) => chain.sessionId;
    const made = webhookConsumer({
      prefix: queue.opts.prefix!,
      redisUrl: server.url,
      concurrency,
      chainHead: async (chain) => {
        const line = lines.get(chainKey(chain));
        return line === 'endless' ? 'd' : (line?.[0] ?? null);
      },
      deliver: async (job) => {
        if (job.targetId === 'slow') await slowAnswer();
        delivered.push(`${job.sessionId}/${job.deliveryId}`);
        const line = lines.get(chainKey(job));
        if (line === 'endless') return { result: 'delivered', next: 'd' };
        line?.shift();
        return { result: 'delivered', next: line?.[0] ?? null };
      },
      queue,
      enqueueChains: async (chains) => {
        for (const chain of chains) await addChain(chain.sessionId, chain.targetId);
      },
    });
    // Each target's receiver, as read from its head delivery: the slow one, or the idle one.
    vi.spyOn(
      made as unknown as { receiverOf: (chain: { targetId: string }) => Promise<string> },
      'receiverOf',
    ).mockImplementation(async (chain) => (chain.targetId === 'slow' ? slow : idle));
    running = made;
    await made.start();
    return made;
  }

  /** Calls Redis answered since the last RESETSTAT, scripts' own calls included. */
  const redisCalls = async () => {
    let calls = 0;
    for (const [, command, count] of ((await redis.info('commandstats')) as string).matchAll(
      /^cmdstat_([^:]+):calls=(\d+)/gm,
    ))
      if (command !== 'info' && command !== 'config') calls += Number(count);
    return calls;
  };

  it('costs Redis a bounded number of calls per delivery however many lines wait for a busy receiver', async () => {
    // 80 lines for one receiver that takes 100 ms an answer; 2 slots for it (concurrency 10):
    // 78 lines wait all along.
    const lines = new Map<string, 'endless'>();
    for (let i = 0; i < 80; i++) lines.set(`s${i}`, 'endless');
    for (const sessionId of lines.keys()) await addChain(sessionId, 'slow');
    await start(10, lines, () => new Promise((resolve) => setTimeout(resolve, 100)));
    await eventually(() => expect(delivered.length).toBeGreaterThanOrEqual(10));
    await redis.config('RESETSTAT');
    const from = delivered.length;
    await eventually(() => expect(delivered.length).toBeGreaterThanOrEqual(from + 40));
    const perDelivery = (await redisCalls()) / (delivered.length - from);
    // The waiting chains look again about as often as the slots free, not each every
    // 200-400 ms (~400 calls per delivery).
    expect(perDelivery).toBeLessThan(60);
  });

  it("delivers an idle receiver's lines while a busy receiver has every one of its slots and many lines waiting", async () => {
    // Concurrency 5: 1 slot for the slow receiver, which never answers while the test runs.
    const lines = new Map<string, string[]>();
    for (let i = 0; i < 20; i++) lines.set(`s${i}`, ['d0']);
    for (let i = 0; i < 4; i++) lines.set(`i${i}`, ['d0', 'd1']);
    for (let i = 0; i < 20; i++) await addChain(`s${i}`, 'slow');
    await start(5, lines, () => new Promise<void>((resolve) => answers.push(resolve)));
    await eventually(async () =>
      expect(await queue.getJobCounts('delayed')).toEqual({ delayed: 19 }),
    );
    for (let i = 0; i < 4; i++) await addChain(`i${i}`, 'idle');
    await eventually(() =>
      expect(delivered.filter((d) => d.startsWith('i')).sort()).toEqual(
        ['i0/d0', 'i0/d1', 'i1/d0', 'i1/d1', 'i2/d0', 'i2/d1', 'i3/d0', 'i3/d1'].sort(),
      ),
    );
    expect(answers).toHaveLength(1);
    expect(delivered.filter((d) => d.startsWith('s'))).toEqual([]);
  });
});
