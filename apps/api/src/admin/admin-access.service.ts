import { Injectable, Logger } from '@nestjs/common';
import { createHmac, randomBytes } from 'node:crypto';
import Tokens from '@fastify/csrf';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret, basicCredentials } from '@app/common';
import { AppConfig } from '@app/config';
import { BrowserOrigin, UNSAFE_METHODS } from '../auth/browser-origin.js';

export const CSRF_COOKIE = 'wa-admin-csrf';
export const CSRF_HEADER = 'x-csrf-token';
export const CSRF_FIELD = '_csrf';
const REALM = 'Basic realm="WhatsApp gateway admin", charset="UTF-8"';

/**
 * Who may use /admin and /api/admin: Basic Auth (when ADMIN_PASSWORD is set, compared in
 * constant time), and for state-changing requests a same-origin check plus a CSRF token
 * (@fastify/csrf: a secret in an httpOnly cookie, tokens bound to the signed-in user).
 */
@Injectable()
export class AdminAccess {
  private readonly expectedUser: Secret;
  private readonly expectedPassword?: Secret;
  private readonly origin: BrowserOrigin;
  /** BASE_URL is https: browsers reach the admin over TLS, wherever it ends. */
  private readonly httpsBase: boolean;
  private readonly tokens: Tokens.TokensUserinfo;

  constructor(config: AppConfig) {
    this.expectedUser = new Secret(config.ADMIN_USERNAME);
    if (config.ADMIN_PASSWORD) this.expectedPassword = new Secret(config.ADMIN_PASSWORD);
    else
      new Logger('Admin').warn(
        'ADMIN_PASSWORD is not set: /admin is open to anyone who reaches this port (development only)',
      );
    this.origin = new BrowserOrigin(config.BASE_URL);
    this.httpsBase = config.BASE_URL?.startsWith('https:') ?? false;
    // Derived from the password so every api replica accepts the others' tokens; without a
    // password (development only) a per-process key: a restart asks for a page reload.
    const hmacKey = config.ADMIN_PASSWORD
      ? createHmac('sha256', config.ADMIN_PASSWORD).update('wa-admin-csrf-secret').digest('hex')
      : randomBytes(32).toString('hex');
    // Its typings declare a plain function and lose the userInfo overload: the cast restores it.
    this.tokens = Tokens({ userInfo: true, hmacKey }) as Tokens.TokensUserinfo;
  }

  /** Whether Basic Auth is required (ADMIN_PASSWORD set). */
  get protected(): boolean {
    return this.expectedPassword !== undefined;
  }

  /** Throws UNAUTHORIZED (and sets WWW-Authenticate) unless the request may use the admin. */
  authenticate(req: FastifyRequest, reply: FastifyReply): void {
    if (!this.expectedPassword) return;
    const credentials = basicCredentials(req.headers.authorization);
    // Both compared every time, and combined without short-circuit, so timing says nothing.
    const userOk = this.expectedUser.matches(credentials?.user);
    const passwordOk = this.expectedPassword.matches(credentials?.password);
    if (credentials && Number(userOk) & Number(passwordOk)) {
      req.adminUser = credentials.user;
      return;
    }
    void reply.header('WWW-Authenticate', REALM);
    throw new AppError(
      'UNAUTHORIZED',
      credentials ? 'Wrong admin username or password' : 'Admin login required (Basic Auth)',
    );
  }

  /**
   * Without a password, throws FORBIDDEN unless the request names this server by an IP
   * address, `localhost` or BASE_URL's host. A page on another site whose name the attacker
   * makes resolve to this machine (DNS rebinding) is same-origin with what it loads, CSRF
   * token included; its requests carry that name as their Host, which is how they are told
   * apart. With a password the browser never sends the credentials to such a page.
   */
  assertOpenAdminHost(req: FastifyRequest): void {
    if (this.expectedPassword || this.origin.namesThisServer(req)) return;
    throw new AppError(
      'FORBIDDEN',
      `Without ADMIN_PASSWORD the admin answers only to an IP address, localhost or BASE_URL's host, not ${JSON.stringify(req.headers.host ?? '')}: set ADMIN_PASSWORD (or BASE_URL)`,
    );
  }

  /** Throws FORBIDDEN when a state-changing request comes from another site. */
  assertSameOrigin(req: FastifyRequest): void {
    if (!UNSAFE_METHODS.has(req.method)) return;
    const reason = this.origin.crossSiteReason(req);
    if (reason) throw new AppError('FORBIDDEN', `Cross-site request refused: ${reason}`);
  }

  /** Throws FORBIDDEN when a state-changing request lacks a valid CSRF token. */
  assertCsrfToken(req: FastifyRequest): void {
    if (!UNSAFE_METHODS.has(req.method)) return;
    const secret = req.cookies[CSRF_COOKIE];
    const token = csrfTokenOf(req);
    if (!secret || !token || !this.tokens.verify(secret, token, this.user(req)))
      throw new AppError(
        'FORBIDDEN',
        `Missing or invalid CSRF token (send the ${CSRF_HEADER} header from GET /api/admin/csrf-token, or reload the page)`,
      );
  }

  /** A CSRF token for forms and fetch calls; sets (or reuses) the secret's cookie. */
  csrfToken(req: FastifyRequest, reply: FastifyReply): string {
    let secret = req.cookies[CSRF_COOKIE];
    if (!secret) {
      secret = this.tokens.secretSync();
      // Not Secure on plain http (unless BASE_URL is https): the api is often reached so on a
      // private network; the same-origin check does not depend on the cookie.
      void reply.setCookie(CSRF_COOKIE, secret, {
        sameSite: 'strict',
        httpOnly: true,
        secure: this.secureCookies(req),
        path: '/',
      });
    }
    return this.tokens.create(secret, this.user(req));
  }

  /**
   * Whether the admin's cookies are sent over TLS only: when the request came over https, or
   * BASE_URL says browsers use https (TLS may end at a proxy TRUST_PROXY does not name, and
   * the request then looks like plain http here).
   */
  secureCookies(req: FastifyRequest): boolean {
    return req.protocol === 'https' || this.httpsBase;
  }

  private user(req: FastifyRequest): string {
    return (
      (this.expectedPassword ? basicCredentials(req.headers.authorization)?.user : undefined) ??
      'open'
    );
  }
}

function csrfTokenOf(req: FastifyRequest): string | undefined {
  const header = req.headers[CSRF_HEADER];
  if (typeof header === 'string') return header;
  const field = (req.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
  return typeof field === 'string' ? field : undefined;
}
