import type { NestExpressApplication } from '@nestjs/platform-express';
import cookieParser from 'cookie-parser';
import express, { type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import { AppConfig } from '@app/config';
import { AdminAccess } from './admin-access.service.js';
import { isAdminMounted } from './admin.module.js';
import { PUBLIC_DIR } from './admin-views.service.js';
import { QUEUES_PATH, QueueBoard } from './queue-board.service.js';

const ADMIN_PATHS = ['/admin', '/api/admin'];

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
 * Express-level parts of the admin: security headers, cookies, form bodies, static assets and
 * bull-board. Nothing is mounted when the admin module is not (production without a password).
 */
export function configureAdmin(app: NestExpressApplication): void {
  if (!isAdminMounted(app.get(AppConfig))) return;
  const access = app.get(AdminAccess);
  const board = app.get(QueueBoard);

  // same-origin, not helmet's no-referrer: with no-referrer Chromium sends `Origin: null` on
  // our own form posts, which the same-origin check then (rightly) refuses.
  const referrerPolicy = { policy: 'same-origin' as const };
  // No HSTS from here: TLS ends at the operator's proxy, which decides it for the whole host
  // (helmet's default includes subdomains for a year).
  const shared = { referrerPolicy, strictTransportSecurity: false };
  const adminHeaders = helmet({ ...shared, contentSecurityPolicy: ADMIN_CSP });
  const queuesHeaders = helmet({ ...shared, contentSecurityPolicy: QUEUES_CSP });
  app.use(ADMIN_PATHS, (req: Request, res: Response, next: NextFunction) =>
    (isQueuesPath(req.originalUrl) ? queuesHeaders : adminHeaders)(req, res, next),
  );
  app.use(ADMIN_PATHS, cookieParser());
  app.use(
    QUEUES_PATH,
    access.middleware(),
    board.refresher(),
    board.withoutRemoteFonts(),
    board.router(),
  );
  app.use(
    '/admin/assets',
    access.middleware(),
    express.static(PUBLIC_DIR, { index: false, maxAge: '1d', immutable: true }),
  );
  // Forms only: a 4096-character test message percent-encoded can take 36 KiB.
  app.use('/admin', express.urlencoded({ extended: false, limit: '64kb' }));
}

function isQueuesPath(url: string): boolean {
  return (
    url === QUEUES_PATH || url.startsWith(`${QUEUES_PATH}/`) || url.startsWith(`${QUEUES_PATH}?`)
  );
}
