import fastifyCookie from '@fastify/cookie';
import fastifyStatic from '@fastify/static';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import helmet from 'helmet';
import { AppError, toErrorEnvelope } from '@app/common';
import { AppConfig } from '@app/config';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { AdminPageFilter } from './admin-page.filter.js';
import { isAdminMounted } from './admin.module.js';
import { PUBLIC_DIR } from './admin-views.service.js';
import { QUEUES_PATH, QueueBoard } from './queue-board.service.js';

const ASSETS_PATH = '/admin/assets';
/** Forms only: a 4096-character test message percent-encoded can take 36 KiB. */
const FORM_LIMIT = 64 * 1024;

// The pages load one script, one stylesheet and same-origin images, and nothing inline.
const ADMIN_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'"],
    connectSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'none'"],
  },
};

// bull-board's UI sets inline styles (React style attributes); only its path allows them.
// Its Google Fonts link is removed (QueueBoard.withoutRemoteFonts), so nothing leaves the site.
const QUEUES_CSP = {
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'", "'unsafe-inline'"],
    fontSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    connectSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'self'"],
  },
};

/**
 * helmet's security headers for an admin page, and for bull-board's. Same-origin referrers, not
 * helmet's no-referrer: with no-referrer Chromium sends `Origin: null` on our own form posts,
 * which the same-origin check then (rightly) refuses. No HSTS from here: TLS ends at the
 * operator's proxy, which decides it for the whole host (helmet's default includes subdomains
 * for a year).
 */
const adminHeaders = securityHeaders(ADMIN_CSP);
const queuesHeaders = securityHeaders(QUEUES_CSP);

function securityHeaders(contentSecurityPolicy: typeof ADMIN_CSP) {
  const headers = helmet({
    contentSecurityPolicy,
    referrerPolicy: { policy: 'same-origin' },
    strictTransportSecurity: false,
  });
  return (request: FastifyRequest, reply: FastifyReply) =>
    headers(request.raw, reply.raw, (err?: unknown) => {
      if (err) throw err;
    });
}

/**
 * Fastify-level parts of the admin: security headers, cookies, form bodies, static assets and
 * bull-board. Cookies, static files and bull-board come with their Fastify plugins; the
 * headers come from helmet itself, in the admin's own hook. @fastify/helmet, registered for the
 * admin alone (`global: false`), still ran an async hook on every request of every route,
 * which left a closure holding the request on the reply: a twentieth of everything the api
 * allocated then outlived a young-generation collection, and each collection's pause grew
 * with it (`npm run bench`, README "How fast" and bench/README.md). Nothing is mounted when the admin module is
 * not (production without a password).
 */
export async function configureAdmin(app: NestFastifyApplication): Promise<void> {
  if (!isAdminMounted(app.get(AppConfig))) return;
  const guard = app.get(AdminAuthGuard);
  const board = app.get(QueueBoard);
  const pages = app.get(AdminPageFilter);
  const server = app.getHttpAdapter().getInstance();

  await app.register(fastifyCookie);
  // Nest's own form parser for Fastify, with a tighter limit than JSON bodies.
  app.useBodyParser('application/x-www-form-urlencoded', { bodyLimit: FORM_LIMIT });

  server.addHook('onRequest', async (request, reply) => {
    // The route the request was matched to, not its raw URL: another spelling of a path
    // (percent-encoded, doubled slashes) cannot reach a route without its checks.
    const path = request.routeOptions.url ?? pathOf(request);
    if (!isUnder(path, '/admin') && !isUnder(path, '/api/admin')) return;
    (isUnder(path, QUEUES_PATH) ? queuesHeaders : adminHeaders)(request, reply);
    // Nest passes a request with an empty route parameter (`/admin/sessions/` for
    // `sessions/:id`) to its own not-found handler, the API's JSON one: a page answers here.
    // (bull-board answers for its own routes.)
    if (isUnder(path, '/admin') && !isUnder(path, QUEUES_PATH) && hasEmptyParam(request)) {
      notFoundPage(pages, request, reply);
      return reply;
    }
    // What Nest's router does not serve (assets, bull-board) cannot carry our CSRF token: it
    // gets Basic Auth and the same-origin check for state-changing requests.
    if (isUnder(path, ASSETS_PATH) || isUnder(path, QUEUES_PATH)) {
      if (!(await admitted(guard, request, reply))) return reply;
      if (isUnder(path, QUEUES_PATH)) await board.refresh();
    }
  });

  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: `${ASSETS_PATH}/`,
    index: false,
    maxAge: '1d',
    immutable: true,
    // Swagger UI and bull-board register their own static files.
    decorateReply: false,
  });
  await app.register(board.plugin(), { prefix: QUEUES_PATH });

  // A person who mistypes an admin address gets the admin's error page, as for an unknown
  // session; /api/admin and everything else keep the JSON envelope.
  await app.register(
    async (admin: FastifyInstance) => {
      admin.setNotFoundHandler((request, reply) => notFoundPage(pages, request, reply));
    },
    { prefix: '/admin' },
  );
  // A malformed address is refused before any route or hook: the security headers too.
  server.decorate(
    'adminErrorPage',
    (error: Error, request: FastifyRequest, reply: FastifyReply) => {
      if (!isUnder(pathOf(request), '/admin')) return false;
      adminHeaders(request, reply);
      pages.send(error, request, reply);
      return true;
    },
  );
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Answers an error Fastify met before any route (a malformed URL) with the admin's error
     * page when the address is under /admin; false when it is not (set by configureAdmin).
     */
    adminErrorPage?: (error: Error, request: FastifyRequest, reply: FastifyReply) => boolean;
  }
}

/** Whether the request may use the admin; if not, the error envelope is sent. */
async function admitted(
  guard: AdminAuthGuard,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<boolean> {
  try {
    await guard.admit(request, reply, false);
    return true;
  } catch (err) {
    const { status, body } = toErrorEnvelope(err);
    void reply.code(status).send(body);
    return false;
  }
}

/** The admin's 404 page for an address no admin page serves. */
function notFoundPage(pages: AdminPageFilter, request: FastifyRequest, reply: FastifyReply): void {
  pages.send(
    new AppError('NOT_FOUND', `There is no admin page at ${pathOf(request).slice(0, 200)}`),
    request,
    reply,
  );
}

/** Whether the route matched with a parameter left empty (its wildcard may be). */
function hasEmptyParam(request: FastifyRequest): boolean {
  const params = (request.params ?? {}) as Record<string, unknown>;
  return Object.entries(params).some(([name, value]) => name !== '*' && value === '');
}

function pathOf(request: FastifyRequest): string {
  const query = request.url.indexOf('?');
  return query < 0 ? request.url : request.url.slice(0, query);
}

function isUnder(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(`${prefix}/`);
}
