import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { AUDIT_REFUSALS_KEPT, AuditRepository } from './audit.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';

const DAY = 86_400_000;
const refusal = (actor: string) => ({
  actor,
  action: 'DELETE /api/v1/keys/:id',
  target: { id: '0123456789abcdef' },
  from: '203.0.113.9',
  status: 403,
});

describe('AuditRepository: refusals cost a bounded amount and never push an action out', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let audit: AuditRepository;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'audit-test' });
    keys = new RedisKeys(`a${randomBytes(5).toString('hex')}`);
    audit = new AuditRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  it('collapses one key’s refusals of one route into one entry a minute, counting them', async () => {
    const now = Math.floor(Date.now() / 60_000) * 60_000 + 10; // early in a minute
    for (let i = 0; i < 50; i++) await audit.recordRefusal(refusal('key:a'), 90 * DAY, now + i);
    await audit.recordRefusal(refusal('key:a'), 90 * DAY, now + 60_000); // the next minute
    const listed = await audit.refusals(10);
    expect(listed.map((entry) => entry.count)).toEqual([1, 50]);
    expect(listed[1]).toMatchObject({ actor: 'key:a', at: new Date(now + 49).toISOString() });
  });

  it('keeps about AUDIT_REFUSALS_KEPT refusals, and every action', async () => {
    const now = Date.now();
    await audit.record({ ...refusal('key:env'), status: 200 }, 90 * DAY, now);
    for (let i = 0; i < 3 * AUDIT_REFUSALS_KEPT; i++)
      await audit.recordRefusal(refusal(`key:${i}`), 90 * DAY, now + 1);
    const kept = await redis.xlen(keys.auditRefusals());
    expect(kept).toBeGreaterThanOrEqual(AUDIT_REFUSALS_KEPT);
    expect(kept).toBeLessThan(AUDIT_REFUSALS_KEPT + 200);
    expect(await audit.actions(10)).toMatchObject([{ actor: 'key:env', status: 200 }]);
    // Listed with the actions, newest first.
    const page = await audit.list(3);
    expect(page.map((entry) => entry.actor)).toEqual([
      `key:${3 * AUDIT_REFUSALS_KEPT - 1}`,
      `key:${3 * AUDIT_REFUSALS_KEPT - 2}`,
      `key:${3 * AUDIT_REFUSALS_KEPT - 3}`,
    ]);
  });

  it('lists an action without a count: a count is a refusal’s only', async () => {
    const now = Date.now();
    await audit.record({ ...refusal('key:acts'), status: 202 }, 90 * DAY, now);
    const [action] = await audit.actions(1);
    expect(action).toEqual({
      id: expect.any(String),
      at: new Date(now).toISOString(),
      actor: 'key:acts',
      action: 'DELETE /api/v1/keys/:id',
      target: { id: '0123456789abcdef' },
      from: '203.0.113.9',
      status: 202,
    });
    // As the api answers it: no "count": null beside it.
    expect(JSON.parse(JSON.stringify(action))).not.toHaveProperty('count');
  });
});
