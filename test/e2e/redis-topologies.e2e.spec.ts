import { RedisTopology } from '../support/redis-topologies.js';
import { Stack } from '../support/stack.js';

describe.each([
  ['a Sentinel set', () => RedisTopology.sentinel()],
  ['a Redis Cluster', () => RedisTopology.cluster()],
])('REDIS_URL naming %s', (_name, start) => {
  let topology: RedisTopology;
  let stack: Stack;

  beforeAll(async () => {
    topology = await start();
    stack = await Stack.start({ REDIS_URL: topology.url });
    await stack.waitReady();
  }, 60_000);
  afterAll(async () => {
    await stack.close().catch(() => undefined);
    await topology.destroy();
  });

  it('accepts a message and takes it to read through BullMQ, pub/sub and the repositories', async () => {
    const { status, body } = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'hi',
    });
    expect(status).toBe(202);
    await stack.waitForStatus(body.data.id, 'read');
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'second' })).status).toBe(201);
    await stack.waitReady('second');
  });
});
