import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { LuaScript, createRedis } from '@app/status-store';
import { RateLimitStorage } from './rate-limit-storage.js';

describe('RateLimitStorage (real Redis)', () => {
  let redis: Redis;
  const key = () => `rl-test-${randomBytes(6).toString('hex')}`;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'rate-limit-test' });
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('gives each of many hits at once its own place in the count, blocking those past the limit, in fewer script calls than hits', async () => {
    const storage = new RateLimitStorage(redis);
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
    const [first, second] = [new RateLimitStorage(redis), new RateLimitStorage(redis)];
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
    const storage = new RateLimitStorage(redis);
    const caller = key();
    await storage.increment(caller, 200, 5, 200, 'default');
    await storage.increment(caller, 200, 5, 200, 'default');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await storage.increment(caller, 200, 5, 200, 'default')).toMatchObject({
      totalHits: 1,
      isBlocked: false,
    });
  });

  it('fails every hit of a call that Redis refused', async () => {
    const broken = createRedis('redis://127.0.0.1:1', { name: 'rate-limit-broken' });
    broken.on('error', () => undefined);
    const storage = new RateLimitStorage(broken);
    const results = await Promise.allSettled(
      Array.from({ length: 3 }, () => storage.increment(key(), 60_000, 5, 60_000, 'default')),
    );
    expect(results.every((result) => result.status === 'rejected')).toBe(true);
    broken.disconnect();
  });
});
