import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { DRAIN_FORGOTTEN_AFTER_STALE, WorkerRepository } from './worker.repository.js';

const STALE = 15_000;

describe('WorkerRepository.placement and drains', () => {
  let redis: Redis;
  let subscriber: RedisSubscriber;
  let keys: RedisKeys;
  let workers: WorkerRepository;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'placement-test' });
    subscriber = new RedisSubscriber({ REDIS_URL: inject('redisUrl') } as never);
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    workers = new WorkerRepository(redis, keys, subscriber);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  const beat = (id: string, at: number) =>
    workers.beat(
      { id, host: 'h', pid: 1, version: '1', startedAt: '', sessions: [] } as never,
      60_000,
      at,
    );

  it('keeps a drain through a beat that looks stale for a while, and forgets it once the worker is long gone', async () => {
    const now = Date.now();
    await beat('w-drained', now);
    await beat('w-other', now);
    expect(await workers.setDraining('w-drained', true, STALE, now)).toBe(true);
    // Its beat looks stale to another worker (a failover, a stall, a clock a little off).
    await redis.zadd(keys.workers(), now - STALE - 5_000, 'w-drained');
    expect((await workers.placement('w-other', STALE, now)).takingWorkers).toBe(1);
    await beat('w-drained', now);
    expect((await workers.placement('w-drained', STALE, now)).draining).toBe(true);
    // Silent for DRAIN_FORGOTTEN_AFTER_STALE times the limit: a crash, its drain forgotten.
    await redis.zadd(keys.workers(), now - DRAIN_FORGOTTEN_AFTER_STALE * STALE - 1, 'w-drained');
    await workers.placement('w-other', STALE, now);
    expect(await redis.sismember(keys.drainingWorkers(), 'w-drained')).toBe(0);
  });

  it('counts as lapsed the other workers that beat lately but not within the limit, not the long gone nor itself', async () => {
    const now = Date.now();
    await beat('w-live', now);
    await beat('w-cut-off', now - STALE - 1_000);
    await beat('w-long-gone', now - DRAIN_FORGOTTEN_AFTER_STALE * STALE - 1_000);
    await beat('w-self', now - STALE - 1_000);
    const placement = await workers.placement('w-self', STALE, now);
    expect(placement.lapsed).toBe(1);
    expect(placement.live.has('w-cut-off')).toBe(false);
    expect(placement.live.has('w-live')).toBe(true);
  });
});
