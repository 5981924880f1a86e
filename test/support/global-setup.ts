import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { TestProject } from 'vitest/node';
import { ensureBuilt } from './worker-process.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

let server: ChildProcess | undefined;

/** Uses the Redis at REDIS_URL (default 127.0.0.1:6379); starts a private one when none answers. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const wanted = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  let url = wanted;
  if (!(await answers(wanted))) {
    if (spawnSync('redis-server', ['--version']).status !== 0) {
      throw new Error(`No Redis answers at ${wanted} and redis-server is not on the PATH`);
    }
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'wa-test-redis-'));
    server = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      {
        stdio: 'ignore',
      },
    );
    url = `redis://127.0.0.1:${port}`;
    for (let i = 0; i < 50 && !(await answers(url)); i++)
      await new Promise((r) => setTimeout(r, 100));
    console.log(`tests: no Redis at ${wanted}; started one at ${url}`);
  }
  project.provide('redisUrl', url);
  // Tests that run real api/worker processes need the build; done once here, before any test
  // file starts, so parallel files never rebuild dist under each other's feet.
  ensureBuilt('api');
  ensureBuilt('worker');
  return async () => {
    server?.kill('SIGTERM');
  };
}

/** Whether a Redis answers PING at `url` (one try, no retries). */
export async function answers(url: string): Promise<boolean> {
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
