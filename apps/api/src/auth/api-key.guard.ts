import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from './auth-failures.service.js';
import { ApiKeys, type Principal } from './api-keys.service.js';
import { BrowserOrigin, UNSAFE_METHODS, corsOrigins } from './browser-origin.js';

/** ApiKeyGuard's answer to a request that gives x-api-key `count` times (documented with it). */
export const repeatedApiKeyMessage = (count: number) =>
  `Send one x-api-key header: this request has ${count}`;

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
    this.origin = new BrowserOrigin(config.BASE_URL, corsOrigins(config.CORS_ORIGINS));
    if (config.API_KEY) this.expected = new Secret(config.API_KEY);
    else
      new Logger('Auth').warn(
        'API_KEY is not set: /api/v1 accepts requests without a key (development only), named by an IP address, localhost or BASE_URL',
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
    // Node joins a header given twice into one value ("K, K"): which key was meant is unknown,
    // so none is tried, nor counted as a failed login. (headersDistinct copies every header:
    // read only when a comma says there may be two.)
    const given = request.headers['x-api-key'] as string | undefined;
    const count = given?.includes(',') ? request.raw.headersDistinct['x-api-key']!.length : 1;
    if (count > 1) throw new AppError('BAD_REQUEST', repeatedApiKeyMessage(count));
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
   * Without API_KEY (development only), any web page the developer opens could use this api
   * from their browser. A page whose name is made to resolve here (DNS rebinding) is
   * same-origin with it, reads as well as sends, and carries that name as its requests' Host:
   * so the open api answers only to an IP address, localhost or BASE_URL's host, as the open
   * admin does. And a page of another site may send without a preflight (a form post, a
   * no-cors fetch): a browser's state-changing request is taken only from the api's own pages
   * (the Swagger UI) or CORS_ORIGINS'.
   */
  private admitOpen(request: FastifyRequest): void {
    if (!this.origin.namesThisServer(request))
      throw new AppError(
        'FORBIDDEN',
        `Without API_KEY the api answers only to an IP address, localhost or BASE_URL's host, not ${JSON.stringify(request.headers.host ?? '')}: set API_KEY (or BASE_URL)`,
      );
    if (!UNSAFE_METHODS.has(request.method)) return;
    const reason = this.origin.crossSiteReason(request);
    if (reason)
      throw new AppError(
        'FORBIDDEN',
        `Without API_KEY the api takes a browser's request only from its own pages and CORS_ORIGINS': ${reason}; set API_KEY`,
      );
  }
}
