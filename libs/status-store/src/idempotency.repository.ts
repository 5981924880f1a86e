import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

export interface IdempotencyClaim {
  messageId: string;
  requestHash: string;
}

// KEYS[1] the key's claim; ARGV[1] the claim expected (JSON as stored), [2] the new claim,
// [3] time to live (ms, the expected one's too), [4] how long ago at least the expected one was
// made (ms), [5] how long ago at most. Returns 1 (taken), 0 (changed, or too young) or -1 (too
// old).
const TAKE_OVER = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local age = tonumber(ARGV[3]) - redis.call('PTTL', KEYS[1])
if age < tonumber(ARGV[4]) then return 0 end
if age >= tonumber(ARGV[5]) then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`);

/**
 * `Idempotency-Key` claims, and the admin's one-time form tokens: the first request with a key
 * wins it for the TTL.
 */
@Injectable()
export class IdempotencyRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /** Claims the key for `claim`; returns null if we won, else the claim already there. */
  async claim(
    scope: string,
    key: string,
    claim: IdempotencyClaim,
    ttlMs: number,
  ): Promise<IdempotencyClaim | null> {
    const redisKey = this.keys.idempotency(scope, key);
    const won = await this.redis.set(redisKey, JSON.stringify(claim), 'PX', ttlMs, 'NX');
    if (won === 'OK') return null;
    const existing = await this.redis.get(redisKey);
    // Expired between the two calls: try once more rather than report a phantom conflict.
    if (!existing) return this.claim(scope, key, claim, ttlMs);
    return JSON.parse(existing) as IdempotencyClaim;
  }

  /**
   * Takes the key over for `claim` if it still holds `stale`, claimed `age.min` to `age.max`
   * ago (its time to live says when): for a claim whose request failed without writing
   * anything, and did not give the key back (Redis failed meanwhile). `taken`, or `busy` (it
   * changed, or its request may still be writing), or `old`: claimed `age.max` ago or more.
   */
  async takeOver(
    scope: string,
    key: string,
    stale: IdempotencyClaim,
    claim: IdempotencyClaim,
    ttlMs: number,
    age: { min: number; max: number },
  ): Promise<'taken' | 'busy' | 'old'> {
    const taken = await TAKE_OVER.run(
      this.redis,
      [this.keys.idempotency(scope, key)],
      [JSON.stringify(stale), JSON.stringify(claim), ttlMs, age.min, age.max],
    );
    return taken === 1 ? 'taken' : taken === -1 ? 'old' : 'busy';
  }

  /** The claim a key holds, if any. */
  async get(scope: string, key: string): Promise<IdempotencyClaim | null> {
    const existing = await this.redis.get(this.keys.idempotency(scope, key));
    return existing ? (JSON.parse(existing) as IdempotencyClaim) : null;
  }

  /** Claims `key` for `ttlMs` with no claim to keep: true the first time, false while it lasts. */
  async claimOnce(scope: string, key: string, ttlMs: number): Promise<boolean> {
    const won = await this.redis.set(this.keys.idempotency(scope, key), '1', 'PX', ttlMs, 'NX');
    return won === 'OK';
  }

  async release(scope: string, key: string): Promise<void> {
    await this.redis.del(this.keys.idempotency(scope, key));
  }
}
