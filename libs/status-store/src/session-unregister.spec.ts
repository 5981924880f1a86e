import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig } from '@app/config';
import { EventScriptArgs } from './event-script.js';
import { PacingRepository } from './pacing.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { localDay } from './session-limits.js';
import { SessionRepository } from './session.repository.js';

/** What a deleted session leaves for one made again with the same id, on real Redis. */
describe('SessionRepository.unregister', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let sessions: SessionRepository;
  let pacing: PacingRepository;
  let subscriber: RedisSubscriber;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'unregister-test' });
    keys = new RedisKeys(`u${randomBytes(5).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    subscriber = new RedisSubscriber(config);
    sessions = new SessionRepository(
      redis,
      keys,
      new EventScriptArgs(keys, [], 60_000),
      subscriber,
    );
    pacing = new PacingRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  // The local dates furthest from UTC's, either way, and UTC's own.
  it.each(['Pacific/Kiritimati', 'UTC', 'Pacific/Pago_Pago'])(
    "leaves no daily count, nor the last send's time, to a session made again (its limits in %s)",
    async (timeZone) => {
      const id = `again-${timeZone.replace('/', '-')}`;
      const today = localDay(timeZone, new Date());
      await sessions.register(id);
      await pacing.countSend(id, today, 'm1');
      await pacing.recordSend(id, 60_000);
      expect(await pacing.sentOn(id, today)).toBe(1);
      await sessions.unregister(id);
      await sessions.register(id);
      expect(await pacing.sentOn(id, today)).toBe(0);
      expect(await redis.exists(keys.lastSend(id), keys.capCounted(id))).toBe(0);
    },
  );
});
