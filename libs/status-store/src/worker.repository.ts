import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InvalidatedCache } from './invalidated-cache.js';
import { RedisClock } from './redis-clock.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { REDIS } from './status-store.tokens.js';

/** A drained worker silent this many times its staleness limit is forgotten (placement). */
export const DRAIN_FORGOTTEN_AFTER_STALE = 20;

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
}

export interface LiveWorker extends Omit<WorkerInfo, 'maxSessions' | 'startsFailing'> {
  /** Null for a worker of a version that did not say. */
  maxSessions: number | null;
  startsFailing: boolean;
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
  /** The newest heartbeat (ms), kept a second at most and dropped when a worker leaves. */
  private readonly newestBeat: InvalidatedCache<number>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    subscriber: RedisSubscriber,
    private readonly clock: RedisClock,
  ) {
    this.newestBeat = new InvalidatedCache(subscriber, keys.changes('workers'), 1_000);
  }

  /**
   * Whether any worker beat within `staleAfterMs`: the send path's check, answered from the
   * process while a heartbeat read within the second says yes (a worker that stops cleanly
   * announces it); a no is always read again.
   */
  async anyLive(staleAfterMs: number): Promise<boolean> {
    const liveSince = (await this.clock.now()) - staleAfterMs;
    const read = async () => {
      const [, score] = await this.redis.zrevrange(this.keys.workers(), 0, 0, 'WITHSCORES');
      return score === undefined ? 0 : Number(score);
    };
    let fresh = false;
    const newest = await this.newestBeat.get('newest', () => {
      fresh = true;
      return read();
    });
    if (newest >= liveSince) return true;
    this.newestBeat.forget('newest');
    // A no just read is not read twice.
    return !fresh && (await read()) >= liveSince;
  }

  async beat(info: WorkerInfo, ttlMs: number, at?: number): Promise<void> {
    const now = at ?? (await this.clock.now());
    const { maxSessions, startsFailing, ...shown } = info;
    const beat = this.redis
      .multi()
      .zadd(this.keys.workers(), now, info.id)
      .hset(this.keys.worker(info.id), {
        ...shown,
        pid: String(info.pid),
        sessions: JSON.stringify(info.sessions),
        ...(maxSessions === undefined ? {} : { maxSessions: String(maxSessions) }),
        startsFailing: startsFailing ? '1' : '0',
      })
      .pexpire(this.keys.worker(info.id), ttlMs);
    // Where placement reads every worker's in one command (forgotten with the worker).
    if (maxSessions !== undefined) beat.hset(this.keys.workerCaps(), info.id, maxSessions);
    if (startsFailing) beat.sadd(this.keys.failingWorkers(), info.id);
    else beat.srem(this.keys.failingWorkers(), info.id);
    await beat
      // Forget workers dead for long, so the set does not grow with every restart.
      .zremrangebyscore(this.keys.workers(), '-inf', now - 24 * 3600_000)
      .exec();
  }

  async remove(workerId: string): Promise<void> {
    await this.redis
      .multi()
      .zrem(this.keys.workers(), workerId)
      .del(this.keys.worker(workerId))
      .srem(this.keys.drainingWorkers(), workerId)
      .hdel(this.keys.workerCaps(), workerId)
      .srem(this.keys.failingWorkers(), workerId)
      .exec();
    this.newestBeat.forget('*');
    await this.redis.publish(this.keys.changes('workers'), '*');
  }

  /** Marks a worker draining (or not); returns false when no such worker is live. */
  async setDraining(workerId: string, draining: boolean, staleAfterMs: number, at?: number) {
    const now = at ?? (await this.clock.now());
    const beat = await this.redis.zscore(this.keys.workers(), workerId);
    if (beat === null || Number(beat) < now - staleAfterMs) return false;
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
    const [live, draining, recent, caps, failing] = (await this.redis
      .multi()
      .zrangebyscore(this.keys.workers(), now - staleAfterMs, '+inf')
      .smembers(this.keys.drainingWorkers())
      .zrangebyscore(this.keys.workers(), forgetBefore, '+inf')
      .hgetall(this.keys.workerCaps())
      .smembers(this.keys.failingWorkers())
      .exec()) as [
      [Error | null, string[]],
      [Error | null, string[]],
      [Error | null, string[]],
      [Error | null, Record<string, string>],
      [Error | null, string[]],
    ];
    const drainingIds = new Set(draining[1]);
    const liveIds = new Set(live[1]);
    const recentIds = new Set(recent[1]);
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
    const now = at ?? (await this.clock.now());
    return new Set(await this.redis.zrangebyscore(this.keys.workers(), now - staleAfterMs, '+inf'));
  }

  /** Ids of the workers asked to drain (some may have stopped since: see placement). */
  async drainingIds(): Promise<Set<string>> {
    return new Set(await this.redis.smembers(this.keys.drainingWorkers()));
  }

  async countLive(staleAfterMs: number, at?: number): Promise<number> {
    const now = at ?? (await this.clock.now());
    return this.redis.zcount(this.keys.workers(), now - staleAfterMs, '+inf');
  }

  async listLive(staleAfterMs: number, at?: number): Promise<LiveWorker[]> {
    const now = at ?? (await this.clock.now());
    const entries = await this.redis.zrangebyscore(
      this.keys.workers(),
      now - staleAfterMs,
      '+inf',
      'WITHSCORES',
    );
    const draining = new Set(await this.redis.smembers(this.keys.drainingWorkers()));
    const workers: LiveWorker[] = [];
    for (let i = 0; i < entries.length; i += 2) {
      const hash = await this.redis.hgetall(this.keys.worker(entries[i]));
      workers.push({
        id: entries[i],
        host: hash.host ?? '',
        pid: Number(hash.pid ?? 0),
        version: hash.version ?? '',
        startedAt: hash.startedAt ?? '',
        sessions: parseSessions(hash.sessions),
        maxSessions: hash.maxSessions === undefined ? null : Number(hash.maxSessions),
        startsFailing: hash.startsFailing === '1',
        lastBeatAt: new Date(Number(entries[i + 1])).toISOString(),
        draining: draining.has(entries[i]),
      });
    }
    return workers;
  }
}

function parseSessions(raw: string | undefined): string[] {
  try {
    const parsed: unknown = JSON.parse(raw ?? '[]');
    return Array.isArray(parsed) ? parsed.filter((id) => typeof id === 'string') : [];
  } catch {
    return [];
  }
}
