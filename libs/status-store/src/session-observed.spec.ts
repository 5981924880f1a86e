import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { eventually } from '../../../test/support/eventually.js';
import { RedisServer } from '../../../test/support/redis-server.js';
import { EventScriptArgs, type ScriptTarget } from './event-script.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { SANDBOX_INCOMING_LIMIT, SessionRepository } from './session.repository.js';

// Its own Redis: SCRIPT FLUSH would unload the scripts of every other test.
describe('SessionRepository.setObserved on a server that lost its scripts', () => {
  let server: RedisServer;
  let redis: Redis;
  let subscriber: RedisSubscriber;

  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false });
    // Without auto-pipelining: commands go out in the order they are called.
    redis = createRedis(server.url, { name: 'observed-test', blocking: true });
  });
  afterAll(async () => {
    await subscriber?.onApplicationShutdown();
    await redis?.quit();
    await server?.destroy();
  });

  it("writes a session's states in the order given, even when the first is sent again by its source", async () => {
    const keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    // The script's source, as the repository sends it after a NOSCRIPT; and, when armed, a
    // SCRIPT LOAD sent right behind the next EVALSHA (as another caller's first write would).
    let source = '';
    let loadBehindNext = false;
    const evals: string[] = [];
    const watched = new Proxy(redis, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver) as unknown;
        if (typeof value !== 'function') return value;
        if (property === 'eval')
          return (...args: unknown[]) => {
            source = args[0] as string;
            evals.push(String(args.at(-1)));
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        if (property === 'evalsha')
          return (...args: unknown[]) => {
            const sent = (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            if (loadBehindNext) {
              loadBehindNext = false;
              void target.script('LOAD', source);
            }
            return sent;
          };
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
    subscriber = new RedisSubscriber({ REDIS_URL: server.url } as never);
    const sessions = new SessionRepository(
      watched,
      keys,
      new EventScriptArgs(keys, [], 60_000),
      subscriber,
    );
    await sessions.register('main');
    await redis.script('FLUSH');
    await sessions.setObserved('main', { status: 'STARTING' }, 'w1');
    expect(source).not.toBe('');

    // The server loses the script again. QR is answered NOSCRIPT, the script is loaded right
    // behind it, and READY is asked for meanwhile: it must not land before QR's second send.
    await redis.script('FLUSH');
    evals.length = 0;
    loadBehindNext = true;
    const qr = sessions.setObserved('main', { status: 'QR', qr: 'code' }, 'w1');
    const ready = sessions.setObserved('main', { status: 'READY', phone: '1555' }, 'w1');
    await Promise.all([qr, ready]);
    // QR went out a second time, by its source: the case this is about.
    expect(evals).toHaveLength(1);
    expect(await redis.hget(keys.session('main'), 'status')).toBe('READY');
  });
});

/** A repository on the shared Redis, under a prefix of its own, removed after `use`. */
async function withSessions(
  use: (sessions: SessionRepository, redis: Redis, keys: RedisKeys) => Promise<void>,
  targets: ScriptTarget[] = [],
): Promise<void> {
  const redis = createRedis(inject('redisUrl'), { name: 'sessions-test' });
  const subscriber = new RedisSubscriber({ REDIS_URL: inject('redisUrl') } as never);
  const keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
  try {
    await use(
      new SessionRepository(redis, keys, new EventScriptArgs(keys, targets, 60_000), subscriber),
      redis,
      keys,
    );
  } finally {
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  }
}

describe('SessionRepository: the sandbox messages waiting for a session', () => {
  const text = (i: number) => ({
    engineMessageId: `sandbox_${i}`,
    from: '4915100000001',
    text: `${i}`,
  });
  /** The texts of the messages an engine that takes everything receives. */
  const receiveAll = async (sessions: SessionRepository, sessionId: string, count?: number) => {
    const texts: (string | undefined)[] = [];
    await sessions.receiveSandboxIncoming(
      sessionId,
      (message) => {
        texts.push(message.text);
        return true;
      },
      count,
    );
    return texts;
  };

  it('refuses a message while SANDBOX_INCOMING_LIMIT wait, keeping those, and takes one again once one was received', () =>
    withSessions(async (sessions, redis, keys) => {
      const roomy = 100 * 1024 * 1024;
      for (let i = 0; i < SANDBOX_INCOMING_LIMIT; i++)
        expect(await sessions.pushSandboxIncoming('never-ready', text(i), roomy)).toEqual({
          queued: true,
        });
      expect(
        await sessions.pushSandboxIncoming('never-ready', text(SANDBOX_INCOMING_LIMIT), roomy),
      ).toMatchObject({ queued: false, waiting: SANDBOX_INCOMING_LIMIT });
      expect(await redis.llen(keys.sandboxIncoming('never-ready'))).toBe(SANDBOX_INCOMING_LIMIT);
      expect(await receiveAll(sessions, 'never-ready', 1)).toEqual(['0']);
      expect(await sessions.pushSandboxIncoming('never-ready', text(-1), roomy)).toEqual({
        queued: true,
      });
    }));

  it('refuses a message that would make those waiting hold more than maxBytes, counting out those taken', () =>
    withSessions(async (sessions, redis, keys) => {
      const media = (i: number) => ({
        ...text(i),
        media: { mimetype: 'image/png', dataBase64: 'A'.repeat(10_000) },
      });
      const one = Buffer.byteLength(JSON.stringify(media(0)));
      const maxBytes = Math.floor(2.5 * one);
      expect(await sessions.pushSandboxIncoming('s', media(0), maxBytes)).toEqual({ queued: true });
      expect(await sessions.pushSandboxIncoming('s', media(1), maxBytes)).toEqual({ queued: true });
      expect(await sessions.pushSandboxIncoming('s', media(2), maxBytes)).toEqual({
        queued: false,
        waiting: 2,
        bytes: 2 * one,
      });
      expect(await receiveAll(sessions, 's', 1)).toEqual(['0']);
      expect(await sessions.pushSandboxIncoming('s', media(2), maxBytes)).toEqual({ queued: true });
      expect(await receiveAll(sessions, 's')).toEqual(['1', '2']);
      // All taken: nothing is left counted.
      expect(await redis.exists(keys.sandboxIncoming('s'), keys.sandboxIncomingBytes('s'))).toBe(0);
      expect(await sessions.pushSandboxIncoming('s', media(3), maxBytes)).toEqual({ queued: true });
      await sessions.unregister('s');
      expect(await redis.exists(keys.sandboxIncoming('s'), keys.sandboxIncomingBytes('s'))).toBe(0);
    }));

  it('takes a message out only once the engine received it: those after one it could not take wait, counted', () =>
    withSessions(async (sessions, redis, keys) => {
      for (let i = 0; i < 4; i++) await sessions.pushSandboxIncoming('s', text(i), 1_000_000);
      const bytes = async () => Number(await redis.get(keys.sandboxIncomingBytes('s')));
      const all = await bytes();
      // The engine stops after the first: it takes no more.
      let ready = true;
      const received = await sessions.receiveSandboxIncoming('s', (message) => {
        if (!ready) return false;
        ready = message.text !== '0';
        return true;
      });
      expect(received).toBe(1);
      expect(await bytes()).toBe(all - Buffer.byteLength(JSON.stringify(text(0))));
      // One that throws (an engine no longer READY) is not taken either.
      await expect(
        sessions.receiveSandboxIncoming('s', (message) => {
          if (message.text === '2') throw new Error('sandbox session is not ready');
          return true;
        }),
      ).rejects.toThrow('not ready');
      expect(await receiveAll(sessions, 's')).toEqual(['2', '3']);
      expect(await redis.exists(keys.sandboxIncoming('s'), keys.sandboxIncomingBytes('s'))).toBe(0);
    }));

  it('takes a message out only once receive has answered for it: a driver killed while one is recorded leaves them all', () =>
    withSessions(async (sessions, redis, keys) => {
      for (let i = 0; i < 3; i++) await sessions.pushSandboxIncoming('s', text(i), 1_000_000);
      const handed: (string | undefined)[] = [];
      void sessions.receiveSandboxIncoming('s', (message) => {
        handed.push(message.text);
        // The write of '1' never ends: its worker is killed meanwhile.
        return message.text === '0' ? Promise.resolve(true) : new Promise<boolean>(() => {});
      });
      await eventually(() => expect(handed).toEqual(['0', '1']));
      expect(await redis.llen(keys.sandboxIncoming('s'))).toBe(3);
      // The session's next driver is handed them all again, '0' too (recorded once by its id).
      expect(await receiveAll(sessions, 's')).toEqual(['0', '1', '2']);
    }));

  it('takes out only what it received when two drivers of a handover read the same messages', () =>
    withSessions(async (sessions) => {
      for (let i = 0; i < 4; i++) await sessions.pushSandboxIncoming('s', text(i), 1_000_000);
      const seen: string[] = [];
      let second: Promise<number> | undefined;
      // The old driver reads 0 and 1; the new one reads them too before the old takes them out.
      const first = await sessions.receiveSandboxIncoming(
        's',
        (message) => {
          seen.push(`old ${message.text}`);
          if (message.text === '1')
            second = sessions.receiveSandboxIncoming(
              's',
              (again) => {
                seen.push(`new ${again.text}`);
                return true;
              },
              2,
            );
          return true;
        },
        2,
      );
      expect(first).toBe(2);
      expect(await second).toBe(2);
      expect(seen).toEqual(['old 0', 'old 1', 'new 0', 'new 1']);
      // 2 and 3, received by neither, still wait.
      expect(await receiveAll(sessions, 's')).toEqual(['2', '3']);
    }));
});

describe("SessionRepository: only the session's last claimant writes its state", () => {
  it('drops a late state of the worker that handed the session over, once another claimed it', () =>
    withSessions(async (sessions, redis, keys) => {
      await sessions.register('p1');
      // Never claimed (written before claims were): whoever drives it writes.
      await sessions.setObserved('p1', { status: 'STARTING' }, 'w0');
      expect(await redis.hget(keys.session('p1'), 'status')).toBe('STARTING');
      expect(await sessions.claim('p1', 'w1')).toBe(true);
      await sessions.setObserved('p1', { status: 'FAILED', lastError: 'no launch' }, 'w1');
      // Claimed again by its claimant (a lease taken back): nothing changed hands.
      expect(await sessions.claim('p1', 'w1')).toBe(false);
      // w1 hands it over; w2 takes its lease, claims it and drives it to READY.
      expect(await sessions.claim('p1', 'w2')).toBe(true);
      await sessions.setObserved('p1', { status: 'READY', phone: '1555' }, 'w2');
      // w1's stopping engine reports STOPPED only now: not written over READY.
      await sessions.setObserved('p1', { status: 'STOPPED' }, 'w1');
      expect(await redis.hmget(keys.session('p1'), 'status', 'worker', 'phone')).toEqual([
        'READY',
        'w2',
        '1555',
      ]);
      // A claim of a deleted session leaves no half hash behind.
      expect(await sessions.claim('gone', 'w2')).toBe(false);
      expect(await redis.exists(keys.session('gone'))).toBe(0);
    }));
});

describe('SessionRepository.setObserved sent again', () => {
  it('writes a state tried again with the same writeId once, with one session.status event', () =>
    withSessions(
      async (sessions, redis, keys) => {
        await sessions.register('main');
        const events = async () => (await redis.keys(keys.recordPattern('wh:event'))).length;
        const reported = new Date('2026-12-04T10:00:00.000Z');
        const ready = { status: 'READY' } as const;
        await sessions.setObserved('main', ready, 'w1', reported, { writeId: 'a' });
        expect(await events()).toBe(1);
        // Its answer was lost; the recorder sends it again.
        await sessions.setObserved('main', ready, 'w1', reported, { writeId: 'a' });
        expect(await events()).toBe(1);
        // The next state is a change of its own.
        await sessions.setObserved('main', { status: 'STOPPED' }, 'w1', new Date(), {
          writeId: 'b',
        });
        expect(await events()).toBe(2);
      },
      [{ id: 'hook', url: 'https://example.test/hook', events: ['session.status'] }],
    ));
});
