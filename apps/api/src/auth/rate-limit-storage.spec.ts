import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { LuaScript, RedisKeys, createRedis } from '@app/status-store';
import { RateLimitStorage } from './rate-limit-storage.js';

describe('RateLimitStorage (real Redis)', () => {
  let redis: Redis;
  const keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
  const key = () => `rl-test-${randomBytes(6).toString('hex')}`;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'rate-limit-test' });
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('gives each of many hits at once its own place in the count, blocking those past the limit, in fewer script calls than hits', async () => {
    const storage = new RateLimitStorage(redis, keys);
    const caller = key();
    const scriptRuns = vi.spyOn(LuaScript.prototype, 'run');
    const records = await Promise.all(
      Array.from({ length: 50 }, () => storage.increment(caller, 60_000, 30, 60_000, 'default')),
    );
    const calls = scriptRuns.mock.calls.length;
    scriptRuns.mockRestore();
    expect(records.map((record) => record.totalHits).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    for (const record of records) {
      expect(record.isBlocked).toBe(record.totalHits > 30);
      expect(record.timeToExpire).toBeGreaterThan(55);
      if (record.isBlocked) expect(record.timeToBlockExpire).toBeGreaterThan(55);
      else expect(record.timeToBlockExpire).toBe(0);
    }
    // The first hit goes alone; the 49 that came while it was counted go together.
    expect(calls).toBeLessThanOrEqual(3);
    expect(await redis.get(`{${caller}:default}:hits`)).toBe('50');
  });

  it('counts the hits of two api replicas together, and a replica sees the block the other set', async () => {
    const [first, second] = [new RateLimitStorage(redis, keys), new RateLimitStorage(redis, keys)];
    const caller = key();
    const hit = (storage: RateLimitStorage) =>
      storage.increment(caller, 60_000, 10, 60_000, 'default');
    for (let i = 0; i < 6; i++) expect((await hit(first)).totalHits).toBe(i + 1);
    const fromSecond = await Promise.all(Array.from({ length: 5 }, () => hit(second)));
    expect(fromSecond.map((record) => record.totalHits).sort((a, b) => a - b)).toEqual([
      7, 8, 9, 10, 11,
    ]);
    expect(fromSecond.filter((record) => record.isBlocked)).toHaveLength(1);
    // Blocked for the block's time, whichever replica asks.
    const later = await hit(first);
    expect(later).toMatchObject({ totalHits: 12, isBlocked: true });
    expect(later.timeToBlockExpire).toBeGreaterThan(55);
  });

  it('starts a new window when the last one ended', async () => {
    const storage = new RateLimitStorage(redis, keys);
    const caller = key();
    await storage.increment(caller, 200, 5, 200, 'default');
    await storage.increment(caller, 200, 5, 200, 'default');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await storage.increment(caller, 200, 5, 200, 'default')).toMatchObject({
      totalHits: 1,
      isBlocked: false,
    });
  });

  it('blocks every hit of a batch that comes while its caller is blocked', async () => {
    const storage = new RateLimitStorage(redis, keys);
    const caller = key();
    const hit = () => storage.increment(caller, 60_000, 2, 60_000, 'default');
    await hit();
    await hit();
    expect((await hit()).isBlocked).toBe(true);
    const batch = await Promise.all(Array.from({ length: 5 }, hit));
    expect(batch.every((record) => record.isBlocked && record.timeToBlockExpire > 55)).toBe(true);
  });

  it('checks the limit again when it starts a new window after a block without time left', async () => {
    const storage = new RateLimitStorage(redis, keys);
    const caller = key();
    const hits = Array.from({ length: 6 }, () =>
      storage.increment(caller, 60_000, 2, 60_000, 'default'),
    );
    // Sent on the same connection after the first hit's call and before the five behind it: a
    // block key with no time left, which the script takes for a block that just ended.
    await redis.set(`{${caller}:default}:blocked`, '1');
    const [first, ...batch] = await Promise.all(hits);
    expect(first).toMatchObject({ totalHits: 1, isBlocked: false });
    // The five start a new window together and pass its limit of two: the last three blocked.
    expect(batch.map((record) => record.totalHits).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(batch.filter((record) => record.isBlocked)).toHaveLength(3);
    expect(await redis.pttl(`{${caller}:default}:blocked`)).toBeGreaterThan(55_000);
  });

  it('fails every hit of a call Redis refused, those queued behind it too, and counts the hits after', async () => {
    const storage = new RateLimitStorage(redis, keys);
    const caller = key();
    const hit = () => storage.increment(caller, 60_000, 50, 60_000, 'default');
    // INCRBY refuses a count that is not a number: the first call and the batch behind it fail.
    await redis.set(`{${caller}:default}:hits`, 'not-a-number');
    const refused = await Promise.allSettled(Array.from({ length: 5 }, hit));
    expect(refused.map((result) => result.status)).toEqual(Array(5).fill('rejected'));
    await redis.del(`{${caller}:default}:hits`);
    const counted = await Promise.all(Array.from({ length: 3 }, hit));
    expect(counted.map((record) => record.totalHits).sort()).toEqual([1, 2, 3]);
  });
});
