import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createRedis } from './redis-connection.js';
import { newestFirst } from './newest-first.js';

/** The merge behind the delivery listings, on real Redis, while deliveries keep coming. */
describe('newestFirst (delivery listings)', () => {
  let redis: Redis;
  const root = `t${randomBytes(5).toString('hex')}`;
  const [a, b] = [`{${root}}:a`, `{${root}}:b`];
  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'listing-test' });
  });
  afterAll(async () => {
    await redis.del(a, b);
    await redis.quit();
  });

  it('yields each member once, newest first across the sets, though new ones arrive at the top between its pages', async () => {
    // 300 in one set, 10 in the other, interleaved in time.
    for (let i = 0; i < 300; i++) await redis.zadd(a, i * 10, `a${i}`);
    for (let i = 0; i < 10; i++) await redis.zadd(b, i * 300 + 5, `b${i}`);
    const merged = newestFirst(redis, [a, b], 5);
    const got: string[] = [];
    for (let next = await merged.next(); !next.done; next = await merged.next()) {
      got.push(next.value);
      // After the first page of each: 50 newer deliveries at the top of the busy set, which
      // push what its next page reads down by 50.
      if (got.length === 3) for (let i = 0; i < 50; i++) await redis.zadd(a, 10_000 + i, `new${i}`);
    }
    expect(new Set(got).size).toBe(got.length);
    // Every member there was when the listing began, in order.
    const before = [
      ...Array.from({ length: 300 }, (_, i) => [`a${i}`, i * 10] as const),
      ...Array.from({ length: 10 }, (_, i) => [`b${i}`, i * 300 + 5] as const),
    ]
      .sort((x, y) => y[1] - x[1])
      .map(([id]) => id);
    expect(got.filter((id) => !id.startsWith('new'))).toEqual(before);
  });
});
