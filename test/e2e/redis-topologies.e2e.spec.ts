import { RedisTopology } from '../support/redis-topologies.js';
import { useStack } from '../support/stack.js';

describe.each([
  ['a Sentinel set', () => RedisTopology.sentinel()],
  ['a Redis Cluster', () => RedisTopology.cluster()],
])('REDIS_URL naming %s', (_name, start) => {
  let topology: RedisTopology;
  beforeAll(async () => {
    topology = await start();
  }, 60_000);
  afterAll(() => topology?.destroy());
  const stack = useStack(() => ({ REDIS_URL: topology.url }));
  beforeAll(() => stack.waitReady());

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
