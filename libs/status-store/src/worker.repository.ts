import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { InvalidatedCache } from './invalidated-cache.js';
import { RedisClock } from './redis-clock.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { REDIS } from './status-store.tokens.js';

/** A drained worker silent this many times its staleness limit is forgotten (placement). */
export const DRAIN_FORGOTTEN_AFTER_STALE = 20;

/** The engine a worker drives its sessions with (its WA_ENGINE). */
export type WorkerEngine = 'wwebjs' | 'sandbox';

// Each worker is judged by the staleness limit it sent with its beat (its own
// WORKER_HEARTBEAT_MS × 3), not the reader's: an api or a worker configured with a shorter one
// would count a worker that beats on time gone. A worker of a version that sent none (not in
// KEYS[2]) is judged by the reader's, `stale`, as before. KEYS[1] the beats, [2] live-until.
// Each live worker as { id, beat (ms), live until (ms) }.
const LIVE_WORKERS_FN = `
local function live_workers(now, stale)
  local live = {}
  local own = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf', 'WITHSCORES')
  for i = 1, #own, 2 do
    local beat = redis.call('ZSCORE', KEYS[1], own[i])
    table.insert(live, { own[i], tonumber(beat or 0), tonumber(own[i + 1]) })
  end
  local beats = redis.call('ZRANGEBYSCORE', KEYS[1], now - stale, '+inf', 'WITHSCORES')
  for i = 1, #beats, 2 do
    if not redis.call('ZSCORE', KEYS[2], beats[i]) then
      table.insert(live, { beats[i], tonumber(beats[i + 1]), tonumber(beats[i + 1]) + stale })
    end
  end
  return live
end
`;

// ARGV[1] now (ms), [2] the reader's staleness limit (ms). The live workers (LIVE_WORKERS_FN).
const LIVE_WORKERS = new LuaScript(
  LIVE_WORKERS_FN + `return live_workers(tonumber(ARGV[1]), tonumber(ARGV[2]))`,
);

// As LIVE_WORKERS, but only the latest time (ms) until which any of them counts as live, 0 for
// none: the send path's check, a number to keep rather than a list.
const LIVE_UNTIL = new LuaScript(
  LIVE_WORKERS_FN +
    `
local latest = 0
for _, worker in ipairs(live_workers(tonumber(ARGV[1]), tonumber(ARGV[2]))) do
  if worker[3] > latest then latest = worker[3] end
end
return latest
`,
);

export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  version: string;
  startedAt: string;
  /** Sessions this worker drives, as of its last beat. */
  sessions: string[];
  /**
   * The most sessions it takes now (its WORKER_MAX_SESSIONS, or fewer while its sessions fail
   * to start there): the others' shares keep to it.
   */
  maxSessions?: number;
  /**
   * No session starts there (Chromium does not launch): while other workers take sessions it
   * hands its own over and takes none, and it never counts as one that takes them.
   */
  startsFailing?: boolean;
  /** Its WA_ENGINE: the api follows it for what only the sandbox does (absent: not said). */
  engine?: WorkerEngine;
}

export interface LiveWorker extends Omit<WorkerInfo, 'maxSessions' | 'startsFailing' | 'engine'> {
  /** Null for a worker of a version that did not say. */
  maxSessions: number | null;
  startsFailing: boolean;
  /** Null for a worker of a version that did not say. */
  engine: WorkerEngine | null;
  lastBeatAt: string;
  /** Asked to hand its sessions to the others: it holds none and takes none. */
  draining: boolean;
}

/**
 * Worker heartbeats: the api asks here whether any worker is alive before accepting a send.
 * Beats are written and judged by Redis's clock (RedisClock), never a host's own: `now`, where
 * a method takes it, is for tests.
 */
@Injectable()
export class WorkerRepository {
  /**
   * Until when (ms) the latest-living worker counts as live, kept a second at most and dropped
   * when a worker leaves.
   */
  private readonly liveUntil: InvalidatedCache<number>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    subscriber: RedisSubscriber,
    private readonly clock: RedisClock,
  ) {
    this.liveUntil = new InvalidatedCache(subscriber, keys.changes('workers'), 1_000);
  }

  /**
   * Whether any worker is live: one that beat within the staleness limit it sent with its beat,
   * or, for a worker of a version that sent none, within `staleAfterMs` (the reader's). The send
   * path's check, answered from the process while a heartbeat read within the second says yes
   * (a worker that stops cleanly announces it); a no is always read again.
   */
  async anyLive(staleAfterMs: number): Promise<boolean> {
    const now = await this.clock.now();
    const key = String(staleAfterMs);
    const read = async () =>
      Number(await LIVE_UNTIL.run(this.redis, this.liveKeys(), [now, staleAfterMs]));
    let fresh = false;
    const until = await this.liveUntil.get(key, () => {
      fresh = true;
      return read();
    });
    if (until >= now) return true;
    this.liveUntil.forget(key);
    // A no just read is not read twice.
    return !fresh && (await read()) >= now;
  }

  /**
   * The live workers (see anyLive for how each is judged), each with its beat (ms), in one
   * round trip.
   */
  private async live(staleAfterMs: number, at?: number): Promise<Map<string, number>> {
    const now = at ?? (await this.clock.now());
    const live = (await LIVE_WORKERS.run(this.redis, this.liveKeys(), [now, staleAfterMs])) as [
      string,
      number,
      number,
    ][];
    return new Map(live.map(([id, beat]) => [id, Number(beat)]));
  }

  private liveKeys(): string[] {
    return [this.keys.workers(), this.keys.workersLiveUntil()];
  }

  /**
   * `ttlMs`: the worker's own staleness limit, after which the others count it gone (however
   * their own WORKER_HEARTBEAT_MS is set).
   */
  async beat(info: WorkerInfo, ttlMs: number, at?: number): Promise<void> {
    const now = at ?? (await this.clock.now());
    const { maxSessions, startsFailing, engine, ...shown } = info;
    const beat = this.redis
      .multi()
      .zadd(this.keys.workers(), now, info.id)
      .zadd(this.keys.workersLiveUntil(), now + ttlMs, info.id)
      .hset(this.keys.worker(info.id), {
        ...shown,
        pid: String(info.pid),
        sessions: JSON.stringify(info.sessions),
        ...(maxSessions === undefined ? {} : { maxSessions: String(maxSessions) }),
        startsFailing: startsFailing ? '1' : '0',
        ...(engine === undefined ? {} : { engine }),
      })
      .pexpire(this.keys.worker(info.id), ttlMs);
    // Where placement reads every worker's in one command (forgotten with the worker).
    if (maxSessions !== undefined) beat.hset(this.keys.workerCaps(), info.id, maxSessions);
    if (startsFailing) beat.sadd(this.keys.failingWorkers(), info.id);
    else beat.srem(this.keys.failingWorkers(), info.id);
    await beat
      // Forget workers dead for long, so the set does not grow with every restart.
      .zremrangebyscore(this.keys.workers(), '-inf', now - 24 * 3600_000)
      .zremrangebyscore(this.keys.workersLiveUntil(), '-inf', now - 24 * 3600_000)
      .exec();
  }

  async remove(workerId: string): Promise<void> {
    await this.redis
      .multi()
      .zrem(this.keys.workers(), workerId)
      .zrem(this.keys.workersLiveUntil(), workerId)
      .del(this.keys.worker(workerId))
      .srem(this.keys.drainingWorkers(), workerId)
      .hdel(this.keys.workerCaps(), workerId)
      .srem(this.keys.failingWorkers(), workerId)
      .exec();
    this.liveUntil.forget('*');
    await this.redis.publish(this.keys.changes('workers'), '*');
  }

  /** Marks a worker draining (or not); returns false when no such worker is live. */
  async setDraining(workerId: string, draining: boolean, staleAfterMs: number, at?: number) {
    if (!(await this.live(staleAfterMs, at)).has(workerId)) return false;
    if (draining) await this.redis.sadd(this.keys.drainingWorkers(), workerId);
    else await this.redis.srem(this.keys.drainingWorkers(), workerId);
    return true;
  }

  /**
   * What placement needs, in one round trip: how many live workers take sessions, each one's
   * WORKER_MAX_SESSIONS, and whether `workerId` is draining. Drains and caps left behind by a
   * crash are forgotten here.
   */
  async placement(
    workerId: string,
    staleAfterMs: number,
    at?: number,
  ): Promise<{
    takingWorkers: number;
    /** The other workers that take sessions, in id order. */
    otherIds: string[];
    /** WORKER_MAX_SESSIONS of each of otherIds (undefined: not said). */
    otherCaps: (number | undefined)[];
    /**
     * Other workers that take sessions and have room where sessions start: a cap that is not
     * 0, and not `startsFailing`.
     */
    healthyOthers: number;
    draining: boolean;
    fleet: string;
    live: Set<string>;
    /** Other workers that beat lately, but not within `staleAfterMs`: gone, or cut off. */
    lapsed: number;
  }> {
    const now = at ?? (await this.clock.now());
    // A drain is forgotten only when its worker has been silent far longer than it takes to
    // count as gone: a beat that merely looks stale (a Redis failover, a stall, a clock off by
    // seconds) must not undo it, or the drained worker would take sessions again.
    const forgetBefore = now - DRAIN_FORGOTTEN_AFTER_STALE * staleAfterMs;
    // Sent together: one round trip.
    const [live, [draining, recent, caps, failing]] = await Promise.all([
      this.live(staleAfterMs, now),
      this.redis
        .multi()
        .smembers(this.keys.drainingWorkers())
        .zrangebyscore(this.keys.workers(), forgetBefore, '+inf')
        .hgetall(this.keys.workerCaps())
        .smembers(this.keys.failingWorkers())
        .exec() as Promise<
        [
          [Error | null, string[]],
          [Error | null, string[]],
          [Error | null, Record<string, string>],
          [Error | null, string[]],
        ]
      >,
    ]);
    const drainingIds = new Set(draining[1]);
    const liveIds = new Set(live.keys());
    // A worker live by its own, longer, limit is recent however long ago it beat.
    const recentIds = new Set([...recent[1], ...liveIds]);
    const gone = [...drainingIds].filter((id) => !recentIds.has(id));
    const capsGone = Object.keys(caps[1]).filter((id) => !recentIds.has(id));
    const failingGone = failing[1].filter((id) => !recentIds.has(id));
    if (gone.length || capsGone.length || failingGone.length) {
      const forget = this.redis.multi();
      if (gone.length) forget.srem(this.keys.drainingWorkers(), ...gone);
      if (capsGone.length) forget.hdel(this.keys.workerCaps(), ...capsGone);
      if (failingGone.length) forget.srem(this.keys.failingWorkers(), ...failingGone);
      await forget.exec();
    }
    const failingIds = new Set(failing[1]);
    // This worker counts even before its first heartbeat is written.
    liveIds.add(workerId);
    const taking = [...liveIds].filter((id) => !drainingIds.has(id)).sort();
    const capOf = (id: string) => {
      const cap = Number(caps[1][id]);
      return Number.isInteger(cap) && cap >= 0 ? cap : undefined;
    };
    const others = taking.filter((id) => id !== workerId);
    return {
      takingWorkers: taking.length,
      otherIds: others,
      otherCaps: others.map(capOf),
      healthyOthers: others.filter((id) => capOf(id) !== 0 && !failingIds.has(id)).length,
      draining: drainingIds.has(workerId),
      // Which workers take sessions, how many each, and whether sessions start there: when it
      // changes, sessions may move.
      fleet: taking
        .map((id) => `${id}=${capOf(id) ?? ''}${failingIds.has(id) ? '!' : ''}`)
        .join(' '),
      live: liveIds,
      lapsed: [...recentIds].filter((id) => id !== workerId && !liveIds.has(id)).length,
    };
  }

  /** Redis answers (the readiness probes of both processes). */
  async ping(): Promise<void> {
    await this.redis.ping();
  }

  /** Ids of the workers whose heartbeat is fresh. */
  async liveIds(staleAfterMs: number, at?: number): Promise<Set<string>> {
    return new Set((await this.live(staleAfterMs, at)).keys());
  }

  /** Ids of the workers asked to drain (some may have stopped since: see placement). */
  async drainingIds(): Promise<Set<string>> {
    return new Set(await this.redis.smembers(this.keys.drainingWorkers()));
  }

  async countLive(staleAfterMs: number, at?: number): Promise<number> {
    return (await this.live(staleAfterMs, at)).size;
  }

  /**
   * The engine each of `workerIds` said it drives, in one round trip; null for one that did
   * not say (an older version) or whose heartbeat expired.
   */
  async engines(workerIds: string[]): Promise<Map<string, WorkerEngine | null>> {
    if (workerIds.length === 0) return new Map();
    const read = this.redis.multi();
    for (const id of workerIds) read.hget(this.keys.worker(id), 'engine');
    const answers = (await read.exec()) as [Error | null, string | null][];
    return new Map(workerIds.map((id, i) => [id, asEngine(answers[i][1])]));
  }

  async listLive(staleAfterMs: number, at?: number): Promise<LiveWorker[]> {
    const live = await this.live(staleAfterMs, at);
    const draining = new Set(await this.redis.smembers(this.keys.drainingWorkers()));
    const workers: LiveWorker[] = [];
    for (const [id, beat] of [...live].sort((a, b) => a[1] - b[1])) {
      const hash = await this.redis.hgetall(this.keys.worker(id));
      workers.push({
        id,
        host: hash.host ?? '',
        pid: Number(hash.pid ?? 0),
        version: hash.version ?? '',
        startedAt: hash.startedAt ?? '',
        sessions: parseSessions(hash.sessions),
        maxSessions: hash.maxSessions === undefined ? null : Number(hash.maxSessions),
        startsFailing: hash.startsFailing === '1',
        engine: asEngine(hash.engine),
        lastBeatAt: new Date(beat).toISOString(),
        draining: draining.has(id),
      });
    }
    return workers;
  }
}

function asEngine(raw: string | null | undefined): WorkerEngine | null {
  return raw === 'wwebjs' || raw === 'sandbox' ? raw : null;
}

function parseSessions(raw: string | undefined): string[] {
  try {
    const parsed: unknown = JSON.parse(raw ?? '[]');
    return Array.isArray(parsed) ? parsed.filter((id) => typeof id === 'string') : [];
  } catch {
    return [];
  }
}
