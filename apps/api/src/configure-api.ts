import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Type } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PinoLogger } from 'nestjs-pino';
import {
  AppError,
  ERROR_STATUS,
  clientAddress,
  createValidationPipe,
  requestId,
  requestLine,
  toErrorEnvelope,
  unsupportedContentType,
  type ErrorCode,
} from '@app/common';
import { AppConfig, parseTrustProxy } from '@app/config';
import { ADMIN_SECURITY } from './admin/admin-auth.decorator.js';
import { METRICS_SECURITY } from './metrics/metrics.controller.js';
import { configureAdmin } from './admin/configure-admin.js';
import { documentCommonErrors } from './docs/common-errors.js';
import { documentAdminCsrf } from './docs/admin-csrf.js';
import { documentMediaForm } from './docs/media-form.js';
import { documentScopes } from './docs/scopes.js';
import { HttpMetrics } from './metrics/http-metrics.js';
import { MEDIA_ROUTE, configureUploads } from './messages/media-upload.js';
import { freshSendAtExamples } from './messages/send-examples.js';
import { corsOrigins } from './auth/browser-origin.js';

/** Largest request body (JSON or form) the api reads. */
export const BODY_LIMIT = 1024 * 1024;

/**
 * The HTTP server under Nest: Fastify, for a lean hot path (`npm run bench`). Forwarded
 * headers are believed from the proxies TRUST_PROXY names (by default one on this host); a
 * request not in full within REQUEST_TIMEOUT_MS is answered 408.
 */
export function httpAdapter(
  settings: Partial<Pick<AppConfig, 'TRUST_PROXY' | 'REQUEST_TIMEOUT_MS'>> = {},
): FastifyAdapter {
  const defaults = new AppConfig();
  const trustProxy = settings.TRUST_PROXY ?? defaults.TRUST_PROXY;
  const requestTimeout = settings.REQUEST_TIMEOUT_MS ?? defaults.REQUEST_TIMEOUT_MS;
  return new FastifyAdapter({
    bodyLimit: BODY_LIMIT,
    requestTimeout,
    http: {
      requestTimeout,
      // Node enforces requestTimeout only when the headers' own limit is no longer.
      headersTimeout: Math.min(60_000, requestTimeout),
      // How often Node looks for requests over their time (30 s by default).
      connectionsCheckingInterval: Math.min(30_000, Math.ceil(requestTimeout / 4)),
    },
    // What Node answers itself, before any request reaches Fastify: in our envelope.
    clientErrorHandler: answerClientError,
    // The id of every log line of a request, and its x-request-id header (set below).
    requestIdHeader: false,
    // A request that arrives while the server closes is refused by configureApi, in our
    // envelope: Fastify's own 503 has a body of its own ({"error":"Service Unavailable",...}).
    return503OnClosing: false,
    genReqId: requestId,
    trustProxy: trustedProxies(parseTrustProxy(trustProxy)),
    // A JSON body with a __proto__ or constructor.prototype key is refused, not cleaned.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Errors Fastify answers before any route (a malformed URL): our envelope, our words; the
    // admin's error page under /admin, once configureAdmin has set it.
    frameworkErrors: (error: Error, request: FastifyRequest, reply: FastifyReply) => {
      if (request.server.adminErrorPage?.(error, request, reply)) return;
      const { status, body } = toErrorEnvelope(error);
      void reply.code(status).send(body);
    },
  });
}

/**
 * A request Node refused before it was whole (too slow to arrive, headers too large, not
 * HTTP): answered in the error envelope, and the connection closed.
 */
function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message]: [ErrorCode, string] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? ['REQUEST_TIMEOUT', 'The request did not arrive in full within REQUEST_TIMEOUT_MS']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? ['HEADERS_TOO_LARGE', 'The request headers are too large']
        : ['BAD_REQUEST', 'Not a well-formed HTTP request'];
  const status = ERROR_STATUS[code];
  const body = JSON.stringify({ ok: false, error: { code, message } });
  if (socket.writable)
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  socket.destroy(err);
}

/** TRUST_PROXY as Fastify takes it: a number of hops becomes a test of the hop. */
function trustedProxies(
  trust: boolean | number | string,
): boolean | string | ((address: string, hop: number) => boolean) {
  return typeof trust === 'number' ? (_address, hop) => hop < trust : trust;
}

/** Everything main.ts sets on the app, shared with the tests so they run what production runs. */
export async function configureApi(app: NestFastifyApplication): Promise<void> {
  const config = app.get(AppConfig);
  app.useGlobalPipes(createValidationPipe());
  app.enableShutdownHooks();
  const server = app.getHttpAdapter().getInstance();
  app.get(HttpMetrics).attach(server);
  // From the moment the server starts closing, a request that still arrives (on a kept-alive
  // connection, or pipelined) is not processed: 503 UNAVAILABLE, with Connection: close, and
  // its client retries on another replica. A request in flight then is answered as usual, with
  // Connection: close, so its connection does not hold the exit for the client's keep-alive
  // time (Fastify keeps idle connections 72 s; only those idle when closing starts are closed).
  let closing = false;
  server.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  server.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    // (In this hook, not one of its own: every request runs it, and a hook costs on the hot path.)
    if (closing) return void refuseWhileClosing(reply);
    done();
  });
  server.addHook('onRequest', refuseUnreadableBodies);
  // Fastify reads text/plain as a string, which validation then refused field by field (a JSON
  // body sent with the wrong type got a dozen errors): no route takes text, so it is refused as
  // every other type but JSON is, 'Unsupported Content-Type: send JSON'. An empty one is no
  // body (what a browser's fetch with `body: ''` sends to a DELETE or a command's POST).
  server.removeContentTypeParser('text/plain');
  server.addContentTypeParser('text/plain', { parseAs: 'string' }, (request, body, done) =>
    body === ''
      ? done(null, undefined)
      : done(new AppError('BAD_REQUEST', unsupportedContentType(request))),
  );
  // A line per answered request (loggerParams says why not nestjs-pino's middleware).
  const log = PinoLogger.root;
  const line = (request: FastifyRequest, statusCode: number | null, responseTimeMs?: number) =>
    requestLine(log, {
      id: request.id,
      method: request.method,
      url: request.url,
      remoteAddress: clientAddress(request.socket.remoteAddress),
      statusCode,
      responseTimeMs,
    });
  server.addHook('onResponse', (request, reply, done) => {
    line(request, reply.statusCode, reply.elapsedTime);
    done();
  });
  // A client that hangs up first gets no answer, and so no onResponse.
  server.addHook('onRequestAbort', (request, done) => {
    line(request, null);
    done();
  });
  await configureUploads(app, config);
  server.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) void reply.header('connection', 'close');
    done(null, payload);
  });
  if (config.CORS_ORIGINS) {
    app.enableCors({ origin: corsOrigins(config.CORS_ORIGINS) });
  }
  await configureAdmin(app);

  const controllers = [...app.get(ModulesContainer).values()].flatMap((module) =>
    [...module.controllers.values()].map((wrapper) => wrapper.metatype as Type),
  );
  const document = documentAdminCsrf(
    documentMediaForm(
      documentCommonErrors(
        documentScopes(
          SwaggerModule.createDocument(
            app,
            new DocumentBuilder()
              .setTitle('WhatsApp gateway')
              .setDescription(
                'Send WhatsApp text and media messages from linked sessions. Every answer is an envelope: ' +
                  '`{ "ok": true, "data": ... }` or `{ "ok": false, "error": { "code", "message" } }`.',
              )
              .setVersion('1')
              .addServer(config.BASE_URL ?? '/')
              .addApiKey({ type: 'apiKey', in: 'header', name: 'x-api-key' }, 'api-key')
              .addBasicAuth({ type: 'http', scheme: 'basic' }, ADMIN_SECURITY)
              // Not addBearerAuth: it says bearerFormat JWT, and METRICS_TOKEN is opaque.
              .addSecurity(METRICS_SECURITY, {
                type: 'http',
                scheme: 'bearer',
                description:
                  'METRICS_TOKEN, an opaque token of your choosing: `Authorization: Bearer <METRICS_TOKEN>`',
              })
              .build(),
          ),
          controllers,
        ),
      ),
      config.MEDIA_MAX_BYTES,
    ),
  );
  const served = freshSendAtExamples();
  SwaggerModule.setup('docs', app, document, {
    jsonDocumentUrl: 'api/openapi',
    patchDocumentOnRequest: (_request, _response, made) => served(made),
    // What is typed into Authorize (an API key, the admin's password) stays in the page: Swagger
    // UI would otherwise keep it in the browser's localStorage, readable on this origin, for good.
    swaggerOptions: { persistAuthorization: false },
  });
}

/** A request that arrived while the api shuts down, answered without being processed. */
function refuseWhileClosing(reply: FastifyReply): FastifyReply {
  const { status, body } = toErrorEnvelope(
    new AppError('UNAVAILABLE', 'The api is shutting down; retry the request'),
  );
  return reply.code(status).header('connection', 'close').send(body);
}

/**
 * Refuses, before its body is read, a request whose body we would misread: a compressed body
 * (Fastify does not inflate; it would parse the raw bytes), or a form posted anywhere but the
 * admin pages (the api takes JSON, and a file upload on the media route).
 */
function refuseUnreadableBodies(
  request: FastifyRequest,
  _reply: unknown,
  done: (err?: Error) => void,
): void {
  const encoding = request.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity')
    return done(new AppError('BAD_REQUEST', 'Unsupported Content-Encoding'));
  const type = request.headers['content-type'];
  if (
    type?.toLowerCase().startsWith('application/x-www-form-urlencoded') &&
    !request.url.startsWith('/admin/') &&
    request.url !== '/admin'
  )
    return done(new AppError('BAD_REQUEST', unsupportedContentType(request)));
  if (
    type?.toLowerCase().startsWith('multipart/form-data') &&
    request.routeOptions.url !== MEDIA_ROUTE
  )
    return done(
      new AppError(
        'BAD_REQUEST',
        `Unsupported Content-Type: multipart/form-data is taken by POST ${MEDIA_ROUTE} only; send JSON`,
      ),
    );
  done();
}
