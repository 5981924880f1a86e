import { ApiKeyGuard } from '../auth/api-key.guard.js';
import multipart from '@fastify/multipart';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyRequest } from 'fastify';
import { AppError, formAsBody } from '@app/common';
import type { AppConfig } from '@app/config';
import { SendMediaDto } from './send-message.dto.js';

/** The one route that takes a file with the request. */
export const MEDIA_ROUTE = '/api/v1/messages/media';
/** What the media route takes, as a refusal of another Content-Type says. */
const MEDIA_BODY_TYPES = 'JSON (application/json) or multipart/form-data';
/** A batch of up to 1,000 messages of up to 4,096 characters each. */
export const BATCH_ROUTE = '/api/v1/messages/batch';
export const BATCH_BODY_LIMIT = 8 * 1024 * 1024;
/** Sandbox only: a message the session receives, its media in the request as base64. */
export const SANDBOX_INCOMING_ROUTE = '/api/v1/sessions/:id/sandbox/incoming';

/** Form fields are named like the JSON fields; nothing else (no `__proto__`) is read. */
const FIELD_NAME = /^[A-Za-z][A-Za-z0-9]{0,39}$/;

/**
 * The body limit of the routes that take a file as base64 (the media route; the sandbox's
 * incoming route): a file of MEDIA_MAX_BYTES, plus the other fields. Every other
 * route keeps the 1 MiB limit.
 */
export function mediaBodyLimit(mediaMaxBytes: number): number {
  return Math.ceil(mediaMaxBytes / 3) * 4 + 64 * 1024;
}

/**
 * Larger bodies on three routes only (a batch; a file sent with the request; a file the
 * sandbox receives), and lets
 * POST /api/v1/messages/media take its file in the request: as `mediaBase64` in JSON (a
 * larger body limit on that route alone), or as multipart/form-data with a `file` part
 * (@fastify/multipart, the file capped at MEDIA_MAX_BYTES while it streams in). A form is
 * turned into the JSON body before validation, so both go through the same DTO and service.
 */
export async function configureUploads(
  app: NestFastifyApplication,
  config: AppConfig,
): Promise<void> {
  const server = app.getHttpAdapter().getInstance();
  // The large bodies are read before Nest's guards run: the key is checked first, so a
  // request without a right one is refused before its body is read.
  const keys = app.get(ApiKeyGuard);
  const largeBodies = new Set([MEDIA_ROUTE, BATCH_ROUTE, SANDBOX_INCOMING_ROUTE]);
  server.addHook('onRequest', async (request, reply) => {
    if (largeBodies.has(request.routeOptions.url ?? '')) await keys.admit(request, reply);
  });
  server.addHook('onRoute', (route) => {
    if (route.method !== 'POST') return;
    if (route.url === MEDIA_ROUTE) {
      route.bodyLimit = mediaBodyLimit(config.MEDIA_MAX_BYTES);
      // A body of another type is told both it may be (unsupportedContentType).
      route.config = { ...route.config, bodyTypes: MEDIA_BODY_TYPES };
    }
    if (route.url === BATCH_ROUTE) route.bodyLimit = BATCH_BODY_LIMIT;
    // Whatever this api's WA_ENGINE: the engine of the session's worker decides (409 when it
    // is not the sandbox), and that is known only once the request came.
    if (route.url === SANDBOX_INCOMING_ROUTE)
      route.bodyLimit = mediaBodyLimit(config.MEDIA_MAX_BYTES);
  });
  await app.register(multipart, {
    limits: {
      fileSize: config.MEDIA_MAX_BYTES,
      files: 1,
      fields: 20,
      parts: 21,
      fieldSize: 64 * 1024,
      headerPairs: 100,
    },
  });
  server.addHook('preValidation', async (request: FastifyRequest) => {
    if (request.isMultipart() && request.routeOptions.url === MEDIA_ROUTE)
      request.body = await formToBody(request).catch((err: unknown) => {
        // A malformed form (busboy's parse errors carry no status): the client's fault.
        const status = (err as { statusCode?: number }).statusCode;
        if (err instanceof AppError || (status && status < 500)) throw err;
        throw new AppError('BAD_REQUEST', `The form could not be read: ${(err as Error).message}`);
      });
  });
}

/**
 * The form's fields as the JSON body would carry them (`true`, `1500` as a boolean and a
 * number where SendMediaDto takes one), the file as `mediaBase64`.
 */
async function formToBody(request: FastifyRequest): Promise<Record<string, unknown>> {
  const fields = new Map<string, string>();
  let file: { data: Buffer; mimetype: string; filename: string } | undefined;
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      const data = await part.toBuffer();
      if (part.fieldname !== 'file' || file)
        throw new AppError('BAD_REQUEST', 'send one file, in a part named "file"');
      file = { data, mimetype: part.mimetype, filename: part.filename };
      continue;
    }
    if (!FIELD_NAME.test(part.fieldname))
      throw new AppError('BAD_REQUEST', `unknown form field ${part.fieldname.slice(0, 40)}`);
    // Which one was meant is unknown (a form with two inputs of one name): the last would win.
    if (fields.has(part.fieldname))
      throw new AppError('BAD_REQUEST', `form field ${part.fieldname} is given more than once`);
    fields.set(part.fieldname, String(part.value));
  }
  if (!file) throw new AppError('BAD_REQUEST', 'a multipart send needs a part named "file"');
  if (fields.has('mediaUrl') || fields.has('mediaBase64'))
    throw new AppError('BAD_REQUEST', 'send the file, or mediaUrl in JSON, not both');
  return {
    ...formAsBody(Object.fromEntries(fields), SendMediaDto),
    mediaBase64: file.data.toString('base64'),
    mimetype: fields.get('mimetype') ?? file.mimetype,
    filename: fields.get('filename') ?? file.filename,
  };
}
