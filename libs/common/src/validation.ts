import { ValidationError, ValidationPipe, type ArgumentMetadata } from '@nestjs/common';
import { AppError } from './app-error.js';

/** Each problem of a validation, named by the path of its field (`contacts.0.phone`). */
export function describeValidationErrors(errors: ValidationError[], parent = ''): string[] {
  return errors.flatMap((error) => {
    const path = parent ? `${parent}.${error.property}` : error.property;
    const own = Object.values(error.constraints ?? {}).map((text) =>
      text.startsWith(error.property) ? `${parent ? parent + '.' : ''}${text}` : `${path}: ${text}`,
    );
    return [...own, ...describeValidationErrors(error.children ?? [], path)];
  });
}

const MAX_BODY_DEPTH = 16;
// class-transformer skips keys named like Object.prototype members, so the whitelist would
// never see them: they are refused here instead of being dropped silently.
const RESERVED_KEYS = new Set([...Object.getOwnPropertyNames(Object.prototype), '__proto__']);

/**
 * Refuses bodies no DTO can describe before class-transformer walks them: nesting deep
 * enough to overflow its recursion, and keys it would silently skip. Iterative on purpose.
 */
export function assertPlainBody(body: unknown): void {
  const stack: { value: unknown; depth: number }[] = [{ value: body, depth: 0 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_BODY_DEPTH)
      throw new AppError(
        'BAD_REQUEST',
        `Request body is nested deeper than ${MAX_BODY_DEPTH} levels`,
      );
    for (const key of Object.keys(value)) {
      if (RESERVED_KEYS.has(key))
        throw new AppError('BAD_REQUEST', `property ${key} should not exist`);
      stack.push({ value: (value as Record<string, unknown>)[key], depth: depth + 1 });
    }
  }
}

class AppValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    if (metadata.type === 'body') assertPlainBody(value);
    return super.transform(value, metadata);
  }
}

/**
 * The global pipe: unknown fields are refused, values are not coerced (a number where a string
 * belongs is an error), and problems become one BAD_REQUEST naming each field.
 */
export function createValidationPipe(): ValidationPipe {
  return new AppValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    transformOptions: { enableImplicitConversion: false },
    forbidUnknownValues: true,
    exceptionFactory: (errors) =>
      new AppError('BAD_REQUEST', describeValidationErrors(errors).join('; ') || 'Invalid request'),
  });
}
