import {
  applyDecorators,
  Injectable,
  Logger,
  SetMetadata,
  UseInterceptors,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Observable, tap } from 'rxjs';
import { clientAddress, toErrorEnvelope } from '@app/common';
import { AppConfig } from '@app/config';
import { AuditRepository, type AuditEntry } from '@app/status-store';
import { callerOf } from '../auth/api-keys.service.js';

/**
 * Writes every state-changing request of the routes it guards to the audit log: who, what
 * (the route and its parameters, and what the handler named with auditTarget; never a body:
 * keys and secrets stay out), from where, when, and the status it got. Reads are not logged.
 * A log write that fails never fails the request. (A request its guards refused never reaches
 * an interceptor: ScopeGuard writes its refusals.)
 */
@Injectable()
export class AuditWriter {
  private readonly log = new Logger('Audit');

  constructor(
    private readonly audit: AuditRepository,
    private readonly config: AppConfig,
  ) {}

  /** Writes the request's entry, once. */
  write(request: FastifyRequest, status: number): void {
    this.save(request, status, (entry) => this.audit.record(entry, this.config.AUDIT_RETENTION_MS));
  }

  /**
   * Writes a request refused (4xx: outside the caller's scopes or sessions, or bad): kept
   * apart from actions and collapsed per caller, route and minute (AuditRepository), as any
   * key can make as many as it likes.
   */
  writeRefusal(request: FastifyRequest, status: number): void {
    this.save(request, status, (entry) =>
      this.audit.recordRefusal(entry, this.config.AUDIT_RETENTION_MS),
    );
  }

  private save(
    request: FastifyRequest,
    status: number,
    record: (entry: Omit<AuditEntry, 'id' | 'at' | 'count'>) => Promise<unknown>,
  ): void {
    if (request.method === 'GET' || request.method === 'HEAD' || written.has(request)) return;
    written.add(request);
    const params = Object.entries((request.params ?? {}) as Record<string, unknown>).map(
      ([k, v]) => [k, String(v).slice(0, 200)],
    );
    void record({
      actor: callerOf(request),
      action: `${request.method} ${request.routeOptions.url ?? request.url}`,
      target: { ...Object.fromEntries(params), ...targets.get(request) },
      from: clientAddress(request.ip),
      status,
    }).catch((err: Error) =>
      this.log.warn(
        { requestId: request.id, err: err.message },
        'admin action not written to the audit log',
      ),
    );
  }
}

@Injectable()
export class AuditInterceptor implements NestInterceptor {
  constructor(private readonly writer: AuditWriter) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    if (request.method === 'GET' || request.method === 'HEAD') return next.handle();
    const reply = http.getResponse<FastifyReply>();
    const record = (status: number) =>
      // Refused (4xx: nothing changed), which a caller can make at will: collapsed, apart.
      status >= 400 && status < 500
        ? this.writer.writeRefusal(request, status)
        : this.writer.write(request, status);
    return next.handle().pipe(
      tap({
        next: () => record(outcomes.get(request) ?? reply.statusCode),
        error: (err: unknown) => record(toErrorEnvelope(err).status),
      }),
    );
  }
}

/** Requests whose entry is written (an error after the interceptor's is not written again). */
const written = new WeakSet<FastifyRequest>();

/** Statuses of requests whose answer does not say how they went (see auditOutcome). */
const outcomes = new WeakMap<FastifyRequest, number>();

/** What a request acted on beyond its route's parameters (see auditTarget). */
const targets = new WeakMap<FastifyRequest, Record<string, string>>();

/**
 * Records how an action went when its answer does not say (a form post answered with a
 * redirect either way, its outcome in a flash message): the audit log keeps this status.
 */
export function auditOutcome(request: FastifyRequest, status: number): void {
  outcomes.set(request, status);
}

/**
 * Names what an action acted on when its route's parameters do not (a session made from a
 * body's id, a key given its id by the action): the audit entry's target shows it. Never a
 * secret.
 */
export function auditTarget(request: FastifyRequest, target: Record<string, string>): void {
  targets.set(request, { ...targets.get(request), ...target });
}

/** Marks an audited controller (read by guards that write their refusals, see ScopeGuard). */
export const AUDITED = 'audited';

/** Audits a controller's state-changing routes (and ScopeGuard its refusals of them). */
export const Audited = () =>
  applyDecorators(SetMetadata(AUDITED, true), UseInterceptors(AuditInterceptor));
