import type { ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../support/eventually.js';
import { useStack, type Stack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SESSIONS = ['main', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'];

/**
 * The sessions (eight unless said; registered before the tests), and worker processes spawned
 * for the describe.
 */
function placementStack(sessions = SESSIONS) {
  const workers: ChildProcess[] = [];
  const stack = useStack(
    { WORKER_HEARTBEAT_MS: '300', SESSION_START_CONCURRENCY: '4' },
    { worker: false },
  );
  beforeAll(async () => {
    for (const id of sessions.slice(1)) await stack.call('POST', '/api/v1/sessions', { id });
  });
  afterAll(async () => {
    for (const child of workers) if (child.exitCode === null) child.kill('SIGKILL');
    await Promise.all(workers.map(exited));
  });
  const start = (env: Record<string, string> = {}) => {
    const child = spawnWorker({ ...stack.env, ...env });
    workers.push(child);
    return child;
  };
  return { stack, start, ...placementLooks(stack, sessions) };
}

function placementLooks(stack: Stack, sessions: string[]) {
  const holdersByWorker = async (): Promise<Map<string, string[]>> => {
    const byWorker = new Map<string, string[]>();
    for (const id of sessions) {
      const holder = await stack.redis.get(stack.keys.lease(id));
      if (holder) byWorker.set(holder, [...(byWorker.get(holder) ?? []), id]);
    }
    return byWorker;
  };
  const workerIdOf = async (child: ChildProcess): Promise<string> =>
    eventually(async () => {
      const live = (await stack.call('GET', '/api/v1/workers')).body.data as { id: string }[];
      const found = live.find((worker) => worker.id.includes(`-${child.pid}-`));
      expect(found).toBeDefined();
      return found!.id;
    }, 20_000);
  const allReady = () =>
    eventually(async () => {
      for (const id of sessions) {
        const status = (await stack.call('GET', `/api/v1/sessions/${id}/status`)).body.data;
        expect({ id, status: status.status }).toEqual({ id, status: 'READY' });
      }
    }, 30_000);
  return { holdersByWorker, workerIdOf, allReady };
}

describe('placement: an even share per worker, and drain', () => {
  const { stack, start, holdersByWorker, workerIdOf, allReady } = placementStack();

  it('spreads sessions evenly when a worker joins, and moves them all off a drained worker', async () => {
    const first = start();
    const firstId = await workerIdOf(first);
    await allReady();
    expect((await holdersByWorker()).get(firstId)).toHaveLength(SESSIONS.length);

    // A second worker: the first hands sessions over until each holds its share (4 of 8).
    const second = start();
    const secondId = await workerIdOf(second);
    await eventually(async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(firstId)).toHaveLength(4);
      expect(byWorker.get(secondId)).toHaveLength(4);
    }, 30_000);
    await allReady();

    // Drain the first: everything moves to the second at once, and the first takes nothing.
    const drainedAt = performance.now();
    const drained = await stack.call('POST', `/api/v1/workers/${firstId}/drain`);
    expect(drained.status).toBe(202);
    expect(drained.body.data).toMatchObject({ id: firstId, draining: true });
    await eventually(async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(secondId)).toHaveLength(SESSIONS.length);
    }, 20_000);
    console.log(
      `drain moved ${SESSIONS.length} leases in ${Math.round(performance.now() - drainedAt)} ms`,
    );
    await allReady();
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'p3',
      to: '4915123456789',
      text: 'after the drain',
    });
    await stack.waitForStatus(sent.body.data.id, 'read', 20_000);
    // The listing shows what each worker reported at its last heartbeat.
    await eventually(async () => {
      const listed = (await stack.call('GET', '/api/v1/workers')).body.data;
      expect(listed.find((worker: { id: string }) => worker.id === firstId)).toMatchObject({
        draining: true,
        sessions: [],
      });
    }, 5_000);

    // Undrained, it gets its share back.
    const undrained = await stack.call('DELETE', `/api/v1/workers/${firstId}/drain`);
    expect(undrained.body.data.draining).toBe(false);
    await eventually(async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(firstId)).toHaveLength(4);
      expect(byWorker.get(secondId)).toHaveLength(4);
    }, 30_000);
  }, 180_000);

  it('answers a drain of an unknown or malformed worker id with 404 / 400', async () => {
    const unknown = await stack.call('POST', '/api/v1/workers/no-such-worker-1-abc/drain');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('NOT_FOUND');
    const malformed = await stack.call('POST', `/api/v1/workers/${'x'.repeat(300)}/drain`);
    expect(malformed.status).toBe(400);
  });
});

describe('placement when a worker joins a fleet with no more sessions each than workers', () => {
  const sessions = SESSIONS.slice(0, 4);
  const { start, holdersByWorker, workerIdOf, allReady } = placementStack(sessions);

  it('gives the worker that joins its part, every worker within one session of another, and it stays so', async () => {
    const firstId = await workerIdOf(start());
    await allReady();
    const secondId = await workerIdOf(start());
    await eventually(async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(firstId)).toHaveLength(2);
      expect(byWorker.get(secondId)).toHaveLength(2);
    }, 30_000);
    await allReady();

    // A third: each of the two already holds ceil(4 / 3) = 2, yet one of them hands one over.
    const thirdId = await workerIdOf(start());
    const spread = async () => {
      const byWorker = await holdersByWorker();
      const held = [firstId, secondId, thirdId].map((id) => byWorker.get(id)?.length ?? 0);
      expect(held[2]).toBe(1);
      expect(held.sort((a, b) => a - b)).toEqual([1, 1, 2]);
    };
    await eventually(spread, 30_000);
    await allReady();
    // Nothing handed back and forth: ten heartbeats later, every session is where it was.
    const settled = await holdersByWorker();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await holdersByWorker()).toEqual(settled);
    await allReady();
  }, 120_000);
});

describe("placement within each worker's WORKER_MAX_SESSIONS", () => {
  const { stack, start, holdersByWorker, workerIdOf, allReady } = placementStack();

  it('shares out what a worker with a lower cap cannot take: every session is driven', async () => {
    const capped = start({ WORKER_MAX_SESSIONS: '1' });
    const cappedId = await workerIdOf(capped);
    const second = start();
    const secondId = await workerIdOf(second);
    const third = start();
    const thirdId = await workerIdOf(third);
    // 8 sessions, caps 1, 50 and 50: the two take 4 each at most (an even 3 each, as if the
    // capped one took its third, would leave one undriven).
    const spread = async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(cappedId)).toHaveLength(1);
      expect(byWorker.get(secondId)?.length ?? 0).toBeLessThanOrEqual(4);
      expect(byWorker.get(thirdId)?.length ?? 0).toBeLessThanOrEqual(4);
      expect([...byWorker.values()].flat()).toHaveLength(SESSIONS.length);
    };
    await eventually(spread, 30_000);
    await allReady();
    // And it stays so: not a moment on the way (ten heartbeats later, nothing was let go).
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await spread();
    await allReady();
    const listed = (await stack.call('GET', '/api/v1/workers')).body.data as {
      id: string;
      maxSessions: number;
    }[];
    expect(listed.find((worker) => worker.id === cappedId)?.maxSessions).toBe(1);
    expect(listed.find((worker) => worker.id === secondId)?.maxSessions).toBe(50);
  }, 120_000);
});

describe('a worker whose sessions cannot start (its Chromium does not launch)', () => {
  const { stack, start, holdersByWorker, workerIdOf, allReady } = placementStack();

  it('hands them back to the others and takes none: every session ends up READY on the healthy worker', async () => {
    const healthy = start();
    const healthyId = await workerIdOf(healthy);
    await allReady();
    // A second host where Chromium fails to launch (the real engine, a binary that exits at
    // once), with a disk of its own.
    const broken = start({
      WA_ENGINE: 'wwebjs',
      PUPPETEER_EXECUTABLE_PATH: '/bin/false',
      WWEBJS_DATA_DIR: mkdtempSync(join(tmpdir(), 'broken-worker-')),
    });
    const brokenId = await workerIdOf(broken);
    // It took its share, failed to start it, and handed it back.
    await eventually(async () => {
      const listed = (await stack.call('GET', '/api/v1/workers')).body.data as {
        id: string;
        maxSessions: number;
        startsFailing: boolean;
      }[];
      expect(listed.find((worker) => worker.id === brokenId)).toMatchObject({
        startsFailing: true,
        maxSessions: 0,
      });
    }, 30_000);
    await eventually(async () => {
      const byWorker = await holdersByWorker();
      expect(byWorker.get(healthyId)).toHaveLength(SESSIONS.length);
    }, 30_000);
    await allReady();
    // And it stays so.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect((await holdersByWorker()).get(healthyId)).toHaveLength(SESSIONS.length);
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'p5',
      to: '4915123456789',
      text: 'after the broken worker stepped back',
    });
    await stack.waitForStatus(sent.body.data.id, ['sent', 'delivered', 'read'], 20_000);
  }, 120_000);
});

describe('a fleet where Chromium launches on no worker', () => {
  const { stack, start, workerIdOf } = placementStack();

  it('keeps trying on every worker: none steps back for another whose starts fail too', async () => {
    const broken = () =>
      start({
        WA_ENGINE: 'wwebjs',
        PUPPETEER_EXECUTABLE_PATH: '/bin/false',
        WWEBJS_DATA_DIR: mkdtempSync(join(tmpdir(), 'broken-worker-')),
      });
    const children = [broken(), broken()];
    const ids = [await workerIdOf(children[0]), await workerIdOf(children[1])];
    const listed = async () =>
      (
        (await stack.call('GET', '/api/v1/workers')).body.data as {
          id: string;
          maxSessions: number;
          startsFailing: boolean;
        }[]
      ).filter((worker) => ids.includes(worker.id));
    const everyWorkerTrying = async () => {
      const workers = await listed();
      expect(workers).toHaveLength(2);
      for (const worker of workers)
        expect(worker).toMatchObject({ startsFailing: true, maxSessions: 50 });
    };
    // Both say their starts fail (a moment's step back, both deciding at once, is undone).
    await eventually(everyWorkerTrying, 30_000);
    // And both keep their sessions: stepping back would hand them to a worker no better.
    for (let i = 0; i < 10; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await everyWorkerTrying();
    }
  }, 120_000);
});

describe('drain and the send in its turn', () => {
  const stack = useStack({ SEND_MIN_INTERVAL_MS: '2500', SEND_JITTER_MS: '0' });
  beforeAll(() => stack.waitReady());

  it('lets the send waiting its turn go out before the session is handed over, with no try lost', async () => {
    const send = (text: string) =>
      stack.call('POST', '/api/v1/messages/text', { to: '4915123456789', text });
    const first = (await send('first')).body.data.id;
    // Sent (its acks, 30 ms later, may move it on before a look sees `sent`).
    await stack.waitForStatus(first, ['sent', 'delivered', 'read']);
    // Paced: the second waits about 2.5 s in its turn, the engine still running.
    const second = (await send('second')).body.data.id;
    await new Promise((resolve) => setTimeout(resolve, 500));
    const [worker] = (await stack.call('GET', '/api/v1/workers')).body.data as { id: string }[];
    expect((await stack.call('POST', `/api/v1/workers/${worker.id}/drain`)).status).toBe(202);
    const sent = await stack.waitForStatus(second, ['sent', 'delivered', 'read'], 10_000);
    expect(sent).toMatchObject({ attempts: 1, error: null });
    // Then the session was handed back: nobody drives it now.
    await eventually(async () =>
      expect(await stack.redis.get(stack.keys.lease('main'))).toBeNull(),
    );
  });
});
