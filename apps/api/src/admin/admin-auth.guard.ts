import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '@app/common';
import { AuthFailures } from '../auth/auth-failures.service.js';
import { AdminAccess } from './admin-access.service.js';

/**
 * Basic Auth (an address that failed too often waits first), then for state-changing
 * requests the same-origin check and the CSRF token.
 */
@Injectable()
export class AdminAuthGuard implements CanActivate {
  constructor(
    private readonly access: AdminAccess,
    private readonly failures: AuthFailures,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const http = context.switchToHttp();
    await this.admit(http.getRequest<FastifyRequest>(), http.getResponse<FastifyReply>());
    return true;
  }

  /**
   * Throws unless the request may use the admin. What Nest's router does not serve (assets,
   * bull-board) cannot carry our CSRF token (`csrf: false`): it gets the rest.
   */
  async admit(req: FastifyRequest, reply: FastifyReply, csrf = true): Promise<void> {
    // Credentials given: a login attempt (a browser first asks without, to get the prompt).
    const attempt = this.access.protected && Boolean(req.headers.authorization);
    if (attempt) await this.failures.assertNotBlocked(req, reply);
    try {
      this.access.authenticate(req, reply);
    } catch (err) {
      if (attempt && err instanceof AppError && err.code === 'UNAUTHORIZED')
        await this.failures.record(req);
      throw err;
    }
    this.access.assertSameOrigin(req);
    if (csrf) this.access.assertCsrfToken(req);
  }
}
