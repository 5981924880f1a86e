import { Redis } from 'ioredis';
import { RedisServer } from '../../../test/support/redis-server.js';
import { startRedisProxy } from '../../../test/support/redis-proxy.js';
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

describe('createRedis: one address in front of Redis', () => {
  let old: RedisServer;
  let next: RedisServer;
  let proxy: Awaited<ReturnType<typeof startRedisProxy>>;
  beforeAll(async () => {
    old = await RedisServer.start({ persistence: false });
    next = await RedisServer.start({ persistence: false });
  });
  beforeEach(async () => {
    proxy = await startRedisProxy(old.port);
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

  it('does not send a command again on the new connection once its caller was told it timed out', async () => {
    const ours = createRedis(proxy.url, { name: 'silent-resend-test' });
    const direct = new Redis(old.port, '127.0.0.1');
    try {
      expect(await ours.incr('n')).toBe(1);
      proxy.silence();
      await expect(ours.incr('n')).rejects.toThrow(/timed out/);
      // Made anew: a command on it is answered.
      await eventually(async () => expect(await ours.ping()).toBe('PONG'), 20_000);
      expect(await direct.get('n')).toBe('1');
    } finally {
      ours.disconnect();
      direct.disconnect();
    }
  }, 40_000);

  it("replaces a blocking client's silent connection too (a BullMQ worker's, after a limit of its own): the command waiting on it is sent again and answered", async () => {
    // Its limit is a minute in production (a stall must not outlast it); a few seconds here.
    const ours = createRedis(proxy.url, {
      name: 'silent-blocking-test',
      blocking: true,
      silentMs: 3_000,
    });
    try {
      expect(await ours.set('b', 'before')).toBe('OK');
      proxy.silence();
      // It retries forever: no limit on the command, but not a quarter of an hour of silence.
      const started = performance.now();
      expect(await ours.set('b', 'after')).toBe('OK');
      expect(performance.now() - started).toBeLessThan(20_000);
      expect(await ours.get('b')).toBe('after');
    } finally {
      ours.disconnect();
    }
  }, 40_000);
});

// Its own Redis with two databases: REDIS_URL's /5 is beyond them.
describe('createRedis: a database the server refuses', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false, settings: ['--databases', '2'] });
  });
  afterAll(async () => {
    await server?.destroy();
  });
  afterEach(() => vi.restoreAllMocks());

  it.each([false, true])(
    'stops the process with a line naming REDIS_URL, and runs nothing on database 0 (blocking: %s)',
    async (blocking) => {
      const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
      const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
      const ours = createRedis(`${server.url}/5`, { name: 'db-test', blocking });
      const direct = new Redis(server.url);
      try {
        // Issued before the connection is made: it waits in the client's queue behind SELECT.
        const write = ours.set('db-test', 'lost').then(
          () => 'written',
          (err: Error) => err.message,
        );
        await eventually(() => expect(exit).toHaveBeenCalledWith(1));
        expect(await write).toBe('Connection is closed.');
        expect(logged).toHaveBeenCalledWith(
          'REDIS_URL: the Redis server refuses database 5 (ERR DB index is out of range); it has as many as its databases setting, 16 by default (0 to 15). Exiting (Redis client db-test).',
        );
        expect(await direct.dbsize()).toBe(0);
        expect(ours.status).toBe('end');
      } finally {
        ours.disconnect();
        direct.disconnect();
      }
    },
  );

  it('does not stop the process when a SELECT is refused for a passing reason: it connects again and selects', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const admin = new Redis(server.url);
    const busy = new Redis(server.url);
    const ours = createRedis(`${server.url}/1`, { name: 'db-busy-test' });
    const direct = new Redis(`${server.url}/1`);
    try {
      expect(await ours.set('db-busy', 'before')).toBe('OK');
      await admin.config('SET', 'busy-reply-threshold', '100');
      // A script of another client running for 1.5 s: Redis answers BUSY to all else meanwhile.
      const running = busy
        .eval(
          "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; " +
            "while true do local n = redis.call('TIME'); if n[1] * 1e6 + n[2] - s > 1500000 then break end end",
          0,
        )
        .catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The connection drops meanwhile (a network blip) and is made again while Redis is busy.
      ours.stream.destroy();
      await running;
      await eventually(async () => expect(await ours.set('db-busy', 'after')).toBe('OK'));
      // On its own database, not on 0.
      expect(await direct.get('db-busy')).toBe('after');
      expect(await admin.get('db-busy')).toBeNull();
      expect(exit).not.toHaveBeenCalled();
    } finally {
      await admin.config('SET', 'busy-reply-threshold', '5000').catch(() => undefined);
      ours.disconnect();
      busy.disconnect();
      direct.disconnect();
      admin.disconnect();
    }
  });

  it("stops the process too when a copy of the client (duplicate, as BullMQ makes a Worker's blocking connection) is refused its database, and runs nothing of the copy's on database 0", async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const ours = createRedis(`${server.url}/5`, { name: 'db-dup-test', blocking: true });
    const copy = ours.duplicate({ maxRetriesPerRequest: null });
    const direct = new Redis(server.url);
    try {
      const write = copy.set('db-dup-test', 'lost').then(
        () => 'written',
        (err: Error) => err.message,
      );
      // Once for the client, once for its copy: each connection is refused on its own.
      await eventually(() => expect(exit).toHaveBeenCalledTimes(2));
      expect(exit).toHaveBeenLastCalledWith(1);
      expect(await write).toBe('Connection is closed.');
      expect(logged).toHaveBeenLastCalledWith(
        'REDIS_URL: the Redis server refuses database 5 (ERR DB index is out of range); it has as many as its databases setting, 16 by default (0 to 15). Exiting (Redis client db-dup-test).',
      );
      expect(await direct.dbsize()).toBe(0);
      expect(copy.status).toBe('end');
    } finally {
      ours.disconnect();
      copy.disconnect();
      direct.disconnect();
    }
  });

  it('makes a copy of the client (duplicate) connect again and select when its SELECT is refused for a passing reason, not go on on database 0', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const admin = new Redis(server.url);
    // SELECT refused while INFO (ioredis's ready check) is answered, as an ACL being changed
    // does: a BUSY or a LOADING fails the ready check too, and ioredis reconnects by itself.
    await admin.acl('SETUSER', 'dup', 'on', '>pw', '~*', '&*', '+@all', '-select');
    const ours = createRedis(`${server.url.replace('redis://', 'redis://dup:pw@')}/1`, {
      name: 'db-dup-acl-test',
      blocking: true,
    });
    // A copy of a copy too: BullMQ may duplicate a client it was itself given as a copy.
    const copy = ours.duplicate().duplicate();
    const direct = new Redis(`${server.url}/1`);
    try {
      const write = copy.set('db-dup-acl', 'written');
      await new Promise((resolve) => setTimeout(resolve, 500));
      await admin.acl('SETUSER', 'dup', '+select');
      expect(await write).toBe('OK');
      expect(await direct.get('db-dup-acl')).toBe('written');
      expect(await admin.get('db-dup-acl')).toBeNull();
      expect(exit).not.toHaveBeenCalled();
    } finally {
      ours.disconnect();
      copy.disconnect();
      direct.disconnect();
      await admin.acl('DELUSER', 'dup').catch(() => undefined);
      admin.disconnect();
    }
  });

  it('does not stop the process when the password is wrong: it waits, as with database 0', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const admin = new Redis(server.url);
    await admin.config('SET', 'requirepass', 'right');
    const ours = createRedis(`${server.url.replace('redis://', 'redis://:wrong@')}/1`, {
      name: 'db-wrongpass-test',
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(exit).not.toHaveBeenCalled();
    } finally {
      ours.disconnect();
      await admin.config('SET', 'requirepass', '').catch(() => undefined);
      admin.disconnect();
    }
  });

  it('takes a database the server has', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const ours = createRedis(`${server.url}/1`, { name: 'db-ok-test' });
    const direct = new Redis(`${server.url}/1`);
    try {
      expect(await ours.set('db-ok', 'kept')).toBe('OK');
      expect(await direct.get('db-ok')).toBe('kept');
      expect(exit).not.toHaveBeenCalled();
    } finally {
      ours.disconnect();
      direct.disconnect();
    }
  });
});
