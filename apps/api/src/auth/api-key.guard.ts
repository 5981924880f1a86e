import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from './auth-failures.service.js';
import { ApiKeys, type Principal } from './api-keys.service.js';
import { BrowserOrigin, UNSAFE_METHODS } from './browser-origin.js';

/**
 * Checks `x-api-key`: API_KEY (the bootstrap key, every scope) in constant time, else a key
 * made through /api/v1/keys (by its digest). The caller becomes `request.principal`.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly expected?: Secret;
  private readonly origin: BrowserOrigin;

  constructor(
    config: AppConfig,
    private readonly failures: AuthFailures,
    private readonly keys: ApiKeys,
  ) {
    this.origin = new BrowserOrigin(config.BASE_URL);
    if (config.API_KEY) this.expected = new Secret(config.API_KEY);
    else
      new Logger('Auth').warn(
        "API_KEY is not set: /api/v1 accepts requests without a key (development only; a browser's from another site's page are refused)",
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
    if (!this.expected) return this.admitOpen(request);
    if (request.principal) return;
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

  /**
   * Without API_KEY (development only) any web page the developer opens could send messages
   * through this api from their browser: a form post or a no-cors fetch needs no preflight,
   * and a page whose name is made to resolve here (DNS rebinding) is even same-origin. A
   * browser's state-changing request is taken only from this server's own pages (the Swagger
   * UI), reached by an IP address, localhost or BASE_URL's host; other clients send neither
   * Sec-Fetch-Site nor Origin, and are taken as before.
   */
  private admitOpen(request: FastifyRequest): void {
    if (!UNSAFE_METHODS.has(request.method)) return;
    const { headers } = request;
    if (headers['sec-fetch-site'] === undefined && headers.origin === undefined) return;
    const reason =
      this.origin.crossSiteReason(request) ??
      (this.origin.namesThisServer(request)
        ? undefined
        : `it names this server ${JSON.stringify(headers.host ?? '')}, not by an IP address, localhost or BASE_URL's host`);
    if (reason)
      throw new AppError(
        'FORBIDDEN',
        `Without API_KEY the api takes a browser's request only from its own pages: ${reason}; set API_KEY`,
      );
  }
}
