import { CanActivate, ExecutionContext, Injectable, SetMetadata } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { FastifyRequest } from 'fastify';
import { AppError, toErrorEnvelope } from '@app/common';
import type { ApiKeyScope } from '@app/status-store';
import { AUDITED, AuditWriter } from '../audit/audit.interceptor.js';
import { assertSessionAllowed, hasScope } from './api-keys.service.js';

const SCOPE = 'api-key-scope';
const SCOPES = 'api-key-scopes';

/**
 * The scopes a controller's routes need: `read` for GET (unless given), `write` for the
 * others. A controller without one needs `admin`: a route added later is closed by default.
 */
export const ApiScopes = (scopes: { read?: ApiKeyScope; write: ApiKeyScope }) =>
  SetMetadata(SCOPES, scopes);

/** The scope one route needs, over its controller's. */
export const ApiScope = (scope: ApiKeyScope) => SetMetadata(SCOPE, scope);

/**
 * A key used outside its scopes gets 403 FORBIDDEN; `admin` holds every scope. On an audited
 * controller the refusal is written to the audit log: a known key trying what it may not
 * (with the other refusals, collapsed per key, route and minute: they cannot flood it).
 */
@Injectable()
export class ScopeGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly audit: AuditWriter,
  ) {}

  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    try {
      return this.check(context, request);
    } catch (err) {
      if (this.reflector.get<boolean | undefined>(AUDITED, context.getClass()))
        this.audit.writeRefusal(request, toErrorEnvelope(err).status);
      throw err;
    }
  }

  private check(context: ExecutionContext, request: FastifyRequest): boolean {
    const principal = request.principal;
    if (!principal) return true; // no API_KEY configured: the api is open (development)
    const needed = this.needed(context, request.method);
    if (!hasScope(principal, needed))
      throw new AppError('FORBIDDEN', missingScopeMessage(principal.scopes, needed));
    if (principal.sessions) this.assertSessions(request, principal.sessions);
    return true;
  }

  /**
   * A key limited to some sessions: a route naming a session (`/sessions/:id`, or creating
   * one) must name one of them, and the default session, which is everyone's, is not its to
   * change. Routes reaching a session through a message are checked where it is read.
   */
  private assertSessions(request: FastifyRequest, sessions: string[]): void {
    const route = request.routeOptions.url ?? '';
    const params = (request.params ?? {}) as Record<string, string>;
    if (route === '/api/v1/sessions/active' && request.method !== 'GET')
      throw new AppError(
        'FORBIDDEN',
        'A key limited to some sessions cannot change the active one',
      );
    if (route.includes('/sessions/:id')) assertSessionAllowed(sessions, params.id);
    if (route === '/api/v1/sessions' && request.method === 'POST') {
      const id = (request.body as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string') assertSessionAllowed(sessions, id);
    }
  }

  private needed(context: ExecutionContext, method: string): ApiKeyScope {
    return scopeNeeded(context.getClass(), context.getHandler(), method);
  }
}

/** The 403 of a key without the scope a route needs. */
export function missingScopeMessage(scopes: readonly ApiKeyScope[], needed: ApiKeyScope): string {
  return `This key may ${scopes.join(', ') || 'do nothing'}; this route needs the ${needed} scope`;
}

/**
 * The scope a route needs: its own (ApiScope), else its controller's for its HTTP method
 * (ApiScopes), else `admin`. Read by the guard, and by the OpenAPI document's 403s.
 */
export function scopeNeeded(controller: object, handler: object, method: string): ApiKeyScope {
  const own = Reflect.getMetadata(SCOPE, handler) as ApiKeyScope | undefined;
  if (own) return own;
  const scopes = Reflect.getMetadata(SCOPES, controller) as
    { read?: ApiKeyScope; write: ApiKeyScope } | undefined;
  if (!scopes) return 'admin';
  const reading = method.toUpperCase() === 'GET' || method.toUpperCase() === 'HEAD';
  return reading ? (scopes.read ?? 'read') : scopes.write;
}
