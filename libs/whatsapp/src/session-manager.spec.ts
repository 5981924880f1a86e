import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, rm, symlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { Test } from '@nestjs/testing';
import { inject, onTestFinished, vi } from 'vitest';
import { AppConfig, AppConfigModule } from '@app/config';
import {
  LeaseRepository,
  REDIS,
  RedisKeys,
  SessionRepository,
  StatusStoreModule,
  WorkerRepository,
} from '@app/status-store';
import type { Redis } from 'ioredis';
import type { INestApplicationContext } from '@nestjs/common';
import { eventually } from '../../../test/support/eventually.js';
import { EngineFactory } from './engine-factory.js';
import { backUpWanted, type BackUpWanted, type EngineEvents, type StopOptions } from './engine.js';
import { AuthStore } from './auth-store.js';
import {
  DRAIN_CONCURRENCY,
  SessionManager,
  fairShare,
  sessionsToHandOver,
} from './session-manager.service.js';
import { PROBE_MS, StartHealth } from './start-health.js';
import { EngineEventRecorder } from './engine-event-recorder.js';
import { WORKER_ID } from './whatsapp.tokens.js';

/** An engine that stays STARTING until the test lets it show a QR. */
class HeldEngine extends EventEmitter<EngineEvents> {
  readonly kind = 'sandbox' as const;
  constructor(
    readonly sessionId: string,
    private readonly starting: Set<string>,
  ) {
    super();
  }
  async start() {
    this.starting.add(this.sessionId);
    this.emit('state', { status: 'STARTING' });
  }
  release() {
    this.starting.delete(this.sessionId);
    this.emit('state', { status: 'QR', qr: 'qr' });
  }
  async stop() {
    this.emit('state', { status: 'STOPPED' });
  }
  async logout() {}
  async sendText(): Promise<string> {
    return '';
  }
  async sendMedia(): Promise<string> {
    return '';
  }
  async findSentMessages(): Promise<string[]> {
    return [];
  }
  async requestPairingCode(): Promise<string> {
    return '';
  }
}

describe('SessionManager', () => {
  let app: INestApplicationContext;
  const starting = new Set<string>();
  const engines = new Map<string, HeldEngine>();
  let maxStarting = 0;

  beforeAll(async () => {
    const prefix = `t${randomBytes(5).toString('hex')}`;
    const moduleRef = await Test.createTestingModule({
      imports: [
        AppConfigModule.forRoot({
          readEnvFile: false,
          overrides: {
            REDIS_URL: inject('redisUrl'),
            REDIS_PREFIX: prefix,
            SESSION_START_CONCURRENCY: '2',
            WORKER_HEARTBEAT_MS: '60000',
            WWEBJS_DATA_DIR: `/tmp/${prefix}`,
          },
        }),
        StatusStoreModule,
      ],
      providers: [
        SessionManager,
        EngineEventRecorder,
        { provide: WORKER_ID, useValue: 'worker-under-test' },
        { provide: AuthStore, useValue: new AuthStore(null, 'local') },
        {
          provide: EngineFactory,
          useValue: {
            create: (sessionId: string) => {
              const engine = new HeldEngine(sessionId, starting);
              engine.on('state', () => (maxStarting = Math.max(maxStarting, starting.size)));
              engines.set(sessionId, engine);
              return engine;
            },
          },
        },
      ],
    }).compile();
    app = await moduleRef.init();
  });
  afterAll(async () => {
    await app.get(SessionManager).onApplicationShutdown();
    const redis = app.get<Redis>(REDIS);
    const keys = await redis.keys(app.get(RedisKeys).pattern());
    if (keys.length) await redis.del(...keys);
    await app.close();
  });

  /** Registers session `id` and waits until this worker drives it; its engine. */
  async function driven(id: string): Promise<HeldEngine> {
    const manager = app.get(SessionManager);
    await app.get(SessionRepository).register(id);
    await manager.reconcile('all');
    await eventually(() => expect(manager.engine(id)).toBeDefined());
    return engines.get(id)!;
  }

  /**
   * A heartbeat that finds the lease of `id` (driven here) run out with nobody holding it, its
   * taking back done by `acquire`.
   */
  async function tickAfterLapse(id: string, acquire: LeaseRepository['acquire']): Promise<void> {
    await app.get<Redis>(REDIS).del(app.get(RedisKeys).lease(id));
    const acquiring = vi.spyOn(app.get(LeaseRepository), 'acquire').mockImplementation(acquire);
    try {
      await (app.get(SessionManager) as unknown as { tick(): Promise<void> }).tick();
    } finally {
      acquiring.mockRestore();
    }
  }

  it('starts sessions SESSION_START_CONCURRENCY at a time, each holding its slot until it leaves STARTING', async () => {
    const sessions = app.get(SessionRepository);
    for (const id of ['a', 'b', 'c', 'd', 'e']) await sessions.register(id);
    await app.get(SessionManager).startAll();
    // main + a..e = 6 sessions; only 2 may be starting at once.
    await eventually(() => expect(starting.size).toBe(2));
    while (engines.size < 6 || starting.size > 0) {
      const next = [...starting][0];
      if (next) engines.get(next)!.release();
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    expect(engines.size).toBe(6);
    expect(maxStarting).toBe(2);
  });

  it('claims a session it takes before its engine reports: the late states of its last owner are not written', async () => {
    const sessions = app.get(SessionRepository);
    const redis = app.get<Redis>(REDIS);
    const key = app.get(RedisKeys).session('claimed');
    await sessions.register('claimed');
    // Another worker drove it and handed it over; its engine is still stopping.
    await sessions.claim('claimed', 'previous-owner');
    await app.get(SessionManager).startAll();
    await eventually(async () =>
      expect(await redis.hmget(key, 'status', 'worker', 'owner')).toEqual([
        'STARTING',
        'worker-under-test',
        'worker-under-test',
      ]),
    );
    await sessions.setObserved('claimed', { status: 'STOPPED' }, 'previous-owner');
    expect(await redis.hget(key, 'status')).toBe('STARTING');
    engines.get('claimed')!.release();
    await eventually(async () => expect(await redis.hget(key, 'status')).toBe('QR'));
  });

  it('keeps renewing the lease of a session whose engine is still stopping', async () => {
    const manager = app.get(SessionManager);
    const leases = app.get(LeaseRepository);
    const renewed: string[][] = [];
    const renew = vi.spyOn(leases, 'renew').mockImplementation(async (ids) => {
      renewed.push([...ids]);
      return [];
    });
    let stopped!: () => void;
    vi.spyOn(engines.get('d')!, 'stop').mockImplementation(
      () => new Promise<void>((resolve) => (stopped = resolve)),
    );
    try {
      await app.get(SessionRepository).setDesired('d', 'stopped');
      const reconciled = manager.reconcile();
      await eventually(() => expect(manager.engine('d')).toBeUndefined());
      // (The tick then joins the pass still stopping the engine.)
      const ticked = (manager as unknown as { tick(): Promise<void> }).tick();
      await eventually(() => expect(renewed.at(-1)).toContain('d'));
      stopped();
      await reconciled;
      await ticked;
      await (manager as unknown as { tick(): Promise<void> }).tick();
      expect(renewed.at(-1)).not.toContain('d');
    } finally {
      renew.mockRestore();
    }
  });

  it('stops an engine whose lease it cannot renew before it may run out, and says it holds it no more', async () => {
    const manager = app.get(SessionManager);
    const leases = app.get(LeaseRepository);
    expect(manager.holdsLease('c')).toBe(true);
    const renew = vi.spyOn(leases, 'renew').mockRejectedValue(new Error('Connection is closed'));
    const released: string[] = [];
    manager.on('released', (sessionId) => released.push(sessionId));
    const until = (manager as unknown as { leaseUntil: Map<string, number> }).leaseUntil;
    try {
      // One failed renewal with the lease good for another three heartbeats is borne.
      await (manager as unknown as { tick(): Promise<void> }).tick();
      expect(manager.engine('c')).toBeDefined();
      // Its lease about to run out, with no renewal: stopped, and no longer held.
      until.set('c', Date.now() + 1_000);
      expect(manager.holdsLease('c')).toBe(false);
      const stop = vi.spyOn(engines.get('c')!, 'stop');
      await (manager as unknown as { tick(): Promise<void> }).tick();
      expect(manager.engine('c')).toBeUndefined();
      expect(released).toContain('c');
      // Still its lease: no other worker can hold a newer login, so this one's is backed up,
      // while the lease lasts, once the browser is closed (not left connected meanwhile).
      const [options] = stop.mock.calls[0] as unknown as [StopOptions];
      expect(options.closeFirst).toBe(true);
      expect(backUpWanted(options.backUp)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      expect(backUpWanted(options.backUp)).toBe(false);
    } finally {
      renew.mockRestore();
    }
  });

  it('takes back the lease of a session that ran out with nobody taking it, and drives it on; stops one another worker took, its login not backed up, its profile kept', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const [taken, free] = manager.ownedSessionIds();
    expect(free).toBeDefined();
    // While this worker stalled: another took one over; the other ran out and nobody took it.
    await redis.set(keys.lease(taken), 'another-worker', 'PX', 500);
    await redis.del(keys.lease(free));
    const freeEngine = engines.get(free)!;
    const stopTaken = vi.spyOn(engines.get(taken)!, 'stop');
    const stopFree = vi.spyOn(freeEngine, 'stop');
    await (manager as unknown as { tick(): Promise<void> }).tick();
    // Its profile left on the disk: the other worker may run on it (one data folder shared).
    expect(stopTaken).toHaveBeenCalledWith({ backUp: false, keepProfile: true });
    // Stopped, it would run unleased while it backed its login up, for another to take.
    expect(stopFree).not.toHaveBeenCalled();
    expect(manager.engine(free)).toBe(freeEngine);
    expect(await redis.get(keys.lease(free))).toBe(app.get(WORKER_ID));
    expect(manager.holdsLease(free)).toBe(true);
    // The other driven here again once it is free.
    await new Promise((resolve) => setTimeout(resolve, 600));
    await manager.reconcile('all');
    await eventually(() =>
      expect(manager.ownedSessionIds()).toEqual(expect.arrayContaining([taken, free])),
    );
  });

  it('stops, its profile kept, a session whose lease another worker took between the read and its taking back', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const [id] = manager.ownedSessionIds();
    const stop = vi.spyOn(engines.get(id)!, 'stop');
    await tickAfterLapse(id, async (sessionId) => {
      await redis.set(keys.lease(sessionId), 'another-worker', 'PX', 500);
      return false;
    });
    expect(stop).toHaveBeenCalledWith({ backUp: false, keepProfile: true });
    await new Promise((resolve) => setTimeout(resolve, 600));
    await manager.reconcile('all');
    await eventually(() => expect(manager.ownedSessionIds()).toContain(id));
  });

  it('hands back a lease it took back for a session whose engine it stopped meanwhile', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const leases = app.get(LeaseRepository);
    const [id] = manager.ownedSessionIds();
    const acquire = leases.acquire.bind(leases);
    await tickAfterLapse(id, async (sessionId, ...rest) => {
      // A hand-over of this worker's stops the engine while the heartbeat takes the lease.
      await (manager as unknown as { stopEngine(id: string): Promise<void> }).stopEngine(sessionId);
      return acquire(sessionId, ...rest);
    });
    expect(await redis.get(keys.lease(id))).not.toBe(app.get(WORKER_ID));
    expect(manager.holdsLease(id)).toBe(false);
    await manager.reconcile('all');
    await eventually(() => expect(manager.ownedSessionIds()).toContain(id));
  });

  it('claims a session again when it takes its lease back: the claim and state another worker left, having taken it and handed it back meanwhile, give way to its own', async () => {
    const manager = app.get(SessionManager);
    const sessions = app.get(SessionRepository);
    const redis = app.get<Redis>(REDIS);
    const leases = app.get(LeaseRepository);
    const key = app.get(RedisKeys).session('retaken');
    const engine = await driven('retaken');
    // The sessions the tests before started again past STARTING: their start slots are its.
    await eventually(() => {
      for (const id of [...starting]) if (id !== 'retaken') engines.get(id)!.release();
      expect(starting.has('retaken')).toBe(true);
    });
    engine.release();
    await eventually(async () => expect(await redis.hget(key, 'status')).toBe('QR'));
    const acquire = leases.acquire.bind(leases);
    await tickAfterLapse('retaken', async (sessionId, ...rest) => {
      // While this worker stalled, another took the session, and stopped it to hand it back.
      await sessions.claim(sessionId, 'another-worker');
      await sessions.setObserved(sessionId, { status: 'STOPPED' }, 'another-worker');
      return acquire(sessionId, ...rest);
    });
    expect(manager.engine('retaken')).toBe(engine);
    await eventually(async () =>
      expect(await redis.hmget(key, 'owner', 'worker', 'status', 'qr')).toEqual([
        'worker-under-test',
        'worker-under-test',
        'QR',
        'qr',
      ]),
    );
    // Its engine's next states are written, not refused as a former owner's.
    engine.emit('state', { status: 'READY', phone: '15550001111', pushname: 'Retaken' });
    await eventually(async () =>
      expect(await redis.hmget(key, 'status', 'phone')).toEqual(['READY', '15550001111']),
    );
  });

  it.each([
    ['its heartbeat finds its lease run out, with nobody holding it', 'tick'],
    ['a pass finds it unregistered', 'pass'],
    ['it is purged here', 'purge'],
  ] as const)(
    'stops the engine of a session deleted while it drove it without backing its login up, when %s',
    async (_, wakesWith) => {
      const sessions = app.get(SessionRepository);
      const manager = app.get(SessionManager);
      const redis = app.get<Redis>(REDIS);
      const keys = app.get(RedisKeys);
      const id = `gone-${wakesWith}`;
      const stop = vi.spyOn(await driven(id), 'stop');
      if (wakesWith === 'purge') {
        await sessions.setDesired(id, 'deleted');
      } else {
        // While this worker stalled past its lease, its user deleted the session and another
        // worker purged it: login deleted, unregistered, lease handed back.
        await redis.del(keys.lease(id));
        await sessions.unregister(id);
      }
      if (wakesWith === 'tick') await (manager as unknown as { tick(): Promise<void> }).tick();
      else await manager.reconcile('all');
      await eventually(() => expect(stop).toHaveBeenCalled());
      expect(stop).toHaveBeenCalledTimes(1);
      const [options] = stop.mock.calls[0] as unknown as [{ backUp?: BackUpWanted }?];
      expect(backUpWanted(options?.backUp)).toBe(false);
    },
  );

  it.each(['restart', 'logout'] as const)(
    'starts no engine again after a %s whose stop outlasted its lease, another worker holding it now',
    async (command) => {
      const sessions = app.get(SessionRepository);
      const manager = app.get(SessionManager);
      const redis = app.get<Redis>(REDIS);
      const keys = app.get(RedisKeys);
      const id = `outlasted-${command}`;
      const old = await driven(id);
      let stopped!: () => void;
      vi.spyOn(old, command === 'restart' ? 'stop' : 'logout').mockImplementation(
        () => new Promise<void>((resolve) => (stopped = resolve)),
      );
      const released: string[] = [];
      manager.on('released', (sessionId) => released.push(sessionId));
      await sessions.request(id, command);
      const reconciled = manager.reconcile();
      await eventually(() => expect(manager.engine(id)).toBeUndefined());
      // Meanwhile its lease ran out (Chromium slow to close) and another worker took it.
      await redis.set(keys.lease(id), 'another-worker', 'PX', 60_000);
      // (The tick then joins the pass still stopping the engine.)
      const ticked = (manager as unknown as { tick(): Promise<void> }).tick();
      await eventually(() => expect(manager.holdsLease(id)).toBe(false));
      stopped();
      await reconciled;
      await ticked;
      expect(manager.engine(id)).toBeUndefined();
      expect(engines.get(id)).toBe(old);
      expect(released).toContain(id);
      await redis.del(keys.lease(id));
      await sessions.unregister(id);
    },
  );

  it('starts nothing on a session whose engine here is still stopping', async () => {
    const manager = app.get(SessionManager);
    const [id] = manager.ownedSessionIds();
    const old = engines.get(id)!;
    let stopped!: () => void;
    vi.spyOn(old, 'stop').mockImplementation(
      () => new Promise<void>((resolve) => (stopped = resolve)),
    );
    const stopping = (
      manager as unknown as { stopEngine(sessionId: string): Promise<void> }
    ).stopEngine(id);
    await manager.reconcile('all');
    // Chromium still closing on its profile: no second engine for it yet.
    expect(engines.get(id)).toBe(old);
    stopped();
    await stopping;
    await manager.reconcile('all');
    await eventually(() => expect(engines.get(id)).not.toBe(old));
  });

  it('keeps driving a session of its own that vanished from the registry without being deleted (Redis lost it), and registers it again', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const [id] = manager.ownedSessionIds().filter((owned) => owned !== 'main');
    const engine = engines.get(id);
    // Lost with Redis's data, while another worker already brought the default session back.
    await redis.srem(keys.sessions(), id);
    await redis.del(keys.session(id));
    await manager.reconcile('all');
    expect(manager.ownedSessionIds()).toContain(id);
    expect(engines.get(id)).toBe(engine);
    expect(await redis.sismember(keys.sessions(), id)).toBe(1);
  });

  it('removes at boot the RemoteAuth profiles left on its disk, but not one it drives, nor one another worker holds unless a Chromium of this host left it', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const dataDir = app.get(AppConfig).WWEBJS_DATA_DIR;
    onTestFinished(() => rm(dataDir, { recursive: true, force: true }));
    const profile = (id: string) => join(dataDir, `RemoteAuth-${id}`);
    const [driven] = manager.ownedSessionIds();
    for (const id of [driven, 'handed-over', 'elsewhere', 'crashed-here', 'taken-meanwhile']) {
      await mkdir(join(profile(id), 'Default', 'IndexedDB'), { recursive: true });
    }
    // Nobody's when the leases are read, another worker's by the time it would be removed.
    const leases = app.get(LeaseRepository);
    const acquire = leases.acquire.bind(leases);
    const acquiring = vi
      .spyOn(leases, 'acquire')
      .mockImplementation(async (id, ...rest) => id !== 'taken-meanwhile' && acquire(id, ...rest));
    onTestFinished(() => acquiring.mockRestore());
    // Another worker drives these now; one of them still bears the lock of this host's Chromium,
    // killed with the worker's last run.
    await redis.set(keys.lease('elsewhere'), 'another-worker', 'PX', 60_000);
    await redis.set(keys.lease('crashed-here'), 'another-worker', 'PX', 60_000);
    await symlink(`${hostname()}-99999999`, join(profile('crashed-here'), 'SingletonLock'));
    await manager.startAll();
    expect(existsSync(profile('handed-over'))).toBe(false);
    expect(existsSync(profile('crashed-here'))).toBe(false);
    expect(existsSync(profile('elsewhere'))).toBe(true);
    expect(existsSync(profile('taken-meanwhile'))).toBe(true);
    expect(existsSync(profile(driven))).toBe(true);
    // Held while its folder went, then handed back.
    expect(acquiring).toHaveBeenCalledWith('handed-over', expect.any(String), expect.any(Number));
    expect(await redis.get(keys.lease('handed-over'))).toBeNull();
  });

  it('lets go of a session it stops though its lease cannot be handed back (it then expires)', async () => {
    const manager = app.get(SessionManager);
    const release = vi
      .spyOn(app.get(LeaseRepository), 'release')
      .mockRejectedValue(new Error('Connection is closed'));
    const released: string[] = [];
    manager.on('released', (sessionId) => released.push(sessionId));
    try {
      await app.get(SessionRepository).setDesired('b', 'stopped');
      await manager.reconcile();
      expect(manager.engine('b')).toBeUndefined();
      expect(released).toContain('b');
    } finally {
      release.mockRestore();
    }
  });

  it('keeps a deleted session registered while a purge step fails, and purges it again until one succeeds', async () => {
    const sessions = app.get(SessionRepository);
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    const calls: string[] = [];
    let failing = true;
    manager.onPurge(async (sessionId) => {
      calls.push(sessionId);
      if (failing) throw new Error('Redis went away');
    });
    // (Its announcement may start a pass of its own, which this one joins.)
    await sessions.setDesired('e', 'deleted');
    await manager.reconcile();
    await manager.reconcile();
    expect(calls.length).toBeGreaterThanOrEqual(2);
    expect(new Set(calls)).toEqual(new Set(['e']));
    expect(await redis.sismember(keys.sessions(), 'e')).toBe(1);
    expect((await sessions.get('e'))?.desired).toBe('deleted');
    // Its engine is stopped all the same.
    expect(manager.engine('e')).toBeUndefined();
    failing = false;
    const tried = calls.length;
    await manager.reconcile();
    expect(calls.length).toBe(tried + 1);
    expect(await redis.sismember(keys.sessions(), 'e')).toBe(0);
    await manager.reconcile();
    expect(calls.length).toBe(tried + 1);
  });

  it.each([
    ['deletes', 'delete'],
    ['deletes the login of before starting it (logged out while nobody drove it)', 'logout'],
  ] as const)(
    'keeps renewing the lease of a session it %s, so no other worker takes that up too',
    async (_, change) => {
      const sessions = app.get(SessionRepository);
      const manager = app.get(SessionManager);
      const id = `tended-${change}`;
      await sessions.register(id);
      // Its login's deletion takes longer than the lease (a slow shared store).
      let deleted!: () => void;
      const deletion = new Promise<void>((resolve) => (deleted = resolve));
      const deleting = vi
        .spyOn(app.get(AuthStore), 'delete')
        .mockImplementation((sessionId) => (sessionId === id ? deletion : Promise.resolve()));
      const renewed: string[][] = [];
      const renew = vi.spyOn(app.get(LeaseRepository), 'renew').mockImplementation(async (ids) => {
        renewed.push([...ids]);
        return [];
      });
      try {
        if (change === 'delete') await sessions.setDesired(id, 'deleted');
        else await sessions.request(id, 'logout');
        const reconciled = manager.reconcile();
        await eventually(() => expect(deleting).toHaveBeenCalledWith(id));
        // (The tick then joins the pass still deleting the login.)
        const ticked = (manager as unknown as { tick(): Promise<void> }).tick();
        await eventually(() => expect(renewed.at(-1)).toContain(id));
        deleted();
        await reconciled;
        await ticked;
        if (change === 'delete') expect(await sessions.exists(id)).toBe(false);
        else expect(manager.ownedSessionIds()).toContain(id);
      } finally {
        deleted();
        deleting.mockRestore();
        renew.mockRestore();
      }
    },
  );

  it('leaves a session made again while it was deleting the old one alone: its late purge neither runs its steps on it nor unregisters it', async () => {
    const sessions = app.get(SessionRepository);
    const manager = app.get(SessionManager);
    const purged: string[] = [];
    manager.onPurge(async (sessionId) => void purged.push(sessionId));
    await sessions.register('remade');
    let deleted!: () => void;
    const deletion = new Promise<void>((resolve) => (deleted = resolve));
    const deleting = vi
      .spyOn(app.get(AuthStore), 'delete')
      .mockImplementation((sessionId) => (sessionId === 'remade' ? deletion : Promise.resolve()));
    try {
      await sessions.setDesired('remade', 'deleted');
      const reconciled = manager.reconcile();
      await eventually(() => expect(deleting).toHaveBeenCalledWith('remade'));
      // Meanwhile (this worker stalled past its lease) another worker purged it, and its user
      // made it again.
      await sessions.unregister('remade');
      expect(await sessions.register('remade')).toBe(true);
      deleted();
      await reconciled;
    } finally {
      deleted();
      deleting.mockRestore();
    }
    expect(purged).not.toContain('remade');
    expect((await sessions.get('remade'))?.desired).toBe('running');
  });

  it('renews a lease of its own it finds on a session it does not drive before starting it', async () => {
    const manager = app.get(SessionManager);
    const redis = app.get<Redis>(REDIS);
    const keys = app.get(RedisKeys);
    await app.get(SessionRepository).register('own-lease');
    // Left by its engine here, stopped while Redis was out of reach: about to run out.
    await redis.set(keys.lease('own-lease'), 'worker-under-test', 'PX', 300);
    await manager.reconcile('all');
    expect(manager.ownedSessionIds()).toContain('own-lease');
    expect(await redis.pttl(keys.lease('own-lease'))).toBeGreaterThan(60_000);
  });

  it('hands its sessions over several at a time when it drains, at most DRAIN_CONCURRENCY', async () => {
    const manager = app.get(SessionManager);
    const owned = manager.ownedSessionIds();
    expect(owned.length).toBeGreaterThanOrEqual(2);
    let stopping = 0;
    let most = 0;
    const began: number[] = [];
    const stops = owned.map((id) =>
      // Chromium takes its time to stop.
      vi.spyOn(engines.get(id)!, 'stop').mockImplementation(async () => {
        began.push(performance.now());
        most = Math.max(most, ++stopping);
        await new Promise((resolve) => setTimeout(resolve, 300));
        stopping--;
      }),
    );
    try {
      await (
        manager as unknown as { shedTo(share: number, draining: boolean): Promise<unknown> }
      ).shedTo(0, true);
      expect(began).toHaveLength(owned.length);
      expect(most).toBe(Math.min(DRAIN_CONCURRENCY, owned.length));
    } finally {
      for (const stop of stops) stop.mockRestore();
    }
    // Not draining after all: it takes them back.
    await manager.reconcile('all');
    await eventually(() => expect(manager.ownedSessionIds().sort()).toEqual(owned.sort()));
  });

  it('hands no lease back while its engine is still stopping when a hand-over of its drain fails and the next pass follows', async () => {
    const manager = app.get(SessionManager);
    const leases = app.get(LeaseRepository);
    const owned = manager.ownedSessionIds();
    expect(owned.length).toBeGreaterThan(DRAIN_CONCURRENCY);
    const shedTo = (
      manager as unknown as { shedTo(share: number, draining: boolean): Promise<unknown> }
    ).shedTo.bind(manager);
    const stopEnded = new Map<string, number>();
    const stops = owned.map((id) =>
      // Chromium takes its time to stop, and to back the login up.
      vi.spyOn(engines.get(id)!, 'stop').mockImplementation(async () => {
        await new Promise((resolve) => setTimeout(resolve, 300));
        stopEnded.set(id, performance.now());
      }),
    );
    // The send in its turn finishes before each hand-over.
    let slowHandOvers = true;
    manager.onHandOver(async () => {
      if (slowHandOvers) await new Promise((resolve) => setTimeout(resolve, 100));
    });
    const handedBack = new Map<string, number>();
    const release = leases.release.bind(leases);
    let blip = true;
    const releases = vi.spyOn(leases, 'release').mockImplementation(async (sessionId, workerId) => {
      if (blip) {
        blip = false;
        throw new Error('Command timed out');
      }
      // (Only those drained: a stopped session's lease is handed back at every pass.)
      if (owned.includes(sessionId) && !handedBack.has(sessionId))
        handedBack.set(sessionId, performance.now());
      return release(sessionId, workerId);
    });
    try {
      // A pass fails at the blip; the next one follows at once.
      await expect(shedTo(0, true)).rejects.toThrow('Command timed out');
      await shedTo(0, true);
      await eventually(() => expect(stopEnded.size).toBe(owned.length));
      for (const [sessionId, at] of handedBack)
        expect({ sessionId, handedBackAfterItsStop: at >= stopEnded.get(sessionId)! }).toEqual({
          sessionId,
          handedBackAfterItsStop: true,
        });
    } finally {
      slowHandOvers = false;
      releases.mockRestore();
      for (const stop of stops) stop.mockRestore();
    }
    await manager.reconcile('all');
    await eventually(() => expect(manager.ownedSessionIds().sort()).toEqual(owned.sort()));
  });

  it('hands the lease of a session back only once its engine has stopped, when it was stopped for a lease near its end while being handed over', async () => {
    const manager = app.get(SessionManager);
    const leases = app.get(LeaseRepository);
    const [id] = manager.ownedSessionIds().filter((owned) => owned !== 'main');
    let stopEnded = 0;
    const stop = vi.spyOn(engines.get(id)!, 'stop').mockImplementation(async () => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      stopEnded = performance.now();
    });
    let handedOver!: () => void;
    const handOver = new Promise<void>((resolve) => (handedOver = resolve));
    const handingOver: string[] = [];
    manager.onHandOver(async (sessionId) => {
      if (sessionId !== id) return;
      handingOver.push(sessionId);
      await handOver;
    });
    let handedBackAt = 0;
    const release = leases.release.bind(leases);
    const releases = vi.spyOn(leases, 'release').mockImplementation(async (sessionId, workerId) => {
      if (sessionId === id) handedBackAt ||= performance.now();
      return release(sessionId, workerId);
    });
    const renew = vi.spyOn(leases, 'renew').mockRejectedValue(new Error('Connection is closed'));
    const until = (manager as unknown as { leaseUntil: Map<string, number> }).leaseUntil;
    try {
      await app.get(SessionRepository).setDesired(id, 'stopped');
      const reconciled = manager.reconcile();
      await eventually(() => expect(handingOver).toContain(id));
      // While it is handed over, its lease cannot be renewed and runs out soon: stopped at once.
      until.set(id, Date.now() + 1_000);
      const ticked = (manager as unknown as { tick(): Promise<void> }).tick();
      await eventually(() => expect(stop).toHaveBeenCalled());
      handedOver();
      await reconciled;
      await ticked;
      expect(handedBackAt).toBeGreaterThanOrEqual(stopEnded);
      expect(stopEnded).toBeGreaterThan(0);
    } finally {
      handedOver();
      renew.mockRestore();
      releases.mockRestore();
      stop.mockRestore();
    }
  });

  it.each([
    { when: 'before its engine stops', duringStop: false },
    { when: 'while its engine stops, before the backup', duringStop: true },
  ])(
    'backs nothing up for a session deleted while it was being handed over, $when',
    async ({ duringStop }) => {
      const manager = app.get(SessionManager);
      const [id] = manager.ownedSessionIds().filter((owned) => owned !== 'main');
      const release = (
        manager as unknown as {
          release(sessionId: string, options?: { backUp?: boolean }): Promise<void>;
        }
      ).release.bind(manager);
      // What the engine's backup is asked, as it comes to it: at the end of its stop.
      const wantedAtBackup: boolean[] = [];
      let deleted: Promise<void> | undefined;
      const stop = vi
        .spyOn(engines.get(id)!, 'stop')
        .mockImplementation(async (options?: { backUp?: BackUpWanted }) => {
          // What a pass does for a session it finds purged elsewhere meanwhile.
          if (duringStop) deleted = release(id, { backUp: false });
          wantedAtBackup.push(backUpWanted(options?.backUp));
        });
      let handedOver!: () => void;
      const handOver = new Promise<void>((resolve) => (handedOver = resolve));
      let handingOver = false;
      manager.onHandOver(async (sessionId) => {
        if (sessionId !== id) return;
        handingOver = true;
        await handOver;
      });
      try {
        await app.get(SessionRepository).setDesired(id, 'stopped');
        const reconciled = manager.reconcile();
        await eventually(() => expect(handingOver).toBe(true));
        if (!duringStop) deleted = release(id, { backUp: false });
        handedOver();
        await reconciled;
        await deleted;
        expect(stop).toHaveBeenCalledTimes(1);
        expect(wantedAtBackup).toEqual([false]);
      } finally {
        handedOver();
        stop.mockRestore();
      }
      await app.get(SessionRepository).setDesired(id, 'running');
      await manager.reconcile();
      await eventually(() => expect(manager.ownedSessionIds()).toContain(id));
    },
  );

  it('stops every engine whose lease it cannot renew at once, not one after another', async () => {
    const manager = app.get(SessionManager);
    const owned = manager.ownedSessionIds();
    expect(owned.length).toBeGreaterThanOrEqual(2);
    const renew = vi
      .spyOn(app.get(LeaseRepository), 'renew')
      .mockRejectedValue(new Error('Connection is closed'));
    const until = (manager as unknown as { leaseUntil: Map<string, number> }).leaseUntil;
    const began: number[] = [];
    for (const id of owned) {
      // Chromium takes its time to stop.
      vi.spyOn(engines.get(id)!, 'stop').mockImplementation(async () => {
        began.push(performance.now());
        await new Promise((resolve) => setTimeout(resolve, 500));
      });
      until.set(id, Date.now() + 1_000);
    }
    try {
      await (manager as unknown as { tick(): Promise<void> }).tick();
      expect(began).toHaveLength(owned.length);
      expect(Math.max(...began) - Math.min(...began)).toBeLessThan(250);
    } finally {
      renew.mockRestore();
    }
  });

  it('stepped back, tries Chromium alone at its time with its heartbeat, and takes sessions again once it launches', async () => {
    const manager = app.get(SessionManager);
    const internals = manager as unknown as { health: StartHealth; tick(): Promise<void> };
    let now = 0;
    const health = new StartHealth(50, () => now);
    internals.health = health;
    const factory = app.get(EngineFactory) as unknown as {
      probeLaunch?: () => Promise<string | null>;
    };
    const probe = vi
      .fn<() => Promise<string | null>>()
      .mockResolvedValueOnce('Failed to launch the browser process: still')
      .mockResolvedValueOnce(null);
    factory.probeLaunch = probe;
    const beats: number[] = [];
    const onCapacity = (cap: number) => beats.push(cap);
    manager.on('capacity', onCapacity);
    const settled = () => new Promise((resolve) => setImmediate(resolve));
    try {
      health.othersTakeSessions(true);
      health.report('x', 'FAILED', true, 'Failed to launch the browser process');
      health.report('x', 'FAILED', true, 'Failed to launch the browser process');
      expect(manager.capacity()).toBe(0);
      expect(manager.startsFailing()).toBe(true);
      // Not yet its time.
      await internals.tick();
      expect(probe).not.toHaveBeenCalled();
      // Its time: tried, and Chromium still does not launch.
      now += PROBE_MS;
      await internals.tick();
      await settled();
      expect(probe).toHaveBeenCalledTimes(1);
      expect(manager.capacity()).toBe(0);
      // Twice as long on, tried again: it launches, so the worker takes its share and beats.
      now += 2 * PROBE_MS;
      await internals.tick();
      await settled();
      expect(probe).toHaveBeenCalledTimes(2);
      expect(manager.capacity()).toBe(50);
      expect(manager.startsFailing()).toBe(false);
      expect(beats).toContain(50);
    } finally {
      manager.off('capacity', onCapacity);
      delete factory.probeLaunch;
    }
  });

  // Last: the manager is shut down.
  it('stops every engine left at once when it shuts down during a drain, not DRAIN_CONCURRENCY at a time', async () => {
    const sessions = app.get(SessionRepository);
    const manager = app.get(SessionManager);
    for (let i = 1; i <= 2 * DRAIN_CONCURRENCY; i++) await sessions.register(`drained-${i}`);
    await manager.reconcile('all');
    const owned = manager.ownedSessionIds();
    expect(owned.length).toBeGreaterThan(2 * DRAIN_CONCURRENCY);
    const began = new Map<string, number>();
    for (const id of owned)
      // Chromium takes its time to stop.
      vi.spyOn(engines.get(id)!, 'stop').mockImplementation(async () => {
        began.set(id, performance.now());
        await new Promise((resolve) => setTimeout(resolve, 300));
      });
    // SIGTERM: the worker is marked draining, and a pass begins to hand its sessions over...
    const workers = app.get(WorkerRepository);
    const info = { id: 'worker-under-test', host: 'h', pid: 1, version: 'x', startedAt: '' };
    await workers.beat({ ...info, sessions: [] }, 180_000);
    await workers.setDraining('worker-under-test', true, 180_000);
    void manager.reconcile('all');
    await eventually(() => expect(began.size).toBeGreaterThan(0));
    // ...and then the shutdown reaches the session manager.
    const shutdownAt = performance.now();
    await manager.onApplicationShutdown();
    expect(began.size).toBe(owned.length);
    const afterShutdown = [...began.values()].filter((at) => at >= shutdownAt);
    expect(afterShutdown.length).toBeGreaterThan(0);
    expect(Math.max(...afterShutdown) - Math.min(...afterShutdown)).toBeLessThan(250);
  });
});

describe('fairShare', () => {
  it('is an even share of the running sessions among taking workers, within the maximum', () => {
    expect(fairShare(7, { takingWorkers: 2, draining: false }, 50)).toBe(4);
    expect(fairShare(200, { takingWorkers: 4, draining: false }, 50)).toBe(50);
    expect(fairShare(200, { takingWorkers: 3, draining: false }, 50)).toBe(50);
    expect(fairShare(9, { takingWorkers: 3, draining: false }, 2)).toBe(2);
    // No worker counted yet (its heartbeat not written): it alone takes them.
    expect(fairShare(5, { takingWorkers: 0, draining: false }, 50)).toBe(5);
    expect(fairShare(0, { takingWorkers: 2, draining: false }, 50)).toBe(0);
  });

  it('is nothing while the worker drains', () => {
    expect(fairShare(7, { takingWorkers: 1, draining: true }, 50)).toBe(0);
  });

  it("shares out what a worker with a lower WORKER_MAX_SESSIONS cannot take, keeping to each one's", () => {
    // 12 sessions, three workers, one of them capped at 2: the other two take 5 each.
    const placement = (otherCaps: number[]) => ({
      takingWorkers: otherCaps.length + 1,
      otherCaps,
      draining: false,
    });
    expect(fairShare(12, placement([2, 50]), 50)).toBe(5);
    expect(fairShare(12, placement([50, 50]), 2)).toBe(2);
    // A worker of a version that did not say counts as this one's cap.
    expect(
      fairShare(12, { takingWorkers: 3, otherCaps: [undefined, 2], draining: false }, 50),
    ).toBe(5);
    // More sessions than the fleet can drive: each takes up to its own cap.
    expect(fairShare(200, placement([2, 10]), 50)).toBe(50);
  });

  it('drives every session the fleet has room for, each worker within its cap, and no worker takes more than an even share allows', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 60 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 0, max: 300 }),
        (caps, running) => {
          const shares = caps.map((cap, i) =>
            fairShare(
              running,
              {
                takingWorkers: caps.length,
                otherCaps: caps.filter((_, j) => j !== i),
                draining: false,
              },
              cap,
            ),
          );
          const total = shares.reduce((sum, share) => sum + share, 0);
          const room = caps.reduce((sum, cap) => sum + cap, 0);
          expect(total).toBeGreaterThanOrEqual(Math.min(running, room));
          shares.forEach((share, i) => expect(share).toBeLessThanOrEqual(caps[i]));
          // Workers below their caps all have the same share (the level), and it is the
          // lowest that drives every session: one less would leave some undriven.
          const level = Math.max(...shares);
          shares.forEach((share, i) => expect(share).toBe(Math.min(caps[i], level)));
          if (level > 0 && total >= running)
            expect(caps.reduce((sum, cap) => sum + Math.min(cap, level - 1), 0)).toBeLessThan(
              running,
            );
          // All caps the same: the even share of before, ceil(running / workers) within the cap.
          if (caps.every((cap) => cap === caps[0]))
            shares.forEach((share) =>
              expect(share).toBe(Math.min(caps[0], Math.ceil(running / caps.length))),
            );
        },
      ),
    );
  });
});

/**
 * A fleet of workers (ids w0, w1, ...) holding `held` running sessions each, every one with
 * room for 50, settled as their passes do it. Each pass gets its share from fairShare, told
 * what the pass's worker holds and what the others held `lag` passes earlier (a pass reads the
 * leases before it acts, and a hand-over is seen once its lease is handed back). Above its
 * share, a worker hands over what it holds beyond it, `perPass` at most (what
 * SESSION_START_CONCURRENCY allows a pass); below it, it takes free sessions up to it. The
 * passes go in `passes` order, then every worker in turn until a round changes nothing.
 */
function settle(held: number[], passes: { worker: number; lag: number }[] = [], perPass = 2) {
  const ids = held.map((_, i) => `w${i}`);
  const running = held.reduce((sum, n) => sum + n, 0);
  const seen = [[...held]];
  const now = [...held];
  let free = 0;
  let moves = 0;
  const shed = new Set<number>();
  const took = new Set<number>();
  const pass = (w: number, lag: number): boolean => {
    const then = seen[Math.max(0, seen.length - 1 - lag)];
    const otherIds = ids.filter((_, i) => i !== w);
    const share = fairShare(
      running,
      { takingWorkers: ids.length, otherIds, otherCaps: otherIds.map(() => 50), draining: false },
      50,
      { workerId: ids[w], held: (id) => (id === ids[w] ? now[w] : then[ids.indexOf(id)]) },
    );
    const handed = Math.min(Math.max(0, now[w] - share), perPass);
    const taken = Math.min(free, Math.max(0, share - now[w]));
    now[w] += taken - handed;
    free += handed - taken;
    moves += handed;
    if (handed) shed.add(w);
    if (taken) took.add(w);
    seen.push([...now]);
    return handed + taken > 0;
  };
  for (const { worker, lag } of passes) pass(worker % ids.length, lag);
  for (let rounds = 0; rounds < 1_000; rounds++) {
    if (!ids.map((_, w) => pass(w, 0)).some(Boolean)) return { held: now, free, moves, shed, took };
  }
  throw new Error(`never settled: ${now.join(', ')} held and ${free} free`);
}

describe('fairShare told who holds how many', () => {
  it('gives a worker that joins k sessions on each of n workers its part when k <= n, every worker within one of another', () => {
    // 12 sessions on 4 workers, a fifth joins: ceil(12 / 5) = 3 each would leave it none.
    const joined = settle([3, 3, 3, 3, 0]);
    expect(joined.held[4]).toBeGreaterThanOrEqual(2);
    expect(Math.max(...joined.held) - Math.min(...joined.held)).toBeLessThanOrEqual(1);
    // Two moves: the fewest that even it out.
    expect(joined.moves).toBe(2);
    expect(settle([...Array<number>(10).fill(10), 0]).held[10]).toBe(9);
    expect(settle([2, 2, 2, 2, 2, 0]).held[5]).toBe(1);
  });

  it('moves nothing in a fleet already within one of even', () => {
    expect(settle([3, 2, 3, 2, 2]).moves).toBe(0);
    expect(settle([1, 0, 0]).moves).toBe(0);
    expect(settle([4, 4, 4]).moves).toBe(0);
  });

  it('evens any fleet out in the fewest moves, whichever parts of the hand-overs each pass has seen: no worker both hands over and takes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.record({ worker: fc.nat(), lag: fc.integer({ min: 0, max: 6 }) }), {
          maxLength: 80,
        }),
        fc.integer({ min: 1, max: 4 }),
        (held, passes, perPass) => {
          const settled = settle(held, passes, perPass);
          expect(settled.free).toBe(0);
          expect(Math.max(...settled.held) - Math.min(...settled.held)).toBeLessThanOrEqual(1);
          // Nothing handed back and forth, nor on to a third worker.
          expect([...settled.shed].filter((w) => settled.took.has(w))).toEqual([]);
          // The fewest moves: the ones that hold most keep the (running % workers) one-over shares.
          const running = held.reduce((sum, n) => sum + n, 0);
          const even = Math.floor(running / held.length);
          const oneOver = running % held.length;
          const fewest = [...held]
            .sort((a, b) => b - a)
            .reduce((sum, n, i) => sum + Math.max(0, n - (i < oneOver ? even + 1 : even)), 0);
          expect(settled.moves).toBe(fewest);
        },
      ),
    );
  });
});

describe('sessionsToHandOver', () => {
  const owned = [
    { id: 'ready', status: 'READY' as const },
    { id: 'scanning', status: 'QR' as const },
    { id: 'linking', status: 'LOADING' as const },
    { id: 'stopped', status: 'STOPPED' as const },
    { id: 'just-linked', status: 'AUTHENTICATED' as const },
    { id: 'not-started', status: undefined },
  ];

  it('hands over first what loses nothing by moving, then READY ones, then a QR on show', () => {
    expect(sessionsToHandOver(owned, 2, false)).toEqual(['stopped', 'not-started']);
    expect(sessionsToHandOver(owned, 4, false)).toEqual([
      'stopped',
      'not-started',
      'ready',
      'scanning',
    ]);
  });

  it('never moves a link in progress to even the shares out, only when the worker leaves', () => {
    expect(sessionsToHandOver(owned, 6, false)).not.toContain('linking');
    expect(sessionsToHandOver(owned, 6, false)).not.toContain('just-linked');
    expect(sessionsToHandOver(owned, 6, true).slice(-2).sort()).toEqual(['just-linked', 'linking']);
  });
});
