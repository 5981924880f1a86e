import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { textFingerprint } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { S3Server } from '../support/s3-server.js';
import { useStack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

describe.each(['redis', 's3'] as const)('a session whose login is in %s', (kind) => {
  let s3: S3Server | undefined;
  const workers: ChildProcess[] = [];
  const dirs: string[] = [];

  /** A worker process with a data folder of its own (another node, another disk). */
  const startWorker = async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'wa-node-'));
    dirs.push(dataDir);
    const child = spawnWorker({ ...stack.env, WWEBJS_DATA_DIR: dataDir });
    workers.push(child);
    return { child, dataDir };
  };
  const status = async () =>
    (await stack.call('GET', '/api/v1/sessions/main/status')).body.data as {
      status: string;
      worker: string;
    };

  beforeAll(async () => {
    s3 = kind === 's3' ? await S3Server.start() : undefined;
  });
  afterAll(async () => {
    await s3?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  const stack = useStack(
    () => ({
      ...(s3 ? s3.env() : { AUTH_STORE: 'redis' }),
      // Nothing links by itself: a READY session after the takeover can only be a restore.
      SANDBOX_LINK_DELAY_MS: 'manual',
      WORKER_HEARTBEAT_MS: '300',
      SEND_MIN_INTERVAL_MS: '0',
      SANDBOX_ACK_DELAY_MS: '10',
    }),
    { worker: false },
  );
  afterAll(async () => {
    for (const child of workers) if (child.exitCode === null) child.kill('SIGKILL');
    await Promise.all(workers.map(exited));
  });

  it('comes back READY on another worker without a new link after its worker and disk are gone, and sends what was queued once', async () => {
    const first = await startWorker();
    await eventually(async () => expect((await status()).status).toBe('QR'), 20_000);
    await stack.call('POST', '/api/v1/sessions/main/link');
    await eventually(async () => expect((await status()).status).toBe('READY'), 20_000);
    const firstOwner = (await status()).worker;

    // A second worker is up (it takes nothing while the first holds its share)...
    const second = await startWorker();
    await eventually(async () => {
      const live = (await stack.call('GET', '/api/v1/workers')).body.data;
      expect(live).toHaveLength(2);
    }, 20_000);
    // ...when the first one's node dies with its disk.
    first.child.kill('SIGKILL');
    await exited(first.child);
    await rm(first.dataDir, { recursive: true, force: true });

    const texts = ['queued during the takeover 1', 'queued during the takeover 2'];
    const ids: string[] = [];
    for (const text of texts) {
      const answer = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915123456789',
        text,
      });
      expect(answer.status).toBe(202);
      ids.push(answer.body.data.id);
    }

    await eventually(
      async () => {
        const now = await status();
        expect(now.worker).not.toBe(firstOwner);
        expect(now.status).toBe('READY');
      },
      30_000,
      100,
    );
    for (const id of ids) await stack.waitForStatus(id, 'read', 20_000);
    const log = await readFile(join(second.dataDir, 'session-main', 'sandbox-sends.jsonl'), 'utf8');
    const fingerprints = log
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).fingerprint);
    for (const text of texts)
      expect(fingerprints.filter((f) => f === textFingerprint(text))).toHaveLength(1);
  }, 120_000);

  it('forgets the login everywhere on logout: the session shows a QR again', async () => {
    await stack.call('POST', '/api/v1/sessions/main/logout');
    await eventually(async () => expect((await status()).status).toBe('QR'), 20_000);
    if (kind === 'redis')
      expect(await stack.redis.exists(stack.keys.authArchive('main', 'current'))).toBe(0);
  }, 60_000);
});
