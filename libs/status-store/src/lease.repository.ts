import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

// Renews a lease only if this worker still holds it (another may have taken it after expiry).
const RENEW = new LuaScript(
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`,
);
const RELEASE = new LuaScript(
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`,
);

/**
 * Session ownership: a worker drives a session only while it holds the session's lease
 * (SET NX PX, renewed with the heartbeat). An expired lease lets another worker take over.
 */
@Injectable()
export class LeaseRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async acquire(sessionId: string, workerId: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.set(this.keys.lease(sessionId), workerId, 'PX', ttlMs, 'NX')) === 'OK';
  }

  /**
   * Renews every lease given (one round trip, the script by its hash); returns the sessions
   * whose lease this worker no longer holds.
   */
  async renew(sessionIds: string[], workerId: string, ttlMs: number): Promise<string[]> {
    const results = await RENEW.runMany(
      this.redis,
      sessionIds.map((id) => ({ keys: [this.keys.lease(id)], args: [workerId, ttlMs] })),
    );
    return sessionIds.filter((_, i) => results[i] === 0);
  }

  /** Hands a lease back, if this worker still holds it. */
  async release(sessionId: string, workerId: string): Promise<void> {
    await RELEASE.run(this.redis, [this.keys.lease(sessionId)], [workerId]);
  }

  async holder(sessionId: string): Promise<string | null> {
    return this.redis.get(this.keys.lease(sessionId));
  }

  async holders(sessionIds: string[]): Promise<(string | null)[]> {
    if (sessionIds.length === 0) return [];
    return this.redis.mget(sessionIds.map((id) => this.keys.lease(id)));
  }
}
