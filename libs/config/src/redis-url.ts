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
  /^(redis\+sentinel|rediss\+sentinel|redis\+cluster|rediss\+cluster):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)(?:\/([^/?#]*))?(?:\/([^/?#]*))?\/?$/;

/** What REDIS_URL must look like, as boot says when it is none of these. */
export const REDIS_URL_FORMS =
  'must be redis://host:port, rediss://..., redis+sentinel://host:port,.../masterName or redis+cluster://host:port,... (a password with % : @ / in it percent-encoded: %25 %3A %40 %2F)';
/**
 * The server's `databases` setting (16 by default) bounds the number, and is only known once
 * connected: createRedis stops the process when the server refuses it.
 */
export const REDIS_DB_PROBLEM =
  "REDIS_URL: the database must be a whole number from 0, below the server's databases setting (0 to 15 by default), as in redis://host:6379/2";
export const REDIS_CLUSTER_DB_PROBLEM =
  'REDIS_URL: a Redis Cluster has only database 0 and takes no /<db>; leave it out of the redis+cluster:// URL';

/**
 * Reads REDIS_URL: `redis://` / `rediss://` for one server (`/db` after the port, or `?db=`),
 * `redis+sentinel://h1:26379,h2:26379/mymaster[/db]` for a Sentinel set,
 * `redis+cluster://h1:6379,h2:6379` for a Cluster (credentials as usual before the hosts;
 * `rediss+...` for TLS). Returns null when the URL is none of these.
 */
export function parseRedisUrl(url: string): RedisTarget | null {
  const read = readRedisUrl(url);
  return typeof read === 'string' ? null : read;
}

/** Why REDIS_URL cannot be used, as one line for boot to show, or null when it can. */
export function redisUrlProblem(url: string): string | null {
  const read = readRedisUrl(url);
  return typeof read === 'string' ? read : null;
}

/** A database as REDIS_URL gives it: digits only (ioredis's parseInt takes `2x` as 2, `x` as NaN). */
function database(text: string | null | undefined): number | undefined | null {
  if (text === undefined || text === null || text === '') return undefined;
  return /^\d{1,9}$/.test(text) ? Number(text) : null;
}

function readRedisUrl(url: string): RedisTarget | string {
  if (/^rediss?:\/\/[^\s]+$/.test(url)) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return REDIS_URL_FORMS;
    }
    // ioredis decodes them as it connects, and throws on a bare `%` (not `%XX`).
    if (decoded(parsed.username) === null || decoded(parsed.password) === null)
      return REDIS_URL_FORMS;
    // ioredis selects the path's database (else the query's `db`) and takes anything: `/abc`
    // as SELECT NaN, which fails with a stack trace; `/-1` fails and leaves it on database 0.
    // (One slash after it, `/2/`, as ioredis's parseInt reads it: a URL that worked before.)
    const db = database(parsed.pathname.replace(/^\//, '').replace(/^(\d+)\/$/, '$1'));
    if (db === null || database(parsed.searchParams.get('db')) === null) return REDIS_DB_PROBLEM;
    return { mode: 'standalone', url, nodes: [], tls: url.startsWith('rediss:') };
  }
  const match = MULTI.exec(url);
  if (!match) return REDIS_URL_FORMS;
  const [, scheme, username, password, hostList, path, dbText] = match;
  const nodes = hostList.split(',').map((hostPort) => {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(hostPort.trim());
    if (!m) return null;
    const defaultPort = scheme.includes('sentinel') ? 26379 : 6379;
    return { host: m[1].replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : defaultPort };
  });
  if (nodes.some((node) => node === null || node.port < 1 || node.port > 65535))
    return REDIS_URL_FORMS;
  const sentinel = scheme.includes('sentinel');
  if (sentinel && !path) return REDIS_URL_FORMS;
  // A Cluster takes no SELECT, and ioredis's Cluster client ignores a database: a number after
  // the hosts would be dropped without a word.
  if (!sentinel && dbText !== undefined) return REDIS_URL_FORMS;
  if (!sentinel && path)
    return database(path) === null ? REDIS_URL_FORMS : REDIS_CLUSTER_DB_PROBLEM;
  const db = database(dbText);
  if (db === null) return REDIS_DB_PROBLEM;
  const [masterName, user, secret] = [path, username, password].map((part) =>
    part ? decoded(part) : undefined,
  );
  if (masterName === null || user === null || secret === null) return REDIS_URL_FORMS;
  return {
    mode: sentinel ? 'sentinel' : 'cluster',
    url,
    nodes: nodes as { host: string; port: number }[],
    masterName: sentinel ? masterName : undefined,
    username: user,
    password: secret,
    db,
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
