import type { ThrottlerStorage } from '@nestjs/throttler';
import type { Redis } from 'ioredis';
import { LuaScript, type RedisKeys } from '@app/status-store';

// Counts `delta` hits of a caller in its window and blocks it past the limit: the script of
// @nest-lab/throttler-storage-redis (same keys, same answers), for many hits at once.
// KEYS[1] hits, [2] blocked; ARGV[1] throttler name, [2] window ms, [3] limit, [4] block ms,
// [5] delta. Returns { hits after, window ms left, blocked, block ms left, blocked before }.
const COUNT = new LuaScript(`
local ttl, limit, block_ms, delta = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local hits = redis.call('INCRBY', KEYS[1], delta)
local expires = redis.call('PTTL', KEYS[1])
if expires <= 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  expires = ttl
end
local blocked = redis.call('GET', KEYS[2])
local before = blocked and 1 or 0
local block_left = 0
if blocked then
  block_left = redis.call('PTTL', KEYS[2])
elseif hits > limit then
  redis.call('SET', KEYS[2], 1, 'PX', block_ms)
  blocked = '1'
  block_left = block_ms
end
if blocked and block_left <= 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], delta, 'PX', ttl)
  hits, expires, blocked, before, block_left = delta, ttl, false, 0, 0
  -- Many hits at once may pass the limit again in the new window.
  if hits > limit then
    redis.call('SET', KEYS[2], 1, 'PX', block_ms)
    blocked, block_left = '1', block_ms
  end
end
return { hits, expires, blocked and 1 or 0, block_left, before }
`);

type ThrottlerStorageRecord = Awaited<ReturnType<ThrottlerStorage['increment']>>;

interface Waiting {
  resolve: (record: ThrottlerStorageRecord) => void;
  reject: (err: unknown) => void;
}

/**
 * Rate-limit counts in Redis, shared by every api replica, as @nest-lab/throttler-storage-redis
 * keeps them, but one script call per caller per round trip, not one per request: while a
 * caller's count is on its way to Redis, its next requests wait together and are counted in
 * one call. Every hit is still counted in Redis before its request goes on, in arrival order;
 * each request gets its own place in the count. A caller's busy minute cost a script call per
 * request, about a fifth of the api's CPU per accepted send in `npm run bench`.
 */
export class RateLimitStorage implements ThrottlerStorage {
  /** Hits waiting to be counted, per caller and throttler. */
  private readonly waiting = new Map<string, Waiting[]>();
  /** Callers whose count is on its way to Redis. */
  private readonly counting = new Set<string>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  increment(
    key: string,
    ttl: number,
    limit: number,
    blockDuration: number,
    throttlerName: string,
  ): Promise<ThrottlerStorageRecord> {
    const counters = this.keys.rateLimitCounters(key, throttlerName);
    // Hits counted together share their limits too: other limits wait in a queue of their own.
    const queueId = `${counters.hits} ${ttl} ${limit} ${blockDuration}`;
    return new Promise((resolve, reject) => {
      const queue = this.waiting.get(queueId);
      if (queue) queue.push({ resolve, reject });
      else this.waiting.set(queueId, [{ resolve, reject }]);
      if (!this.counting.has(queueId))
        void this.count(queueId, counters, ttl, limit, blockDuration, throttlerName);
    });
  }

  /** Counts what waits in `queueId` in one call, then what came meanwhile. */
  private async count(
    queueId: string,
    counters: ReturnType<RedisKeys['rateLimitCounters']>,
    ttl: number,
    limit: number,
    blockDuration: number,
    throttlerName: string,
  ): Promise<void> {
    const hits = this.waiting.get(queueId);
    if (!hits) return;
    this.waiting.delete(queueId);
    this.counting.add(queueId);
    try {
      // (Were the connection lost after Redis ran it, ioredis could send it again and count
      // these hits twice: a caller is then refused a little early, never late.)
      const [total, expiresMs, blocked, blockLeftMs, blockedBefore] = (await COUNT.run(
        this.redis,
        [counters.hits, counters.blocked],
        [throttlerName, ttl, limit, blockDuration, hits.length],
      )) as [number, number, number, number, number];
      hits.forEach((hit, i) => {
        // The i-th of these hits is the (total - n + 1 + i)-th of the window.
        const totalHits = total - hits.length + 1 + i;
        const isBlocked = blocked === 1 && (blockedBefore === 1 || totalHits > limit);
        hit.resolve({
          totalHits,
          timeToExpire: Math.ceil(expiresMs / 1000),
          isBlocked,
          timeToBlockExpire: isBlocked ? Math.ceil(blockLeftMs / 1000) : 0,
        });
      });
    } catch (err) {
      for (const hit of hits) hit.reject(err);
    } finally {
      this.counting.delete(queueId);
      if (this.waiting.has(queueId))
        void this.count(queueId, counters, ttl, limit, blockDuration, throttlerName);
    }
  }
}
