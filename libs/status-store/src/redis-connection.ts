import { Logger } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { parseRedisUrl } from '@app/config';

const log = new Logger('Redis');

/**
 * Opens an ioredis client for REDIS_URL: one server, a Sentinel set or a Cluster. `blocking`
 * clients (BullMQ workers, subscribers) must retry forever; request-path clients give up
 * after a few retries so an outage is a quick 503. Connection errors are logged once per kind
 * (ioredis would print every reconnect attempt).
 *
 * A Cluster client is returned typed as Redis: it answers the same commands, and each
 * multi-key command or script keeps to one hash tag (redis-keys.ts); pipelines that span tags
 * go through inPipelines.
 */
export function createRedis(url: string, options: { blocking?: boolean; name: string }): Redis {
  const target = parseRedisUrl(url);
  if (!target) throw new Error('REDIS_URL is not a Redis URL');
  const base: RedisOptions = {
    connectionName: options.name,
    maxRetriesPerRequest: options.blocking ? null : 2,
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
    // Commands issued in the same tick share one write: far fewer syscalls under load.
    enableAutoPipelining: !options.blocking,
  };
  const auth = {
    username: target.username,
    password: target.password,
    ...(target.tls ? { tls: {} } : {}),
  };
  let redis: Redis;
  if (target.mode === 'standalone') {
    redis = new Redis(url, base);
  } else if (target.mode === 'sentinel') {
    redis = new Redis({
      ...base,
      ...auth,
      sentinels: target.nodes,
      name: target.masterName,
      db: target.db,
      sentinelPassword: target.password,
    });
  } else {
    redis = new Cluster(target.nodes, {
      redisOptions: { ...base, ...auth },
      clusterRetryStrategy: base.retryStrategy,
      enableAutoPipelining: base.enableAutoPipelining,
    }) as unknown as Redis;
  }
  let lastError = '';
  redis.on('error', (err: Error) => {
    if (err.message !== lastError) log.warn(`${options.name}: ${err.message}`);
    lastError = err.message;
  });
  redis.on('ready', () => {
    if (lastError) log.log(`${options.name}: connected again`);
    lastError = '';
  });
  return redis;
}
