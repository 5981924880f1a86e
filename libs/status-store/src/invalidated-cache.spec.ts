import type { Redis } from 'ioredis';
import type { AppConfig } from '@app/config';
import { RedisServer } from '../../../test/support/redis-server.js';
import { eventually } from '../../../test/support/eventually.js';
import { InvalidatedCache } from './invalidated-cache.js';
import { createRedis } from './redis-connection.js';
import { RedisSubscriber } from './redis-subscriber.js';

// Its own Redis: the test kills pub/sub connections.
describe('InvalidatedCache: values kept in the process until Redis says they changed', () => {
  const CHANNEL = 'changes';
  let server: RedisServer;
  let redis: Redis;
  let subscriber: RedisSubscriber;

  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false });
    redis = createRedis(server.url, { name: 'cache-test' });
    subscriber = new RedisSubscriber({ REDIS_URL: server.url } as AppConfig);
  });
  afterAll(async () => {
    await subscriber?.onApplicationShutdown();
    await redis?.quit();
    await server?.destroy();
  });

  /** A cache of Redis strings that counts its reads, on a channel of its own. */
  let caches = 0;
  function reading(maxAgeMs = 60_000) {
    const channel = `${CHANNEL}:${++caches}`;
    const cache = new InvalidatedCache<string | null>(subscriber, channel, maxAgeMs);
    const reads: string[] = [];
    const get = (key: string) =>
      cache.get(key, () => {
        reads.push(key);
        return redis.get(key);
      });
    return { cache, reads, get, channel };
  }

  /** Reads until the cache serves a value without reading it (its subscription is live). */
  async function kept(get: (key: string) => Promise<unknown>, reads: string[], key: string) {
    await eventually(async () => {
      await get(key);
      const before = reads.length;
      await get(key);
      expect(reads.length).toBe(before);
    });
  }

  it('reads a value once, and again after a message names its key', async () => {
    const { reads, get, channel } = reading();
    await redis.set('a', '1');
    await kept(get, reads, 'a');
    const readsBefore = reads.length;
    expect(await get('a')).toBe('1');
    expect(reads.length).toBe(readsBefore);

    await redis.set('a', '2');
    await redis.publish(channel, 'a');
    await eventually(async () => expect(await get('a')).toBe('2'));
    expect(reads.length).toBe(readsBefore + 1);
  });

  it('drops every value on `*`, and a value older than maxAgeMs', async () => {
    const { reads, get, channel } = reading();
    await redis.mset('b', '1', 'c', '1');
    await kept(get, reads, 'b');
    await get('c');
    await redis.mset('b', '2', 'c', '2');
    await redis.publish(channel, '*');
    await eventually(async () => expect([await get('b'), await get('c')]).toEqual(['2', '2']));

    const young = reading(50);
    await kept(young.get, young.reads, 'b');
    await redis.set('b', '3');
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await young.get('b')).toBe('3');
  });

  it('reads through while its pub/sub connection is down, and keeps values again once back', async () => {
    const { reads, get, channel } = reading();
    await redis.set('d', '1');
    await kept(get, reads, 'd');
    // A message lost while the connection is down must not leave a stale value behind.
    await redis.client('KILL', 'TYPE', 'pubsub');
    await redis.set('d', '2');
    await eventually(async () => expect(await get('d')).toBe('2'));
    await kept(get, reads, 'd');
    await redis.set('d', '3');
    await redis.publish(channel, 'd');
    await eventually(async () => expect(await get('d')).toBe('3'));
  });
});
