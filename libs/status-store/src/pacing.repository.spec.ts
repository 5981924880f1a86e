import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { PacingRepository } from './pacing.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';

describe("PacingRepository: a session's sends counted towards its daily cap", () => {
  let redis: Redis;
  let keys: RedisKeys;
  let pacing: PacingRepository;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'pacing-test' });
    keys = new RedisKeys(`p${randomBytes(5).toString('hex')}`);
    pacing = new PacingRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  it('counts each message once, though the try that sent it and the one that found it both count it', async () => {
    expect(await pacing.countSend('main', '2026-12-04', 'm1')).toBe(true);
    expect(await pacing.countSend('main', '2026-12-04', 'm1')).toBe(false);
    expect(await pacing.countSend('main', '2026-12-04', 'm2')).toBe(true);
    expect(await pacing.sentOn('main', '2026-12-04')).toBe(2);
    // Found after midnight: counted on the day it was sent, not again on the next.
    expect(await pacing.countSend('main', '2026-12-05', 'm2')).toBe(false);
    expect(await pacing.sentOn('main', '2026-12-05')).toBe(0);
    expect(await pacing.sentOn('other', '2026-12-04')).toBe(0);
    expect(await redis.pttl(keys.dailySends('main', '2026-12-04'))).toBeGreaterThan(86_400_000);
    expect(await redis.pttl(keys.capCounted('main'))).toBeGreaterThan(86_400_000);
  });
});
