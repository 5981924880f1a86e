import type { OpenAPIObject } from '@nestjs/swagger';
import { getSchemaPath } from '@nestjs/swagger';
import { CSRF_HEADER } from '../admin/admin-access.service.js';
import { ADMIN_SECURITY } from '../admin/admin-auth.decorator.js';
import { ErrorEnvelopeDto } from './envelope.dto.js';

type Operation = NonNullable<OpenAPIObject['paths'][string]['get']>;
type Parameter = Extract<NonNullable<Operation['parameters']>[number], { in: string }>;

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/**
 * The admin's CSRF token as its guard asks for it: on POST, PUT, PATCH and DELETE, required;
 * never on a GET, whose 403 is only the open admin's Host check. (AdminCsrf on a controller
 * with reading routes puts the header, optional, and a CSRF 403 on all of its routes alike.)
 */
export function documentAdminCsrf(document: OpenAPIObject): OpenAPIObject {
  for (const item of Object.values(document.paths)) {
    for (const method of METHODS) {
      const operation = item[method];
      if (!operation?.security?.some((requirement) => ADMIN_SECURITY in requirement)) continue;
      const isCsrf = (p: unknown) =>
        (p as Parameter).in === 'header' && (p as Parameter).name === CSRF_HEADER;
      const csrf = operation.parameters?.find(isCsrf) as Parameter | undefined;
      if (method !== 'get') {
        if (csrf) {
          csrf.required = true;
          csrf.description = csrf.description?.replace(/^Required on POST, PUT and DELETE\. /, '');
        }
        continue;
      }
      operation.parameters = operation.parameters?.filter((p) => !isCsrf(p));
      if (operation.responses['403'])
        operation.responses['403'] = {
          description:
            "FORBIDDEN: without ADMIN_PASSWORD, the request names this server by a host other than an IP address, localhost or BASE_URL's (a page of another site, through DNS rebinding)",
          content: {
            'application/json': {
              schema: { $ref: getSchemaPath(ErrorEnvelopeDto) },
              example: {
                ok: false,
                error: {
                  code: 'FORBIDDEN',
                  message:
                    'Without ADMIN_PASSWORD the admin answers only to an IP address, localhost or BASE_URL\'s host, not "wa.attacker.example": set ADMIN_PASSWORD (or BASE_URL)',
                },
              },
            },
          },
        };
    }
  }
  return document;
}
