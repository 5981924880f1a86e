import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  version: string;
  startedAt: string;
  /** Sessions this worker drives, as of its last beat. */
  sessions: string[];
}

export interface LiveWorker extends WorkerInfo {
  lastBeatAt: string;
}

/** Worker heartbeats: the api asks here whether any worker is alive before accepting a send. */
@Injectable()
export class WorkerRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async beat(info: WorkerInfo, ttlMs: number, now = Date.now()): Promise<void> {
    await this.redis
      .multi()
      .zadd(this.keys.workers(), now, info.id)
      .hset(this.keys.worker(info.id), {
        ...info,
        pid: String(info.pid),
        sessions: JSON.stringify(info.sessions),
      })
      .pexpire(this.keys.worker(info.id), ttlMs)
      // Forget workers dead for long, so the set does not grow with every restart.
      .zremrangebyscore(this.keys.workers(), '-inf', now - 24 * 3600_000)
      .exec();
  }

  async remove(workerId: string): Promise<void> {
    await this.redis
      .multi()
      .zrem(this.keys.workers(), workerId)
      .del(this.keys.worker(workerId))
      .exec();
  }

  /** Redis answers (the readiness probes of both processes). */
  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async countLive(staleAfterMs: number, now = Date.now()): Promise<number> {
    return this.redis.zcount(this.keys.workers(), now - staleAfterMs, '+inf');
  }

  async listLive(staleAfterMs: number, now = Date.now()): Promise<LiveWorker[]> {
    const entries = await this.redis.zrangebyscore(
      this.keys.workers(),
      now - staleAfterMs,
      '+inf',
      'WITHSCORES',
    );
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
        lastBeatAt: new Date(Number(entries[i + 1])).toISOString(),
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
