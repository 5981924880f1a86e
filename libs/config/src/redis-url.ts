export interface RedisTarget {
  mode: 'standalone' | 'sentinel' | 'cluster';
  /** The URL as given, for standalone (ioredis parses redis:// and rediss:// itself). */
  url: string;
  nodes: { host: string; port: number }[];
  /** Sentinel: the master set's name. */
  masterName?: string;
  username?: string;
  password?: string;
  db?: number;
  tls: boolean;
}

const MULTI =
  /^(redis\+sentinel|rediss\+sentinel|redis\+cluster|rediss\+cluster):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)(?:\/([^/?#]*))?(?:\/(\d+))?\/?$/;

/**
 * Reads REDIS_URL: `redis://` / `rediss://` for one server, `redis+sentinel://h1:26379,h2:26379/mymaster[/db]`
 * for a Sentinel set, `redis+cluster://h1:6379,h2:6379` for a Cluster (credentials as usual
 * before the hosts; `rediss+...` for TLS). Returns null when the URL is none of these.
 */
export function parseRedisUrl(url: string): RedisTarget | null {
  if (/^rediss?:\/\/[^\s]+$/.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return null;
    }
    // ioredis decodes them as it connects, and throws on a bare `%` (not `%XX`).
    if (decoded(parsed.username) === null || decoded(parsed.password) === null) return null;
    return { mode: 'standalone', url, nodes: [], tls: url.startsWith('rediss:') };
  }
  const match = MULTI.exec(url);
  if (!match) return null;
  const [, scheme, username, password, hostList, path, db] = match;
  const nodes = hostList.split(',').map((hostPort) => {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(hostPort.trim());
    if (!m) return null;
    const defaultPort = scheme.includes('sentinel') ? 26379 : 6379;
    return { host: m[1].replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : defaultPort };
  });
  if (nodes.some((node) => node === null || node.port < 1 || node.port > 65535)) return null;
  const sentinel = scheme.includes('sentinel');
  if (sentinel && !path) return null;
  if (!sentinel && path) return null;
  const [masterName, user, secret] = [path, username, password].map((part) =>
    part ? decoded(part) : undefined,
  );
  if (masterName === null || user === null || secret === null) return null;
  return {
    mode: sentinel ? 'sentinel' : 'cluster',
    url,
    nodes: nodes as { host: string; port: number }[],
    masterName: sentinel ? masterName : undefined,
    username: user,
    password: secret,
    db: db ? Number(db) : undefined,
    tls: scheme.startsWith('rediss'),
  };
}

/** A URL's percent-encoded part, decoded; null when it is not valid percent-encoding. */
function decoded(part: string): string | null {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}
