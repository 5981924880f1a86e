// What `npm start` (scripts/start.mjs) may check, and start, of REDIS_URL before it runs the
// apps. Kept apart so the tests can use it without the rest of the start script.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

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

/**
 * Whether a Redis answers at host:port: 'up' (PONG, or NOAUTH: a password-protected one is
 * there all the same), 'loading' (there, replaying its AOF: wait for it), or 'down'.
 */
export function redisState({ host, port }) {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (state) => {
      socket.destroy();
      resolve(state);
    };
    socket.setTimeout(1000, () => done('down'));
    socket.on('error', () => done('down'));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => done(replyState(data.toString())));
  });
}

/** What a Redis's answer to PING says of it. */
export function replyState(reply) {
  if (/^(\+PONG|-NOAUTH)/.test(reply)) return 'up';
  if (/^-LOADING/.test(reply)) return 'loading';
  return 'down';
}

/**
 * Starts redis-server on 127.0.0.1:port with AOF in `dir`, its log in `dir`/redis.log. In a
 * process group of its own: a Ctrl-C in the terminal reaches npm start and the apps, not
 * Redis, which is stopped (stopRedis) once the apps have written their last state to it.
 */
export function startRedis(port, dir) {
  return spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--save',
      '',
      '--logfile',
      join(dir, 'redis.log'),
    ],
    { cwd: dir, detached: true, stdio: 'ignore' },
  );
}

/** Waits until the Redis at `target` is up (a large AOF takes a while to load); false if not. */
export async function redisComesUp(target, child, timeoutMs = 60_000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child?.exitCode !== null && child?.exitCode !== undefined) return false;
    if ((await redisState(target)) === 'up') return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** The last lines of the log startRedis writes, to say why it did not come up. */
export function redisLogTail(dir, lines = 10) {
  try {
    return readFileSync(join(dir, 'redis.log'), 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
