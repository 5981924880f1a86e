import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { JobName, sendQueueName } from '@app/queue';
import { RedisServer } from '../support/redis-server.js';
import { eventually } from '../support/eventually.js';
import { useStack, type Stack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SESSIONS = 500;
const HEARTBEAT_MS = 1000;
const SESSION_IDS = Array.from({ length: SESSIONS }, (_, i) => `c${String(i).padStart(3, '0')}`);

/** Connections open on the server, by client name (CLIENT LIST). */
async function clientsByName(stack: Stack): Promise<Record<string, number>> {
  const list = (await stack.redis.call('CLIENT', 'LIST')) as string;
  const counts: Record<string, number> = {};
  for (const line of list.trim().split('\n')) {
    const name = /(?:^| )name=(\S*)/.exec(line)?.[1] || '(unnamed)';
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}
const total = (counts: Record<string, number>) =>
  Object.values(counts).reduce((sum, n) => sum + n, 0);

describe('Redis connections of a worker do not grow with its sessions', () => {
  let redis: RedisServer;
  let worker: ChildProcess | undefined;

  beforeAll(async () => {
    // A Redis of its own: every client on it is this test's api, this test, or the worker.
    redis = await RedisServer.start({ persistence: false });
  });
  afterAll(() => redis?.destroy());
  const stack = useStack(
    () => ({
      REDIS_URL: redis.url,
      DEFAULT_SESSION_ID: SESSION_IDS[0],
      WORKER_MAX_SESSIONS: String(SESSIONS),
      SESSION_START_CONCURRENCY: '25',
      WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
    }),
    { worker: false },
  );
  beforeAll(async () => {
    for (const id of SESSION_IDS.slice(1)) {
      const created = await stack.call('POST', '/api/v1/sessions', { id });
      expect(created.status).toBe(201);
    }
  }, 60_000);
  afterAll(async () => {
    if (worker && worker.exitCode === null) {
      worker.kill('SIGTERM');
      await exited(worker);
    }
  });

  it(`drives ${SESSIONS} sessions with under 10 connections, and each session still sends`, async () => {
    const before = await clientsByName(stack);
    worker = spawnWorker(stack.env);
    await eventually(async () => {
      const sessions = (await stack.call('GET', '/api/v1/sessions')).body.data as {
        status: string;
      }[];
      expect(sessions.filter((s) => s.status === 'READY')).toHaveLength(SESSIONS);
    }, 90_000);

    const after = await clientsByName(stack);
    const byWorker = Object.fromEntries(
      Object.entries(after)
        .map(([name, n]) => [name, n - (before[name] ?? 0)] as const)
        .filter(([, n]) => n > 0),
    );
    console.log(`worker connections with ${SESSIONS} READY sessions:`, byWorker);
    expect(total(after) - total(before)).toBeLessThanOrEqual(10);

    // Consumers wait on doorbells, not on Redis: a send to sessions idle all along is taken
    // at once, in order per session.
    const picked = [SESSION_IDS[1], SESSION_IDS[250], SESSION_IDS[499]];
    const ids: string[] = [];
    for (const sessionId of picked)
      for (const text of ['first', 'second']) {
        const sent = await stack.call('POST', '/api/v1/messages/text', {
          sessionId,
          to: '4915100000001',
          text,
        });
        expect(sent.status).toBe(202);
        ids.push(sent.body.data.id);
      }
    for (const id of ids) await stack.waitForStatus(id, 'read');
    const sentAt = await Promise.all(
      ids.map(async (id) => (await stack.call('GET', `/api/v1/messages/${id}`)).body.data.sentAt),
    );
    for (let i = 0; i < ids.length; i += 2) expect(sentAt[i] <= sentAt[i + 1]).toBe(true);
  }, 150_000);

  it('reads the whole registry only now and then once the fleet is settled', async () => {
    const commandCalls = async (command: string): Promise<number> => {
      const stats = (await stack.redis.info('commandstats')) as string;
      return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    };
    await stack.redis.config('RESETSTAT');
    // A window of six heartbeats of a quiet fleet (no sends, no session changes): what the
    // worker reads in it is the point, so this waits a fixed time on purpose.
    await sleep(6 * HEARTBEAT_MS);
    // The leases of every registered session are read (MGET) by a full pass only; each
    // heartbeat renews this worker's own leases and reads its own sessions.
    expect(await commandCalls('mget')).toBeLessThanOrEqual(1);
    expect(await commandCalls('hgetall')).toBeGreaterThanOrEqual(3 * SESSIONS);
  });

  it('still sends a job added without ringing the doorbell (by another tool), on its idle look', async () => {
    // What bull-board's "retry" or a script with a bare BullMQ Queue does: no ring.
    const created = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: SESSION_IDS[7],
      to: '4915100000002',
      text: 'rung',
    });
    await stack.waitForStatus(created.body.data.id, 'read');
    const queue = new Queue(sendQueueName(SESSION_IDS[7]), {
      connection: stack.redis,
      prefix: stack.keys.sessionBullPrefix(SESSION_IDS[7]),
    });
    try {
      const job = await queue.getJob(created.body.data.id);
      expect(job).toBeDefined();
      // Re-running a job whose message was sent must complete without a second send; its
      // pick-up proves the consumer looked at the queue without a ring.
      await job!.retry('completed');
      await eventually(async () => expect(await job!.isCompleted()).toBe(true), 25_000);
      const again = await queue.getJob(created.body.data.id);
      expect(again?.name).toBe(JobName.SendMessage);
      expect(again?.attemptsMade).toBeGreaterThanOrEqual(1);
      expect(again?.finishedOn).toBeGreaterThan(job!.finishedOn ?? 0);
    } finally {
      await queue.close();
    }
  }, 40_000);
});
