import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { exited, NODE_OPTIONS, spawnWorker } from '../support/worker-process.js';

const MINUTE = 60_000;

/**
 * NODE_OPTIONS for a worker whose host clock is `offsetMs` off: every Date.now() in it is
 * shifted (what the heartbeat wrote its time with before it used Redis's clock).
 */
function skewedClock(offsetMs: number): string {
  const file = join(mkdtempSync(join(tmpdir(), 'skew-')), 'skew.mjs');
  writeFileSync(file, `const real = Date.now; Date.now = () => real() + (${offsetMs});\n`);
  return `${NODE_OPTIONS} --import=${file}`;
}

describe('workers whose host clock is off by a minute', () => {
  const stack = useStack({ WORKER_HEARTBEAT_MS: '1000' }, { worker: false });
  const children: ChildProcess[] = [];
  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited(child);
    }
  });

  it('one a minute behind counts as live: it takes the session and the api accepts sends for it', async () => {
    children.push(spawnWorker({ ...stack.env, NODE_OPTIONS: skewedClock(-MINUTE) }));
    await eventually(async () => {
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe(
        'READY',
      );
    }, 30_000);
    const workers = (await stack.call('GET', '/api/v1/workers')).body.data;
    expect(workers).toHaveLength(1);
    // Its beat is dated by Redis's clock (the same host's here), not its own minute-old one.
    expect(Math.abs(Date.parse(workers[0].lastBeatAt) - Date.now())).toBeLessThan(5_000);
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'from a worker a minute behind',
    });
    expect(sent.status).toBe(202);
    await stack.waitForStatus(sent.body.data.id, ['sent', 'delivered', 'read'], 20_000);
  });

  it('one a minute ahead, killed, is gone within three heartbeats, not a minute later', async () => {
    const child = spawnWorker({ ...stack.env, NODE_OPTIONS: skewedClock(MINUTE) });
    children.push(child);
    await eventually(async () => {
      expect((await stack.call('GET', '/api/v1/workers')).body.data).toHaveLength(1);
    }, 30_000);
    child.kill('SIGKILL');
    await exited(child);
    const killedAt = Date.now();
    await eventually(async () => {
      expect((await stack.call('GET', '/api/v1/workers')).body.data).toHaveLength(0);
    }, 15_000);
    expect(Date.now() - killedAt).toBeLessThan(10_000);
    // And the api says so: no worker, so a send is refused rather than left waiting.
    const refused = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'nobody to send it',
    });
    expect(refused.status).toBe(503);
  });
});
