import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import ipaddr from 'ipaddr.js';
import { AppError, rememberedReading } from '@app/common';
import { AppConfig } from '@app/config';
import { LuaScript } from './event-script.js';
import { InvalidatedCache } from './invalidated-cache.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { REDIS } from './status-store.tokens.js';

/** How long failed logins are counted, and how long an address then waits. */
const WINDOW_MS = 60_000;

// Counts a failed login of an address and says how many its window holds, and for how long;
// tells every process the count changed. KEYS[1] counter; ARGV[1] window ms, [2] the channel
// of changes. (A TTL set only on a fresh key: works before Redis 7.)
const ATTEMPT = new LuaScript(`
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], KEYS[1])
return { n, redis.call('PTTL', KEYS[1]) }
`);

/** An address over its failed-login limit: answered 429 for the rest of its minute. */
export class TooManyFailedLoginsError extends AppError {
  constructor(readonly retryAfterSeconds: number) {
    super(
      'RATE_LIMITED',
      `Too many failed logins from this address; retry in ${retryAfterSeconds} s`,
    );
  }
}

/**
 * Failed logins per client address (API key, admin Basic Auth, METRICS_TOKEN on the api,
 * WORKER_TOKEN on a worker's port), in Redis so every process counts together. Credentials
 * are checked first (locally, in constant time, or by digest), then: a wrong one is counted,
 * and past AUTH_FAILURES_PER_MINUTE it is refused (429) instead of 401; a right one from an
 * address over the limit is refused too. So however many guesses arrive at once, at most
 * that many a minute are told apart from a refusal: a guess past the limit learns nothing,
 * right or wrong. Right credentials cost one read, and many at once from one address are
 * never refused for their number. An address's count is read once and kept in the process
 * until a failed login anywhere changes it (announced on a channel; at most 5 s), so right
 * credentials usually cost no Redis read at all. An IPv6 address counts by its /64
 * (addressBucket).
 */
@Injectable()
export class AuthFailureRepository {
  private readonly counts: InvalidatedCache<number>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
    subscriber: RedisSubscriber,
  ) {
    this.counts = new InvalidatedCache(subscriber, keys.changes('auth-failures'));
  }

  /**
   * After the credentials of a login from `address` were checked (`ok`): a wrong attempt is
   * counted; throws TooManyFailedLoginsError when the address is over its limit, right or
   * wrong. Returns when the caller may go on (to let it in, or to answer 401).
   */
  async check(address: string, ok: boolean): Promise<void> {
    const key = this.keys.authFailures(addressBucket(address));
    const limit = this.config.AUTH_FAILURES_PER_MINUTE;
    // Right credentials (the hot path): the count as kept, or one read; an address over the
    // limit is read again (its window may have ended), and its wait only when refused.
    const read = async () => Number((await this.redis.get(key)) ?? 0);
    let count: number;
    let ttlMs: number | undefined;
    if (ok) {
      count = await this.counts.get(key, read);
      if (count >= limit) count = await read();
    } else {
      [count, ttlMs] = (await ATTEMPT.run(
        this.redis,
        [key],
        [WINDOW_MS, this.keys.changes('auth-failures')],
      )) as [number, number];
      // Its own announcement may come back after this process's next read.
      this.counts.forget(key);
    }
    if (ok ? count < limit : count <= limit) return;
    const seconds = Math.max(1, Math.ceil((ttlMs ?? (await this.redis.pttl(key))) / 1000));
    throw new TooManyFailedLoginsError(seconds);
  }
}

/**
 * What failed logins are counted by: an IPv4 address (also one written as IPv6, ::ffff:a.b.c.d),
 * or an IPv6 address's /64, the least a single host or customer is given: one who holds a /64
 * could otherwise try from a new address each time.
 */
export const addressBucket = rememberedReading((ip: string): string => {
  if (!ipaddr.isValid(ip)) return ip;
  // IPv4 written as IPv6 (::ffff:a.b.c.d) is IPv4; a zone (%eth0) is not part of the address.
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') return address.toString();
  const head = (address as ipaddr.IPv6).parts.slice(0, 4);
  return `${head.map((part) => part.toString(16)).join(':')}::/64`;
});
