import {
  Injectable,
  Logger,
  UseInterceptors,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Observable, tap } from 'rxjs';
import { toErrorEnvelope } from '@app/common';
import { AppConfig } from '@app/config';
import { AuditRepository } from '@app/status-store';
import { callerOf } from '../auth/api-keys.service.js';

/**
 * Writes every state-changing request of the routes it guards to the audit log: who, what
 * (the route and its parameters, never a body: keys and secrets stay out), from where, when,
 * and the status it got. Reads are not logged. A log write that fails never fails the request.
 */
@Injectable()
export class AuditInterceptor implements NestInterceptor {
  private readonly log = new Logger(AuditInterceptor.name);

  constructor(
    private readonly audit: AuditRepository,
    private readonly config: AppConfig,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    if (request.method === 'GET' || request.method === 'HEAD') return next.handle();
    const reply = http.getResponse<FastifyReply>();
    const write = (status: number) =>
      void this.audit
        .record(
          {
            actor: callerOf(request),
            action: `${request.method} ${request.routeOptions.url ?? request.url}`,
            target: Object.fromEntries(
              Object.entries((request.params ?? {}) as Record<string, unknown>).map(([k, v]) => [
                k,
                String(v).slice(0, 200),
              ]),
            ),
            from: request.ip,
            status,
          },
          this.config.AUDIT_RETENTION_MS,
        )
        .catch((err: Error) =>
          this.log.warn(
            { requestId: request.id, err: err.message },
            'admin action not written to the audit log',
          ),
        );
    return next.handle().pipe(
      tap({
        next: () => write(outcomes.get(request) ?? reply.statusCode),
        error: (err: unknown) => write(toErrorEnvelope(err).status),
      }),
    );
  }
}

/** Statuses of requests whose answer does not say how they went (see auditOutcome). */
const outcomes = new WeakMap<FastifyRequest, number>();

/**
 * Records how an action went when its answer does not say (a form post answered with a
 * redirect either way, its outcome in a flash message): the audit log keeps this status.
 */
export function auditOutcome(request: FastifyRequest, status: number): void {
  outcomes.set(request, status);
}

/** Audits a controller's state-changing routes. */
export const Audited = () => UseInterceptors(AuditInterceptor);
