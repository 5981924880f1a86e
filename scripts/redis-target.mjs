// What `npm start` (scripts/start.mjs) may check, and start, of REDIS_URL before it runs the
// apps. Kept apart so the test can read it without starting anything.

/**
 * The host and port to look for a Redis at, for a plain `redis://` REDIS_URL (unset or empty:
 * the default, as the apps take it), with whether it is this machine (where npm start may
 * start one). Null for anything else: TLS (`rediss://`), Sentinel and Cluster URLs, and
 * values that are not URLs, are the apps' to connect to, or to refuse at boot with their
 * own message.
 */
export function redisTarget(value) {
  const given = value === undefined || value === '' ? 'redis://127.0.0.1:6379' : value;
  let url;
  try {
    url = new URL(given);
  } catch {
    return null;
  }
  if (url.protocol !== 'redis:' || !url.hostname) return null;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return {
    host,
    port: Number(url.port || 6379),
    local: ['127.0.0.1', 'localhost', '::1'].includes(host),
  };
}

/** The value of a variable as the apps take it: the environment first, then .env; empty = unset. */
export function envValue(processEnv, fileEnv, name, fallback) {
  const value = processEnv[name] !== undefined ? processEnv[name] : fileEnv[name];
  return value === undefined || value === '' ? fallback : value;
}
