import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from './auth-failures.service.js';
import { ApiKeys, type Principal } from './api-keys.service.js';

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
    const http = context.switchToHttp();
    await this.admit(http.getRequest<FastifyRequest>(), http.getResponse<FastifyReply>());
    return true;
  }

  /**
   * Throws unless the request carries a right key; sets `request.principal`. Also called
   * before Nest runs (configureUploads) for the routes that take large bodies, so a wrong key
   * is refused before its body is read; the guard then finds the caller known.
   */
  async admit(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (!this.expected || request.principal) return;
    const header = request.headers['x-api-key'];
    const given = Array.isArray(header) ? header[0] : header;
    if (!given) throw new AppError('UNAUTHORIZED', 'Missing x-api-key header');
    // API_KEY, the bootstrap key of the environment, may do everything.
    const principal: Principal | null = this.expected.matches(given)
      ? { keyId: 'env', scopes: ['admin'], sessions: null }
      : await this.keys.verify(given);
    // An address over its failed-login limit gets 429 whether the key was right or not.
    await this.failures.check(request, reply, principal !== null);
    if (!principal) throw new AppError('UNAUTHORIZED', 'Invalid API key');
    request.principal = principal;
  }
}
