import { applyDecorators, type Type } from '@nestjs/common';
import {
  ApiExtraModels,
  ApiProperty,
  ApiResponse,
  getSchemaPath,
  type ApiResponseOptions,
} from '@nestjs/swagger';
import { ERROR_STATUS, type ErrorCode } from '@app/common';

export class ErrorDetailDto {
  @ApiProperty({ example: 3, description: 'Position of the item in the request (from 0)' })
  index: number;
  @ApiProperty({ example: 'to is not a phone number or group id' })
  message: string;
}

export class ErrorBodyDto {
  @ApiProperty({ enum: Object.keys(ERROR_STATUS), example: 'BAD_REQUEST' })
  code: string;
  @ApiProperty({
    example: 'to must be a phone number of 7 to 15 digits or a group id ending in @g.us',
  })
  message: string;
  @ApiProperty({
    required: false,
    example: '3b9f2c1e-7a4d-4e8b-9c2a-5f1d6e0a8b7c',
    description: 'Present on INTERNAL errors; the same id is in the server log',
  })
  errorId?: string;
  @ApiProperty({
    required: false,
    type: ErrorDetailDto,
    isArray: true,
    description: 'Present when items of a request were refused (a batch): each by its index',
  })
  details?: ErrorDetailDto[];
}

export class ErrorEnvelopeDto {
  @ApiProperty({ example: false })
  ok: false;
  @ApiProperty({ type: ErrorBodyDto })
  error: ErrorBodyDto;
}

/** Documents a `{ ok: true, data: <model> }` answer (or `data: <model>[]` with isArray). */
export function ApiEnvelope(
  model: Type<unknown>,
  options: {
    status?: number;
    description?: string;
    isArray?: boolean;
    headers?: ApiResponseOptions['headers'];
  } = {},
) {
  const data = options.isArray
    ? { type: 'array', items: { $ref: getSchemaPath(model) } }
    : { $ref: getSchemaPath(model) };
  return applyDecorators(
    ApiExtraModels(model),
    ApiResponse({
      status: options.status ?? 200,
      description: options.description,
      headers: options.headers,
      schema: {
        type: 'object',
        required: ['ok', 'data'],
        properties: { ok: { type: 'boolean', example: true }, data },
      },
    }),
  );
}

/** An error answer's `error`, as an example shows it. */
export interface ErrorExample {
  code: ErrorCode;
  message: string;
  errorId?: string;
}

/** A session id path parameter the app refuses, in its words. */
export const MALFORMED_SESSION_ID: ErrorExample = {
  code: 'BAD_REQUEST',
  message: 'sessionId must be 1-64 letters, digits, _ or -, starting with a letter or digit',
};
/** A session that does not exist, in the app's words. */
export const NO_SUCH_SESSION: ErrorExample = {
  code: 'NOT_FOUND',
  message: 'Session sales does not exist',
};

/**
 * What the app answers a status with, in its own words, whatever the route, for a route that
 * shows no example of its own: without one, Swagger UI shows the envelope's (a 400's) under
 * every status. A 400, 403, 404 or 409 is the route's own: without its example, its
 * description stands for the message (errorEnvelopeExample).
 */
export const ERROR_EXAMPLES: Record<number, ErrorExample> = {
  401: { code: 'UNAUTHORIZED', message: 'Invalid API key' },
  408: {
    code: 'REQUEST_TIMEOUT',
    message: 'The request did not arrive in full within REQUEST_TIMEOUT_MS',
  },
  413: {
    code: 'PAYLOAD_TOO_LARGE',
    message: 'Request body is too large: this route takes at most 1 MiB',
  },
  429: {
    code: 'RATE_LIMITED',
    message: 'Rate limit of 600 requests a minute reached; retry in 42 s',
  },
  500: {
    code: 'INTERNAL',
    message: 'Internal error; quote the errorId when reporting it',
    errorId: '3b9f2c1e-7a4d-4e8b-9c2a-5f1d6e0a8b7c',
  },
  503: { code: 'UNAVAILABLE', message: 'Storage (Redis) is unavailable; retry shortly' },
};

/**
 * The error envelope of `example`, else of the status's own example, else of the status's
 * code with `description` for its message.
 */
export function errorEnvelopeExample(status: number, example?: ErrorExample, description?: string) {
  const code = CODE_BY_STATUS.get(status);
  const error =
    example ??
    ERROR_EXAMPLES[status] ??
    (code && description ? { code, message: description } : undefined);
  return error ? { ok: false as const, error } : undefined;
}

const CODE_BY_STATUS = new Map(
  Object.entries(ERROR_STATUS).map(([code, status]) => [status as number, code as ErrorCode]),
);

/** One error answer of a route, as ApiErrors documents it; shared by routes that give it alike. */
export interface ErrorAnswer {
  status: number;
  description: string;
  example?: ErrorExample;
  examples?: Record<string, { summary: string; error: ErrorExample }>;
}

/**
 * Documents error answers of a route, each with the envelope and an example answer: its own
 * `example` (its error's code and message), or several named `examples` for a status given
 * for more than one reason, else the status's (ERROR_EXAMPLES).
 */
export function ApiErrors(...statuses: ErrorAnswer[]) {
  return applyDecorators(
    ApiExtraModels(ErrorEnvelopeDto),
    ...statuses.map(({ status, description, example, examples }) => {
      const shown = errorEnvelopeExample(status, example, description);
      // As JSON whatever the route produces when it succeeds (a PNG, a file, Prometheus text):
      // `type` would put the envelope under those.
      return ApiResponse({
        status,
        description,
        content: {
          'application/json': {
            schema: { $ref: getSchemaPath(ErrorEnvelopeDto) },
            ...(examples
              ? {
                  examples: Object.fromEntries(
                    Object.entries(examples).map(([name, { summary, error }]) => [
                      name,
                      { summary, value: { ok: false, error } },
                    ]),
                  ),
                }
              : shown
                ? { example: shown }
                : {}),
          },
        },
      });
    }),
  );
}
