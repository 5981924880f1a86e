import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthFailures } from '../auth/auth-failures.service.js';
import { AdminAccess } from './admin-access.service.js';

/**
 * Without a password, the Host check (AdminAccess.assertOpenAdminHost); Basic Auth (an address
 * over its failed-login limit gets 429), then for state-changing requests the same-origin
 * check and the CSRF token.
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
    this.access.assertOpenAdminHost(req);
    // Credentials given: a login attempt (a browser first asks without, to get the prompt).
    const attempt = this.access.protected && Boolean(req.headers.authorization);
    let refused: unknown;
    try {
      this.access.authenticate(req, reply);
    } catch (err) {
      refused = err;
    }
    // Over its failed-login limit, an address gets 429 whether the password was right or not.
    if (attempt) await this.failures.check(req, reply, refused === undefined);
    if (refused !== undefined) throw refused;
    this.access.assertSameOrigin(req);
    if (csrf) this.access.assertCsrfToken(req);
  }
}
