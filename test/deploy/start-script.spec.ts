import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
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
