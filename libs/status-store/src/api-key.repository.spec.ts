import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { ApiKeyRepository } from './api-key.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';

describe('ApiKeyRepository: revoking a key', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let apiKeys: ApiKeyRepository;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'api-key-test' });
    keys = new RedisKeys(`k${randomBytes(5).toString('hex')}`);
    apiKeys = new ApiKeyRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  it('keeps the time a key was first revoked when it is revoked again, and says it was already', async () => {
    const { record, key } = await apiKeys.create('shop', ['send']);
    const first = new Date('2026-03-01T10:00:00.000Z');
    const revoked = await apiKeys.revoke(record.id, first);
    expect(revoked).toMatchObject({
      revokedNow: true,
      record: { id: record.id, revokedAt: first.toISOString() },
    });
    const again = await apiKeys.revoke(record.id, new Date('2026-03-02T10:00:00.000Z'));
    expect(again).toMatchObject({
      revokedNow: false,
      record: { id: record.id, revokedAt: first.toISOString() },
    });
    expect((await apiKeys.get(record.id))?.revokedAt).toBe(first.toISOString());
    expect(await apiKeys.verify(key)).toBeNull();
  });

  it('revokes a key once when two revokes race: both answer with the same time', async () => {
    const { record } = await apiKeys.create('raced', ['read']);
    const answers = await Promise.all(
      [1, 2].map((day) => apiKeys.revoke(record.id, new Date(`2026-04-0${day}T00:00:00.000Z`))),
    );
    expect(answers.filter((answer) => answer?.revokedNow)).toHaveLength(1);
    expect(answers[0]?.record.revokedAt).toBe(answers[1]?.record.revokedAt);
  });

  it('answers null for a key that does not exist, and writes nothing for it', async () => {
    expect(await apiKeys.revoke('0123456789abcdef')).toBeNull();
    expect(await redis.exists(keys.apiKey('0123456789abcdef'))).toBe(0);
  });
});
