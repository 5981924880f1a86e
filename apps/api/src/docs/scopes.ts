import type { Type } from '@nestjs/common';
import type { OpenAPIObject } from '@nestjs/swagger';
import { getSchemaPath } from '@nestjs/swagger';
import { SCOPE_REFUSAL } from '../auth/api-key-auth.decorator.js';
import { missingScopeMessage, scopeNeeded } from '../auth/scope.guard.js';
import { ErrorEnvelopeDto } from './envelope.dto.js';

type Operation = NonNullable<OpenAPIObject['paths'][string]['get']>;
type ResponseObject = Extract<NonNullable<Operation['responses'][string]>, { description: string }>;

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/**
 * Names on the 403 of every route that takes x-api-key the scope it needs, and shows the
 * answer ScopeGuard gives a key without it. Done on the document: a scope is a controller's
 * for its routes' HTTP methods (or a route's own), and the routes of SessionActions serve two
 * controllers, so no decorator could say it per route. The handler is found by its operationId
 * (`<Controller>_<method>`, @nestjs/swagger's).
 */
export function documentScopes(document: OpenAPIObject, controllers: Type[]): OpenAPIObject {
  const byName = new Map(controllers.map((controller) => [controller.name, controller]));
  for (const item of Object.values(document.paths)) {
    for (const method of METHODS) {
      const operation = item[method];
      if (!operation?.security?.some((requirement) => 'api-key' in requirement)) continue;
      const [controllerName, handlerName] = (operation.operationId ?? '').split('_');
      const controller = byName.get(controllerName);
      const handler = (controller?.prototype as Record<string, unknown> | undefined)?.[handlerName];
      if (!controller || typeof handler !== 'function') continue;
      const needed = scopeNeeded(controller, handler, method);
      const scope = {
        description: `FORBIDDEN: the key's scopes do not include ${needed}, which this route needs`,
        example: {
          ok: false,
          error: {
            code: 'FORBIDDEN',
            message: missingScopeMessage([needed === 'read' ? 'send' : 'read'], needed),
          },
        },
      };
      const own = operation.responses['403'] as ResponseObject | undefined;
      // ApiKeyAuth's, said of every route alike, is replaced; a route's own is kept beside it.
      const ownExample = own?.content?.['application/json']?.example as unknown;
      const routeOwn = own?.description && own.description !== SCOPE_REFUSAL;
      operation.responses['403'] = {
        description: routeOwn ? `${own.description}; or ${scope.description}` : scope.description,
        content: {
          'application/json': {
            schema: { $ref: getSchemaPath(ErrorEnvelopeDto) },
            ...(routeOwn && ownExample !== undefined
              ? { examples: { route: { value: ownExample }, scope: { value: scope.example } } }
              : { example: scope.example }),
          },
        },
      };
    }
  }
  return document;
}
