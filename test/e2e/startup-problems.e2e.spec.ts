import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { eventually } from '../support/eventually.js';
import { freePort } from '../support/global-setup.js';
import { exited, spawnApp } from '../support/worker-process.js';

/**
 * What the built api and worker say when they cannot start as configured: a Redis that turns
 * them away, a port another process holds. An operator reads this output first.
 */
describe('the built api and worker, started against what refuses them', () => {
  let dataDir: string;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'wa-startup-'));
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await Promise.all(children.map(exited));
    await rm(dataDir, { recursive: true, force: true });
  });

  /** A started app and everything it writes, stdout and stderr together. */
  function start(app: 'api' | 'worker', env: Record<string, string>) {
    const child = spawnApp(
      app,
      { NODE_ENV: 'test', WA_ENGINE: 'sandbox', WWEBJS_DATA_DIR: dataDir, ...env },
      ['ignore', 'pipe', 'pipe'],
    );
    children.push(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    return { child, output: () => output };
  }

  /** A port held by a listener of this test, as another process would hold it. */
  async function heldPort(): Promise<{ port: number; release: () => Promise<void> }> {
    const port = await freePort();
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(port, resolve));
    return { port, release: () => new Promise((resolve) => holder.close(() => resolve())) };
  }

  it.each([
    // No user of that name: the shared Redis answers AUTH with WRONGPASS.
    [
      'a wrong password',
      () => inject('redisUrl').replace('redis://', 'redis://nobody:wrong@'),
      /WRONGPASS/,
    ],
    [
      'nothing listening on its port',
      async () => `redis://127.0.0.1:${await freePort()}`,
      /ECONNREFUSED/,
    ],
  ])(
    'has the worker say at once, while it waits, why Redis turns it away (%s), not only once Redis lets it in',
    async (_case, redisUrl, problem) => {
      const worker = start('worker', {
        REDIS_URL: await redisUrl(),
        WORKER_HEALTH_PORT: '0',
        LOG_LEVEL: 'warn',
      });
      // Its boot waits on Redis for good meanwhile (live, not ready): the line must not wait with it.
      await eventually(() => expect(worker.output()).toMatch(problem), 8_000);
      expect(worker.child.exitCode).toBeNull();
      worker.child.kill('SIGKILL');
      await exited(worker.child);
    },
    20_000,
  );

  it('has the worker tell each kind of Redis error of its BullMQ workers once, not on every retry', async () => {
    const worker = start('worker', {
      REDIS_URL: inject('redisUrl').replace('redis://', 'redis://nobody:wrong@'),
      WORKER_HEALTH_PORT: '0',
      LOG_LEVEL: 'warn',
    });
    await eventually(() => expect(worker.output()).toMatch(/webhook worker error/), 8_000);
    // BullMQ retries its connection several times a second meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    // One kind here (WRONGPASS), perhaps a second as a connection closes: told once each, where
    // every retry was a line (12 in these 3 s).
    const lines = worker.output().match(/webhook worker error/g) ?? [];
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(2);
    worker.child.kill('SIGKILL');
    await exited(worker.child);
  }, 20_000);

  it.each([
    ['api', 'PORT'],
    ['worker', 'WORKER_HEALTH_PORT'],
  ] as const)(
    'has the %s exit with one line naming %s when another process holds that port',
    async (app, variable) => {
      const held = await heldPort();
      try {
        // No Redis either: the port is what it must fail on, and nothing is written anywhere.
        const started = start(app, {
          REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
          [variable]: String(held.port),
          LOG_LEVEL: 'error',
        });
        const { code } = await exited(started.child);
        expect(code).toBe(1);
        const lines = started.output().split('\n');
        expect(lines).toContain(
          `${app} not started: ${variable} ${held.port} is in use by another process`,
        );
        // Not a stack trace of Nest's internals.
        expect(lines.filter((line) => /^\s+at /.test(line))).toEqual([]);
      } finally {
        await held.release();
      }
    },
    30_000,
  );
});
