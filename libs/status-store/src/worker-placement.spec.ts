import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createRedis } from './redis-connection.js';
import { RedisClock } from './redis-clock.js';
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
    workers = new WorkerRepository(redis, keys, subscriber, new RedisClock(redis, keys));
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
      // Each worker is judged by the limit it sends: here, the same as the readers'.
      STALE,
      at,
    );

  it('keeps a drain through a beat that looks stale for a while, and forgets it once the worker is long gone', async () => {
    const now = Date.now();
    await beat('w-drained', now);
    await beat('w-other', now);
    expect(await workers.setDraining('w-drained', true, STALE, now)).toBe(true);
    // Its beat looks stale to another worker (a failover, a stall, a clock a little off).
    await beat('w-drained', now - STALE - 5_000);
    expect((await workers.placement('w-other', STALE, now)).takingWorkers).toBe(1);
    await beat('w-drained', now);
    expect((await workers.placement('w-drained', STALE, now)).draining).toBe(true);
    // Silent for DRAIN_FORGOTTEN_AFTER_STALE times the limit: a crash, its drain forgotten.
    await beat('w-drained', now - DRAIN_FORGOTTEN_AFTER_STALE * STALE - 1);
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

  it("judges beats by Redis's clock: a worker whose host runs an hour behind is live, and one an hour ahead is gone once it stops", async () => {
    const real = Date.now.bind(Date);
    const info = (id: string) =>
      ({ id, host: 'h', pid: 1, version: '1', startedAt: '', sessions: [] }) as never;
    try {
      vi.spyOn(Date, 'now').mockImplementation(() => real() - 3_600_000);
      await workers.beat(info('w-behind'), STALE);
      vi.spyOn(Date, 'now').mockImplementation(() => real() + 3_600_000);
      await workers.beat(info('w-ahead'), STALE);
    } finally {
      vi.restoreAllMocks();
    }
    const live = await workers.liveIds(STALE);
    expect(live.has('w-behind')).toBe(true);
    expect(await workers.anyLive(STALE)).toBe(true);
    const listed = (await workers.listLive(STALE)).find((worker) => worker.id === 'w-ahead');
    expect(Math.abs(Date.parse(listed!.lastBeatAt) - real())).toBeLessThan(1_000);
    // The one ahead stops beating: it is gone once its beat is STALE old, not an hour later.
    const at = Date.parse(listed!.lastBeatAt);
    expect((await workers.placement('w-x', STALE, at + STALE + 1)).live.has('w-ahead')).toBe(false);
  });

  it("reads the others' caps, and a cap that changes changes the fleet (so every worker reshares at once)", async () => {
    const now = Date.now();
    const info = (id: string, maxSessions?: number) =>
      ({ id, host: 'h', pid: 1, version: '1', startedAt: '', sessions: [], maxSessions }) as never;
    await workers.beat(info('cap-a', 50), 60_000, now);
    await workers.beat(info('cap-b', 3), 60_000, now);
    await workers.beat(info('cap-old'), 60_000, now);
    const before = await workers.placement('cap-a', STALE, now);
    // Of the others, in id order: cap-b said 3, cap-old (an older version) said nothing.
    const others = [...before.live].filter((id) => id !== 'cap-a').sort();
    const capOf = new Map(others.map((id, i) => [id, before.otherCaps[i]]));
    expect(capOf.get('cap-b')).toBe(3);
    expect(capOf.get('cap-old')).toBeUndefined();
    // cap-b steps back (its sessions do not start): nothing else changes but its cap.
    await workers.beat(info('cap-b', 0), 60_000, now);
    const after = await workers.placement('cap-a', STALE, now);
    expect(after.takingWorkers).toBe(before.takingWorkers);
    expect(after.fleet).not.toBe(before.fleet);
  });

  it('counts as healthy others only workers with room whose starts do not fail, and forgets the failing once gone', async () => {
    const own = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    const fleet = new WorkerRepository(redis, own, subscriber, new RedisClock(redis, own));
    const now = Date.now();
    const info = (id: string, maxSessions?: number, startsFailing = false) =>
      ({
        ...{ id, host: 'h', pid: 1, version: '1', startedAt: '', sessions: [] },
        ...{ maxSessions, startsFailing },
      }) as never;
    await fleet.beat(info('f-self', 50), 60_000, now);
    await fleet.beat(info('f-ok', 50), 60_000, now);
    await fleet.beat(info('f-old'), 60_000, now);
    // Starts fail there, alone or not yet stepped back; and one that stepped back.
    await fleet.beat(info('f-failing', 50, true), 60_000, now);
    await fleet.beat(info('f-back', 0, true), 60_000, now);
    const before = await fleet.placement('f-self', STALE, now);
    expect(before.takingWorkers).toBe(5);
    expect(before.healthyOthers).toBe(2);
    // f-ok's starts now fail too: the fleet changes, so every worker looks again.
    await fleet.beat(info('f-ok', 50, true), 60_000, now);
    const after = await fleet.placement('f-self', STALE, now);
    expect(after.healthyOthers).toBe(1);
    expect(after.fleet).not.toBe(before.fleet);
    await fleet.beat(info('f-ok', 50), 60_000, now);
    expect((await fleet.placement('f-self', STALE, now)).healthyOthers).toBe(2);
    // Gone cleanly, or long silent: forgotten.
    await fleet.remove('f-back');
    expect(await redis.smembers(own.failingWorkers())).toEqual(['f-failing']);
    const later = now + (DRAIN_FORGOTTEN_AFTER_STALE + 1) * STALE;
    await fleet.beat(info('f-self', 50), 60_000, later);
    await fleet.placement('f-self', STALE, later);
    expect(await redis.smembers(own.failingWorkers())).toEqual([]);
    await redis.del(...(await redis.keys(own.pattern())));
  });
});
