import type { OpenAPIObject } from '@nestjs/swagger';
import { documentCommonErrors } from './common-errors.js';

describe('documentCommonErrors', () => {
  const envelope = { $ref: '#/components/schemas/ErrorEnvelopeDto' };
  const repeated = {
    summary: 'x-api-key given twice',
    value: {
      ok: false,
      error: { code: 'BAD_REQUEST', message: 'Send one x-api-key header: this request has 2' },
    },
  };
  const documentOf = (operations: Record<string, object>): OpenAPIObject =>
    ({
      openapi: '3.0.0',
      info: { title: 't', version: '1' },
      paths: Object.fromEntries(
        Object.entries(operations).map(([path, operation]) => [path, { get: operation }]),
      ),
    }) as OpenAPIObject;

  it("keeps a route's own 400 example beside the repeated x-api-key's (OpenAPI takes example or examples, not both)", () => {
    const document = documentCommonErrors(
      documentOf({
        '/api/v1/things/{id}': {
          security: [{ 'api-key': [] }],
          responses: {
            '200': { description: 'ok' },
            '400': {
              description: 'Not a thing id',
              content: {
                'application/json': {
                  schema: envelope,
                  example: { ok: false, error: { code: 'BAD_REQUEST', message: 'id is bad' } },
                },
              },
            },
          },
        },
      }),
    );
    expect(document.paths['/api/v1/things/{id}'].get!.responses['400']).toEqual({
      description:
        'Not a thing id; or the x-api-key header given more than once (neither key is tried, nor counted as a failed login)',
      content: {
        'application/json': {
          schema: envelope,
          examples: {
            route: { value: { ok: false, error: { code: 'BAD_REQUEST', message: 'id is bad' } } },
            repeatedApiKey: repeated,
          },
        },
      },
    });
  });

  it('adds no x-api-key 400 to a route that takes no key', () => {
    const document = documentCommonErrors(
      documentOf({
        '/api/admin/things': {
          security: [{ 'admin-basic': [] }],
          responses: { '200': { description: 'ok' } },
        },
      }),
    );
    expect(document.paths['/api/admin/things'].get!.responses['400']).toBeUndefined();
  });
});
