import { applyDecorators, type Type } from '@nestjs/common';
import { ApiExtraModels, ApiProperty, ApiResponse, getSchemaPath } from '@nestjs/swagger';
import { ERROR_STATUS } from '@app/common';

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
  options: { status?: number; description?: string; isArray?: boolean } = {},
) {
  const data = options.isArray
    ? { type: 'array', items: { $ref: getSchemaPath(model) } }
    : { $ref: getSchemaPath(model) };
  return applyDecorators(
    ApiExtraModels(model),
    ApiResponse({
      status: options.status ?? 200,
      description: options.description,
      schema: {
        type: 'object',
        required: ['ok', 'data'],
        properties: { ok: { type: 'boolean', example: true }, data },
      },
    }),
  );
}

/**
 * Documents error answers of a route, each with the envelope; `example` shows one answer
 * (its error's code and message) where the envelope's own examples would mislead.
 */
export function ApiErrors(
  ...statuses: {
    status: number;
    description: string;
    example?: { code: string; message: string };
  }[]
) {
  return applyDecorators(
    ...statuses.map(({ status, description, example }) =>
      ApiResponse({
        status,
        description,
        type: ErrorEnvelopeDto,
        ...(example ? { example: { ok: false, error: example } } : {}),
      }),
    ),
  );
}
