import { Injectable, Logger } from '@nestjs/common';
import { createHmac, randomBytes } from 'node:crypto';
import { doubleCsrf, type DoubleCsrfUtilities } from 'csrf-csrf';
import type { NextFunction, Request, Response } from 'express';
import { AppError, toErrorEnvelope, Secret } from '@app/common';
import { AppConfig } from '@app/config';

export const CSRF_COOKIE = 'wa-admin-csrf';
export const CSRF_HEADER = 'x-csrf-token';
export const CSRF_FIELD = '_csrf';
const REALM = 'Basic realm="WhatsApp gateway admin", charset="UTF-8"';
const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Who may use /admin and /api/admin: Basic Auth (when ADMIN_PASSWORD is set, compared in
 * constant time), and for state-changing requests a same-origin check plus a CSRF token
 * (double-submit cookie bound to the signed-in user, csrf-csrf).
 */
@Injectable()
export class AdminAccess {
  private readonly expectedUser: Secret;
  private readonly expectedPassword?: Secret;
  private readonly allowedOrigins = new Set<string>();
  private readonly csrf: DoubleCsrfUtilities;

  constructor(config: AppConfig) {
    this.expectedUser = new Secret(config.ADMIN_USERNAME);
    if (config.ADMIN_PASSWORD) this.expectedPassword = new Secret(config.ADMIN_PASSWORD);
    else
      new Logger('Admin').warn(
        'ADMIN_PASSWORD is not set: /admin is open to anyone who reaches this port (development only)',
      );
    if (config.BASE_URL) this.allowedOrigins.add(new URL(config.BASE_URL).origin);
    // Derived from the password so every api replica accepts the others' tokens; without a
    // password (development only) a per-process secret: a restart asks for a page reload.
    const secret = config.ADMIN_PASSWORD
      ? createHmac('sha256', config.ADMIN_PASSWORD).update('wa-admin-csrf-secret').digest('hex')
      : randomBytes(32).toString('hex');
    this.csrf = doubleCsrf({
      getSecret: () => secret,
      getSessionIdentifier: (req) => this.user(req) ?? 'open',
      cookieName: CSRF_COOKIE,
      // Not Secure: the api is often reached over plain http on a private network; the
      // same-origin check below does not depend on the cookie.
      cookieOptions: { sameSite: 'strict', httpOnly: true, secure: false, path: '/' },
      getCsrfTokenFromRequest: (req) => {
        const header = req.headers[CSRF_HEADER];
        if (typeof header === 'string') return header;
        const field = (req.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
        return typeof field === 'string' ? field : undefined;
      },
    });
  }

  /** Whether Basic Auth is required (ADMIN_PASSWORD set). */
  get protected(): boolean {
    return this.expectedPassword !== undefined;
  }

  /** Throws UNAUTHORIZED (and sets WWW-Authenticate) unless the request may use the admin. */
  authenticate(req: Request, res: Response): void {
    if (!this.expectedPassword) return;
    const credentials = parseBasic(req.headers.authorization);
    // Both compared every time, and combined without short-circuit, so timing says nothing.
    const userOk = this.expectedUser.matches(credentials?.user);
    const passwordOk = this.expectedPassword.matches(credentials?.password);
    if (credentials && Number(userOk) & Number(passwordOk)) return;
    res.setHeader('WWW-Authenticate', REALM);
    throw new AppError(
      'UNAUTHORIZED',
      credentials ? 'Wrong admin username or password' : 'Admin login required (Basic Auth)',
    );
  }

  /** Throws FORBIDDEN when a state-changing request comes from another site. */
  assertSameOrigin(req: Request): void {
    if (!UNSAFE_METHODS.has(req.method)) return;
    const reason = this.crossSiteReason(req);
    if (reason) throw new AppError('FORBIDDEN', `Cross-site request refused: ${reason}`);
  }

  /** Throws FORBIDDEN when a state-changing request lacks a valid CSRF token. */
  assertCsrfToken(req: Request): void {
    if (!UNSAFE_METHODS.has(req.method)) return;
    if (!this.csrf.validateRequest(req))
      throw new AppError(
        'FORBIDDEN',
        `Missing or invalid CSRF token (send the ${CSRF_HEADER} header from GET /api/admin/csrf-token, or reload the page)`,
      );
  }

  /** A CSRF token for forms and fetch calls; sets (or reuses) the matching cookie. */
  csrfToken(req: Request, res: Response): string {
    return this.csrf.generateCsrfToken(req, res, {
      cookieOptions: { secure: req.secure },
    });
  }

  /**
   * The same checks as a plain Express middleware, for what is served outside Nest's router
   * (static assets, bull-board), which cannot carry our CSRF token: it relies on the
   * same-origin check for state-changing requests.
   */
  middleware() {
    return (req: Request, res: Response, next: NextFunction): void => {
      try {
        this.authenticate(req, res);
        this.assertSameOrigin(req);
        next();
      } catch (err) {
        const { status, body } = toErrorEnvelope(err);
        res.status(status).json(body);
      }
    };
  }

  private user(req: Request): string | undefined {
    return this.expectedPassword ? parseBasic(req.headers.authorization)?.user : undefined;
  }

  private crossSiteReason(req: Request): string | undefined {
    // Sent by every current browser: the strongest signal, and unforgeable by a page.
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none')
      return `Sec-Fetch-Site is ${String(site)}`;
    const origin = req.headers.origin;
    if (origin === undefined) return undefined; // not a browser; the CSRF token still applies
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      return `Origin ${origin} is not a URL`;
    }
    if (parsed.host === req.headers.host || this.allowedOrigins.has(parsed.origin))
      return undefined;
    return `Origin ${parsed.origin} is not this site`;
  }
}

function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
