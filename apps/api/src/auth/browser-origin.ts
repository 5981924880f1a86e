import { isIP } from 'node:net';
import type { FastifyRequest } from 'fastify';

export const UNSAFE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** CORS_ORIGINS as a list. */
export function corsOrigins(value: string | undefined): string[] {
  return value ? value.split(',').map((origin) => origin.trim()) : [];
}

/**
 * This server as browsers reach it, for the checks that matter when nothing else guards a
 * route (no password, no key): where a request's page comes from, and by which name it
 * reached the server.
 */
export class BrowserOrigin {
  /** BASE_URL's origin, a page of which is this server's own, and any other trusted ones. */
  private readonly allowedOrigins: Set<string>;
  /** BASE_URL's host name. */
  private readonly baseHostname?: string;

  /** `trusted`: origins whose pages may send requests too (the api's CORS_ORIGINS). */
  constructor(baseUrl: string | undefined, trusted: string[] = []) {
    this.allowedOrigins = new Set(trusted);
    if (!baseUrl) return;
    const base = new URL(baseUrl);
    this.allowedOrigins.add(base.origin);
    this.baseHostname = base.hostname;
  }

  /** Why the request comes from a page of another site, or undefined if it does not. */
  crossSiteReason(req: FastifyRequest): string | undefined {
    const origin = req.headers.origin;
    let parsed: URL | undefined;
    if (origin !== undefined) {
      try {
        parsed = new URL(origin);
      } catch {
        return `Origin ${origin} is not a URL`;
      }
      // A trusted origin's page is cross-site by nature (another port, another host).
      if (this.allowedOrigins.has(parsed.origin)) return undefined;
    }
    // Sent by every current browser to https and localhost: the strongest signal, and
    // unforgeable by a page.
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none')
      return `Sec-Fetch-Site is ${String(site)}`;
    if (parsed === undefined || parsed.host === req.headers.host) return undefined;
    return `Origin ${parsed.origin} is not this site`;
  }

  /**
   * Whether the request names this server by an IP address, `localhost` or BASE_URL's host.
   * A page on another site whose name the attacker makes resolve to this machine (DNS
   * rebinding) is same-origin with what it loads; its requests carry that name as their Host,
   * which is how they are told apart.
   */
  namesThisServer(req: FastifyRequest): boolean {
    const hostname = hostnameOf(req.headers.host);
    return (
      hostname !== undefined &&
      (isIP(hostname.replace(/^\[|\]$/g, '')) !== 0 ||
        hostname === 'localhost' ||
        hostname.endsWith('.localhost') ||
        hostname === this.baseHostname)
    );
  }
}

/** The host name of a Host header, lower case, without its port; undefined if malformed. */
function hostnameOf(host: string | undefined): string | undefined {
  if (!host) return undefined;
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return undefined;
  }
}
