import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { RedisKeys } from '@app/status-store';
import { sessionDir, textFingerprint } from '@app/whatsapp';
import { eventually } from '../test/support/eventually.js';
import { answers, freePort } from '../test/support/global-setup.js';
import { Stack } from '../test/support/stack.js';
import { cpuMicros, redisInfo } from './measure.js';
import { exited, spawnApp } from '../test/support/worker-process.js';

const SESSIONS = Number(process.env.BENCH_FLEET_SESSIONS ?? 1000);
const WORKERS = Number(process.env.BENCH_FLEET_WORKERS ?? 4);
const PACED_SESSIONS = Number(process.env.BENCH_FLEET_PACED_SESSIONS ?? 4);
const MESSAGES_PER_PACED_SESSION = 3;
/** How long the settled fleet is watched doing nothing, for its idle CPU and Redis load. */
const IDLE_SECONDS = Number(process.env.BENCH_FLEET_IDLE_SECONDS ?? 10);
/** Unset: a private redis-server (no persistence), so clients and memory are ours alone. */
const SHARED_REDIS_URL = process.env.BENCH_FLEET_REDIS_URL;
const SEND_MIN_INTERVAL_MS = 1000;
const HEARTBEAT_MS = 1000;
/** One GET /api/v1/sessions (and one MGET of the leases) per poll. */
const POLL_MS = 1000;
const LIMITS_MS = { allReady: 150_000, balanced: 90_000, takeover: 90_000, pacing: 90_000 };
const SESSION_IDS = Array.from(
  { length: SESSIONS },
  (_, i) => `fleet-${String(i).padStart(4, '0')}`,
);
const RESULTS = new URL('./results/fleet.json', import.meta.url);
const IDLE = 'idle';
const PINO_LEVELS: Record<number, string> = { 40: 'warn', 50: 'error', 60: 'fatal' };

const SETTINGS = {
  SANDBOX_LINK_DELAY_MS: '20',
  SANDBOX_ACK_DELAY_MS: '50',
  WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
  SESSION_START_CONCURRENCY: '25',
  // Room for every session on one worker (the config caps it at 1000): placement, not the
  // cap, decides the spread, and the survivors of a kill can take everything.
  WORKER_MAX_SESSIONS: String(Math.min(1000, SESSIONS)),
  SEND_MIN_INTERVAL_MS: String(SEND_MIN_INTERVAL_MS),
  // The worker registers its default session: make it one of ours, so there are exactly N.
  DEFAULT_SESSION_ID: SESSION_IDS[0],
};
/** As deployed (the Dockerfile): JSON log lines, no pino-pretty thread in the worker's RSS. */
const WORKER_ENV = { NODE_ENV: 'production', LOG_LEVEL: 'warn' };

/** Warnings and errors a worker logged, counted by message (its stdout is JSON lines). */
class LogTally {
  readonly counts: Record<string, number> = {};
  readonly unparsed: string[] = [];

  attach(stream: Readable | null): void {
    if (stream) createInterface({ input: stream }).on('line', (line) => this.add(line));
  }

  private add(line: string): void {
    let entry: { level?: number; msg?: string; context?: string; err?: unknown };
    try {
      entry = JSON.parse(line);
    } catch {
      if (this.unparsed.length < 20) this.unparsed.push(line.slice(0, 300));
      return;
    }
    const level = PINO_LEVELS[entry.level ?? 0] ?? String(entry.level);
    const err = typeof entry.err === 'string' ? ` (${entry.err.slice(0, 80)})` : '';
    const key = `${level} ${entry.context ?? ''}: ${entry.msg ?? ''}${err}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }
}

interface FleetWorker {
  label: string;
  child: ChildProcess;
  pid: number;
  logs: LogTally;
}

/** The worker processes of the bench, each a built `dist` worker as deployed. */
class Fleet {
  readonly workers: FleetWorker[] = [];

  spawn(label: string, env: Record<string, string>): FleetWorker {
    const child = spawnApp('worker', { ...env, ...WORKER_ENV }, ['ignore', 'pipe', 'pipe']);
    if (!child.pid) throw new Error(`worker ${label} did not start`);
    const logs = new LogTally();
    logs.attach(child.stdout);
    logs.attach(child.stderr);
    const worker = { label, child, pid: child.pid, logs };
    this.workers.push(worker);
    return worker;
  }

  /** The fleet's workers still running (the idle baseline worker is not one of them). */
  live(): FleetWorker[] {
    return this.workers.filter(
      (w) => w.label !== IDLE && w.child.exitCode === null && w.child.signalCode === null,
    );
  }

  /** Worker ids are host-pid-random. */
  byId(workerId: string): FleetWorker | undefined {
    return this.workers.find((w) => workerId.includes(`-${w.pid}-`));
  }

  labelOf(workerId: string): string {
    return this.byId(workerId)?.label ?? workerId;
  }

  async killAll(): Promise<void> {
    for (const worker of this.workers)
      if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
    await Promise.all(this.workers.map((w) => exited(w.child)));
  }
}

interface Snapshot {
  at: number;
  registered: number;
  ready: number;
  statuses: Record<string, number>;
  /** Lease holder of each of SESSION_IDS, in order. */
  holders: (string | null)[];
  byWorker: Map<string, number>;
  /** When the last session still READY became READY (its updatedAt): exact, unlike the poll. */
  lastReadyAt: number;
  updatedAt: Map<string, number>;
  status: Map<string, string>;
}

interface Watched {
  last: Snapshot;
  polls: number;
  /** Sessions seen changing owner between polls (a lower bound: a poll may miss a round trip). */
  moves: number;
  /** The fewest sessions READY at any poll. */
  minReady: number;
  timeline: { s: number; ready: number; held: Record<string, number> }[];
}

interface Spread {
  workers: number;
  min: number;
  max: number;
  evenShare: number;
  maxOverEven: number;
  byWorker: Record<string, number>;
}

const round = (value: number, digits = 1) => +value.toFixed(digits);
const mb = (kb: number) => round(kb / 1024);

async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
}

async function usedMemoryMb(redis: Redis): Promise<number> {
  return mb(Number((await redisInfo(redis, 'memory')).get('used_memory')) / 1024);
}

/** What Redis holds for its client connections (query and output buffers). */
async function clientBuffersMbOf(redis: Redis): Promise<number> {
  return mb(Number((await redisInfo(redis, 'memory')).get('mem_clients_normal')) / 1024);
}

async function redisCounters(redis: Redis) {
  const [cpu, stats, commands] = await Promise.all([
    redisInfo(redis, 'cpu'),
    redisInfo(redis, 'stats'),
    redisInfo(redis, 'commandstats'),
  ]);
  const calls = new Map<string, number>();
  for (const [key, value] of commands)
    calls.set(key.replace(/^cmdstat_/, ''), Number(/calls=(\d+)/.exec(value)?.[1]));
  return {
    cpuMs: (Number(cpu.get('used_cpu_user')) + Number(cpu.get('used_cpu_sys'))) * 1000,
    commands: Number(stats.get('total_commands_processed')),
    calls,
  };
}

/** Local ports of this host's TCP sockets to `remotePort`, with each socket's inode. */
async function socketInodesByPort(remotePort: number): Promise<Map<number, string>> {
  const byPort = new Map<number, string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const columns = line.trim().split(/\s+/);
      if (columns.length < 10) continue;
      const local = parseInt(columns[1].split(':').pop()!, 16);
      const remote = parseInt(columns[2].split(':').pop()!, 16);
      if (remote === remotePort) byPort.set(local, columns[9]);
    }
  }
  return byPort;
}

async function socketInodesOf(pid: number): Promise<string[]> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  const links = await Promise.all(
    fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')),
  );
  return links.flatMap((link) => /^socket:\[(\d+)\]$/.exec(link)?.[1] ?? []);
}

/**
 * BullMQ names a worker's blocking connection `<prefix>:bull:<base64 of the queue name>`:
 * decoded, and the per-session send queues grouped under one name.
 */
function connectionKind(name: string): { kind: string; sendQueueOf?: string } {
  if (!name) return { kind: '(unnamed)' };
  const bull = /^\{[^}]+\}:bull:([A-Za-z0-9+/=]+)$/.exec(name);
  if (!bull) return { kind: name };
  const queue = Buffer.from(bull[1], 'base64').toString('utf8');
  if (!queue.startsWith('send-')) return { kind: `bullmq worker ${queue}` };
  return { kind: 'bullmq worker send-<session>', sendQueueOf: queue.slice('send-'.length) };
}

interface ClientsOfOwner {
  total: number;
  byName: Record<string, number>;
  /** Sessions whose send queue this process holds a BullMQ worker connection for. */
  sendQueues: Set<string>;
}

/**
 * CLIENT LIST counted by connection name and by the process that holds each connection
 * (matched through the socket inodes in /proc), so each worker's share is exact.
 */
async function redisClients(redis: Redis, redisPort: number, owners: Map<number, string>) {
  const list = String(await redis.client('LIST'));
  const inodeByPort = await socketInodesByPort(redisPort);
  const ownerByInode = new Map<string, string>();
  for (const [pid, label] of owners)
    for (const inode of await socketInodesOf(pid)) ownerByInode.set(inode, label);
  const byName: Record<string, number> = {};
  const byOwner: Record<string, ClientsOfOwner> = {};
  let total = 0;
  for (const line of list.split('\n').filter((l) => l.trim())) {
    const fields = new Map(
      line
        .trim()
        .split(' ')
        .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
    );
    const port = Number(fields.get('addr')?.split(':').pop());
    const inode = inodeByPort.get(port);
    const owner = (inode && ownerByInode.get(inode)) || 'other';
    const { kind, sendQueueOf } = connectionKind(fields.get('name') ?? '');
    total++;
    byName[kind] = (byName[kind] ?? 0) + 1;
    byOwner[owner] ??= { total: 0, byName: {}, sendQueues: new Set() };
    byOwner[owner].total++;
    byOwner[owner].byName[kind] = (byOwner[owner].byName[kind] ?? 0) + 1;
    if (sendQueueOf) byOwner[owner].sendQueues.add(sendQueueOf);
  }
  return { total, byName, byOwner };
}

const heldBy = (holder: string | null, worker: FleetWorker) =>
  holder !== null && holder.includes(`-${worker.pid}-`);

function spreadOf(snapshot: Snapshot, fleet: Fleet, workers: number): Spread {
  const counts = fleet.live().map((w) => ({
    label: w.label,
    sessions: [...snapshot.byWorker].find(([id]) => fleet.byId(id) === w)?.[1] ?? 0,
  }));
  const values = counts.map((c) => c.sessions);
  const even = SESSIONS / workers;
  return {
    workers,
    min: Math.min(...values),
    max: Math.max(...values),
    evenShare: round(even),
    maxOverEven: round(Math.max(...values) / even, 2),
    byWorker: Object.fromEntries(counts.map((c) => [c.label, c.sessions])),
  };
}

/**
 * Every live worker holds within one session of every other (at most ceil(N / workers) each
 * would also pass 3, 3, 3, 3 and 0, a worker that joined left with none).
 */
function balanced(snapshot: Snapshot, fleet: Fleet): boolean {
  const live = fleet.live();
  const held = live.map(
    (w) => [...snapshot.byWorker].find(([id]) => fleet.byId(id) === w)?.[1] ?? 0,
  );
  return Math.max(...held) - Math.min(...held) <= 1;
}

/** Runs `task` over `items`, `concurrency` at a time. */
async function inParallel<T>(items: T[], concurrency: number, task: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await task(items[next++]);
    }),
  );
}

const results: Record<string, unknown> = {};
const loadAverageAtStart = round(os.loadavg()[0], 2);

describe(`fleet benchmark: ${SESSIONS} sandbox sessions over ${WORKERS} worker processes`, () => {
  let stack: Stack;
  let redisServer: ChildProcess | undefined;
  let redisDir: string | undefined;
  let redisPort = 0;
  const fleet = new Fleet();
  /** One worker on a prefix of its own with one session: the RSS of a worker with nothing to do. */
  let idle: FleetWorker;
  let idleDir: string;
  let idleKeys: RedisKeys;
  const lastHolder = new Map<string, string>();
  const usedMemory: Record<string, number> = {};
  const clientBuffersMb: Record<string, number> = {};
  /** Phases that finished: each works on the fleet the previous one left. */
  let phasesDone = 0;

  /**
   * CLIENT LIST by owner and name, and the send-queue connections each worker keeps for
   * sessions it no longer holds.
   */
  const clientFigures = async (now: Snapshot) => {
    const owners = new Map<number, string>([[process.pid, 'bench (api)']]);
    for (const w of [...fleet.live(), idle]) owners.set(w.pid, w.label);
    const clients = await redisClients(stack.redis, redisPort, owners);
    let fleetConnections = 0;
    let notHeldTotal = 0;
    const byOwner = Object.fromEntries(
      Object.entries(clients.byOwner).map(([owner, { sendQueues, ...counts }]) => {
        const worker = fleet.live().find((w) => w.label === owner);
        if (!worker) return [owner, counts];
        const held = new Set(SESSION_IDS.filter((_, i) => heldBy(now.holders[i], worker)));
        // A session handed to another worker keeps its BullMQ worker (paused) here.
        const notHeld = [...sendQueues].filter((id) => !held.has(id)).length;
        fleetConnections += counts.total;
        notHeldTotal += notHeld;
        return [
          owner,
          { ...counts, sessionsHeld: held.size, sendQueueConnectionsForSessionsNotHeld: notHeld },
        ];
      }),
    );
    return {
      total: clients.total,
      byName: clients.byName,
      byOwner,
      fleetWorkers: fleetConnections,
      perSession: round(fleetConnections / SESSIONS, 2),
      sendQueueConnectionsForSessionsNotHeld: notHeldTotal,
    };
  };

  const snapshot = async (): Promise<Snapshot> => {
    const [listed, holders] = await Promise.all([
      stack.call('GET', '/api/v1/sessions'),
      stack.redis.mget(SESSION_IDS.map((id) => stack.keys.lease(id))),
    ]);
    if (listed.status !== 200) throw new Error(`GET /api/v1/sessions: ${listed.status}`);
    const sessions = listed.body.data as { id: string; status: string; updatedAt: string }[];
    const statuses: Record<string, number> = {};
    const updatedAt = new Map<string, number>();
    const status = new Map<string, string>();
    let lastReadyAt = 0;
    for (const session of sessions) {
      statuses[session.status] = (statuses[session.status] ?? 0) + 1;
      status.set(session.id, session.status);
      updatedAt.set(session.id, Date.parse(session.updatedAt));
      if (session.status === 'READY')
        lastReadyAt = Math.max(lastReadyAt, Date.parse(session.updatedAt));
    }
    const byWorker = new Map<string, number>();
    for (const holder of holders) if (holder) byWorker.set(holder, (byWorker.get(holder) ?? 0) + 1);
    return {
      at: Date.now(),
      registered: sessions.length,
      ready: statuses.READY ?? 0,
      statuses,
      holders,
      byWorker,
      lastReadyAt,
      updatedAt,
      status,
    };
  };

  /** Polls once per POLL_MS until `done`, keeping a timeline; fails after `limitMs`. */
  const watch = async (
    phase: string,
    since: number,
    done: (s: Snapshot) => boolean,
    limitMs: number,
  ): Promise<Watched> => {
    const timeline: Watched['timeline'] = [];
    let moves = 0;
    let minReady = Infinity;
    for (let polls = 1; ; polls++) {
      const pollAt = Date.now();
      const last = await snapshot();
      SESSION_IDS.forEach((id, i) => {
        const holder = last.holders[i];
        if (!holder) return;
        const before = lastHolder.get(id);
        if (before && before !== holder) moves++;
        lastHolder.set(id, holder);
      });
      minReady = Math.min(minReady, last.ready);
      const held: Record<string, number> = {};
      for (const [id, count] of last.byWorker) held[fleet.labelOf(id)] = count;
      // Only changes are kept (and the last poll): a quiet minute is one entry, not sixty.
      const entry = { s: round((last.at - since) / 1000), ready: last.ready, held };
      const previous = timeline.at(-1);
      const finished = done(last);
      if (
        finished ||
        !previous ||
        previous.ready !== entry.ready ||
        JSON.stringify(previous.held) !== JSON.stringify(held)
      )
        timeline.push(entry);
      if (finished) return { last, polls, moves, minReady, timeline };
      if (Date.now() - since > limitMs) {
        results[`${phase}Failed`] = { statuses: last.statuses, timeline };
        throw new Error(
          `${phase}: not done after ${limitMs} ms: ${JSON.stringify(last.statuses)}, held ${JSON.stringify(held)}`,
        );
      }
      await sleep(Math.max(0, pollAt + POLL_MS - Date.now()));
    }
  };

  const startRedis = async (): Promise<string> => {
    if (SHARED_REDIS_URL) return SHARED_REDIS_URL;
    redisPort = await freePort();
    redisDir = await mkdtemp(join(os.tmpdir(), 'wa-bench-redis-'));
    redisServer = spawn(
      'redis-server',
      ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { cwd: redisDir, stdio: 'ignore' },
    );
    const url = `redis://127.0.0.1:${redisPort}`;
    await eventually(async () => {
      if (!(await answers(url))) throw new Error(`redis-server on ${redisPort} not up yet`);
    });
    return url;
  };

  beforeAll(async () => {
    const redisUrl = await startRedis();
    redisPort ||= Number(new URL(redisUrl).port || 6379);
    stack = await Stack.start({ REDIS_URL: redisUrl, ...SETTINGS }, { worker: false });
    usedMemory.empty = await usedMemoryMb(stack.redis);
    clientBuffersMb.empty = await clientBuffersMbOf(stack.redis);
    idleDir = await mkdtemp(join(os.tmpdir(), 'wa-bench-idle-'));
    const idlePrefix = `${stack.env.REDIS_PREFIX}-idle`;
    idleKeys = new RedisKeys(idlePrefix);
    idle = fleet.spawn(IDLE, {
      ...stack.env,
      REDIS_PREFIX: idlePrefix,
      WWEBJS_DATA_DIR: idleDir,
    });
    await eventually(
      async () => {
        const status = await stack.redis.hget(idleKeys.session(SESSION_IDS[0]), 'status');
        if (status !== 'READY') throw new Error(`idle worker's session is ${status}`);
      },
      30_000,
      100,
    );
  });

  afterAll(async () => {
    results.bench = 'fleet';
    results.date = new Date().toISOString();
    results.complete = phasesDone === 4;
    results.machine = {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      totalMemoryGb: round(os.totalmem() / 1024 ** 3),
      node: process.version,
      os: `${os.type()} ${os.release()}`,
      redis: stack ? (await redisInfo(stack.redis, 'server')).get('redis_version') : undefined,
      loadAverageAtStart,
      loadAverageAtEnd: round(os.loadavg()[0], 2),
    };
    results.settings = {
      sessions: SESSIONS,
      workers: WORKERS,
      ...SETTINGS,
      workerEnv: WORKER_ENV,
      pollMs: POLL_MS,
      redis: SHARED_REDIS_URL
        ? 'shared (BENCH_FLEET_REDIS_URL)'
        : 'private redis-server, no persistence',
      note: 'api and the bench share one Node process; each worker is its own built process; 2 cores for all',
    };
    results.redisMemoryMb = { used: usedMemory, clientBuffers: clientBuffersMb };
    results.workerLogs = Object.fromEntries(
      fleet.workers.map((w) => [w.label, { counts: w.logs.counts, unparsed: w.logs.unparsed }]),
    );
    const ordered = ['bench', 'date', 'complete', 'machine', 'settings'];
    const output = Object.fromEntries([
      ...ordered.map((key) => [key, results[key]]),
      ...Object.entries(results).filter(([key]) => !ordered.includes(key)),
    ]);
    await mkdir(new URL('./', RESULTS), { recursive: true });
    await writeFile(RESULTS, `${JSON.stringify(output, null, 2)}\n`);
    // The timelines and logs stay in the file; the line carries the figures.
    console.log(
      `BENCH ${JSON.stringify(output, (key, value) => (key === 'timeline' || key === 'workerLogs' ? undefined : value))}`,
    );

    await fleet.killAll();
    if (stack) {
      // stack.close() deletes its own prefix; the idle worker's is ours to clear.
      const idleLeft = idleKeys ? await stack.redis.keys(idleKeys.pattern()) : [];
      if (idleLeft.length) await stack.redis.del(...idleLeft);
      await stack.close();
    }
    if (idleDir) await rm(idleDir, { recursive: true, force: true });
    if (redisServer && redisServer.exitCode === null) {
      redisServer.kill('SIGKILL');
      await exited(redisServer);
    }
    if (redisDir) await rm(redisDir, { recursive: true, force: true });
  }, 120_000);

  it('registers every session and brings them all READY, spread evenly over the workers', async () => {
    const registerStarted = performance.now();
    await inParallel(SESSION_IDS, 16, async (id) => {
      const answer = await stack.call('POST', '/api/v1/sessions', { id });
      // The default session is registered by the api at boot.
      if (answer.status !== 201 && !(answer.status === 409 && id === SESSION_IDS[0]))
        throw new Error(`POST ${id}: ${answer.status}`);
    });
    const registerSeconds = (performance.now() - registerStarted) / 1000;
    results.registration = {
      seconds: round(registerSeconds, 2),
      perSecond: Math.round(SESSIONS / registerSeconds),
    };
    usedMemory.registered = await usedMemoryMb(stack.redis);
    clientBuffersMb.registered = await clientBuffersMbOf(stack.redis);

    const spawnedAt = Date.now();
    for (let i = 1; i <= WORKERS; i++) fleet.spawn(`w${i}`, stack.env);
    const ready = await watch(
      'startup',
      spawnedAt,
      (s) => s.ready === SESSIONS,
      LIMITS_MS.allReady,
    );
    const spreadAtAllReady = spreadOf(ready.last, fleet, WORKERS);
    const even = await watch(
      'balance',
      spawnedAt,
      (s) => s.ready === SESSIONS && balanced(s, fleet),
      LIMITS_MS.allReady + LIMITS_MS.balanced,
    );
    const listed = (await stack.call('GET', '/api/v1/workers')).body.data as {
      id: string;
      startedAt: string;
    }[];
    const bootMs = listed.map((w) => [fleet.labelOf(w.id), Date.parse(w.startedAt) - spawnedAt]);
    results.startup = {
      // From spawn to the worker's heartbeat service being constructed (Node + Nest boot).
      workerBootMs: Object.fromEntries(bootMs),
      allReadyMs: ready.last.lastReadyAt - spawnedAt,
      allReadyAfterLastBootMs:
        ready.last.lastReadyAt - spawnedAt - Math.max(...bootMs.map(([, ms]) => Number(ms))),
      allReadySeenAfterMs: ready.last.at - spawnedAt,
      spreadAtAllReady,
      balancedMs: even.last.lastReadyAt - spawnedAt,
      spreadBalanced: spreadOf(even.last, fleet, WORKERS),
      ownerChanges: ready.moves + even.moves,
      timeline: [...ready.timeline, ...even.timeline.slice(1)],
    };
    expect(even.last.registered).toBe(SESSIONS);
    phasesDone++;
  });

  it('measures worker RSS per session, Redis connections by worker and name, Redis memory and the idle cost', async (ctx) => {
    ctx.skip(phasesDone < 1, 'an earlier phase failed');
    const now = await snapshot();
    expect(now.ready).toBe(SESSIONS);
    const perWorker = await Promise.all(
      [...fleet.live(), idle].map(async (w) => {
        const sessions = [...now.byWorker].find(([id]) => fleet.byId(id) === w)?.[1] ?? 0;
        return { worker: w, sessions, rssKb: await rssKb(w.pid) };
      }),
    );
    const fleetWorkers = perWorker.filter((p) => p.worker !== idle);
    const idleRssKb = perWorker.find((p) => p.worker === idle)!.rssKb;
    const totalSessions = fleetWorkers.reduce((sum, p) => sum + p.sessions, 0);
    const totalRssKb = fleetWorkers.reduce((sum, p) => sum + p.rssKb, 0);
    results.workerMemory = {
      idleWorkerRssMb: mb(idleRssKb),
      byWorker: Object.fromEntries(
        fleetWorkers.map((p) => [
          p.worker.label,
          {
            sessions: p.sessions,
            rssMb: mb(p.rssKb),
            rssKbPerSession: Math.round(p.rssKb / p.sessions),
            aboveIdleKbPerSession: Math.round((p.rssKb - idleRssKb) / p.sessions),
          },
        ]),
      ),
      totalRssMb: mb(totalRssKb),
      rssKbPerSession: Math.round(totalRssKb / totalSessions),
      aboveIdleKbPerSession: Math.round(
        (totalRssKb - idleRssKb * fleetWorkers.length) / totalSessions,
      ),
    };

    usedMemory.running = await usedMemoryMb(stack.redis);
    clientBuffersMb.running = await clientBuffersMbOf(stack.redis);
    results.redis = {
      clients: await clientFigures(now),
      usedMemoryKbPerSession: {
        registered: Math.round(((usedMemory.registered - usedMemory.empty) * 1024) / SESSIONS),
        running: Math.round(((usedMemory.running - usedMemory.empty) * 1024) / SESSIONS),
      },
    };

    // The settled fleet with no traffic: what heartbeats, reconciliation and queue polling cost.
    const pids = fleetWorkers.map((p) => p.worker.pid);
    const cpuBefore = await Promise.all(pids.map(cpuMs));
    const benchBefore = process.cpuUsage();
    const redisBefore = await redisCounters(stack.redis);
    const idleStarted = performance.now();
    await sleep(IDLE_SECONDS * 1000);
    const wallMs = performance.now() - idleStarted;
    const redisAfter = await redisCounters(stack.redis);
    const cpuAfter = await Promise.all(pids.map(cpuMs));
    const bench = process.cpuUsage(benchBefore);
    const topCommands = [...redisAfter.calls]
      .map(
        ([command, calls]) =>
          [command, (calls - (redisBefore.calls.get(command) ?? 0)) / (wallMs / 1000)] as const,
      )
      .filter(([, perSecond]) => perSecond >= 1)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([command, perSecond]) => [command, Math.round(perSecond)]);
    results.idleFleet = {
      seconds: round(wallMs / 1000),
      workerCores: Object.fromEntries(
        fleetWorkers.map((p, i) => [
          p.worker.label,
          round((cpuAfter[i] - cpuBefore[i]) / wallMs, 3),
        ]),
      ),
      benchProcessCores: round((bench.user + bench.system) / 1000 / wallMs, 3),
      redisCores: round((redisAfter.cpuMs - redisBefore.cpuMs) / wallMs, 3),
      redisCommandsPerSecond: Math.round(
        (redisAfter.commands - redisBefore.commands) / (wallMs / 1000),
      ),
      redisCallsPerSecond: Object.fromEntries(topCommands),
    };
    phasesDone++;
  });

  it('hands every session of a SIGKILLed worker to the others, losing none, and rebalances onto a new one', async (ctx) => {
    ctx.skip(phasesDone < 2, 'an earlier phase failed');
    const before = await snapshot();
    const victim = fleet.live()[0];
    const victimId = [...before.byWorker.keys()].find((id) => fleet.byId(id) === victim)!;
    const victimSessions = SESSION_IDS.filter((_, i) => before.holders[i] === victimId);
    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    await exited(victim.child);
    const moved = await watch(
      'takeover',
      killedAt,
      (s) => s.ready === SESSIONS && s.holders.every((h) => h !== null && h !== victimId),
      LIMITS_MS.takeover,
    );
    const readyAt = victimSessions.map((id) => moved.last.updatedAt.get(id)! - killedAt);
    const lost = SESSION_IDS.filter(
      (id, i) => moved.last.status.get(id) !== 'READY' || !moved.last.holders[i],
    );
    results.takeover = {
      killed: victim.label,
      sessionsOfKilledWorker: victimSessions.length,
      leaseTtlMs: HEARTBEAT_MS * 3,
      firstReadyElsewhereMs: Math.min(...readyAt),
      allReadyElsewhereMs: Math.max(...readyAt),
      allReadySeenAfterMs: moved.last.at - killedAt,
      fewestReadyDuringTakeover: moved.minReady,
      lost: lost.length,
      registered: moved.last.registered,
      spreadAfter: spreadOf(moved.last, fleet, WORKERS - 1),
      timeline: moved.timeline,
    };
    expect(lost).toEqual([]);
    expect(moved.last.registered).toBe(SESSIONS);

    // A replacement joins: the others hand it their excess until the spread is even again.
    const joinedAt = Date.now();
    fleet.spawn(`w${WORKERS + 1}`, stack.env);
    const joined = await watch(
      'join',
      joinedAt,
      (s) => s.ready === SESSIONS && fleet.live().length === WORKERS && balanced(s, fleet),
      LIMITS_MS.balanced,
    );
    results.join = {
      balancedMs: joined.last.lastReadyAt - joinedAt,
      balancedSeenAfterMs: joined.last.at - joinedAt,
      ownerChanges: joined.moves,
      fewestReadyDuringRebalance: joined.minReady,
      spreadAfter: spreadOf(joined.last, fleet, WORKERS),
      redisClients: await clientFigures(joined.last),
      timeline: joined.timeline,
    };
    usedMemory.afterJoin = await usedMemoryMb(stack.redis);
    clientBuffersMb.afterJoin = await clientBuffersMbOf(stack.redis);
    phasesDone++;
  });

  it('keeps SEND_MIN_INTERVAL_MS between two sends of a session, also across a SIGKILL mid-way', async (ctx) => {
    ctx.skip(phasesDone < 3, 'an earlier phase failed');
    const now = await snapshot();
    const owned = (w: FleetWorker) =>
      SESSION_IDS.filter((_, i) => fleet.byId(now.holders[i] ?? '') === w);
    const workers = fleet.live();
    const victim = workers[0];
    // Two sessions of the worker to be killed (the first is watched), the rest elsewhere.
    const paced = [
      ...owned(victim).slice(0, 2),
      ...workers.slice(1).flatMap((w) => owned(w).slice(0, 1)),
    ].slice(0, PACED_SESSIONS);
    const target = paced[0];
    const messages: { id: string; sessionId: string; text: string }[] = [];
    for (let n = 0; n < MESSAGES_PER_PACED_SESSION; n++) {
      for (const sessionId of paced) {
        const text = `paced ${sessionId} ${n}`;
        const answer = await stack.call('POST', '/api/v1/messages/text', {
          sessionId,
          to: '4915123456789',
          text,
        });
        if (answer.status !== 202)
          throw new Error(`send: ${answer.status} ${JSON.stringify(answer.body)}`);
        messages.push({ id: answer.body.data.id, sessionId, text });
      }
    }
    const enqueuedAt = Date.now();
    const first = messages.find((m) => m.sessionId === target)!;
    await stack.waitForStatus(first.id, ['sent', 'delivered', 'read'], 30_000);
    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    await exited(victim.child);
    const outcome = await eventually(
      async () => {
        const states = await Promise.all(
          messages.map(
            async (m) =>
              (await stack.call('GET', `/api/v1/messages/${m.id}`)).body.data?.status as string,
          ),
        );
        const unsent = states.filter((s) => !['sent', 'delivered', 'read'].includes(s));
        if (unsent.length) throw new Error(`messages not sent yet: ${JSON.stringify(states)}`);
        return states;
      },
      LIMITS_MS.pacing,
      500,
    );

    const perSession: Record<
      string,
      { gapsMs: number[]; sends: number; duplicates: number; order: number[] }
    > = {};
    let minGapMs = Infinity;
    let lastSentAt = 0;
    let targetResumedAfterKillMs: number | null = null;
    for (const sessionId of paced) {
      const log = await readFile(
        join(sessionDir(stack.env.WWEBJS_DATA_DIR, sessionId), 'sandbox-sends.jsonl'),
        'utf8',
      );
      const sends = log
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { at: string; fingerprint: string })
        .map((send) => ({ at: Date.parse(send.at), fingerprint: send.fingerprint }))
        .sort((a, b) => a.at - b.at);
      const gapsMs = sends.slice(1).map((send, i) => send.at - sends[i].at);
      minGapMs = Math.min(minGapMs, ...gapsMs);
      lastSentAt = Math.max(lastSentAt, ...sends.map((s) => s.at));
      const duplicates = messages
        .filter((m) => m.sessionId === sessionId)
        .filter(
          (m) => sends.filter((s) => s.fingerprint === textFingerprint(m.text)).length !== 1,
        ).length;
      // Send order by message number (queued 0, 1, 2): a takeover may reorder.
      const order = sends.map((send) =>
        messages
          .filter((m) => m.sessionId === sessionId)
          .findIndex((m) => textFingerprint(m.text) === send.fingerprint),
      );
      perSession[sessionId] = { gapsMs, sends: sends.length, duplicates, order };
      if (sessionId === target) {
        const afterKill = sends.find((s) => s.at > killedAt);
        targetResumedAfterKillMs = afterKill ? afterKill.at - killedAt : null;
      }
    }
    results.pacing = {
      intervalMs: SEND_MIN_INTERVAL_MS,
      sessions: paced.length,
      messagesPerSession: MESSAGES_PER_PACED_SESSION,
      killed: victim.label,
      sessionsOnKilledWorker: paced.filter((id) => owned(victim).includes(id)).length,
      killedAfterEnqueueMs: killedAt - enqueuedAt,
      minGapMs,
      targetResumedAfterKillMs,
      // The job active on the killed worker waits for BullMQ's stalled check (15-30 s).
      lastSendAfterKillMs: lastSentAt - killedAt,
      statuses: outcome.reduce<Record<string, number>>(
        (counts, s) => ({ ...counts, [s]: (counts[s] ?? 0) + 1 }),
        {},
      ),
      perSession: Object.fromEntries(
        Object.entries(perSession).map(([id, s], i) => [`${i === 0 ? 'target ' : ''}${id}`, s]),
      ),
    };
    // Exactly once is correctness, not speed: every text is in its chat history once.
    expect(Object.values(perSession).map((s) => s.duplicates)).toEqual(paced.map(() => 0));
    phasesDone++;
  });
});

/** User + system CPU of a process so far, in ms. */
async function cpuMs(pid: number): Promise<number> {
  return (await cpuMicros(pid)) / 1000;
}
