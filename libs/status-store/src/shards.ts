import type { Redis } from 'ioredis';
import { shardOf, type RedisKeys } from './redis-keys.js';

/**
 * Every shard a reader of per-shard indexes (awaiting acks, webhook chains, deliveries) must
 * walk: null, the root, where records made before shards stay indexed; those of registered
 * sessions; and those that held a session since deleted (its records stay until they expire).
 */
export async function knownShards(redis: Redis, keys: RedisKeys): Promise<(string | null)[]> {
  const [held, sessions] = await Promise.all([
    redis.smembers(keys.shards()),
    redis.smembers(keys.sessions()),
  ]);
  return [null, ...[...new Set([...held, ...sessions.map(shardOf)])].sort()];
}
