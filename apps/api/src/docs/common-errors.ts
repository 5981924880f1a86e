import type { OpenAPIObject } from '@nestjs/swagger';
import { getSchemaPath } from '@nestjs/swagger';
import { repeatedApiKeyMessage } from '../auth/api-key.guard.js';
import { ADMIN_SECURITY } from '../admin/admin-auth.decorator.js';
import { METRICS_SECURITY } from '../metrics/metrics.controller.js';
import { ErrorEnvelopeDto, errorEnvelopeExample, type ErrorExample } from './envelope.dto.js';

type Operation = NonNullable<OpenAPIObject['paths'][string]['get']>;
type ResponseObject = Extract<NonNullable<Operation['responses'][string]>, { description: string }>;

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/** Why ApiKeyGuard refuses a request that names x-api-key twice (Node joins the two into one). */
const REPEATED_API_KEY =
  'the x-api-key header given more than once (neither key is tried, nor counted as a failed login)';

/**
 * Adds to the document the error answers every route of a kind can give, whatever its own
 * decorators say (a route documents its own when it has more to say): a 503 on every /api
 * route (Redis cannot be reached: the exception filter answers UNAVAILABLE for any route), a
 * 413 on every route that takes a body (Fastify's body limit), and the 400 of a repeated
 * x-api-key on every route that takes one; and an example to every error answer without one.
 * The health probes answer their own shape, not the envelope, and are left alone.
 */
export function documentCommonErrors(document: OpenAPIObject): OpenAPIObject {
  // A new object each time: showErrorExamples gives each its own example.
  const envelope = () => ({
    'application/json': { schema: { $ref: getSchemaPath(ErrorEnvelopeDto) } },
  });
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of METHODS) {
      const operation: Operation | undefined = item[method];
      if (!operation) continue;
      if (operation.security?.some((requirement) => 'api-key' in requirement))
        documentRepeatedApiKey(operation);
      if (path.startsWith('/api/')) {
        operation.responses['503'] ??= {
          description: 'UNAVAILABLE: storage (Redis) cannot be reached; retry shortly',
          content: envelope(),
        };
        if (operation.requestBody)
          operation.responses['413'] ??= {
            description: 'PAYLOAD_TOO_LARGE: the body is larger than 1 MiB',
            content: envelope(),
          };
      }
      // The probes' 503 is their own shape ({status, info, error, details}), not the envelope.
      if (!path.startsWith('/health')) showErrorExamples(operation);
    }
  }
  return document;
}

/** What the admin's guard and /metrics' answer where an api key's would be shown. */
const SCHEME_EXAMPLES: Record<string, Record<number, ErrorExample>> = {
  [ADMIN_SECURITY]: {
    401: { code: 'UNAUTHORIZED', message: 'Admin login required (Basic Auth)' },
    403: {
      code: 'FORBIDDEN',
      message:
        'Missing or invalid CSRF token (send the x-csrf-token header from GET /api/admin/csrf-token, or reload the page)',
    },
  },
  [METRICS_SECURITY]: {
    401: { code: 'UNAUTHORIZED', message: 'Missing Authorization: Bearer <METRICS_TOKEN>' },
  },
};

/**
 * Gives every error answer without an example its status's own (its scheme's, ERROR_EXAMPLES,
 * or its description as the message): Swagger UI would show the envelope's example, a 400's,
 * under each of them.
 */
function showErrorExamples(operation: Operation): void {
  const schemes = (operation.security ?? []).flatMap((requirement) => Object.keys(requirement));
  for (const [status, response] of Object.entries(operation.responses)) {
    const media = (response as ResponseObject).content?.['application/json'];
    if (Number(status) < 400 || !media || media.example !== undefined || media.examples) continue;
    const own = schemes.map((scheme) => SCHEME_EXAMPLES[scheme]?.[Number(status)]).find(Boolean);
    const example = errorEnvelopeExample(
      Number(status),
      own,
      (response as ResponseObject).description,
    );
    if (example) media.example = example;
  }
}

/**
 * The 400 of ApiKeyGuard for a repeated x-api-key, on a route that takes a key: added to the
 * route's own 400 when it has one. Done here, not by ApiKeyAuth: Swagger lets a route's own 400
 * replace its controller's whole, and the routes of SessionActions are the admin's too (a
 * decorator on their methods would put the key's 400 on the admin's routes).
 */
function documentRepeatedApiKey(operation: Operation): void {
  const own = operation.responses['400'] as ResponseObject | undefined;
  const description = own?.description
    ? `${own.description}; or ${REPEATED_API_KEY}`
    : `BAD_REQUEST: ${REPEATED_API_KEY}`;
  const content = own?.content?.['application/json'] ?? {
    schema: { $ref: getSchemaPath(ErrorEnvelopeDto) },
  };
  const { example, examples, ...media } = content;
  operation.responses['400'] = {
    ...own,
    description,
    content: {
      ...own?.content,
      'application/json': {
        ...media,
        examples: {
          // OpenAPI takes example or examples, not both: the route's own joins the list.
          ...(example !== undefined ? { route: { value: example as unknown } } : {}),
          ...examples,
          repeatedApiKey: {
            summary: 'x-api-key given twice',
            value: {
              ok: false,
              error: { code: 'BAD_REQUEST', message: repeatedApiKeyMessage(2) },
            },
          },
        },
      },
    },
  };
}
