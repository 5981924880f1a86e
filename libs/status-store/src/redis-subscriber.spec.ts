import type { AppConfig } from '@app/config';
import { RedisServer } from '../../../test/support/redis-server.js';
import { eventually } from '../../../test/support/eventually.js';
import { createRedis } from './redis-connection.js';
import { RedisSubscriber } from './redis-subscriber.js';

// Its own Redis: the test starts it only after the subscriber has begun connecting.
describe('RedisSubscriber', () => {
  it('subscribes once Redis answers, though connecting failed meanwhile (a consumer made during an outage)', async () => {
    const server = await RedisServer.start({ persistence: false });
    await server.down();
    const subscriber = new RedisSubscriber({ REDIS_URL: server.url } as AppConfig);
    const received: string[] = [];
    let outcome: string | undefined;
    const subscribed = subscriber
      .subscribe('bell', (_channel, message) => received.push(message))
      .then(
        () => (outcome = 'subscribed'),
        (err: Error) => (outcome = `failed: ${err.message}`),
      );
    try {
      // ioredis retries every 200 ms or more, an error each time nothing answers.
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect(outcome).toBeUndefined();
      await server.up();
      await subscribed;
      expect(outcome).toBe('subscribed');
      const publisher = createRedis(server.url, { name: 'publisher' });
      try {
        await eventually(async () => {
          await publisher.publish('bell', 'ring');
          expect(received).toContain('ring');
        });
      } finally {
        await publisher.quit();
      }
    } finally {
      await subscriber.onApplicationShutdown();
      await server.destroy();
    }
  });
});

describe('RedisSubscriber while Redis is down', () => {
  it('unsubscribes without waiting for Redis (a shutdown must not hang on it)', async () => {
    const server = await RedisServer.start({ persistence: false });
    const subscriber = new RedisSubscriber({ REDIS_URL: server.url } as AppConfig);
    try {
      await subscriber.subscribe('bell', () => undefined);
      await server.down();
      const started = performance.now();
      await subscriber.unsubscribe('bell');
      expect(performance.now() - started).toBeLessThan(5_000);
    } finally {
      await subscriber.onApplicationShutdown();
      await server.destroy();
    }
  });
});
