import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createRedis } from './redis-connection.js';
import { RedisClock } from './redis-clock.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { WorkerRepository, type WorkerInfo } from './worker.repository.js';

describe("WorkerRepository: each worker judged live by its own heartbeat's limit", () => {
  let redis: Redis;
  let subscriber: RedisSubscriber;
  let keys: RedisKeys;
  let clock: RedisClock;
  let workers: WorkerRepository;

  beforeEach(() => {
    redis = createRedis(inject('redisUrl'), { name: 'liveness-test' });
    subscriber = new RedisSubscriber({ REDIS_URL: inject('redisUrl') } as never);
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    clock = new RedisClock(redis, keys);
    workers = new WorkerRepository(redis, keys, subscriber, clock);
  });
  afterEach(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  const info = (id: string, extra: Partial<WorkerInfo> = {}): WorkerInfo => ({
    id,
    host: 'h',
    pid: 1,
    version: '1',
    startedAt: '',
    sessions: [],
    ...extra,
  });

  it('counts live a worker that beat 5 s ago with its 15 s limit, read with a 3 s one', async () => {
    const now = await clock.now();
    // A worker on the default WORKER_HEARTBEAT_MS (5000) between two beats; the api on 1000.
    await workers.beat(info('w-default'), 15_000, now - 5_000);
    expect(await workers.anyLive(3_000)).toBe(true);
    expect([...(await workers.liveIds(3_000, now))]).toEqual(['w-default']);
    expect(await workers.countLive(3_000, now)).toBe(1);
    expect((await workers.listLive(3_000, now)).map((w) => w.id)).toEqual(['w-default']);
    expect(await workers.setDraining('w-default', true, 3_000, now)).toBe(true);
    const placement = await workers.placement('w-other', 3_000, now);
    expect([...placement.live].sort()).toEqual(['w-default', 'w-other']);
    expect(placement.lapsed).toBe(0);
  });

  it('counts gone a worker past its own 3 s limit, though the reader would wait 15 s', async () => {
    const now = await clock.now();
    await workers.beat(info('w-fast'), 3_000, now - 5_000);
    expect(await workers.anyLive(15_000)).toBe(false);
    expect(await workers.countLive(15_000, now)).toBe(0);
    expect(await workers.setDraining('w-fast', true, 15_000, now)).toBe(false);
    expect((await workers.placement('w-other', 15_000, now)).lapsed).toBe(1);
  });

  it('judges a beat written without a limit (an older worker) by the reader’s, as before', async () => {
    const now = await clock.now();
    // What a worker of the version before wrote: its beat and hash, no limit of its own.
    await redis.zadd(keys.workers(), now - 5_000, 'w-old');
    await redis.hset(keys.worker('w-old'), { host: 'h', pid: '1', sessions: '[]' });
    expect(await workers.anyLive(3_000)).toBe(false);
    expect(await workers.countLive(3_000, now)).toBe(0);
    expect(await workers.anyLive(15_000)).toBe(true);
    expect([...(await workers.liveIds(15_000, now))]).toEqual(['w-old']);
    expect((await workers.listLive(15_000, now))[0]).toMatchObject({ id: 'w-old', engine: null });
  });

  it('records the engine a worker said it drives, null for one that did not say', async () => {
    const now = await clock.now();
    await workers.beat(info('w-sandbox', { engine: 'sandbox' }), 15_000, now);
    await workers.beat(info('w-quiet'), 15_000, now);
    const engines = await workers.engines(['w-sandbox', 'w-quiet', 'w-none']);
    expect(Object.fromEntries(engines)).toEqual({
      'w-sandbox': 'sandbox',
      'w-quiet': null,
      'w-none': null,
    });
    const listed = await workers.listLive(15_000, now);
    expect(listed.find((w) => w.id === 'w-sandbox')?.engine).toBe('sandbox');
  });

  it('forgets a worker that left at once, whatever limit it sent', async () => {
    const now = await clock.now();
    await workers.beat(info('w-leaving'), 60_000, now);
    expect(await workers.anyLive(3_000)).toBe(true);
    await workers.remove('w-leaving');
    expect(await workers.anyLive(3_000)).toBe(false);
    expect(await redis.exists(keys.workersLiveUntil())).toBe(0);
  });
});
