import { eventually } from '../support/eventually.js';
import { RedisServer } from '../support/redis-server.js';
import { useStack } from '../support/stack.js';

describe('Redis stops and comes back (AOF on)', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(() => redis.destroy());
  // Redis may be down when a test ends: it comes back before the stack closes.
  const stack = useStack(() => ({ REDIS_URL: redis.url }));
  afterAll(() => redis.up().catch(() => undefined));
  beforeAll(() => stack.waitReady());

  it('answers 503 while Redis is down, loses no accepted message, and recovers without a restart', async () => {
    const before = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915120000001',
      text: 'before',
    });
    await stack.waitForStatus(before.body.data.id, 'read');

    await redis.down();
    const during = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915120000002',
      text: 'during',
    });
    expect(during.status).toBe(503);
    expect(during.body.error.code).toBe('UNAVAILABLE');

    await redis.up();
    const after = await eventually(async () => {
      const answer = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915120000003',
        text: 'after',
      });
      expect(answer.status).toBe(202);
      return answer;
    }, 20_000);
    await stack.waitForStatus(after.body.data.id, 'read', 20_000);
    // The record accepted before the outage survived it.
    expect(
      (await stack.call('GET', `/api/v1/messages/${before.body.data.id}`)).body.data.status,
    ).toBe('read');
  });
});
