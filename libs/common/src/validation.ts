import { ValidationError, ValidationPipe } from '@nestjs/common';
import { AppError } from './app-error.js';

function describe(errors: ValidationError[], parent = ''): string[] {
  return errors.flatMap((error) => {
    const path = parent ? `${parent}.${error.property}` : error.property;
    const own = Object.values(error.constraints ?? {}).map((text) =>
      text.startsWith(error.property) ? `${parent ? parent + '.' : ''}${text}` : `${path}: ${text}`,
    );
    return [...own, ...describe(error.children ?? [], path)];
  });
}

/**
 * The global pipe: unknown fields are refused, values are not coerced (a number where a string
 * belongs is an error), and problems become one BAD_REQUEST naming each field.
 */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    transformOptions: { enableImplicitConversion: false },
    forbidUnknownValues: true,
    exceptionFactory: (errors) =>
      new AppError('BAD_REQUEST', describe(errors).join('; ') || 'Invalid request'),
  });
}
