import type { AppConfig } from '@app/config';
import { RedisServer } from '../../../test/support/redis-server.js';
import { startRedisProxy } from '../../../test/support/redis-proxy.js';
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

describe('RedisSubscriber behind an address whose connections can go silent', () => {
  it('makes a silent connection anew and subscribes again: messages published after it arrive, and onReconnect handlers catch up', async () => {
    const server = await RedisServer.start({ persistence: false });
    const proxy = await startRedisProxy(server.port);
    const subscriber = new RedisSubscriber({ REDIS_URL: proxy.url } as AppConfig);
    const publisher = createRedis(server.url, { name: 'publisher' });
    const received: string[] = [];
    let reconnects = 0;
    try {
      subscriber.onReconnect(() => reconnects++);
      await subscriber.subscribe('bell', (_channel, message) => received.push(message));
      await publisher.publish('bell', 'before');
      await eventually(() => expect(received).toEqual(['before']));
      // Its packets dropped from now on (a NAT that forgot it): the channel is quiet anyway.
      proxy.silence();
      await publisher.publish('bell', 'lost');
      await eventually(async () => {
        await publisher.publish('bell', 'after');
        expect(received).toContain('after');
      }, 30_000);
      expect(received).not.toContain('lost');
      expect(reconnects).toBeGreaterThanOrEqual(1);
    } finally {
      await subscriber.onApplicationShutdown();
      await publisher.quit();
      proxy.close();
      await server.destroy();
    }
  }, 45_000);
});
