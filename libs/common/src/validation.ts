import {
  ValidationError,
  ValidationPipe,
  type ArgumentMetadata,
  type PipeTransform,
} from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import { validate } from 'class-validator';
import { AppError } from './app-error.js';

/** What the global pipe checks, for objects validated outside it (a batch's messages, an array body's items). */
export const VALIDATION_OPTIONS = {
  whitelist: true,
  forbidNonWhitelisted: true,
  forbidUnknownValues: true,
} as const;

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

/** A UTF-16 surrogate on its own (in `u` mode a pair is one code point, and is not matched). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Refuses bodies no DTO can describe before class-transformer walks them: nesting deep
 * enough to overflow its recursion, keys it would silently skip, and text that is not
 * Unicode (JSON may spell half of a surrogate pair, `"\ud83d"`: no UTF-8 can hold it, and
 * Redis's JSON decoder refuses it). Iterative on purpose.
 */
export function assertPlainBody(body: unknown): void {
  const stack: { value: unknown; depth: number }[] = [{ value: body, depth: 0 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (typeof value === 'string' && LONE_SURROGATE.test(value))
      throw new AppError(
        'BAD_REQUEST',
        'Request body holds text that is not valid Unicode (half of a surrogate pair, such as \\ud83d, on its own)',
      );
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

const NULLS_AS_ABSENT = Symbol('nulls-as-absent');

/**
 * A body class (and its subclasses) whose fields set to `null` count as left out, as many
 * JSON clients write an unset optional one (`"sendAt": null`: not scheduled); so do those of
 * the items of its `messages`. A required field left null is still refused as missing. Done
 * by the global pipe: an interceptor would put every request of the route through rxjs.
 */
export const NullsAsAbsent = (): ClassDecorator => (target) =>
  Reflect.defineMetadata(NULLS_AS_ABSENT, true, target);

function dropNulls(value: unknown): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
  const fields = value as Record<string, unknown>;
  for (const key of Object.keys(fields)) if (fields[key] === null) delete fields[key];
}

class AppValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    if (metadata.type === 'body') {
      assertPlainBody(value);
      if (metadata.metatype && Reflect.getMetadata(NULLS_AS_ABSENT, metadata.metatype)) {
        dropNulls(value);
        const items = (value as { messages?: unknown } | null)?.messages;
        if (Array.isArray(items)) items.forEach(dropNulls);
      }
    }
    return super.transform(value, metadata);
  }
}

/**
 * The global pipe: unknown fields are refused, values are not coerced (a number where a string
 * belongs is an error), and problems become one BAD_REQUEST naming each field.
 */
export function createValidationPipe(): ValidationPipe {
  return new AppValidationPipe({
    ...VALIDATION_OPTIONS,
    transform: true,
    transformOptions: { enableImplicitConversion: false },
    exceptionFactory: (errors) =>
      new AppError('BAD_REQUEST', describeValidationErrors(errors).join('; ') || 'Invalid request'),
  });
}

/**
 * A body that is a JSON array of `noun`s, each validated as the global pipe validates an
 * object body. Every problem is named by its item, in the field's own words
 * (`[1] secret must be ...`), all of them in one BAD_REQUEST.
 */
export class ArrayBodyPipe<T extends object> implements PipeTransform<unknown, Promise<T[]>> {
  constructor(
    private readonly itemClass: new () => T,
    private readonly noun: string,
  ) {}

  async transform(value: unknown): Promise<T[]> {
    if (!Array.isArray(value))
      throw new AppError('BAD_REQUEST', `the body must be a JSON array of ${this.noun}s`);
    assertPlainBody(value);
    const items: T[] = [];
    const problems: string[] = [];
    for (const [index, raw] of value.entries()) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        problems.push(`[${index}] each ${this.noun} must be an object`);
        continue;
      }
      const item = plainToInstance(this.itemClass, raw);
      const errors = await validate(item, VALIDATION_OPTIONS);
      problems.push(...describeValidationErrors(errors).map((text) => `[${index}] ${text}`));
      items.push(item);
    }
    if (problems.length) throw new AppError('BAD_REQUEST', problems.join('; '));
    return items;
  }
}
