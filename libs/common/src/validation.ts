import {
  ValidationError,
  ValidationPipe,
  type ArgumentMetadata,
  type PipeTransform,
} from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import {
  ARRAY_MAX_SIZE,
  IS_BOOLEAN,
  IS_INT,
  IS_NUMBER,
  ValidationTypes,
  getMetadataStorage,
  validate,
} from 'class-validator';
import { AppError } from './app-error.js';

/** What the global pipe checks, for objects validated outside it (a batch's messages, an array body's items). */
export const VALIDATION_OPTIONS = {
  whitelist: true,
  forbidNonWhitelisted: true,
  forbidUnknownValues: true,
} as const;

/** A string that reads as a number as a client might have written it (1500, -0.5, 1e3, +1500). */
const JSON_NUMBER_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

/** The checks of a value's JSON type that a field of a number or a boolean has. */
const TYPE_CHECKS = new Set<string>([IS_INT, IS_NUMBER, IS_BOOLEAN]);

/**
 * A field's problems. A value of the wrong type is told so alone (a string is not "less than
 * 0"), and a string that reads as the number or boolean the field takes is named as a string:
 * JSON bodies are not converted (`"typingMs": "1500"` is refused), which a client that quotes
 * its numbers would not otherwise see.
 */
function problemsOf(error: ValidationError, name: string): string[] {
  // An unknown field is named as the client wrote it: cut, as its whole name could be 1 MB.
  if (error.constraints?.[ValidationTypes.WHITELIST]) return [`property ${name} should not exist`];
  const constraints = Object.entries(error.constraints ?? {});
  const typeChecks = constraints.filter(([name]) => TYPE_CHECKS.has(name));
  if (typeChecks.length === 0) return constraints.map(([, text]) => text);
  const value: unknown = error.value;
  const boolean = typeChecks.some(([name]) => name === IS_BOOLEAN);
  const quoted =
    typeof value === 'string' && (boolean ? /^(true|false)$/ : JSON_NUMBER_TEXT).test(value)
      ? ` (a JSON ${boolean ? 'boolean' : 'number'}, without quotes: ${JSON.stringify(value)} is a string)`
      : '';
  return typeChecks.map(([, text]) => text + quoted);
}

/** A field's name as a refusal echoes it: at most 40 characters, and `""` for an empty one. */
function shownName(property: string): string {
  if (property === '') return '""';
  return property.length > 40 ? `${property.slice(0, 40)}…` : property;
}

/** Each problem of a validation, named by the path of its field (`contacts.0.phone`). */
export function describeValidationErrors(errors: ValidationError[], parent = ''): string[] {
  return errors.flatMap((error) => {
    const name = shownName(error.property);
    const path = parent ? `${parent}.${name}` : name;
    const own = problemsOf(error, name).map((text) =>
      error.property && text.startsWith(error.property)
        ? `${parent ? parent + '.' : ''}${text}`
        : `${path}: ${text}`,
    );
    return [...own, ...describeValidationErrors(error.children ?? [], path)];
  });
}

const formTypes = new WeakMap<object, Map<string, 'number' | 'boolean'>>();

/** The fields of a body class checked as a number or a boolean (not those of each item of an array). */
function formTypesOf(bodyClass: new () => object): Map<string, 'number' | 'boolean'> {
  let types = formTypes.get(bodyClass);
  if (!types) {
    types = new Map();
    const rules = getMetadataStorage().getTargetValidationMetadatas(bodyClass, '', true, false);
    for (const rule of rules) {
      if (rule.each) continue;
      if (rule.name === IS_INT || rule.name === IS_NUMBER) types.set(rule.propertyName, 'number');
      if (rule.name === IS_BOOLEAN) types.set(rule.propertyName, 'boolean');
    }
    formTypes.set(bodyClass, types);
  }
  return types;
}

/**
 * A form's fields (every value is text in a form) as a JSON body of `bodyClass` carries them:
 * in a field the class checks as a number, a decimal number becomes one; in a boolean's, `true`
 * and `false` become one. Anything else is left as it is, for the validator to refuse in the
 * field's own words. Only forms are converted: in JSON a string stays a string.
 */
export function formAsBody(
  fields: Record<string, string>,
  bodyClass: new () => object,
): Record<string, unknown> {
  const types = formTypesOf(bodyClass);
  const body: Record<string, unknown> = { ...fields };
  for (const [field, value] of Object.entries(fields)) {
    const type = types.get(field);
    if (type === 'number' && /^-?\d{1,15}(\.\d{1,15})?$/.test(value)) body[field] = Number(value);
    else if (type === 'boolean' && (value === 'true' || value === 'false'))
      body[field] = value === 'true';
  }
  return body;
}

/** The most problems one refusal lists; the rest are counted (`; and 328 more`). */
const MAX_LISTED_PROBLEMS = 10;

/** Problems in one message, the first ten of them: all of a 1 MiB body's would weigh 100 MB. */
export function listProblems(problems: string[]): string {
  const listed = problems.slice(0, MAX_LISTED_PROBLEMS).join('; ');
  const more = problems.length - MAX_LISTED_PROBLEMS;
  return more > 0 ? `${listed}; and ${more} more` : listed;
}

const arrayLimits = new WeakMap<object, [field: string, max: number][]>();

/** The fields of a body class that have an @ArrayMaxSize, with their maximum. */
function arrayLimitsOf(bodyClass: new () => object): [field: string, max: number][] {
  let limits = arrayLimits.get(bodyClass);
  if (!limits) {
    limits = getMetadataStorage()
      .getTargetValidationMetadatas(bodyClass, '', true, false)
      .filter((rule) => rule.name === ARRAY_MAX_SIZE && !rule.each)
      .map((rule) => [rule.propertyName, rule.constraints[0] as number]);
    arrayLimits.set(bodyClass, limits);
  }
  return limits;
}

/**
 * The body with each array longer than its field's @ArrayMaxSize cut to one item over it: it
 * is refused all the same, in the field's own words, but class-transformer and the validators
 * no longer walk items no answer names (8 MiB hold a million `{}`). The body is not changed.
 */
export function cutOversizedArrays(body: unknown, bodyClass: new () => object): unknown {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return body;
  let cut: Record<string, unknown> | undefined;
  for (const [field, max] of arrayLimitsOf(bodyClass)) {
    const value = (body as Record<string, unknown>)[field];
    if (!Array.isArray(value) || value.length <= max + 1) continue;
    cut ??= { ...(body as Record<string, unknown>) };
    cut[field] = value.slice(0, max + 1);
  }
  return cut ?? body;
}

const MAX_BODY_DEPTH = 16;
/**
 * Far more fields than any body class has (15 at most). class-transformer's time grows with the
 * square of an object's keys (it drops duplicates with indexOf): 85,000 of them took 5 s.
 */
const MAX_OBJECT_FIELDS = 64;
// class-transformer skips keys named like Object.prototype members, so the whitelist would
// never see them: they are refused here instead of being dropped silently.
const RESERVED_KEYS = new Set([...Object.getOwnPropertyNames(Object.prototype), '__proto__']);

/** A UTF-16 surrogate on its own (in `u` mode a pair is one code point, and is not matched). */
const LONE_SURROGATE = /\p{Cs}/u;

/** A value met while walking a body; its path is built only for a refusal. */
interface BodyNode {
  value: unknown;
  depth: number;
  key?: string;
  parent?: BodyNode;
}

/** Where a value sits in the body, as `messages[0]` (a key cut to 40 characters: it is echoed). */
function pathOf(node: BodyNode): string {
  let path = '';
  for (let at: BodyNode | undefined = node; at?.parent; at = at.parent)
    path = (Array.isArray(at.parent.value) ? `[${at.key}]` : `.${at.key!.slice(0, 40)}`) + path;
  return path.replace(/^\./, '');
}

/**
 * Refuses bodies no DTO can describe before class-transformer walks them: nesting deep
 * enough to overflow its recursion, objects with more fields than it can go through in
 * reasonable time, keys it would silently skip, and text that is not Unicode (JSON may spell
 * half of a surrogate pair, `"\ud83d"`: no UTF-8 can hold it, and Redis's JSON decoder
 * refuses it). Iterative on purpose.
 */
export function assertPlainBody(body: unknown): void {
  const stack: BodyNode[] = [{ value: body, depth: 0 }];
  while (stack.length > 0) {
    const node = stack.pop()!;
    const { value, depth } = node;
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
    const keys = Object.keys(value);
    if (keys.length > MAX_OBJECT_FIELDS && !Array.isArray(value)) {
      const where = node.parent ? `Request body at ${pathOf(node)}` : 'Request body';
      const named = keys.slice(0, 3).map((key) => key.slice(0, 40));
      throw new AppError(
        'BAD_REQUEST',
        `${where} has ${keys.length} fields (${named.join(', ')}, …); ` +
          `an object in a request has at most ${MAX_OBJECT_FIELDS}`,
      );
    }
    for (const key of keys) {
      if (RESERVED_KEYS.has(key))
        throw new AppError('BAD_REQUEST', `property ${key} should not exist`);
      stack.push({
        value: (value as Record<string, unknown>)[key],
        depth: depth + 1,
        key,
        parent: node,
      });
    }
  }
}

/**
 * Something to read: a character that is not a space, a control or an invisible format
 * character. A text, a name or a file name of only "\u0000" or a zero-width space would show as
 * nothing.
 */
export const NOT_BLANK = /[^\s\p{Cc}\p{Cf}\p{Z}]/u;

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
      if (metadata.metatype) value = cutOversizedArrays(value, metadata.metatype);
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
 * belongs is an error, and a string where a number or a boolean belongs: a form is converted
 * by formAsBody before it), and problems become one BAD_REQUEST naming each field.
 */
export function createValidationPipe(): ValidationPipe {
  return new AppValidationPipe({
    ...VALIDATION_OPTIONS,
    transform: true,
    transformOptions: { enableImplicitConversion: false },
    exceptionFactory: (errors) =>
      new AppError(
        'BAD_REQUEST',
        listProblems(describeValidationErrors(errors)) || 'Invalid request',
      ),
  });
}

/**
 * A body that is a JSON array of at most `maxItems` `noun`s, each validated as the global pipe
 * validates an object body. Every problem is named by its item, in the field's own words
 * (`[1] secret must be ...`), in one BAD_REQUEST.
 */
export class ArrayBodyPipe<T extends object> implements PipeTransform<unknown, Promise<T[]>> {
  constructor(
    private readonly itemClass: new () => T,
    private readonly noun: string,
    private readonly maxItems: number,
  ) {}

  async transform(value: unknown): Promise<T[]> {
    if (!Array.isArray(value))
      throw new AppError('BAD_REQUEST', `the body must be a JSON array of ${this.noun}s`);
    // Before any item is read: 1 MiB holds 330,000 `{}`, each of them a problem to name.
    if (value.length > this.maxItems)
      throw new AppError(
        'BAD_REQUEST',
        `the body holds at most ${this.maxItems} ${this.noun}s; it has ${value.length}`,
      );
    assertPlainBody(value);
    const items: T[] = [];
    const problems: string[] = [];
    for (const [index, raw] of value.entries()) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        problems.push(`[${index}] each ${this.noun} must be an object`);
        continue;
      }
      const item = plainToInstance(this.itemClass, cutOversizedArrays(raw, this.itemClass));
      const errors = await validate(item, VALIDATION_OPTIONS);
      problems.push(...describeValidationErrors(errors).map((text) => `[${index}] ${text}`));
      items.push(item);
    }
    if (problems.length) throw new AppError('BAD_REQUEST', listProblems(problems));
    return items;
  }
}
