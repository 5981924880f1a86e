import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

export interface IdempotencyClaim {
  messageId: string;
  requestHash: string;
}

/** `Idempotency-Key` claims: the first request with a key wins it for the TTL. */
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

  async release(scope: string, key: string): Promise<void> {
    await this.redis.del(this.keys.idempotency(scope, key));
  }
}
