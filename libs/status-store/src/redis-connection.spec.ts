import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { RedisServer } from '../../../test/support/redis-server.js';
import { eventually } from '../../../test/support/eventually.js';
import { countWrites, tenInOneTick } from '../../../test/support/socket-writes.js';
import { createRedis } from './redis-connection.js';

// Its own Redis: the test drops a connection.
describe('createRedis: the writes of one tick leave together', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false });
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it.each([
    ['a request-path client', false],
    ["a blocking client (BullMQ's)", true],
  ])(
    '%s sends commands issued in one tick in one write, in order, where a plain client writes each',
    async (_kind, blocking) => {
      const ours = createRedis(server.url, { name: 'coalesce-test', blocking });
      const plain = new Redis(server.url, { enableAutoPipelining: false });
      try {
        await Promise.all([ours.ping(), plain.ping()]);
        const oursWrites = countWrites(ours);
        const plainWrites = countWrites(plain);
        const before = { ours: oursWrites(), plain: plainWrites() };

        const key = `ours-${blocking}`;
        expect(await tenInOneTick(ours, key)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect(await tenInOneTick(plain, `plain-${blocking}`)).toEqual([
          1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
        ]);
        expect(oursWrites() - before.ours).toBe(1);
        expect(plainWrites() - before.plain).toBe(10);

        // Commands of separate ticks are not held back for one another.
        const at = oursWrites();
        for (let i = 0; i < 3; i++) await ours.incr(key);
        expect(oursWrites() - at).toBe(3);
        expect(await ours.get(key)).toBe('13');
      } finally {
        ours.disconnect();
        plain.disconnect();
      }
    },
  );

  it('writes a command in the tick it is issued, not later with the next batch', async () => {
    // Auto-pipelining would hold it until the event loop's check phase (setImmediate).
    const ours = createRedis(server.url, { name: 'coalesce-now', blocking: false });
    try {
      await ours.ping();
      const writes = countWrites(ours);
      const before = writes();
      const answer = ours.incr('now');
      await new Promise((resolve) => process.nextTick(resolve));
      expect(writes() - before).toBe(1);
      expect(await answer).toBe(1);
    } finally {
      ours.disconnect();
    }
  });

  it('coalesces on the connection ioredis makes again after one is lost', async () => {
    const ours = createRedis(server.url, { name: 'coalesce-reconnect', blocking: true });
    try {
      await ours.ping();
      const lost = ours.stream;
      lost.destroy();
      await eventually(async () => {
        expect(ours.stream).not.toBe(lost);
        expect(await ours.ping()).toBe('PONG');
      });
      const writes = countWrites(ours);
      const before = writes();
      expect(await tenInOneTick(ours, 'again')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(writes() - before).toBe(1);
    } finally {
      ours.disconnect();
    }
  });
});

/**
 * One address in front of Redis (a TCP proxy), as a managed Redis's endpoint: where it leads
 * can change (a failover), and the connections it holds can go silent (packets dropped).
 */
async function startProxy(port: number) {
  let target = port;
  const pairs = new Set<[Socket, Socket]>();
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** New connections lead to `port` from now on. */
    leadTo: (next: number) => (target = next),
    /** The connections open now carry nothing more, either way, and stay open. */
    silence: () => {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
      }
    },
    close: () => {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}

describe('createRedis: one address in front of Redis', () => {
  let old: RedisServer;
  let next: RedisServer;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  beforeAll(async () => {
    old = await RedisServer.start({ persistence: false });
    next = await RedisServer.start({ persistence: false });
  });
  beforeEach(async () => {
    proxy = await startProxy(old.port);
  });
  afterEach(() => proxy.close());
  afterAll(async () => {
    await old?.destroy();
    await next?.destroy();
  });

  it('reconnects when the old primary, now a replica, refuses a write (READONLY), and the write goes to the new one', async () => {
    const ours = createRedis(proxy.url, { name: 'failover-test' });
    const direct = new Redis(old.port, '127.0.0.1');
    try {
      expect(await ours.set('k', 'before')).toBe('OK');
      // The old primary becomes a replica of the new one; the address now leads there.
      await direct.call('REPLICAOF', '127.0.0.1', String(next.port));
      proxy.leadTo(next.port);
      expect(await ours.set('k', 'after')).toBe('OK');
      const nextDirect = new Redis(next.port, '127.0.0.1');
      expect(await nextDirect.get('k')).toBe('after');
      nextDirect.disconnect();
    } finally {
      await direct.call('REPLICAOF', 'NO', 'ONE');
      ours.disconnect();
      direct.disconnect();
    }
  });

  it('replaces a connection that went silent (its packets dropped), rather than time out on it for good', async () => {
    const ours = createRedis(proxy.url, { name: 'silent-test' });
    try {
      expect(await ours.set('s', 'before')).toBe('OK');
      proxy.silence();
      // The command in flight gives up; the connection is then dropped and made anew.
      await expect(ours.set('s', 'lost')).rejects.toThrow(/timed out/);
      await eventually(async () => expect(await ours.set('s', 'after')).toBe('OK'), 20_000);
    } finally {
      ours.disconnect();
    }
  }, 40_000);
});
