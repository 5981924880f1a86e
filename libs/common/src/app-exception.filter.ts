import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import { AppError, ERROR_STATUS, type ErrorCode } from './app-error.js';
import type { ErrorEnvelope } from './envelope.js';

const CODE_BY_STATUS: Record<number, ErrorCode> = Object.fromEntries(
  Object.entries(ERROR_STATUS).map(([code, status]) => [status, code as ErrorCode]),
);

/** Turns a thrown error into a status and an error envelope; unknown ones log an errorId. */
export function toErrorEnvelope(exception: unknown): {
  status: number;
  body: ErrorEnvelope;
  errorId?: string;
} {
  if (exception instanceof AppError) {
    return {
      status: exception.status,
      body: { ok: false, error: { code: exception.code, message: exception.message } },
    };
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    const code = CODE_BY_STATUS[status] ?? (status >= 500 ? 'INTERNAL' : 'BAD_REQUEST');
    const response = exception.getResponse();
    const raw =
      typeof response === 'string' ? response : (response as { message?: unknown }).message;
    const message = Array.isArray(raw)
      ? raw.join('; ')
      : typeof raw === 'string'
        ? raw
        : exception.message;
    return {
      status: code === 'BAD_REQUEST' && status >= 500 ? 400 : status,
      body: { ok: false, error: { code, message } },
    };
  }
  // body-parser errors (invalid JSON, body too large) carry a status and an expose flag.
  const bodyError = exception as { status?: number; type?: string; expose?: boolean };
  if (bodyError?.expose && typeof bodyError.status === 'number' && bodyError.status < 500) {
    if (bodyError.status === 413) {
      return {
        status: 413,
        body: {
          ok: false,
          error: { code: 'PAYLOAD_TOO_LARGE', message: 'Request body is larger than the limit' },
        },
      };
    }
    const message =
      bodyError.type === 'entity.parse.failed'
        ? 'Request body is not valid JSON'
        : 'Request body could not be read';
    return { status: 400, body: { ok: false, error: { code: 'BAD_REQUEST', message } } };
  }
  if (isRedisUnavailable(exception)) {
    return {
      status: 503,
      body: {
        ok: false,
        error: { code: 'UNAVAILABLE', message: 'Storage (Redis) is unavailable; retry shortly' },
      },
    };
  }
  const errorId = randomUUID();
  return {
    status: 500,
    errorId,
    body: {
      ok: false,
      error: {
        code: 'INTERNAL',
        message: 'Internal error; quote the errorId when reporting it',
        errorId,
      },
    },
  };
}

/** ioredis gave up on a command: Redis is down or unreachable, which is a 503, not a bug. */
function isRedisUnavailable(exception: unknown): boolean {
  const err = exception as { name?: string; message?: string; code?: string };
  return (
    err?.name === 'MaxRetriesPerRequestError' ||
    /^(Connection is closed|Stream isn't writeable)/.test(err?.message ?? '') ||
    err?.code === 'ECONNREFUSED'
  );
}

/** The one place errors become HTTP answers: `{ ok: false, error: { code, message } }`. */
@Catch()
export class AppExceptionFilter implements ExceptionFilter {
  private readonly log = new Logger('Errors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    const { status, body, errorId } = toErrorEnvelope(exception);
    if (errorId) this.log.error({ errorId, err: exception }, 'unhandled error');
    if (response.headersSent) return;
    if (status === 401)
      response.setHeader('WWW-Authenticate', response.getHeader('WWW-Authenticate') ?? 'ApiKey');
    response.status(status).json(body);
  }
}
