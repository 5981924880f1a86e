import { Inject, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { LuaScript, REDIS, RedisKeys } from '@app/status-store';

/** How long failed logins are counted, and how long an address then waits. */
const WINDOW_MS = 60_000;

// Counts a failed login of an address and says how many its window holds, and for how long.
// KEYS[1] counter; ARGV[1] window ms. (A TTL set only on a fresh key: works before Redis 7.)
const ATTEMPT = new LuaScript(`
local n = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return { n, redis.call('PTTL', KEYS[1]) }
`);

/**
 * Failed logins (API key or admin Basic Auth) per client address, in Redis so every api
 * replica counts together. Credentials are checked first (locally, in constant time, or by
 * digest), then: a wrong one is counted, and past AUTH_FAILURES_PER_MINUTE it is answered 429
 * instead of 401; a right one from an address over the limit is answered 429 too. So however
 * many guesses arrive at once, at most that many a minute are told apart from a refusal:
 * a guess past the limit learns nothing, right or wrong. Right credentials cost one read,
 * and many at once from one address are never refused for their number.
 * The address is the one TRUST_PROXY makes `request.ip`.
 */
@Injectable()
export class AuthFailures {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
  ) {}

  /**
   * After the credentials were checked (`ok`): throws RATE_LIMITED (with Retry-After) when
   * the address is over its limit; a wrong attempt is counted. Returns when the caller may go
   * on (to let it in, or to answer 401).
   */
  async check(request: FastifyRequest, reply: FastifyReply, ok: boolean): Promise<void> {
    const key = this.keys.authFailures(request.ip);
    // Right credentials (the hot path): one read; the wait is looked up only when refused.
    const [count, ttlMs] = ok
      ? [Number((await this.redis.get(key)) ?? 0), undefined]
      : ((await ATTEMPT.run(this.redis, [key], [WINDOW_MS])) as [number, number]);
    const limit = this.config.AUTH_FAILURES_PER_MINUTE;
    if (ok ? count < limit : count <= limit) return;
    const seconds = Math.max(1, Math.ceil((ttlMs ?? (await this.redis.pttl(key))) / 1000));
    void reply.header('Retry-After', String(seconds));
    throw new AppError(
      'RATE_LIMITED',
      `Too many failed logins from this address; retry in ${seconds} s`,
    );
  }
}
