import { Injectable } from '@nestjs/common';
import { hash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AppError } from '@app/common';
import { ApiKeyRepository, type ApiKeyRecord, type ApiKeyScope } from '@app/status-store';

/** How long a verified key is trusted before Redis is asked again (revocation elsewhere). */
const CACHE_MS = 2_000;

/** Who is calling: the bootstrap key of the environment, or a key made through /api/v1/keys. */
export interface Principal {
  /** `env` for API_KEY, else the key's id. */
  keyId: string;
  scopes: ApiKeyScope[];
  /** The sessions it may use; null: every session. */
  sessions: string[] | null;
}

/**
 * Who made a request, as authentication established it (never a header nothing checked):
 * `key:<id>`, `key:env` (API_KEY) or `admin:<user>`. The audit log names callers so and the
 * rate limit counts per caller.
 */
export function callerOf(request: FastifyRequest): string {
  if (request.principal) return `key:${request.principal.keyId}`;
  // Without ADMIN_PASSWORD (or API_KEY) nothing checked a name: every caller is the same one.
  return `admin:${request.adminUser ?? '(open)'}`;
}

/**
 * Whether the caller holds `scope` (`admin` holds every one). Without a principal the api runs
 * without API_KEY (development only) and is open to every caller.
 */
export function hasScope(principal: Principal | undefined, scope: ApiKeyScope): boolean {
  return !principal || principal.scopes.includes('admin') || principal.scopes.includes(scope);
}

/** Throws FORBIDDEN unless `principal` may use `sessionId`. */
export function assertSessionAllowed(sessions: string[] | null | undefined, sessionId: string) {
  if (sessions && !sessions.includes(sessionId))
    throw new AppError(
      'FORBIDDEN',
      `This key may use session${sessions.length === 1 ? '' : 's'} ${sessions.join(', ')} only, not ${sessionId}`,
    );
}

/**
 * As assertSessionAllowed, for the active session (a send without sessionId, GET
 * /sessions/active): refused without naming it, as a key limited to others does not see it.
 */
export function assertActiveSessionAllowed(
  sessions: string[] | null | undefined,
  activeId: string,
) {
  if (sessions && !sessions.includes(activeId))
    throw new AppError(
      'FORBIDDEN',
      'The active session is not one this key may use (a send must give sessionId)',
    );
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    /** The admin user whose password was checked (AdminAccess.authenticate). */
    adminUser?: string;
  }
}

/**
 * Verified keys, by digest: one cache for the process, so a revoke or rotation made through
 * the admin pages (which have an ApiKeys of their own) reaches the api's guard at once.
 */
const cache = new Map<string, { record: ApiKeyRecord | null; at: number }>();

/** API keys made, listed, revoked and rotated through the api; verified with a short cache. */
@Injectable()
export class ApiKeys {
  private readonly cache = cache;

  constructor(private readonly keys: ApiKeyRepository) {}

  async verify(key: string): Promise<Principal | null> {
    const digest = hash('sha256', key, 'hex');
    const cached = this.cache.get(digest);
    let record: ApiKeyRecord | null;
    if (cached && performance.now() - cached.at < CACHE_MS) record = cached.record;
    else {
      record = await this.keys.verify(key);
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(digest, { record, at: performance.now() });
    }
    return record ? { keyId: record.id, scopes: record.scopes, sessions: record.sessions } : null;
  }

  create(name: string, scopes: ApiKeyScope[], sessions?: string[]) {
    // admin holds every scope, keys included: limited to some sessions it would not stay so.
    if (sessions && scopes.includes('admin'))
      throw new AppError(
        'BAD_REQUEST',
        'An admin key cannot be limited to some sessions: it may make keys for every session',
      );
    return this.keys.create(name, [...new Set(scopes)], sessions ? [...new Set(sessions)] : null);
  }

  list(): Promise<ApiKeyRecord[]> {
    return this.keys.list();
  }

  /** Revokes a key; one already revoked is answered as it is (`revokedNow` false). */
  async revoke(id: string): Promise<{ record: ApiKeyRecord; revokedNow: boolean }> {
    const revoked = await this.keys.revoke(assertKeyId(id));
    if (!revoked) throw new AppError('NOT_FOUND', `No API key ${id}`);
    if (revoked.revokedNow) this.cache.clear();
    return revoked;
  }

  async rotate(id: string) {
    const rotated = await this.keys.rotate(assertKeyId(id));
    if (!rotated) throw new AppError('NOT_FOUND', `No API key ${id} that is not revoked`);
    this.cache.clear();
    return rotated;
  }
}

function assertKeyId(id: string): string {
  if (!/^[0-9a-f]{16}$/.test(id))
    throw new AppError('BAD_REQUEST', 'id must be an API key id (16 hex digits)');
  return id;
}
