import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './eventually.js';
import { answers, freePort } from './global-setup.js';

/** Private redis-server processes (loopback only) forming a Sentinel set or a Cluster. */
export class RedisTopology {
  private constructor(
    readonly url: string,
    private readonly processes: ChildProcess[],
    private readonly dir: string,
  ) {}

  /** One master and one Sentinel watching it as `mymaster`. */
  static async sentinel(): Promise<RedisTopology> {
    const dir = await mkdtemp(join(tmpdir(), 'wa-sentinel-'));
    const [masterPort, sentinelPort] = [await freePort(), await freePort()];
    const master = startServer([
      '--port',
      String(masterPort),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--dir',
      dir,
    ]);
    await up(masterPort);
    const conf = join(dir, 'sentinel.conf');
    await writeFile(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor mymaster 127.0.0.1 ${masterPort} 1`,
      ].join('\n') + '\n',
    );
    const sentinel = startServer([conf, '--sentinel']);
    await up(sentinelPort);
    return new RedisTopology(
      `redis+sentinel://127.0.0.1:${sentinelPort}/mymaster`,
      [master, sentinel],
      dir,
    );
  }

  /** Three masters, slots spread over them. */
  static async cluster(): Promise<RedisTopology> {
    const dir = await mkdtemp(join(tmpdir(), 'wa-cluster-'));
    const ports = [await freePort(), await freePort(), await freePort()];
    const processes = ports.map((port) =>
      startServer([
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dir, `nodes-${port}.conf`),
        '--dir',
        dir,
      ]),
    );
    for (const port of ports) await up(port);
    const created = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { encoding: 'utf8' },
    );
    if (created.status !== 0)
      throw new Error(`cluster create failed: ${created.stdout}${created.stderr}`);
    await eventually(() => {
      const info = spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info'], {
        encoding: 'utf8',
      });
      if (!info.stdout.includes('cluster_state:ok')) throw new Error('cluster not ok yet');
    }, 20_000);
    return new RedisTopology(
      `redis+cluster://${ports.map((port) => `127.0.0.1:${port}`).join(',')}`,
      processes,
      dir,
    );
  }

  async destroy(): Promise<void> {
    await Promise.all(
      this.processes.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGTERM');
          }),
      ),
    );
    await rm(this.dir, { recursive: true, force: true });
  }
}

function startServer(args: string[]): ChildProcess {
  return spawn('redis-server', args, { stdio: 'ignore' });
}

async function up(port: number): Promise<void> {
  // Six servers start at once on two cores shared with other test files: give them time.
  await eventually(async () => {
    if (!(await answers(`redis://127.0.0.1:${port}`)))
      throw new Error(`redis-server on ${port} not up yet`);
  }, 30_000);
}
