import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually } from '../support/eventually.js';
import { RedisServer } from '../support/redis-server.js';
import { useStack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SESSIONS = ['main', 'o1', 'o2', 'o3', 'o4', 'o5', 'o6', 'o7'];
const HEARTBEAT_MS = 300;

/**
 * Redis down for longer than three heartbeats: every worker's beat and lease has expired when
 * it comes back, and the workers do not come back at the same moment. One is held (SIGSTOP)
 * through the outage and a second past it: it comes back before the other has reconnected
 * (whose retries back off), having seen no failure, only time gone by; the other has seen
 * Redis fail.
 */
describe('Redis down past every heartbeat, two workers', () => {
  let redis: RedisServer;
  const workers: ChildProcess[] = [];
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(() => redis.destroy());
  const stack = useStack(
    () => ({
      REDIS_URL: redis.url,
      WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
      SESSION_START_CONCURRENCY: '4',
    }),
    { worker: false },
  );
  afterAll(async () => {
    await redis.up().catch(() => undefined);
    for (const child of workers) {
      child.kill('SIGCONT');
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    await Promise.all(workers.map(exited));
  });

  const holders = async (): Promise<(string | null)[]> =>
    Promise.all(SESSIONS.map((id) => stack.redis.get(stack.keys.lease(id))));

  it('takes the sessions back in even shares once both are back: none is started on the first back only to be handed over', async () => {
    for (const id of SESSIONS.slice(1)) await stack.call('POST', '/api/v1/sessions', { id });
    const first = spawnWorker(stack.env);
    const lagging = spawnWorker(stack.env);
    workers.push(first, lagging);
    await eventually(async () => {
      const byWorker = new Map<string, number>();
      for (const holder of await holders())
        if (holder) byWorker.set(holder, (byWorker.get(holder) ?? 0) + 1);
      expect([...byWorker.values()]).toEqual([4, 4]);
    }, 60_000);

    await redis.down();
    lagging.kill('SIGSTOP');
    // Every beat and lease (three heartbeats) long expired.
    await sleep(10 * HEARTBEAT_MS);
    await redis.up();
    await sleep(1_000);
    lagging.kill('SIGCONT');

    // Who holds each session from now on: each should get one holder, and keep it.
    const seen = SESSIONS.map(() => new Set<string>());
    await eventually(
      async () => {
        for (const [index, holder] of (await holders()).entries())
          if (holder) seen[index].add(holder);
        expect(seen.map((holdersOfOne) => holdersOfOne.size)).toEqual(SESSIONS.map(() => 1));
        const byWorker = new Map<string, number>();
        for (const holdersOfOne of seen)
          for (const holder of holdersOfOne) byWorker.set(holder, (byWorker.get(holder) ?? 0) + 1);
        expect([...byWorker.values()]).toEqual([4, 4]);
      },
      30_000,
      50,
    );
    // And no later hand-over either.
    for (let look = 0; look < 20; look++) {
      for (const [index, holder] of (await holders()).entries())
        if (holder) seen[index].add(holder);
      await sleep(HEARTBEAT_MS);
    }
    expect(seen.map((holdersOfOne) => holdersOfOne.size)).toEqual(SESSIONS.map(() => 1));
    await eventually(async () => {
      for (const id of SESSIONS) {
        const status = (await stack.call('GET', `/api/v1/sessions/${id}/status`)).body.data;
        expect({ id, status: status.status }).toEqual({ id, status: 'READY' });
      }
    }, 30_000);
  }, 150_000);
});
