import { Inject, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { REDIS, RedisKeys } from '@app/status-store';

/** How long failed logins are counted, and how long an address then waits. */
const WINDOW_MS = 60_000;

/**
 * Failed logins (API key or admin Basic Auth) per client address, in Redis so every api
 * replica counts together. Past AUTH_FAILURES_PER_MINUTE an address is refused with 429
 * before its credentials are even looked at, until its minute is over: guessing is slowed
 * to that many tries a minute. The address is the one TRUST_PROXY makes `request.ip`.
 */
@Injectable()
export class AuthFailures {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
  ) {}

  /** Throws RATE_LIMITED (with Retry-After) while the request's address must wait. */
  async assertNotBlocked(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const key = this.keys.authFailures(request.ip);
    const [count, ttlMs] = await Promise.all([this.redis.get(key), this.redis.pttl(key)]);
    if (Number(count ?? 0) < this.config.AUTH_FAILURES_PER_MINUTE) return;
    const seconds = Math.max(1, Math.ceil(ttlMs / 1000));
    void reply.header('Retry-After', String(seconds));
    throw new AppError(
      'RATE_LIMITED',
      `Too many failed logins from this address; retry in ${seconds} s`,
    );
  }

  /** Counts a failed login of the request's address (the first one starts its minute). */
  async record(request: FastifyRequest): Promise<void> {
    const key = this.keys.authFailures(request.ip);
    await this.redis.multi().incr(key).pexpire(key, WINDOW_MS, 'NX').exec();
  }
}
