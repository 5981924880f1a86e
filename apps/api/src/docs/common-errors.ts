import type { OpenAPIObject } from '@nestjs/swagger';
import { getSchemaPath } from '@nestjs/swagger';
import { ErrorEnvelopeDto } from './envelope.dto.js';

type Operation = NonNullable<OpenAPIObject['paths'][string]['get']>;

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/**
 * Adds to the document the error answers every route of a kind can give, whatever its own
 * decorators say (a route documents its own when it has more to say): a 503 on every /api
 * route (Redis cannot be reached: the exception filter answers UNAVAILABLE for any route), and
 * a 413 on every route that takes a body (Fastify's body limit). The health probes answer
 * their own shape, not the envelope, and are left alone.
 */
export function documentCommonErrors(document: OpenAPIObject): OpenAPIObject {
  const envelope = { 'application/json': { schema: { $ref: getSchemaPath(ErrorEnvelopeDto) } } };
  for (const [path, item] of Object.entries(document.paths)) {
    if (!path.startsWith('/api/')) continue;
    for (const method of METHODS) {
      const operation: Operation | undefined = item[method];
      if (!operation) continue;
      operation.responses['503'] ??= {
        description: 'UNAVAILABLE: storage (Redis) cannot be reached; retry shortly',
        content: envelope,
      };
      if (operation.requestBody)
        operation.responses['413'] ??= {
          description: 'PAYLOAD_TOO_LARGE: the body is larger than 1 MiB',
          content: envelope,
        };
    }
  }
  return document;
}
