import { applyDecorators, UseGuards } from '@nestjs/common';
import {
  ApiForbiddenResponse,
  ApiSecurity,
  ApiTooManyRequestsResponse,
  ApiUnauthorizedResponse,
} from '@nestjs/swagger';
import { ErrorEnvelopeDto, errorEnvelopeExample } from '../docs/envelope.dto.js';
import { ApiKeyGuard } from './api-key.guard.js';
import { RateLimitGuard } from './rate-limit.guard.js';
import { ScopeGuard, missingScopeMessage } from './scope.guard.js';

/** ApiKeyAuth's 403, for every route alike; documentScopes names each route's scope. */
export const SCOPE_REFUSAL = "FORBIDDEN: the key's scopes do not include what this route needs";

/**
 * Protects a controller or route with x-api-key, then the key's rate limit, and documents
 * both, in one decorator. The 400 of a repeated x-api-key is added to each route it protects
 * by documentCommonErrors, from the security requirement set here (see there why).
 */
export const ApiKeyAuth = () =>
  applyDecorators(
    // Counted before its scope is checked: refused requests spend the key's limit too.
    UseGuards(ApiKeyGuard, RateLimitGuard, ScopeGuard),
    ApiSecurity('api-key'),
    ApiUnauthorizedResponse({
      description: 'Missing or wrong x-api-key',
      type: ErrorEnvelopeDto,
      example: errorEnvelopeExample(401),
    }),
    ApiForbiddenResponse({
      description: SCOPE_REFUSAL,
      type: ErrorEnvelopeDto,
      // documentScopes names each route's own scope in it.
      example: errorEnvelopeExample(403, {
        code: 'FORBIDDEN',
        message: missingScopeMessage(['read'], 'send'),
      }),
    }),
    ApiTooManyRequests(),
  );

/** The 429 of the rate limits (per key or admin user, and per address for failed logins). */
export const ApiTooManyRequests = () =>
  ApiTooManyRequestsResponse({
    description:
      'RATE_LIMITED: over RATE_LIMIT_PER_MINUTE, or too many failed logins from this address; see Retry-After',
    type: ErrorEnvelopeDto,
    example: errorEnvelopeExample(429),
  });
