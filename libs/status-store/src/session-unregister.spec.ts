import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig } from '@app/config';
import { EventScriptArgs } from './event-script.js';
import { PacingRepository } from './pacing.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { localDay } from './session-limits.js';
import { SessionRepository } from './session.repository.js';
import { eventually } from '../../../test/support/eventually.js';
import type { WebhookTarget } from './webhook-event.js';
import { WebhookRepository, webhookTargetId } from './webhook.repository.js';
import { registerWithTarget, sessionTarget } from '../../../test/support/session-targets.js';

/** What a deleted session leaves for one made again with the same id, on real Redis. */
describe('SessionRepository.unregister', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let sessions: SessionRepository;
  let pacing: PacingRepository;
  let subscriber: RedisSubscriber;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'unregister-test' });
    keys = new RedisKeys(`u${randomBytes(5).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    subscriber = new RedisSubscriber(config);
    sessions = new SessionRepository(
      redis,
      keys,
      new EventScriptArgs(keys, [], 60_000),
      subscriber,
    );
    pacing = new PacingRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  // The local dates furthest from UTC's, either way, and UTC's own.
  it.each(['Pacific/Kiritimati', 'UTC', 'Pacific/Pago_Pago'])(
    "leaves no daily count, nor the last send's time, to a session made again (its limits in %s)",
    async (timeZone) => {
      const id = `again-${timeZone.replace('/', '-')}`;
      const today = localDay(timeZone, new Date());
      await sessions.register(id);
      await pacing.countSend(id, today, 'm1');
      await pacing.recordSend(id, 60_000);
      expect(await pacing.sentOn(id, today)).toBe(1);
      await sessions.unregister(id);
      await sessions.register(id);
      expect(await pacing.sentOn(id, today)).toBe(0);
      expect(await redis.exists(keys.lastSend(id), keys.capCounted(id))).toBe(0);
    },
  );

  it("keeps a deleted session's targets for the deliveries of its events still waiting, each picked by its event's sequence; a session made again gets its own, and a delete with nothing waiting keeps none", async () => {
    const webhooks = new WebhookRepository(redis, keys, loadAppConfig({ readEnvFile: false }));
    const target = (url: string, secret: string) => sessionTarget(url, secret, ['message.status']);
    /** The session registered with `targets`, its events numbered up to `sequence`. */
    const registration = async (id: string, targets: WebhookTarget[], sequence: number) => {
      await sessions.register(id);
      await redis.set(keys.webhookTargets(id), JSON.stringify(targets));
      await redis.set(keys.webhookSequence(id), sequence);
    };
    const secretAt = async (id: string, url: string, sequence: number | undefined) =>
      (
        await webhooks.deliveryTargets({ sessionId: id, targetId: webhookTargetId('session', url) })
      ).at(sequence)?.secret ?? null;
    const [a, b] = ['https://a.example/hook', 'https://b.example/hook'];
    const chainOf = (url: string) => keys.webhookChain('retired', webhookTargetId('session', url));

    // Events 1 to 3 for a and b; a delivery to a still waits (b's line is empty).
    await registration('retired', [target(a, 'whsec_a1'), target(b, 'whsec_b1')], 3);
    await redis.rpush(chainOf(a), 'evt_3_a');
    expect(await sessions.unregister('retired')).toBe(true);
    expect(await redis.exists(keys.webhookTargets('retired'))).toBe(0);
    expect(await secretAt('retired', a, 2)).toBe('whsec_a1');
    expect(await secretAt('retired', a, 4)).toBeNull();
    expect(
      (await webhooks.deliveryTargets({ sessionId: 'retired', targetId: 's0' })).sessionDeleted,
    ).toBe(true);

    // Made again: a with another secret (events 4 and 5), deleted again with a's line waiting.
    await registration('retired', [target(a, 'whsec_a2')], 5);
    expect(await secretAt('retired', a, 3)).toBe('whsec_a1');
    expect(await secretAt('retired', a, 4)).toBe('whsec_a2');
    expect(await secretAt('retired', b, 4)).toBeNull();
    expect(await sessions.unregister('retired')).toBe(true);
    // Made a third time, without targets: each event's delivery goes to its own registration's.
    await registration('retired', [], 5);
    expect(await secretAt('retired', a, 1)).toBe('whsec_a1');
    expect(await secretAt('retired', b, 3)).toBe('whsec_b1');
    expect(await secretAt('retired', a, 5)).toBe('whsec_a2');
    expect(await secretAt('retired', b, 5)).toBeNull();
    expect(await secretAt('retired', a, 6)).toBeNull();
    expect(await redis.pttl(keys.webhookRetiredTargets('retired'))).toBeGreaterThan(0);

    // Nothing waiting for its targets: none kept.
    await registration('idle', [target(a, 'whsec_idle')], 2);
    expect(await sessions.unregister('idle')).toBe(true);
    expect(await redis.exists(keys.webhookRetiredTargets('idle'))).toBe(0);
    expect(await secretAt('idle', a, 1)).toBeNull();
  });

  /**
   * A session made again with the id, its target at the URL the old one's had, with another
   * secret: the old registration's events, their targets not (or no longer) kept aside, go to
   * no target, never to the new one's. Real events (session.status), so real sequences.
   */
  describe('an event of a deleted registration whose targets are not kept aside', () => {
    const url = 'https://same.example/hook';
    const targetId = webhookTargetId('session', url);
    let webhooks: WebhookRepository;
    beforeAll(() => {
      webhooks = new WebhookRepository(redis, keys, loadAppConfig({ readEnvFile: false }));
    });

    /** Registered with its target at `url`, signed with `secret`. */
    const registration = async (id: string, secret: string) => {
      await registerWithTarget(sessions, webhooks, id, sessionTarget(url, secret));
    };
    /** An event of the session now: its delivery to `url` (the newest in its line). */
    const event = async (id: string) => {
      await sessions.setObserved(id, { status: 'QR', qr: randomBytes(4).toString('hex') }, 'w1');
      const deliveryId = (await redis.lrange(keys.webhookChain(id, targetId), -1, -1))[0];
      const delivery = (await webhooks.delivery(deliveryId))!;
      return { delivery, sequence: (await webhooks.event(delivery.eventId))!.sequence };
    };

    it('its failed delivery, nothing waiting at the delete (none kept): no target', async () => {
      await registration('remade', 'whsec_old');
      const old = await event('remade');
      await webhooks.markFailed(old.delivery, { statusCode: 500, error: 'refused' });
      await webhooks.finish(old.delivery);
      expect(await sessions.unregister('remade')).toBe(true);
      expect(await redis.exists(keys.webhookRetiredTargets('remade'))).toBe(0);

      await registration('remade', 'whsec_new');
      const now = await event('remade');
      const targets = await webhooks.deliveryTargets(old.delivery);
      expect(targets.at(old.sequence)).toBeNull();
      expect(targets.ofEarlierRegistration(old.sequence)).toBe(true);
      expect(targets.at(now.sequence)?.secret).toBe('whsec_new');
      expect(targets.ofEarlierRegistration(now.sequence)).toBe(false);
    });

    it('its retrying delivery, kept past the targets kept aside for it (WEBHOOK_RETENTION_MS from the delete): no target once they expire', async () => {
      // Its targets are kept 300 ms after the delete; the delivery, retrying, far longer.
      const briefly = new SessionRepository(
        redis,
        keys,
        new EventScriptArgs(keys, [], 300),
        subscriber,
      );
      await registration('outlived', 'whsec_old');
      const old = await event('outlived');
      await webhooks.markRetrying(old.delivery, {
        statusCode: 503,
        error: 'unavailable',
        nextAttemptAt: new Date(Date.now() + 3_600_000),
      });
      expect(await briefly.unregister('outlived')).toBe(true);
      expect((await webhooks.deliveryTargets(old.delivery)).at(old.sequence)?.secret).toBe(
        'whsec_old',
      );

      // Made again at once: its event waits in the same line, behind the old one.
      await registration('outlived', 'whsec_new');
      const now = await event('outlived');
      expect(await redis.lrange(keys.webhookChain('outlived', targetId), 0, -1)).toEqual([
        old.delivery.id,
        now.delivery.id,
      ]);
      expect((await webhooks.deliveryTargets(old.delivery)).at(old.sequence)?.secret).toBe(
        'whsec_old',
      );
      await eventually(async () =>
        expect(await redis.exists(keys.webhookRetiredTargets('outlived'))).toBe(0),
      );
      expect(await webhooks.delivery(old.delivery.id)).not.toBeNull();
      const targets = await webhooks.deliveryTargets(old.delivery);
      expect(targets.at(old.sequence)).toBeNull();
      expect(targets.ofEarlierRegistration(old.sequence)).toBe(true);
      expect(targets.at(now.sequence)?.secret).toBe('whsec_new');
    });

    it('keeps aside the targets the session has when its keys go, read again when a PUT changed them after they were read', async () => {
      const other = 'https://other.example/hook';
      await registration('changing', 'whsec_old');
      const old = await event('changing');
      const put = [sessionTarget(other, 'whsec_put')];
      // The targets change just after the purge read them; a delivery waits at the new one.
      const get = redis.get.bind(redis);
      const read = vi.spyOn(redis, 'get').mockImplementationOnce((async (key: string) => {
        const value = await get(key);
        await webhooks.setSessionTargets('changing', put);
        await redis.rpush(keys.webhookChain('changing', put[0].id), 'evt_x_waiting');
        return value;
      }) as never);
      try {
        expect(await sessions.unregister('changing')).toBe(true);
      } finally {
        read.mockRestore();
      }
      expect(Object.values(await redis.hgetall(keys.webhookRetiredTargets('changing')))).toEqual([
        JSON.stringify(put),
      ]);
      expect((await webhooks.deliveryTargets(old.delivery)).at(old.sequence)).toBeNull();
    });

    it('a session registered by the version before (no boundary kept): its current targets, as then', async () => {
      await registration('older', 'whsec_old');
      const old = await event('older');
      await webhooks.markFailed(old.delivery, { statusCode: 500, error: 'refused' });
      await webhooks.finish(old.delivery);
      expect(await sessions.unregister('older')).toBe(true);
      await registration('older', 'whsec_new');
      await redis.hdel(keys.session('older'), 'eventsFrom');
      const targets = await webhooks.deliveryTargets(old.delivery);
      expect(targets.at(old.sequence)?.secret).toBe('whsec_new');
      expect(targets.ofEarlierRegistration(old.sequence)).toBe(false);
    });
  });

  /**
   * Listed, and what the send path finds (its takes_sends: a registered hash not being deleted).
   */
  const takesSends = async (id: string) => {
    const [member, [createdAt, desired]] = await Promise.all([
      redis.sismember(keys.sessions(), id),
      redis.hmget(keys.session(id), 'createdAt', 'desired'),
    ]);
    return member === 1 && createdAt !== null && desired !== 'deleted';
  };

  /** A repository on `redis` that runs `between(n)` before its n-th round trip (n from 1). */
  function interrupted(between: (trip: number) => Promise<void>): SessionRepository {
    let trips = 0;
    const before = () => between(++trips);
    const client = new Proxy(redis, {
      get(target, prop) {
        const value: unknown = Reflect.get(target, prop);
        if (typeof value !== 'function') return value;
        const command = value as (...args: unknown[]) => unknown;
        if (prop === 'multi' || prop === 'pipeline')
          return (...args: unknown[]) => {
            const batch = command.apply(target, args) as { exec(): Promise<unknown> };
            const exec = batch.exec.bind(batch);
            batch.exec = async () => {
              await before();
              return exec();
            };
            return batch;
          };
        if (typeof prop === 'string' && ROUND_TRIPS.has(prop))
          return async (...args: unknown[]) => {
            await before();
            return command.apply(target, args);
          };
        return command.bind(target);
      },
    });
    return new SessionRepository(client, keys, new EventScriptArgs(keys, [], 60_000), subscriber);
  }

  /** A session registered at `createdAt` and marked deleted, as its purge finds it. */
  async function deleted(id: string, createdAt: Date): Promise<string> {
    await sessions.register(id, createdAt);
    await sessions.setDesired(id, 'deleted');
    return createdAt.toISOString();
  }

  /**
   * Either the session made again at `remadeAt`, whole (its hash, registered, not listed as
   * deleted, what was written to it since kept), or none at all.
   */
  async function expectWholeOrGone(id: string, made: boolean, remadeAt: Date): Promise<void> {
    const at = `${id}, made again: ${made}`;
    const [member, isDeleted, hash, targets] = await Promise.all([
      sessions.exists(id),
      redis.hexists(keys.deletedSessions(), id),
      redis.hgetall(keys.session(id)),
      redis.get(keys.webhookTargets(id)),
    ]);
    if (made)
      expect({ member, isDeleted, hash, targets }, at).toMatchObject({
        member: true,
        isDeleted: 0,
        hash: { createdAt: remadeAt.toISOString(), desired: 'running' },
        targets: '[]',
      });
    else expect({ member, hash }, at).toEqual({ member: false, hash: {} });
  }

  it.each([
    ['a create', false],
    ["another worker's purge of it to its end, then a create", true],
  ])(
    'leaves a session made again while it is purged whole, or gone, whichever step of the purge %s comes before',
    async (_, purgedFirst) => {
      for (let trip = 1; ; trip++) {
        const id = `remade-${purgedFirst ? 'twice' : 'once'}-${trip}`;
        const createdAt = await deleted(id, new Date(Date.now() - 60_000));
        const remadeAt = new Date();
        let made = false;
        let reached = false;
        const purge = interrupted(async (n) => {
          if (n !== trip) return;
          reached = true;
          if (purgedFirst) await sessions.unregister(id, createdAt);
          made = await sessions.register(id, remadeAt);
          if (made) await redis.set(keys.webhookTargets(id), '[]');
        });
        await purge.unregister(id, createdAt);
        if (!reached) break;
        await expectWholeOrGone(id, made, remadeAt);
      }
    },
  );

  it('leaves a session whose purge ends while it is made again whole, or gone, whichever step of the making it comes before', async () => {
    for (let trip = 1; ; trip++) {
      const id = `making-${trip}`;
      const createdAt = await deleted(id, new Date(Date.now() - 60_000));
      const remadeAt = new Date();
      let reached = false;
      const making = interrupted(async (n) => {
        if (n !== trip) return;
        reached = true;
        await sessions.unregister(id, createdAt);
      });
      const made = await making.register(id, remadeAt);
      if (made) await redis.set(keys.webhookTargets(id), '[]');
      // Refused while the session was still being deleted: its purge ends after.
      else if (!reached) await sessions.unregister(id, createdAt);
      await expectWholeOrGone(id, made, remadeAt);
      if (!reached) break;
    }
  });

  it('leaves a session made again after its purge stopped, at any step (its worker died), whole, or gone once the purge is done', async () => {
    for (let trip = 1; ; trip++) {
      const id = `died-${trip}`;
      const createdAt = await deleted(id, new Date(Date.now() - 60_000));
      const remadeAt = new Date();
      let reached = false;
      const purge = interrupted(async (n) => {
        if (n !== trip) return;
        reached = true;
        throw new Error('the worker died');
      });
      await purge.unregister(id, createdAt).catch(() => undefined);
      if (!reached) break;
      const made = await sessions.register(id, remadeAt);
      if (made) await redis.set(keys.webhookTargets(id), '[]');
      // The purge again (its next pass, or another worker's), with the registration it knew.
      await sessions.unregister(id, createdAt);
      await expectWholeOrGone(id, made, remadeAt);
    }
  });

  /**
   * Runs a purge of the registration made at `createdAt` that stalls (another worker took its
   * lease over) before its round trip `ended`: meanwhile that other worker's purge ends it and
   * the session is made again at `remadeAt`, then `later` runs before its round trip `after`.
   * Which of the two the purge came to (it may end before).
   */
  async function stalledPurge(
    id: string,
    createdAt: string,
    remadeAt: Date,
    ended: number,
    after: number,
    later: () => Promise<void>,
  ): Promise<{ ended: boolean; after: boolean }> {
    const reached = { ended: false, after: false };
    const purge = interrupted(async (n) => {
      if (n === ended) {
        reached.ended = true;
        await sessions.unregister(id, createdAt);
        expect(await sessions.register(id, remadeAt)).toBe(true);
        await redis.set(keys.webhookTargets(id), '[]');
      }
      if (n === after) {
        reached.after = true;
        await later();
      }
    });
    await purge.unregister(id, createdAt).catch(() => undefined);
    return reached;
  }

  it.each([
    [' ', false],
    [' a create sent again meanwhile told it exists, ', true],
  ])(
    'leaves a session made again whole and its tombstone off when a purge of the old one stalled past its lease,%swhichever round trip it stalled before and whichever it dies before',
    async (_, retry) => {
      for (let ended = 1, stalled = true; stalled; ended++) {
        for (let died = ended; ; died++) {
          const id = `stalled-${retry}-${ended}-${died}`;
          const createdAt = await deleted(id, new Date(Date.now() - 60_000));
          const remadeAt = new Date();
          let retried: boolean | undefined;
          const reached = await stalledPurge(id, createdAt, remadeAt, ended, died, async () => {
            if (retry) retried = await sessions.register(id);
            throw new Error('the worker died');
          });
          stalled = reached.ended;
          if (!stalled) break;
          const at = `stalled before ${ended}, died before ${died}`;
          if (reached.after && retry) expect(retried, at).toBe(false);
          await expectWholeOrGone(id, true, remadeAt);
          expect(await takesSends(id), at).toBe(true);
          // A worker booting with its login on disk keeps it.
          expect(await sessions.registerFound(id), at).toBe('known');
          if (!reached.after) break;
        }
      }
    },
  );

  it('leaves a session made again and then deleted and purged gone when a purge of the old one stalled past its lease, whichever of its round trips the two come before', async () => {
    for (let ended = 1, stalled = true; stalled; ended++) {
      for (let purged = ended; ; purged++) {
        const id = `stalled-gone-${ended}-${purged}`;
        const createdAt = await deleted(id, new Date(Date.now() - 60_000));
        const remadeAt = new Date();
        const remade = remadeAt.toISOString();
        const reached = await stalledPurge(id, createdAt, remadeAt, ended, purged, async () => {
          await sessions.setDesired(id, 'deleted');
          expect(await sessions.unregister(id, remade)).toBe(true);
        });
        stalled = reached.ended;
        if (!reached.after) break;
        const at = `stalled before ${ended}, purged before ${purged}`;
        await expectWholeOrGone(id, false, remadeAt);
        expect(await redis.hexists(keys.deletedSessions(), id), at).toBe(1);
        expect(await takesSends(id), at).toBe(false);
        expect(await sessions.registerFound(id), at).toBe('deleted');
      }
    }
  });

  it('leaves a session deleted while a purge of an older one stalled to its own purge (its login and queue): a create meanwhile is told it is still being deleted, whichever round trips of the stalled purge the making and the deleting come before', async () => {
    for (let ended = 1, stalled = true; stalled; ended++) {
      for (let deletedAt = ended; ; deletedAt++) {
        const id = `stalled-deleting-${ended}-${deletedAt}`;
        const createdAt = await deleted(id, new Date(Date.now() - 60_000));
        const remadeAt = new Date(Date.now() - 30_000);
        const remade = remadeAt.toISOString();
        let created: boolean | undefined;
        const reached = await stalledPurge(id, createdAt, remadeAt, ended, deletedAt, async () => {
          // The user deletes the session made again (its login and queue still there), and
          // makes it once more before any worker purged it.
          await sessions.setDesired(id, 'deleted');
          await redis.rpush(keys.sandboxIncoming(id), '{}');
          created = await sessions.register(id);
        });
        stalled = reached.ended;
        if (!reached.after) break;
        const at = `stalled before ${ended}, deleted before ${deletedAt}`;
        expect(created, at).toBe(false);
        expect(await redis.hmget(keys.session(id), 'createdAt', 'desired'), at).toEqual([
          remade,
          'deleted',
        ]);
        expect(await redis.llen(keys.sandboxIncoming(id)), at).toBe(1);
        // Listed, for a worker's pass to purge it: then it may be made again.
        expect(
          (await sessions.list([id])).map((s) => s.desired),
          at,
        ).toEqual(['deleted']);
        expect(await sessions.unregister(id, remade), at).toBe(true);
        expect(await sessions.register(id), at).toBe(true);
      }
    }
  });

  it('lists again, rather than forgets, a session marked deleted that the registry lost, and tells a create it is still being deleted', async () => {
    const id = 'lost-deleting';
    const createdAt = await deleted(id, new Date(Date.now() - 60_000));
    await redis.rpush(keys.sandboxIncoming(id), '{}');
    // A failover lost its registry entry (the root's slot) but not its hash (its shard's).
    await redis.srem(keys.sessions(), id);
    await redis.hdel(keys.sessionRegistrations(), id);
    expect(await sessions.register(id)).toBe(false);
    expect(await redis.hget(keys.session(id), 'createdAt')).toBe(createdAt);
    expect(await redis.llen(keys.sandboxIncoming(id))).toBe(1);
    expect((await sessions.list([id])).map((s) => s.desired)).toEqual(['deleted']);
    expect(await sessions.unregister(id, createdAt)).toBe(true);
    expect(await sessions.register(id)).toBe(true);
  });

  it('does not list again a session deleted and purged while a create or a boot that found it registered was between its two steps', async () => {
    for (const deletedSince of [false, true]) {
      const id = `found-${deletedSince}`;
      await sessions.register(id, new Date(Date.now() - 60_000));
      const createdAt = (await redis.hget(keys.session(id), 'createdAt'))!;
      let reached = false;
      const found = interrupted(async (n) => {
        if (n !== 2) return;
        reached = true;
        await sessions.setDesired(id, 'deleted');
        expect(await sessions.unregister(id, createdAt)).toBe(true);
        // And made again since, by a create that ended first.
        if (deletedSince) expect(await sessions.register(id)).toBe(true);
      });
      expect(await found.register(id, new Date()), `made since: ${deletedSince}`).toBe(false);
      expect(reached).toBe(true);
      if (deletedSince) {
        expect(await sessions.exists(id)).toBe(true);
        expect(await redis.hget(keys.sessionRegistrations(), id)).toBe(
          await redis.hget(keys.session(id), 'createdAt'),
        );
      } else {
        expect(await sessions.exists(id)).toBe(false);
        expect(await sessions.registerFound(id)).toBe('deleted');
      }
    }
  });

  /** The purge of the registration made at `createdAt`, stopped once its keys went (its worker died). */
  async function diedAfterForget(id: string, createdAt: string): Promise<void> {
    const purge = interrupted(async () => {
      if ((await redis.exists(keys.session(id))) === 0) throw new Error('the worker died');
    });
    await expect(purge.unregister(id, createdAt)).rejects.toThrow('the worker died');
    expect(await redis.hget(keys.deletedSessions(), id)).toBe(createdAt);
    expect(await sessions.exists(id)).toBe(true);
  }

  it('makes a session again, and purges it when deleted, after a purge that died past its keys, from a process whose clock is behind the one that made the deleted session', async () => {
    const id = 'skewed';
    const createdAt = await deleted(id, new Date(Date.now() - 60_000));
    await diedAfterForget(id, createdAt);
    // Made from a host whose clock is 30 s behind the one that made the deleted registration.
    const behind = new Date(Date.parse(createdAt) - 30_000);
    expect(await sessions.register(id, behind)).toBe(true);
    expect(await redis.hget(keys.sessionRegistrations(), id)).toBe(behind.toISOString());
    expect((await sessions.get(id))?.createdAt).toBe(behind.toISOString());
    await sessions.setDesired(id, 'deleted');
    expect(await sessions.unregister(id, behind.toISOString())).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
    expect(await sessions.register(id)).toBe(true);
  });

  it('does not list again a session deleted and purged while a create that found it registered was between its two steps, when a host whose clock is behind made it again since', async () => {
    const id = 'found-behind';
    const ahead = new Date(Date.now() + 60_000);
    const behind = new Date(Date.now() - 60_000);
    await sessions.register(id, ahead);
    const found = interrupted(async (n) => {
      if (n !== 2) return;
      await sessions.setDesired(id, 'deleted');
      expect(await sessions.unregister(id, ahead.toISOString())).toBe(true);
      expect(await sessions.register(id, behind)).toBe(true);
    });
    expect(await found.register(id)).toBe(false);
    expect(await redis.hget(keys.sessionRegistrations(), id)).toBe(behind.toISOString());
    await sessions.setDesired(id, 'deleted');
    expect(await sessions.unregister(id, behind.toISOString())).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
  });

  it('makes again a session whose hash its shard lost while the registry kept its registration', async () => {
    const id = 'shard-lost';
    await sessions.register(id, new Date(Date.now() - 60_000));
    await redis.del(keys.session(id));
    const remade = new Date(Date.now() - 120_000);
    expect(await sessions.register(id, remade)).toBe(true);
    expect(await redis.hget(keys.sessionRegistrations(), id)).toBe(remade.toISOString());
    await sessions.setDesired(id, 'deleted');
    expect(await sessions.unregister(id, remade.toISOString())).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
  });

  it('purges a session that a version keeping no registrations purged and made again, the registration kept beside the registry still the one before', async () => {
    const id = 'mixed';
    const before = new Date(Date.now() - 120_000);
    await sessions.register(id, before);
    // An older worker purges it: unlisted and tombstoned, its keys gone, its registration kept.
    await redis.srem(keys.sessions(), id);
    await redis.hset(keys.deletedSessions(), id, new Date(Date.now() - 90_000).toISOString());
    await redis.del(keys.session(id));
    // An older api makes it again.
    const remade = new Date(Date.now() - 60_000).toISOString();
    await redis.hset(
      keys.session(id),
      'desired',
      'running',
      'createdAt',
      remade,
      'status',
      'STOPPED',
    );
    await redis.sadd(keys.sessions(), id);
    await redis.hdel(keys.deletedSessions(), id);
    await redis.rpush(keys.sandboxIncoming(id), '{}');
    await sessions.setDesired(id, 'deleted');
    expect(await sessions.unregister(id, remade)).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
    expect(await redis.exists(keys.session(id), keys.sandboxIncoming(id))).toBe(0);
    expect(await redis.hget(keys.sessionRegistrations(), id)).toBeNull();
    expect(await sessions.registerFound(id)).toBe('deleted');
    expect(await sessions.register(id)).toBe(true);
  });

  it('leaves a session whose purge died after its keys went out of the ids listed, and a pass that lists the sessions ends its purge', async () => {
    const id = 'left-listed';
    const createdAt = await deleted(id, new Date(Date.now() - 60_000));
    await diedAfterForget(id, createdAt);
    expect(await sessions.ids()).not.toContain(id);
    expect(await sessions.exists(id)).toBe(true);
    expect(await sessions.list()).not.toContainEqual(expect.objectContaining({ id }));
    expect(await sessions.exists(id)).toBe(false);
    expect(await redis.hget(keys.sessionRegistrations(), id)).toBeNull();
    expect(await sessions.registerFound(id)).toBe('deleted');
    expect(await sessions.register(id)).toBe(true);
    expect(await sessions.ids()).toContain(id);
  });

  it('leaves a session whose purge died before its keys went listed, marked deleted, for a pass to purge it again, but out of the ids listed', async () => {
    const id = 'left-tombstoned';
    const createdAt = await deleted(id, new Date(Date.now() - 60_000));
    const purge = interrupted(async () => {
      if (await redis.hexists(keys.deletedSessions(), id)) throw new Error('the worker died');
    });
    await expect(purge.unregister(id, createdAt)).rejects.toThrow('the worker died');
    expect(await sessions.ids()).not.toContain(id);
    expect((await sessions.list()).filter((s) => s.id === id).map((s) => s.desired)).toEqual([
      'deleted',
    ]);
    expect(await sessions.unregister(id, createdAt)).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
  });

  it('does not unlist a session made again, deleted and tombstoned while a pass that found it left listed by a dead purge was ending that purge', async () => {
    const id = 'left-remade';
    const createdAt = await deleted(id, new Date(Date.now() - 60_000));
    await diedAfterForget(id, createdAt);
    const remade = new Date().toISOString();
    let reached = false;
    const pass = interrupted(async (n) => {
      // After the hashes were read, before the tombstones are.
      if (n !== 2) return;
      reached = true;
      await deleted(id, new Date(remade));
      const purge = interrupted(async () => {
        if ((await redis.hget(keys.deletedSessions(), id)) === remade)
          throw new Error('the worker died');
      });
      await expect(purge.unregister(id, remade)).rejects.toThrow('the worker died');
      expect(await redis.hget(keys.deletedSessions(), id)).toBe(remade);
    });
    await pass.list();
    expect(reached).toBe(true);
    expect(await sessions.exists(id)).toBe(true);
    expect((await sessions.list([id])).map((s) => s.createdAt)).toEqual([remade]);
    expect(await sessions.unregister(id, remade)).toBe(true);
    expect(await sessions.exists(id)).toBe(false);
  });

  it('makes a session once when two creates of it run at once, whichever step of one the other runs between', async () => {
    for (let trip = 1; ; trip++) {
      const id = `twice-${trip}`;
      let reached = false;
      let second: boolean | undefined;
      const first = await interrupted(async (n) => {
        if (n !== trip) return;
        reached = true;
        second = await sessions.register(id);
      }).register(id);
      const answers = reached ? [first, second] : [first];
      expect(answers.filter(Boolean), `between step ${trip}`).toHaveLength(1);
      expect(await sessions.exists(id)).toBe(true);
      if (!reached) {
        expect(await sessions.register(id)).toBe(false);
        break;
      }
    }
  });
});

/** The commands a SessionRepository sends itself (one round trip each). */
const ROUND_TRIPS = new Set([
  'hget',
  'hmget',
  'hgetall',
  'hexists',
  'hset',
  'hdel',
  'exists',
  'sismember',
  'sadd',
  'srem',
  'publish',
  'evalsha',
  'eval',
]);
