import { hash, timingSafeEqual } from 'node:crypto';

const sha256 = (value: string) => hash('sha256', value, 'buffer');
const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * A configured secret (API key, token, password), kept as its SHA-256 digest and compared in
 * constant time: digests have one length, so neither the time taken nor the length of what
 * was given says anything about the secret.
 */
export class Secret {
  private readonly digest: Buffer;

  constructor(value: string) {
    this.digest = sha256(value);
  }

  matches(given: string | null | undefined): boolean {
    return timingSafeEqual(sha256(given ?? ''), this.digest);
  }

  /** Compared with every one, so the time taken says nothing about which matched. */
  static matchesAny(secrets: Secret[], given: string | null | undefined): boolean {
    return secrets.map((secret) => secret.matches(given)).includes(true);
  }
}

/** The token of an `Authorization: Bearer <token>` header, if that is what it holds. */
export function bearerToken(header: string | undefined): string | undefined {
  return BEARER.exec(header ?? '')?.[1];
}

/** The user and password of an `Authorization: Basic ...` header, if that is what it holds. */
export function basicCredentials(
  header: string | undefined,
): { user: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
