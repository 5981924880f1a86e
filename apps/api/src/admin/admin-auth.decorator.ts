import { applyDecorators, UseGuards } from '@nestjs/common';
import {
  ApiBasicAuth,
  ApiForbiddenResponse,
  ApiHeader,
  ApiUnauthorizedResponse,
} from '@nestjs/swagger';
import { ErrorEnvelopeDto } from '../docs/envelope.dto.js';
import { CSRF_HEADER } from './admin-access.service.js';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { ApiTooManyRequests } from '../auth/api-key-auth.decorator.js';
import { RateLimitGuard } from '../auth/rate-limit.guard.js';

/** Name of the Basic Auth security scheme in the OpenAPI document. */
export const ADMIN_SECURITY = 'admin';

/**
 * Protects a controller or route of the admin (Basic Auth when ADMIN_PASSWORD is set; same
 * origin and CSRF token on state-changing requests) and documents it, in one decorator.
 */
export const AdminAuth = () =>
  applyDecorators(
    UseGuards(AdminAuthGuard, RateLimitGuard),
    ApiBasicAuth(ADMIN_SECURITY),
    ApiUnauthorizedResponse({
      description: 'Missing or wrong admin credentials (Basic Auth)',
      type: ErrorEnvelopeDto,
    }),
    ApiTooManyRequests(),
  );

/**
 * Documents the CSRF token a state-changing admin route requires; on a controller that also
 * has reading routes (`forUnsafeMethods`), as required on POST, PUT and DELETE only.
 */
export const AdminCsrf = (options: { forUnsafeMethods?: boolean } = {}) =>
  applyDecorators(
    ApiHeader({
      name: CSRF_HEADER,
      required: !options.forUnsafeMethods,
      description:
        (options.forUnsafeMethods ? 'Required on POST, PUT and DELETE. ' : '') +
        'Token from GET /api/admin/csrf-token (the admin pages send it themselves); the cookie it sets must come along',
    }),
    ApiForbiddenResponse({
      description: 'Cross-site request, or missing or invalid CSRF token',
      type: ErrorEnvelopeDto,
    }),
  );
