import type { Redis } from 'ioredis';
import type { RedisKeys } from './redis-keys.js';

/**
 * Every shard a reader of per-shard indexes (awaiting acks, webhook chains, deliveries) must
 * walk: those that held a session (registered sessions add theirs), and null, the root, where
 * records made before shards existed stay indexed.
 */
export async function knownShards(redis: Redis, keys: RedisKeys): Promise<(string | null)[]> {
  return [null, ...(await redis.smembers(keys.shards())).sort()];
}
