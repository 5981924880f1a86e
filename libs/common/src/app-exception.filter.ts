import { ArgumentsHost, Catch, ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ERROR_STATUS, type ErrorCode } from './app-error.js';
import type { ErrorEnvelope } from './envelope.js';

const CODE_BY_STATUS: Record<number, ErrorCode> = Object.fromEntries(
  Object.entries(ERROR_STATUS).map(([code, status]) => [status, code as ErrorCode]),
);

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The body types a route takes when not only JSON, as a refusal of another Content-Type
     * names them: `JSON (application/json) or multipart/form-data`.
     */
    bodyTypes?: string;
  }
}

/**
 * The refusal of a body of a type the route does not take, naming those it does (its route
 * config's `bodyTypes`; JSON alone unless it says otherwise).
 */
export function unsupportedContentType(request?: FastifyRequest): string {
  return `Unsupported Content-Type: send ${request?.routeOptions?.config?.bodyTypes ?? 'JSON (application/json)'}`;
}

/**
 * Turns a thrown error into a status and an error envelope; unknown ones log an errorId.
 * `bodyLimit`, the limit of the route the request reached, is stated when a body exceeds it;
 * `unsupportedType`, the route's words for a body of a type it does not take
 * (unsupportedContentType), when one is refused.
 */
export function toErrorEnvelope(
  exception: unknown,
  bodyLimit?: number,
  unsupportedType?: string,
): {
  status: number;
  body: ErrorEnvelope;
  errorId?: string;
} {
  if (exception instanceof AppError) {
    return {
      status: exception.status,
      body: {
        ok: false,
        error: {
          code: exception.code,
          message: exception.message,
          ...(exception.details ? { details: exception.details } : {}),
        },
      },
    };
  }
  // Body-parser and URL errors arrive raw or, from Nest 12, wrapped with the raw one as cause.
  const requestError = describeRequestError(
    exception instanceof HttpException ? exception.cause : exception,
    bodyLimit,
    unsupportedType,
  );
  if (requestError) return requestError;
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    const known = CODE_BY_STATUS[status];
    const response = exception.getResponse();
    const raw =
      typeof response === 'string' ? response : (response as { message?: unknown }).message;
    const message = Array.isArray(raw)
      ? raw.join('; ')
      : typeof raw === 'string'
        ? raw
        : exception.message;
    if (known) return { status, body: { ok: false, error: { code: known, message } } };
    // A status outside the contract's table (405, 415...): the nearest code decides it.
    if (status < 500)
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

/** Fastify's request errors (body parsing and the like), in our own words. */
const FASTIFY_REQUEST_ERRORS: Record<string, [number, ErrorCode, string]> = {
  FST_ERR_BAD_URL: [400, 'BAD_REQUEST', 'Malformed percent-encoding in the URL'],
  // Fastify's maxParamLength, left at its default. Its status, 414, is not in our table.
  FST_ERR_MAX_PARAM_LENGTH: [400, 'BAD_REQUEST', 'A path parameter is longer than 100 characters'],
  // @fastify/multipart (a file sent as multipart/form-data). Only a file too large is a 413:
  // a second file or a 21st field is a malformed form, which a smaller file would not mend.
  FST_REQ_FILE_TOO_LARGE: [413, 'PAYLOAD_TOO_LARGE', 'The file is larger than MEDIA_MAX_BYTES'],
  FST_FILES_LIMIT: [400, 'BAD_REQUEST', 'Send one file per request'],
  FST_PARTS_LIMIT: [400, 'BAD_REQUEST', 'Too many form fields'],
  FST_FIELDS_LIMIT: [400, 'BAD_REQUEST', 'Too many form fields'],
  FST_INVALID_MULTIPART_CONTENT_TYPE: [400, 'BAD_REQUEST', 'The form is not multipart/form-data'],
  FST_PROTO_VIOLATION: [400, 'BAD_REQUEST', 'Form field names must not be __proto__'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'BAD_REQUEST', 'Request body is empty'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'BAD_REQUEST', 'Request body is not valid JSON'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [
    400,
    'BAD_REQUEST',
    'Request body size did not match Content-Length',
  ],
};

/**
 * A body limit as a client reads it: `8 MiB`, `64 KiB`, `22435160 bytes (21.4 MiB)`. (The
 * api's docs state the limits in the same words, so their examples are the answers.)
 */
export function formatBodyLimit(bytes: number): string {
  const MiB = 1024 * 1024;
  if (bytes % MiB === 0) return `${bytes / MiB} MiB`;
  if (bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes (${(bytes / MiB).toFixed(1)} MiB)`;
}

/** Our own words for malformed requests (the parser's would echo parts of the body). */
function describeRequestError(
  error: unknown,
  bodyLimit?: number,
  unsupportedType = unsupportedContentType(),
): { status: number; body: ErrorEnvelope } | undefined {
  const err = error as { statusCode?: number; code?: string } | undefined;
  const answer = (status: number, code: ErrorCode, message: string) => ({
    status,
    body: { ok: false as const, error: { code, message } },
  });
  // Routes differ (1 MiB; a batch 8 MiB; a file sent as base64 MEDIA_MAX_BYTES and a little).
  if (err?.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return answer(
      413,
      'PAYLOAD_TOO_LARGE',
      bodyLimit
        ? `Request body is too large: this route takes at most ${formatBodyLimit(bodyLimit)}`
        : 'Request body is too large',
    );
  if (err?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return answer(400, 'BAD_REQUEST', unsupportedType);
  // By code first: Fastify's errors about the URL are URIErrors too (a parameter too long).
  const known = err?.code ? FASTIFY_REQUEST_ERRORS[err.code] : undefined;
  if (known) return answer(...known);
  if (error instanceof URIError)
    return answer(400, 'BAD_REQUEST', 'Malformed percent-encoding in the URL');
  // Fastify's JSON parser marks a syntax error (or a __proto__ key) with a 400.
  if (error instanceof SyntaxError && err?.statusCode === 400)
    return answer(400, 'BAD_REQUEST', 'Request body is not valid JSON');
  // The client hung up while its body was being read (node's "aborted"): nobody gets the
  // answer, and it is not our error (the request line says "request aborted").
  if (err?.code === 'ECONNRESET' && (error as Error).message === 'aborted')
    return answer(400, 'BAD_REQUEST', 'The request was aborted by the client');
  if (typeof err?.code === 'string' && err.code.startsWith('FST_ERR_') && err.statusCode! < 500)
    return answer(400, 'BAD_REQUEST', 'Request could not be read');
  return undefined;
}

/**
 * What ioredis says when it gave up on a command, or could not send it: Redis is down,
 * unreachable, too slow, or its Cluster cannot serve the key now.
 */
const REDIS_CLIENT_GAVE_UP =
  /^(Connection is closed|Stream isn't writeable|Command aborted due to connection close|Command timed out|Too many Cluster redirections|None of startup nodes is available|Failed to refresh slots cache|Cluster isn't ready)/;
/**
 * Redis's own refusals that mean it cannot serve now, not that the command was wrong: a
 * replica after a failover (READONLY), loading its data, a script running too long, its
 * memory full (OOM, as maxmemory with noeviction answers), a failing disk (MISCONF), a Cluster
 * or Sentinel master down or slots moving.
 */
const REDIS_CANNOT_SERVE =
  /^(READONLY|LOADING|BUSY|OOM|MISCONF|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS) /;

/** Redis is down, unreachable or cannot serve now: a 503, not a bug. */
export function isRedisUnavailable(exception: unknown): boolean {
  const err = exception as {
    name?: string;
    message?: string;
    code?: string;
    previousErrors?: unknown[];
  };
  const message = err?.message ?? '';
  return (
    err?.name === 'MaxRetriesPerRequestError' ||
    err?.code === 'ECONNREFUSED' ||
    REDIS_CLIENT_GAVE_UP.test(message) ||
    (err?.name === 'ReplyError' && REDIS_CANNOT_SERVE.test(message)) ||
    // A MULTI whose commands Redis refused (out of memory, read-only): ioredis throws
    // EXECABORT, the refusals in `previousErrors`.
    (message.startsWith('EXECABORT') && (err.previousErrors ?? []).some(isRedisUnavailable))
  );
}

/**
 * The limit a JSON body is read to: the route's. A form's parser has its own (the admin's
 * 64 KiB), which routeOptions does not show: none is stated rather than a wrong one.
 */
function jsonBodyLimit(request: FastifyRequest | undefined): number | undefined {
  const type = request?.headers?.['content-type'] ?? '';
  return /^application\/json\s*(;|$)/i.test(type) ? request?.routeOptions?.bodyLimit : undefined;
}

/** The one place errors become HTTP answers: `{ ok: false, error: { code, message } }`. */
@Catch()
export class AppExceptionFilter implements ExceptionFilter {
  private readonly log = new Logger('Errors');

  catch(exception: unknown, host: ArgumentsHost): void {
    const reply = host.switchToHttp().getResponse<FastifyReply>();
    const request = host.switchToHttp().getRequest<FastifyRequest | undefined>();
    const { status, body, errorId } = toErrorEnvelope(
      exception,
      jsonBodyLimit(request),
      unsupportedContentType(request),
    );
    const requestId = request?.id;
    if (errorId) this.log.error({ errorId, requestId, err: exception }, 'unhandled error');
    if (reply.sent || reply.raw.headersSent) return;
    if (status === 401)
      reply.header('WWW-Authenticate', reply.getHeader('WWW-Authenticate') ?? 'ApiKey');
    void reply.code(status).send(body);
  }
}
