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
    const made = new WebhookConsumer(
      { prefix } as QueueOptions,
      {
        REDIS_URL: inject('redisUrl'),
        WEBHOOK_CONCURRENCY: 2,
        WEBHOOK_MAX_ATTEMPTS: 3,
      } as AppConfig,
      { webhookKick: () => `${prefix}:kick` } as RedisKeys,
      {
        onReconnect: () => undefined,
        subscribe: async () => undefined,
        unsubscribe: async () => undefined,
      } as unknown as RedisSubscriber,
      {
        shards: async () => [],
        chainHeads: async () => [],
        chainHead: async () => 'd0',
        delivery: async () => null,
      } as unknown as WebhookRepository,
      { deliver } as unknown as WebhookDeliveryService,
      { abortAll: () => undefined } as unknown as WebhookSender,
      {
        webhookQueue: () => queue,
        enqueueChains: async (chains: unknown[]) => void added.push(...chains),
      } as unknown as QueueProducer,
      { setWebhookBacklog: () => undefined } as unknown as WorkerMetrics,
    );
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
