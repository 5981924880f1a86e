import { applyDecorators } from '@nestjs/common';
import { ApiPropertyOptional } from '@nestjs/swagger';
import { Transform } from 'class-transformer';
import { IsInt, IsOptional, Max, Min } from 'class-validator';

/**
 * `?limit=` of a list: an optional whole number from 1 to `max`, documented with its default.
 * Query strings are text and the global pipe does not coerce, so digits become a number here
 * and anything else stays as it is, for IsInt to refuse by name.
 */
export const QueryLimit = (defaultLimit = 50, max = 200) =>
  applyDecorators(
    ApiPropertyOptional({ example: defaultLimit, minimum: 1, maximum: max, default: defaultLimit }),
    IsOptional(),
    Transform(({ value }) =>
      typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value,
    ),
    IsInt(),
    Min(1),
    Max(max),
  );
