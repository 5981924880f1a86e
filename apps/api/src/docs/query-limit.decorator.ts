import { applyDecorators } from '@nestjs/common';
import { ApiPropertyOptional } from '@nestjs/swagger';
import { Transform } from 'class-transformer';
import { IsInt, IsOptional, Max, Min } from 'class-validator';

/**
 * `?limit=` of a list: an optional whole number from 1 to `max`, documented with its default.
 * Query strings are text and the global pipe does not coerce, so a decimal number becomes one
 * here (for Min, Max and IsInt to refuse it by its value) and anything else stays as it is, for
 * IsInt to refuse by name.
 */
export const QueryLimit = (defaultLimit = 50, max = 200) =>
  applyDecorators(
    ApiPropertyOptional({ example: defaultLimit, minimum: 1, maximum: max, default: defaultLimit }),
    IsOptional(),
    Transform(({ value }) =>
      typeof value === 'string' && /^-?\d{1,15}(\.\d{1,15})?$/.test(value) ? Number(value) : value,
    ),
    IsInt(),
    Min(1),
    Max(max),
  );
