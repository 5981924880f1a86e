import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
// @ts-expect-error: a plain ES module of the start script, without types
import { envValue, redisState, redisTarget, replyState } from '../../scripts/redis-target.mjs';
import { freePort } from '../support/global-setup.js';

// `npm start` looks for (and may start) a local Redis only for a plain redis:// REDIS_URL; the
// other forms the apps take are theirs to connect to.
describe('npm start: which Redis it checks', () => {
  it('checks the default when REDIS_URL is unset or empty, as the apps take it', () => {
    const local = { host: '127.0.0.1', port: 6379, local: true };
    expect(redisTarget(undefined)).toEqual(local);
    expect(redisTarget('')).toEqual(local);
  });

  it('checks a plain redis:// URL, local or not, with or without a password', () => {
    expect(redisTarget('redis://:pw@localhost:6380/2')).toEqual({
      host: 'localhost',
      port: 6380,
      local: true,
    });
    expect(redisTarget('redis://[::1]')).toEqual({ host: '::1', port: 6379, local: true });
    expect(redisTarget('redis://redis.internal:6379')).toEqual({
      host: 'redis.internal',
      port: 6379,
      local: false,
    });
  });

  it('leaves TLS, Sentinel, Cluster and malformed URLs to the apps, without throwing', () => {
    for (const value of [
      'rediss://redis.example.com:6380',
      'redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster',
      'redis+cluster://10.0.0.1:7000,10.0.0.2:7000',
      'not a url',
    ])
      expect(redisTarget(value), value).toBeNull();
  });

  it('reads a variable as the apps do: the environment over .env, empty meaning unset', () => {
    expect(envValue({ PORT: '4000' }, { PORT: '5000' }, 'PORT', '3000')).toBe('4000');
    expect(envValue({}, { PORT: '5000' }, 'PORT', '3000')).toBe('5000');
    expect(envValue({}, { PORT: '' }, 'PORT', '3000')).toBe('3000');
    expect(envValue({ PORT: '' }, { PORT: '5000' }, 'PORT', '3000')).toBe('3000');
  });
});

describe('npm start: the Redis it starts', () => {
  it('reads PING answers: up, a password-protected one up too, loading its data, or not Redis', () => {
    expect(replyState('+PONG\r\n')).toBe('up');
    expect(replyState('-NOAUTH Authentication required.\r\n')).toBe('up');
    expect(replyState('-LOADING Redis is loading the dataset in memory\r\n')).toBe('loading');
    expect(replyState('HTTP/1.1 400 Bad Request\r\n')).toBe('down');
  });

  it('keeps Redis out of the Ctrl-C of the terminal: it is still up while the apps stop', async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'start-redis-'));
    const module = new URL('../../scripts/redis-target.mjs', import.meta.url).href;
    // As npm start does: start Redis, then, on Ctrl-C, look at it (the apps stop meanwhile)
    // before stopping it last.
    const script = `
      import { startRedis, redisComesUp, redisState } from '${module}';
      const target = { host: '127.0.0.1', port: ${port} };
      const server = startRedis(${port}, ${JSON.stringify(dir)});
      if (!(await redisComesUp(target, server, 10000))) process.exit(2);
      process.on('SIGINT', async () => {
        await new Promise((r) => setTimeout(r, 300));
        console.log('after Ctrl-C: ' + (await redisState(target)));
        server.kill('SIGTERM');
        process.exit(0);
      });
      console.log('ready');
    `;
    // A process group of its own, as a terminal gives the command it runs.
    const start = spawn(process.execPath, ['--input-type=module', '-e', script], {
      detached: true,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: start.stdout! });
    const seen: string[] = [];
    lines.on('line', (line) => seen.push(line));
    try {
      await vi.waitFor(() => expect(seen).toContain('ready'), { timeout: 15_000 });
      process.kill(-start.pid!, 'SIGINT'); // what Ctrl-C sends: to the whole group
      await once(start, 'exit');
      expect(seen).toContain('after Ctrl-C: up');
      // Stopped last, by its SIGTERM: a busy host can take more than waitFor's default second.
      await vi.waitFor(
        async () => expect(await redisState({ host: '127.0.0.1', port })).toBe('down'),
        { timeout: 10_000 },
      );
    } finally {
      if (start.exitCode === null) process.kill(-start.pid!, 'SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('npm start: when it builds', () => {
  /**
   * A copy of the start script in a project of its own: its build (`npm run build`) writes two
   * entry files that print their name and exit, and its REDIS_URL is one the script leaves to
   * the apps, so `npm start` there only builds if it must and runs them.
   */
  async function project() {
    const root = await mkdtemp(join(tmpdir(), 'start-build-'));
    const file = async (path: string, text: string) => {
      await mkdir(join(root, path, '..'), { recursive: true });
      await writeFile(join(root, path), text);
    };
    await mkdir(join(root, 'scripts'));
    for (const script of ['start.mjs', 'redis-target.mjs'])
      await copyFile(
        new URL(`../../scripts/${script}`, import.meta.url),
        join(root, 'scripts', script),
      );
    await mkdir(join(root, 'node_modules'));
    await file('.env', 'REDIS_URL=rediss://127.0.0.1:1\n');
    await file('package-lock.json', '{}\n');
    await file(
      'package.json',
      JSON.stringify({ type: 'module', scripts: { build: 'node build.mjs' } }),
    );
    await file(
      'build.mjs',
      `import { mkdirSync, writeFileSync } from 'node:fs';
      for (const app of ['api', 'worker']) {
        mkdirSync('dist/apps/' + app + '/apps/' + app + '/src', { recursive: true });
        writeFileSync('dist/apps/' + app + '/apps/' + app + '/src/main.js', 'console.log("' + app + ' ran");');
      }`,
    );
    await file('apps/api/src/main.ts', '');
    await file('apps/worker/src/main.ts', '');
    await file('libs/config/src/index.ts', '');
    // Sources written a minute ago: a build now is newer, whatever the clock's resolution.
    const before = new Date(Date.now() - 60_000);
    for (const path of [
      'apps/api/src/main.ts',
      'apps/worker/src/main.ts',
      'libs/config/src/index.ts',
      'package-lock.json',
    ])
      await utimes(join(root, path), before, before);
    const env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const npmStart = () => {
      const result = spawnSync(process.execPath, ['scripts/start.mjs'], {
        cwd: root,
        env,
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(result.status, result.stderr).toBe(0);
      return result.stdout;
    };
    const npmRunBuild = () =>
      expect(spawnSync('npm', ['run', 'build'], { cwd: root, env }).status).toBe(0);
    return { root, npmStart, npmRunBuild };
  }

  it('takes a build by npm run build as it is, and builds again once a source is newer than it', async () => {
    const { root, npmStart, npmRunBuild } = await project();
    try {
      npmRunBuild();
      const first = npmStart();
      expect(first).not.toContain('[start] building');
      // The first app to exit stops the other, which may not have printed yet.
      expect(first).toMatch(/(api|worker) ran/);

      // A library changed since the worker's build (the api built after it, as a partial
      // build would leave them): built again, then taken as it is.
      const worker = join(root, 'dist/apps/worker/apps/worker/src/main.js');
      const builtAt = new Date(Date.now() - 30_000);
      await utimes(worker, builtAt, builtAt);
      const changed = new Date(Date.now() - 10_000);
      await utimes(join(root, 'libs/config/src/index.ts'), changed, changed);
      expect(npmStart()).toContain('[start] building (npm run build)');
      expect((await stat(worker)).mtimeMs).toBeGreaterThan(changed.getTime());
      expect(npmStart()).not.toContain('[start] building');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('builds when an app was never built', async () => {
    const { root, npmStart } = await project();
    try {
      const output = npmStart();
      expect(output).toContain('[start] building (npm run build)');
      expect(output).toMatch(/(api|worker) ran/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
