import { Injectable, type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import {
  InjectThrottlerOptions,
  InjectThrottlerStorage,
  ThrottlerGuard,
  type ThrottlerLimitDetail,
  type ThrottlerModuleOptions,
  type ThrottlerStorage,
} from '@nestjs/throttler';
import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { RedisKeys } from '@app/status-store';

/**
 * The name of our one throttler (requests a minute per caller). `default` keeps the standard
 * header names: Retry-After, X-RateLimit-Limit / -Remaining / -Reset.
 */
export const RATE_LIMIT = 'default';

/**
 * RATE_LIMIT_PER_MINUTE requests a minute per caller, counted in Redis across api replicas
 * (@nestjs/throttler with @nest-lab/throttler-storage-redis). It runs after authentication,
 * so the caller is a verified API key (by its digest) or admin user, never a guessed one.
 * Past the limit: 429 RATE_LIMITED with Retry-After; every answer carries X-RateLimit-*.
 */
@Injectable()
export class RateLimitGuard extends ThrottlerGuard {
  constructor(
    @InjectThrottlerOptions() options: ThrottlerModuleOptions,
    @InjectThrottlerStorage() storage: ThrottlerStorage,
    reflector: Reflector,
    private readonly config: AppConfig,
    private readonly keys: RedisKeys,
  ) {
    super(options, storage, reflector);
  }

  protected override async shouldSkip(): Promise<boolean> {
    return this.config.RATE_LIMIT_PER_MINUTE === 0;
  }

  protected override async getTracker(request: FastifyRequest): Promise<string> {
    // The caller authentication established, never a header nothing checked.
    const keyId = request.principal?.keyId;
    if (keyId === 'env') {
      const key = String(request.headers['x-api-key'] ?? '');
      return `key:${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
    }
    if (keyId) return `key:${keyId}`;
    const basic = /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(request.headers.authorization ?? '');
    if (basic) return `admin:${Buffer.from(basic[1], 'base64').toString('utf8').split(':')[0]}`;
    return `ip:${request.ip}`;
  }

  /** One bucket per caller for all routes, under our prefix (not one per route). */
  protected override generateKey(_context: ExecutionContext, tracker: string, name: string) {
    return this.keys.rateLimit(name, tracker);
  }

  protected override async throwThrottlingException(
    _context: ExecutionContext,
    detail: ThrottlerLimitDetail,
  ): Promise<void> {
    throw new AppError(
      'RATE_LIMITED',
      `Rate limit of ${detail.limit} requests a minute reached; retry in ${detail.timeToBlockExpire} s`,
    );
  }
}
