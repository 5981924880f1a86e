import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually } from '../support/eventually.js';
import { RedisServer } from '../support/redis-server.js';
import { useStack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SESSIONS = ['main', 'o1', 'o2', 'o3', 'o4', 'o5', 'o6', 'o7'];
/**
 * Short, for a short test, but not so short that a worker starved of CPU for a moment (two
 * cores, other test files running beside) looks gone: it is stale after three of them.
 */
const HEARTBEAT_MS = 600;

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

  /** Sessions per holder, from what each session's lease has named. */
  const countByHolder = (holdersOfEach: Set<string>[]) => {
    const byWorker = new Map<string, number>();
    for (const holdersOfOne of holdersOfEach)
      for (const holder of holdersOfOne) byWorker.set(holder, (byWorker.get(holder) ?? 0) + 1);
    return [...byWorker.values()];
  };

  /**
   * From now on, each session gets one holder and keeps it (none started on one worker only to
   * be handed to another), four on each worker, and every session is READY.
   */
  const expectEvenSharesKept = async () => {
    const seen = SESSIONS.map(() => new Set<string>());
    // Each holder as first seen, for the message of a failure: which worker took what, when.
    const timeline: string[] = [];
    const since = Date.now();
    const look = async () => {
      for (const [index, holder] of (await holders()).entries())
        if (holder && !seen[index].has(holder)) {
          seen[index].add(holder);
          timeline.push(`${Date.now() - since} ms: ${SESSIONS[index]} held by ${holder}`);
        }
    };
    const oneHolderEach = () =>
      expect(
        seen.map((holdersOfOne) => holdersOfOne.size),
        timeline.join('\n'),
      ).toEqual(SESSIONS.map(() => 1));
    await eventually(
      async () => {
        await look();
        oneHolderEach();
        expect(countByHolder(seen)).toEqual([4, 4]);
      },
      30_000,
      50,
    );
    // And no later hand-over either.
    for (let looks = 0; looks < 20; looks++) {
      await look();
      await sleep(HEARTBEAT_MS);
    }
    oneHolderEach();
    await eventually(async () => {
      for (const id of SESSIONS) {
        const status = (await stack.call('GET', `/api/v1/sessions/${id}/status`)).body.data;
        expect({ id, status: status.status }).toEqual({ id, status: 'READY' });
      }
    }, 30_000);
  };

  /**
   * Redis down until every beat and lease (three heartbeats) has long expired, `lagging` held
   * through it and `lateMs` past it; `inOutage` runs once Redis is down.
   */
  const outage = async (lagging: ChildProcess, lateMs: number, inOutage = () => undefined) => {
    await redis.down();
    lagging.kill('SIGSTOP');
    inOutage();
    await sleep(10 * HEARTBEAT_MS);
    await redis.up();
    await sleep(lateMs);
    lagging.kill('SIGCONT');
  };

  let first: ChildProcess;
  let lagging: ChildProcess;

  it('takes the sessions back in even shares once both are back: none is started on the first back only to be handed over', async () => {
    for (const id of SESSIONS.slice(1)) await stack.call('POST', '/api/v1/sessions', { id });
    first = spawnWorker(stack.env);
    lagging = spawnWorker(stack.env);
    workers.push(first, lagging);
    await eventually(async () => {
      const now = (await holders()).map((holder) => new Set(holder ? [holder] : []));
      expect(countByHolder(now)).toEqual([4, 4]);
    }, 60_000);

    await outage(lagging, 1_000);
    await expectEvenSharesKept();
  }, 150_000);

  it('a worker started during the outage waits for the fleet too, rather than take every session before the others are back (continues from the fleet above)', async () => {
    // One worker dies in the outage and another takes its place; the one left is back late,
    // once the replacement's boot (which waited for Redis) has finished.
    await outage(lagging, 4_000, () => {
      first.kill('SIGKILL');
      workers.push(spawnWorker(stack.env));
    });
    await expectEvenSharesKept();
  }, 150_000);
});
