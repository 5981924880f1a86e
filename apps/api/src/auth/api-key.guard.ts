import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from './auth-failures.service.js';
import { ApiKeys } from './api-keys.service.js';

/**
 * Checks `x-api-key`: API_KEY (the bootstrap key, every scope) in constant time, else a key
 * made through /api/v1/keys (by its digest). The caller becomes `request.principal`.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly expected?: Secret;

  constructor(
    config: AppConfig,
    private readonly failures: AuthFailures,
    private readonly keys: ApiKeys,
  ) {
    if (config.API_KEY) this.expected = new Secret(config.API_KEY);
    else
      new Logger('Auth').warn(
        'API_KEY is not set: /api/v1 accepts requests without a key (development only)',
      );
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (!this.expected) return true;
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    const header = request.headers['x-api-key'];
    const given = Array.isArray(header) ? header[0] : header;
    if (!given) throw new AppError('UNAUTHORIZED', 'Missing x-api-key header');
    // An address that failed too often waits before any key of it is looked at.
    await this.failures.assertNotBlocked(request, http.getResponse<FastifyReply>());
    if (this.expected.matches(given)) {
      // API_KEY, the bootstrap key of the environment, may do everything.
      request.principal = { keyId: 'env', scopes: ['admin'], sessions: null };
      return true;
    }
    const principal = await this.keys.verify(given);
    if (!principal) {
      await this.failures.record(request);
      throw new AppError('UNAUTHORIZED', 'Invalid API key');
    }
    request.principal = principal;
    return true;
  }
}
