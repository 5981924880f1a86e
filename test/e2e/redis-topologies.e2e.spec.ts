import { Cluster, Redis } from 'ioredis';
import { createRedis } from '@app/status-store';
import { RedisTopology } from '../support/redis-topologies.js';
import { countWrites, tenInOneTick } from '../support/socket-writes.js';
import { useStack } from '../support/stack.js';

describe.each([
  ['a Sentinel set', () => RedisTopology.sentinel()],
  ['a Redis Cluster', () => RedisTopology.cluster()],
])('REDIS_URL naming %s', (name, start) => {
  let topology: RedisTopology;
  beforeAll(async () => {
    topology = await start();
  }, 60_000);
  afterAll(() => topology?.destroy());
  // Paced: a send right after another takes the path that waits before its claim.
  const stack = useStack(() => ({ REDIS_URL: topology.url, SEND_MIN_INTERVAL_MS: '200' }));
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

  it("sends the commands of one tick in one write on the server's connection (each master's, on a Cluster)", async () => {
    const client = createRedis(topology.url, { name: 'coalesce-test', blocking: true });
    try {
      await client.incr('{coalesce}:n');
      // The connections the commands go out on: the master's, or each Cluster master's.
      const connections = name.includes('Cluster')
        ? (client as unknown as Cluster).nodes('master')
        : [client];
      const counters = connections.map((connection) => countWrites(connection));
      const before = counters.reduce((sum, writes) => sum + writes(), 0);
      expect(await tenInOneTick(client, '{coalesce}:n')).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      expect(counters.reduce((sum, writes) => sum + writes(), 0) - before).toBe(1);
    } finally {
      client.disconnect();
    }
  });

  it.skipIf(!name.includes('Cluster'))(
    "spreads sessions over every master: each master holds sessions' queues, records and keys, and a message is sent on a session of each",
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
        const masterOf = async (key: string) => {
          const slot = Number(await nodes[0].call('CLUSTER', 'KEYSLOT', key));
          return slots.find(([from, to]) => slot >= from && slot <= to)![2][1];
        };
        // Sessions until every master holds a session's shard (its keys and records) and a
        // session's send queue (a hash tag of its own).
        const shardMasters = new Map<number, string>();
        const queueMasters = new Map<number, string>();
        const chosen = new Set<string>();
        for (let i = 0; (shardMasters.size < 3 || queueMasters.size < 3) && i < 200; i++) {
          const sessionId = `spread${i}`;
          const shard = await masterOf(stack.keys.session(sessionId));
          const queue = await masterOf(stack.keys.sessionBullPrefix(sessionId));
          if (shardMasters.has(shard) && queueMasters.has(queue)) continue;
          if (!shardMasters.has(shard)) shardMasters.set(shard, sessionId);
          if (!queueMasters.has(queue)) queueMasters.set(queue, sessionId);
          chosen.add(sessionId);
        }
        expect(shardMasters.size).toBe(3);
        expect(queueMasters.size).toBe(3);
        const sent = new Map<string, string>();
        for (const sessionId of chosen) {
          expect((await stack.call('POST', '/api/v1/sessions', { id: sessionId })).status).toBe(
            201,
          );
          await stack.waitReady(sessionId);
          // Two at once: the second waits out the pacing interval.
          const accepted = await Promise.all(
            [1, 2].map((n) =>
              stack.call('POST', '/api/v1/messages/text', {
                sessionId,
                to: '4915123456780',
                text: `${n} on ${sessionId}`,
              }),
            ),
          );
          for (const { status, body } of accepted) {
            expect(status).toBe(202);
            await stack.waitForStatus(body.data.id, 'read');
          }
          sent.set(sessionId, accepted[0].body.data.id);
        }
        const on = (master: number) => nodes[ports.indexOf(master)];
        for (const [master, sessionId] of queueMasters) {
          const [, found] = await on(master).scan(
            '0',
            'MATCH',
            `${stack.keys.sessionBullPrefix(sessionId)}*`,
            'COUNT',
            10_000,
          );
          expect(found.length, `queue of ${sessionId} on the master at ${master}`).toBeGreaterThan(
            0,
          );
        }
        for (const [master, sessionId] of shardMasters) {
          const node = on(master);
          const messageId = sent.get(sessionId)!;
          // Read on that master directly: it would answer MOVED for a key of another's slot.
          expect(await node.hget(stack.keys.message(messageId), 'status')).toBe('read');
          // (READY: its states landed in order on a master that had to load the script.)
          // The whole hash, so a failure shows which state was written last, when and by whom.
          expect(await node.hgetall(stack.keys.session(sessionId))).toMatchObject({
            status: 'READY',
          });
          expect(
            await node.zscore(stack.keys.sessionMessages(sessionId), messageId),
          ).not.toBeNull();
          expect(Number(await node.hget(stack.keys.messageCounts(sessionId), 'read'))).toBe(2);
        }
      } finally {
        for (const node of nodes) node.disconnect();
      }
    },
    90_000,
  );
});
