import { Redis } from 'ioredis';
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

  it.skipIf(!_name.includes('Cluster'))(
    "spreads the sessions' send queues over every master: a message sent on a session of each",
    async () => {
      const ports = topology.url
        .replace('redis+cluster://', '')
        .split(',')
        .map((node) => Number(node.split(':')[1]));
      const nodes = ports.map((port) => new Redis(port, '127.0.0.1', { lazyConnect: false }));
      try {
        const slots = (await nodes[0].call('CLUSTER', 'SLOTS')) as [
          number,
          number,
          [string, number],
        ][];
        const masterOf = (slot: number) =>
          slots.find(([from, to]) => slot >= from && slot <= to)![2][1];
        // A session per master: its queue's keys carry its own hash tag.
        const chosen = new Map<number, string>();
        for (let i = 0; chosen.size < 3 && i < 200; i++) {
          const sessionId = `spread${i}`;
          const tag = stack.keys.sessionBullPrefix(sessionId);
          const master = masterOf(Number(await nodes[0].call('CLUSTER', 'KEYSLOT', tag)));
          if (!chosen.has(master)) chosen.set(master, sessionId);
        }
        expect(chosen.size).toBe(3);
        for (const sessionId of chosen.values()) {
          expect((await stack.call('POST', '/api/v1/sessions', { id: sessionId })).status).toBe(
            201,
          );
          await stack.waitReady(sessionId);
          const sent = await stack.call('POST', '/api/v1/messages/text', {
            sessionId,
            to: '4915123456780',
            text: `on ${sessionId}`,
          });
          expect(sent.status).toBe(202);
          await stack.waitForStatus(sent.body.data.id, 'read');
        }
        for (const [master, sessionId] of chosen) {
          const node = nodes[ports.indexOf(master)];
          const [, found] = await node.scan(
            '0',
            'MATCH',
            `${stack.keys.sessionBullPrefix(sessionId)}*`,
            'COUNT',
            10_000,
          );
          expect(found.length, `keys of ${sessionId} on the master at ${master}`).toBeGreaterThan(
            0,
          );
        }
      } finally {
        for (const node of nodes) node.disconnect();
      }
    },
    60_000,
  );
});
