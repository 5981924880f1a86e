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
import type { FastifyRequest } from 'fastify';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { RedisKeys } from '@app/status-store';
import { callerOf } from './api-keys.service.js';

/**
 * The name of our one throttler (requests a minute per caller). `default` keeps the standard
 * header names: Retry-After, X-RateLimit-Limit / -Remaining / -Reset.
 */
export const RATE_LIMIT = 'default';

/**
 * RATE_LIMIT_PER_MINUTE requests a minute per caller, counted in Redis across api replicas
 * (@nestjs/throttler's guard with RateLimitStorage). It runs after authentication,
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

  /**
   * The library's check with our one throttler's options as configured. The base class looks
   * up per-route overrides (@Throttle, @SkipThrottle) on every request, five reflections and
   * as many awaits; no route has one, so the lookups are skipped (add them back here with the
   * first route that needs its own limit).
   */
  override async canActivate(context: ExecutionContext): Promise<boolean> {
    if (this.config.RATE_LIMIT_PER_MINUTE === 0) return true;
    const [throttler] = this.throttlers;
    const ttl = throttler.ttl as number;
    return this.handleRequest({
      context,
      limit: throttler.limit as number,
      ttl,
      blockDuration: (throttler.blockDuration as number | undefined) ?? ttl,
      throttler,
      getTracker: this.commonOptions.getTracker!,
      generateKey: this.commonOptions.generateKey!,
    });
  }

  protected override async getTracker(request: FastifyRequest): Promise<string> {
    return callerOf(request);
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
