import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { LeaseRepository } from './lease.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';

describe('LeaseRepository: one worker drives a session while it holds its lease', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let leases: LeaseRepository;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'lease-test' });
    keys = new RedisKeys(`l${randomBytes(5).toString('hex')}`);
    leases = new LeaseRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  it('gives a free lease to one worker only, and back only from its holder', async () => {
    expect(await leases.acquire('a', 'w1', 10_000)).toBe(true);
    expect(await leases.acquire('a', 'w2', 10_000)).toBe(false);
    await leases.release('a', 'w2'); // not w2's: nothing happens
    expect(await leases.holder('a')).toBe('w1');
    await leases.release('a', 'w1');
    expect(await leases.acquire('a', 'w2', 10_000)).toBe(true);
    expect(await leases.holders(['a', 'nobody'])).toEqual(['w2', null]);
  });

  it("renews the holder's leases and reports those it lost (expired and taken, or gone)", async () => {
    for (const id of ['r1', 'r2', 'r3']) expect(await leases.acquire(id, 'w1', 10_000)).toBe(true);
    await leases.release('r2', 'w1');
    expect(await leases.acquire('r2', 'w2', 10_000)).toBe(true);
    await redis.del(keys.lease('r3'));
    expect(await leases.renew(['r1', 'r2', 'r3'], 'w1', 60_000)).toEqual(['r2', 'r3']);
    expect(await redis.pttl(keys.lease('r1'))).toBeGreaterThan(10_000);
    expect(await redis.pttl(keys.lease('r2'))).toBeLessThanOrEqual(10_000);
    expect(await leases.renew([], 'w1', 60_000)).toEqual([]);
  });

  it('lets a lease lapse when its holder stops renewing it', async () => {
    expect(await leases.acquire('x', 'w1', 50)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(await leases.acquire('x', 'w2', 10_000)).toBe(true);
    expect(await leases.renew(['x'], 'w1', 10_000)).toEqual(['x']);
  });
});
