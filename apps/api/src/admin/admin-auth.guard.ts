import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AdminAccess } from './admin-access.service.js';

/** Basic Auth, then for state-changing requests the same-origin check and the CSRF token. */
@Injectable()
export class AdminAuthGuard implements CanActivate {
  constructor(private readonly access: AdminAccess) {}

  canActivate(context: ExecutionContext): boolean {
    const http = context.switchToHttp();
    const req = http.getRequest<FastifyRequest>();
    this.access.authenticate(req, http.getResponse<FastifyReply>());
    this.access.assertSameOrigin(req);
    this.access.assertCsrfToken(req);
    return true;
  }
}
