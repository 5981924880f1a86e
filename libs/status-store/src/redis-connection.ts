import { Redis, type RedisOptions } from 'ioredis';

/**
 * Opens an ioredis client for a REDIS_URL. `blocking` clients (BullMQ workers) must retry
 * forever; request-path clients give up after a few retries so an outage is a quick 503.
 */
export function createRedis(
  url: string,
  options: { blocking?: boolean; name?: string } = {},
): Redis {
  const base: RedisOptions = {
    connectionName: options.name,
    lazyConnect: false,
    maxRetriesPerRequest: options.blocking ? null : 2,
    enableOfflineQueue: true,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
  };
  return new Redis(url, base);
}
