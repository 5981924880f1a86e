import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './eventually.js';
import { answers, freePort } from './global-setup.js';

/**
 * A private redis-server on a free port: with AOF for tests that stop and restart Redis, or
 * without persistence for tests that only need a server to themselves.
 */
export class RedisServer {
  private process?: ChildProcess;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly persistence: boolean,
    private readonly settings: string[],
  ) {}

  /** `settings`: more redis-server arguments, such as `['--databases', '2']`. */
  static async start({ persistence = true, settings = [] as string[] } = {}): Promise<RedisServer> {
    const server = new RedisServer(
      await freePort(),
      await mkdtemp(join(tmpdir(), 'wa-redis-')),
      persistence,
      settings,
    );
    await server.up();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server; does nothing while it runs (a second one would fail to bind the port). */
  async up(): Promise<void> {
    const running = this.process;
    if (running && running.exitCode === null && running.signalCode === null) return;
    this.process = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--appendonly',
        this.persistence ? 'yes' : 'no',
        '--appendfsync',
        'always',
        '--save',
        '',
        ...this.settings,
      ],
      { stdio: 'ignore' },
    );
    await eventually(async () => {
      if (!(await answers(this.url))) throw new Error(`redis-server on ${this.port} not up yet`);
    });
  }

  /** Stops the server answering, its connections left open (a stall: a fork, a long script). */
  pause(): void {
    this.process?.kill('SIGSTOP');
  }

  resume(): void {
    this.process?.kill('SIGCONT');
  }

  async down(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    await exited;
  }

  async destroy(): Promise<void> {
    await this.down();
    await rm(this.dir, { recursive: true, force: true });
  }
}
