import type { Redis } from 'ioredis';
import type { RedisKeys } from './redis-keys.js';

/**
 * Every shard a reader of per-shard indexes (awaiting acks, webhook chains, deliveries) must
 * walk: null, the root, where records made before shards stay indexed, and every shard that
 * ever held a session (register and the layout move add theirs; none is removed, as a deleted
 * session's records stay until they expire).
 */
export async function knownShards(redis: Redis, keys: RedisKeys): Promise<(string | null)[]> {
  return [null, ...(await redis.smembers(keys.shards())).sort()];
}
