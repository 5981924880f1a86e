#!/usr/bin/env node
// `npm start`: installs and builds when needed, makes sure Redis answers (starting a local
// redis-server with AOF under .data/redis when it can), then runs api and worker together.
// `--watch` (npm run dev:all) runs both through `nest start --watch` instead of the build.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import {
  envValue,
  redisComesUp,
  redisLogTail,
  redisState,
  redisTarget,
  startRedis,
} from './redis-target.mjs';

const root = new URL('..', import.meta.url).pathname;
/** How api and worker run (the Dockerfile's NODE_OPTIONS): see the README's "How fast". */
const NODE_OPTIONS = '--max-semi-space-size=32';
const watch = process.argv.includes('--watch');
const say = (line) => console.log(`[start] ${line}`);
/** What this script started; a failure stops it too. */
const children = [];
const fail = (line) => {
  console.error(`[start] ${line}`);
  for (const child of children) child.kill('SIGTERM');
  process.exit(1);
};
const run = (cmd, args) => {
  const result = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) fail(`${cmd} ${args.join(' ')} failed`);
};

if (!existsSync(join(root, 'node_modules'))) {
  say('installing dependencies (npm ci)');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
if (!existsSync(join(root, '.env')) && existsSync(join(root, '.env.example'))) {
  copyFileSync(join(root, '.env.example'), join(root, '.env'));
  say('created .env from .env.example; edit it to configure the gateway');
}
const fileEnv = parseEnv(readFileSync(join(root, '.env'), 'utf8'));
const env = (name, fallback) => envValue(process.env, fileEnv, name, fallback);

if (!watch && isStale()) {
  say('building (npm run build)');
  run('npm', ['run', 'build']);
}

const redis = redisTarget(env('REDIS_URL', ''));
if (!redis) {
  say('REDIS_URL is not a plain redis:// URL: not checked here (api and worker connect to it)');
} else if ((await redisState(redis)) === 'loading') {
  say(`Redis at ${redis.host}:${redis.port} is loading its data; waiting for it`);
  if (!(await redisComesUp(redis))) fail('Redis did not finish loading within a minute');
} else if ((await redisState(redis)) === 'down') {
  const where = `${redis.host}:${redis.port}`;
  const hasServer = spawnSync('redis-server', ['--version']).status === 0;
  if (!redis.local || !hasServer) {
    fail(
      `Redis does not answer at ${where}; start one (e.g. apt-get install redis-server) or set REDIS_URL in .env`,
    );
  }
  const dir = join(root, '.data', 'redis');
  mkdirSync(dir, { recursive: true });
  say(`no Redis at ${where}; starting redis-server there with AOF, data in .data/redis`);
  const server = startRedis(redis.port, dir);
  children.push(server);
  if (!(await redisComesUp(redis, server)))
    fail(`redis-server did not come up; the end of .data/redis/redis.log:\n${redisLogTail(dir)}`);
}

const commands = watch
  ? [
      ['npx', ['nest', 'start', 'api', '--watch']],
      ['npx', ['nest', 'start', 'worker', '--watch']],
    ]
  : [
      ['node', ['dist/apps/api/apps/api/src/main.js']],
      ['node', ['dist/apps/worker/apps/worker/src/main.js']],
    ];
// The node options the Docker image runs with (see the Dockerfile), unless NODE_OPTIONS is set
// (in the environment or .env).
const nodeEnv = { ...process.env, NODE_OPTIONS: env('NODE_OPTIONS', NODE_OPTIONS) };
const apps = commands.map(([cmd, args]) =>
  spawn(cmd, args, { cwd: root, stdio: 'inherit', env: nodeEnv }),
);
children.unshift(...apps);
say(
  `api on http://localhost:${env('PORT', '3000')} (docs: /docs), worker with WA_ENGINE=${env('WA_ENGINE', 'wwebjs')}`,
);

let stopping = false;
const stop = (code) => {
  if (stopping) return;
  stopping = true;
  // Apps first (they flush to Redis on shutdown), Redis last.
  for (const child of apps) child.kill('SIGTERM');
  Promise.all(
    apps.map(
      (child) => new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r))),
    ),
  ).then(() => {
    for (const child of children) if (!apps.includes(child)) child.kill('SIGTERM');
    process.exit(code);
  });
};
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
for (const child of apps) child.on('exit', (code) => stop(code ?? 1));

/**
 * Whether api or worker needs a build: its entry file is missing, or older than a file it is
 * built from (its app, libs) or than package-lock.json. Judged by the build's own output, as
 * the tests' check is (test/support/worker-process.ts), so a build counts whoever made it:
 * `npm run build`, `nest build`, or this script.
 */
function isStale() {
  const newest = (dir) =>
    readdirSync(dir, { withFileTypes: true }).reduce((max, entry) => {
      const path = join(dir, entry.name);
      return Math.max(max, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
    }, 0);
  const shared = Math.max(
    newest(join(root, 'libs')),
    statSync(join(root, 'package-lock.json')).mtimeMs,
  );
  return ['api', 'worker'].some((app) => {
    const main = join(root, 'dist', 'apps', app, 'apps', app, 'src', 'main.js');
    if (!existsSync(main)) return true;
    return Math.max(shared, newest(join(root, 'apps', app))) > statSync(main).mtimeMs;
  });
}
