import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { UNPACED_JOBS_IN_HAND, sendQueueName } from '@app/queue';
import { RedisKeys, createRedis } from '@app/status-store';
import { freePort } from '../test/support/global-setup.js';
import {
  NODE_OPTIONS,
  ensureBuilt,
  exited,
  mainOf,
  spawnApp,
} from '../test/support/worker-process.js';
import {
  CLOCK_TICKS,
  cpuMicros,
  deleteUnder,
  keysUnder,
  machineTicks,
  redisCpuMicros,
  redisInfo,
  stealPercent,
} from './measure.js';

/** Requests per closed-loop round. */
const REQUESTS = Number(process.env.BENCH_INGEST_REQUESTS ?? 3000);
/** Connections of the load generator (keep-alive), and requests in flight in the closed loop. */
const CONCURRENCY = Number(process.env.BENCH_INGEST_CONCURRENCY ?? 50);
/** Closed-loop rounds of each server, alternating bare, the Nest floor, ours, bare, ... */
const ROUNDS = Number(process.env.BENCH_INGEST_ROUNDS ?? 5);
const RATE = Number(process.env.BENCH_INGEST_RATE ?? 500);
const RATE_SECONDS = Number(process.env.BENCH_INGEST_RATE_SECONDS ?? 5);
/** Open-loop rounds of each (a p99 of one 5 s run hangs on a few stalls of a shared machine). */
const RATE_ROUNDS = Number(process.env.BENCH_INGEST_RATE_ROUNDS ?? 3);
const PIPELINE_MESSAGES = Number(process.env.BENCH_PIPELINE_MESSAGES ?? 1000);
/**
 * Pipeline rounds of each, alternating ours (posted one by one, then in one batch), raw, raw
 * with as many jobs in hand as ours, and raw posted one by one through the bare handler.
 */
const PIPELINE_ROUNDS = Number(process.env.BENCH_PIPELINE_ROUNDS ?? 3);
/** Texts accepted through POST /api/v1/messages/batch (in batches of BATCH_SIZE), and singly. */
const BATCH_MESSAGES = Number(process.env.BENCH_BATCH_MESSAGES ?? 3000);
const BATCH_SIZE = 1000;
/**
 * Requests to each server before anything is measured (connections, JIT): our api still
 * spends noticeably more CPU per request after 500 than after 1500.
 */
const WARMUP = Number(process.env.BENCH_INGEST_WARMUP ?? 2000);
/** Set to a folder: the api runs with --cpu-prof and writes its profile there on exit. */
const CPU_PROF_DIR = process.env.BENCH_INGEST_CPU_PROF_DIR;
/** How long our worker may take to send what the api accepted before the bench gives up. */
const DRAIN_LIMIT_MS = 120_000;
const PATH = '/api/v1/messages/text';
const BATCH_PATH = '/api/v1/messages/batch';
const SESSION = 'main';
const RESULTS = new URL('./results/ingest.json', import.meta.url);
const ROOT = new URL('..', import.meta.url).pathname;
/** Our api or worker as spawnApp starts it, with the profiler when BENCH_INGEST_CPU_PROF_DIR is set. */
function spawnOurs(app: 'api' | 'worker', env: Record<string, string>) {
  if (!CPU_PROF_DIR) return spawnApp(app, env, ['ignore', 'ignore', 'pipe']);
  // Exiting on SIGTERM (not as Nest does, by the signal again) is what makes Node write the
  // profile; its file is named CPU.<date>.<pid>..., and the pid is printed here.
  const child = spawn(
    process.execPath,
    [
      '--cpu-prof',
      `--cpu-prof-dir=${CPU_PROF_DIR}`,
      "--import=data:text/javascript,process.once('SIGTERM',()=>process.exit(0))",
      mainOf(app),
    ],
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH, NODE_OPTIONS, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  console.log(`${app} runs with --cpu-prof as pid ${child.pid}`);
  return child;
}
const BARE_SCRIPT = new URL('./bare-ingest.mjs', import.meta.url).pathname;
const FLOOR_SCRIPT = new URL('./nest-floor-ingest.mjs', import.meta.url).pathname;
const BARE_WORKER_SCRIPT = new URL('./bare-worker.mjs', import.meta.url).pathname;
const API_KEY = randomBytes(24).toString('hex');

const round = (value: number, digits = 1) => +value.toFixed(digits);
const ratio = (ours: number, base: number) => round(ours / base, 2);

async function usedMemory(redis: Redis): Promise<number> {
  return Number((await redisInfo(redis, 'memory')).get('used_memory'));
}

async function memoryUsage(redis: Redis, key: string): Promise<number | null> {
  const bytes = await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
  return bytes === null ? null : Number(bytes);
}

/** Sum of MEMORY USAGE of every key under `root`: ours alone, whatever else uses the Redis. */
async function bytesUnder(redis: Redis, pattern: string): Promise<{ keys: number; bytes: number }> {
  const keys = await keysUnder(redis, pattern);
  let bytes = 0;
  for (let i = 0; i < keys.length; i += 500) {
    const sizes = await Promise.all(keys.slice(i, i + 500).map((key) => memoryUsage(redis, key)));
    bytes += sizes.reduce<number>((sum, size) => sum + (size ?? 0), 0);
  }
  return { keys: keys.length, bytes };
}

/** Keeps the last few KB a child wrote on a stream, to say why it died. */
class Tail {
  private lines: string[] = [];
  constructor(stream: Readable | null) {
    if (stream)
      createInterface({ input: stream }).on('line', (line) => {
        this.lines.push(line.slice(0, 500));
        if (this.lines.length > 20) this.lines.shift();
      });
  }
  toString(): string {
    return this.lines.join('\n');
  }
}

interface Server {
  name: 'bare' | 'floor' | 'ours';
  port: number;
  pid: number;
}

interface Answer {
  status: number;
  body: string;
}

function post(agent: Agent, port: number, payload: string, path = PATH): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
          'x-api-key': API_KEY,
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        response.on('error', reject);
      },
    );
    outgoing.on('error', reject);
    outgoing.end(payload);
  });
}

let sequence = 0;
/** A distinct, valid text to a 13-digit number (both servers accept it). */
function payload(): string {
  const n = sequence++;
  return JSON.stringify({ to: `49151${String(n % 1e8).padStart(8, '0')}`, text: `bench ${n}` });
}

const keepAlive = () => new Agent({ keepAlive: true, maxSockets: CONCURRENCY });

/** Tally of answers that were not 202 (status -> count, with one body of each). */
class Refusals {
  count = 0;
  readonly byStatus: Record<string, { count: number; example: string }> = {};
  add(answer: Answer | Error): void {
    this.count++;
    const key = answer instanceof Error ? `error ${answer.message}` : String(answer.status);
    const example = answer instanceof Error ? '' : answer.body.slice(0, 200);
    this.byStatus[key] ??= { count: 0, example };
    this.byStatus[key].count++;
  }
}

/**
 * Runs `send` with a keep-alive agent of its own; returns the accepted message ids it
 * collected and how long it took.
 */
async function timedPosts(
  send: (agent: Agent, ids: string[]) => Promise<void>,
): Promise<{ seconds: number; ids: string[] }> {
  const agent = keepAlive();
  const ids: string[] = [];
  const started = performance.now();
  try {
    await send(agent, ids);
  } finally {
    agent.destroy();
  }
  return { seconds: (performance.now() - started) / 1000, ids };
}

/** Posts `total` texts with CONCURRENCY in flight; returns the accepted message ids in order. */
function closedLoop(
  server: Server,
  total: number,
  refusals: Refusals,
): Promise<{ seconds: number; ids: string[] }> {
  return timedPosts(async (agent, ids) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(CONCURRENCY, total) }, async () => {
        while (next < total) {
          next++;
          try {
            const answer = await post(agent, server.port, payload());
            if (answer.status === 202) ids.push(JSON.parse(answer.body).data.id);
            else refusals.add(answer);
          } catch (err) {
            refusals.add(err as Error);
          }
        }
      }),
    );
  });
}

/** Posts `total` texts through POST /messages/batch, BATCH_SIZE a request, one at a time. */
function postBatch(
  server: Server,
  total: number,
  refusals: Refusals,
): Promise<{ seconds: number; ids: string[] }> {
  return timedPosts(async (agent, ids) => {
    for (let sent = 0; sent < total; sent += BATCH_SIZE) {
      const messages = Array.from({ length: Math.min(BATCH_SIZE, total - sent) }, () => ({
        type: 'text',
        ...(JSON.parse(payload()) as object),
      }));
      const answer = await post(agent, server.port, JSON.stringify({ messages }), BATCH_PATH);
      if (answer.status === 202)
        ids.push(...(JSON.parse(answer.body).data.messages as { id: string }[]).map((m) => m.id));
      else refusals.add(answer);
    }
  });
}

interface Spread {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function spread(values: ArrayLike<number>): Spread {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  const ms = (value: number) => round(value, 2);
  return { p50: ms(at(50)), p90: ms(at(90)), p99: ms(at(99)), max: ms(sorted[sorted.length - 1]) };
}

/**
 * Open loop: request i is due at start + i/RATE and is sent then, whether or not earlier ones
 * were answered; its latency runs from when it was due (so a stalled server or a late timer
 * counts against it) to its answer.
 */
async function openLoop(server: Server, refusals: Refusals) {
  const total = RATE * RATE_SECONDS;
  const agent = keepAlive();
  const latencies = new Float64Array(total);
  const pending: Promise<void>[] = [];
  let maxDispatchLateMs = 0;
  const startedAt = performance.now();
  for (let next = 0; next < total;) {
    const now = performance.now();
    const due = Math.min(total, Math.floor(((now - startedAt) * RATE) / 1000) + 1);
    for (; next < due; next++) {
      const scheduledAt = startedAt + (next * 1000) / RATE;
      maxDispatchLateMs = Math.max(maxDispatchLateMs, performance.now() - scheduledAt);
      const index = next;
      pending.push(
        post(agent, server.port, payload()).then(
          (answer) => {
            latencies[index] = performance.now() - scheduledAt;
            if (answer.status !== 202) refusals.add(answer);
          },
          (err: Error) => {
            latencies[index] = performance.now() - scheduledAt;
            refusals.add(err);
          },
        ),
      );
    }
    if (next < total) await sleep(1);
  }
  const sentSeconds = (performance.now() - startedAt) / 1000;
  await Promise.all(pending);
  agent.destroy();
  return {
    requests: total,
    targetPerSecond: RATE,
    sentPerSecond: Math.round(total / sentSeconds),
    maxDispatchLateMs: round(maxDispatchLateMs, 2),
    latencyMs: spread(latencies),
  };
}

interface RoundFigures {
  round: number;
  requests: number;
  seconds: number;
  acceptedPerSecond: number;
  serverCpuUsPerRequest: number;
  /** Redis is shared with whatever else runs on the machine: indicative only. */
  redisCpuUsPerRequest: number;
  /** Of the machine's CPU time in the round, what its host gave other tenants (/proc/stat). */
  hostStealPercent: number;
  /** Ours only: the worker's CPU from the round's start until it had sent everything. */
  workerCpuUsPerMessage?: number;
  drainSeconds?: number;
}

const results: Record<string, unknown> = {};
const loadAverageAtStart = round(os.loadavg()[0], 2);

describe('ingest benchmark: our api and worker (built, production) beside a bare node:http + BullMQ', () => {
  const dataDir = { path: '' };
  const redisUrl = inject('redisUrl');
  const oursPrefix = `bi${randomBytes(5).toString('hex')}`;
  const keys = new RedisKeys(oursPrefix);
  const bareRoot = `{bb${randomBytes(5).toString('hex')}}`;
  const floorRoot = `{bf${randomBytes(5).toString('hex')}}`;
  const rawRoot = `{br${randomBytes(5).toString('hex')}}`;
  const children: { name: string; child: ChildProcess; stderr: Tail }[] = [];
  let redis: Redis;
  let bare: Server;
  let floor: Server;
  let ours: Server;
  let workerPid = 0;
  let appEnv: Record<string, string> = {};
  /** Texts our api accepted so far: once the worker has sent them all, it is idle. */
  let oursAccepted = 0;
  /** Texts the bare handler accepted so far (its worker, in the pipeline rounds, takes them all). */
  let bareAccepted = 0;
  const refusals = new Refusals();
  let phasesDone = 0;

  const startChild = (name: string, child: ChildProcess) => {
    if (!child.pid) throw new Error(`${name} did not start`);
    const entry = { name, child, stderr: new Tail(child.stderr) };
    children.push(entry);
    return entry;
  };

  const alive = (name: string) => {
    const entry = children.find((c) => c.name === name)!;
    if (entry.child.exitCode !== null || entry.child.signalCode !== null)
      throw new Error(
        `${name} exited (${entry.child.exitCode ?? entry.child.signalCode}):\n${entry.stderr}`,
      );
  };

  /** The session's per-status counters (fields as count_status writes them). */
  const counts = async () => {
    const hash = await redis.hgetall(keys.messageCounts(SESSION));
    const n = (status: string) => Number(hash[status] ?? 0);
    return {
      sentOrBeyond: n('sent') + n('delivered') + n('read'),
      read: n('read'),
      failed: n('failed'),
    };
  };

  /** Waits until our worker has sent `total` messages (and, if `settled`, seen them read). */
  const waitSent = async (total: number, settled: boolean, pollMs = 5) => {
    const limit = performance.now() + DRAIN_LIMIT_MS;
    for (;;) {
      const now = await counts();
      if (now.failed > 0) throw new Error(`${now.failed} messages failed`);
      if ((settled ? now.read : now.sentOrBeyond) >= total) return;
      if (performance.now() > limit)
        throw new Error(`worker sent ${now.sentOrBeyond} of ${total} within ${DRAIN_LIMIT_MS} ms`);
      alive('worker');
      await sleep(pollMs);
    }
  };

  /** Every request so far was answered 202; if not, says which and how the children are. */
  const expectAllAccepted = () => {
    if (refusals.count === 0) return;
    const states = children.map(
      ({ name, child, stderr }) =>
        `${name} (port ${{ bare: bare?.port, floor: floor?.port, api: ours?.port }[name] ?? '-'}): ` +
        `${child.exitCode === null && child.signalCode === null ? 'running' : `exited ${child.exitCode ?? child.signalCode}`}` +
        `${String(stderr) ? `, stderr:\n${stderr}` : ''}`,
    );
    expect(refusals.byStatus, states.join('\n')).toEqual({});
  };

  // The worker stopped while the api alone is measured: its heartbeat (every 5 s) goes stale
  // after 15 s, so a stop must stay well below 10 s (a closed-loop round or a 5 s open loop).
  const stopWorker = () => process.kill(workerPid, 'SIGSTOP');
  const resumeWorker = () => {
    try {
      process.kill(workerPid, 'SIGCONT');
    } catch {
      // Gone already: alive('worker') says why.
    }
  };

  const accepted = (server: Server, ids: string[]) => {
    if (server === ours) oursAccepted += ids.length;
    if (server === bare) bareAccepted += ids.length;
  };

  beforeAll(async () => {
    ensureBuilt('api');
    ensureBuilt('worker');
    redis = createRedis(redisUrl, { name: 'bench' });
    dataDir.path = await mkdtemp(join(os.tmpdir(), 'wa-bench-ingest-'));
    const apiPort = await freePort();
    appEnv = {
      NODE_ENV: 'production',
      // Production's default level (spawnApp would otherwise set warn): a line per request.
      LOG_LEVEL: 'info',
      REDIS_URL: redisUrl,
      REDIS_PREFIX: oursPrefix,
      WA_ENGINE: 'sandbox',
      SEND_MIN_INTERVAL_MS: '0',
      SANDBOX_LINK_DELAY_MS: '20',
      SANDBOX_ACK_DELAY_MS: '10',
      PORT: String(apiPort),
      WORKER_HEALTH_PORT: '0',
      // On, as in production, but far above what the bench sends: its cost is measured, never a 429.
      RATE_LIMIT_PER_MINUTE: '1000000',
      WWEBJS_DATA_DIR: dataDir.path,
      // What production requires (API_KEY) or what a deployment sets (docker-compose's .env).
      API_KEY,
      ADMIN_PASSWORD: randomBytes(12).toString('hex'),
      WORKER_TOKEN: randomBytes(12).toString('hex'),
    };

    // The baselines: bare node:http, and the same work in one route of a bare Nest app.
    const startBaseline = (name: 'bare' | 'floor', script: string, prefix: string) => {
      const { child, stderr } = startChild(
        name,
        spawn(process.execPath, [script], {
          env: {
            PATH: process.env.PATH,
            // The node options ours runs with, so the ratio compares code, not runtime settings.
            NODE_OPTIONS,
            BARE_API_KEY: API_KEY,
            REDIS_URL: redisUrl,
            BARE_PREFIX: prefix,
            PORT: '0',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
      const server = new Promise<Server>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', (line) => {
          const port = Number(JSON.parse(line).port);
          if (port > 0) resolve({ name, port, pid: child.pid! });
          else reject(new Error(`${script} printed ${line}`));
        });
        child.once('exit', () => reject(new Error(`${script} exited:\n${stderr}`)));
      });
      server.catch(() => undefined); // awaited below, after the api and worker are spawned
      return server;
    };
    const bareServer = startBaseline('bare', BARE_SCRIPT, bareRoot);
    const floorServer = startBaseline('floor', FLOOR_SCRIPT, floorRoot);
    const api = startChild('api', spawnOurs('api', appEnv));
    const worker = startChild('worker', spawnOurs('worker', appEnv));
    workerPid = worker.child.pid!;
    bare = await bareServer;
    floor = await floorServer;
    ours = { name: 'ours', port: apiPort, pid: api.child.pid! };

    const bootLimit = performance.now() + 60_000;
    for (;;) {
      alive('api');
      alive('worker');
      const answer = await fetch(`http://127.0.0.1:${apiPort}/api/v1/sessions/${SESSION}/status`, {
        headers: { 'x-api-key': API_KEY },
      }).then(
        async (response) => `${response.status} ${await response.text()}`,
        (err: Error) => err.message,
      );
      if (answer.startsWith('200 ') && JSON.parse(answer.slice(4)).data?.status === 'READY') break;
      if (performance.now() > bootLimit) throw new Error(`session ${SESSION} not READY: ${answer}`);
      await sleep(100);
    }

    for (const server of [bare, floor, ours]) {
      const { ids } = await closedLoop(server, WARMUP, refusals);
      accepted(server, ids);
    }
    await waitSent(oursAccepted, true);
    expectAllAccepted();
  }, 240_000);

  afterAll(async () => {
    try {
      results.bench = 'ingest';
      results.date = new Date().toISOString();
      results.complete = phasesDone === 4;
      results.machine = {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        node: process.version,
        redis: redis ? (await redisInfo(redis, 'server')).get('redis_version') : undefined,
        loadAverageAtStart,
        loadAverageAtEnd: round(os.loadavg()[0], 2),
      };
      results.settings = {
        requestsPerRound: REQUESTS,
        concurrency: CONCURRENCY,
        rounds: ROUNDS,
        warmupRequests: WARMUP,
        openLoopRate: RATE,
        openLoopSeconds: RATE_SECONDS,
        openLoopRounds: RATE_ROUNDS,
        pipelineMessages: PIPELINE_MESSAGES,
        pipelineRounds: PIPELINE_ROUNDS,
        clockTicksPerSecond: CLOCK_TICKS,
        oursEnv: Object.fromEntries(
          Object.entries(appEnv).filter(([name]) => !/KEY|TOKEN|PASSWORD|URL|DIR/.test(name)),
        ),
        cpuProfile: CPU_PROF_DIR ? 'api and worker ran with --cpu-prof (slower)' : undefined,
        nodeOptions: NODE_OPTIONS,
        note:
          'ours = built api + worker processes (NODE_ENV=production, logs at info to /dev/null); ' +
          'bare = bench/bare-ingest.mjs (node:http + one BullMQ add, no logs); floor = ' +
          'bench/nest-floor-ingest.mjs (the same work in one route of a Nest app on Fastify, no ' +
          'guards, pipes, hooks or logs; closed-loop rounds only); all run with ' +
          'nodeOptions, as production does (the Dockerfile); raw = a BullMQ ' +
          'Worker with a no-op processor in the bench process (rawPosted: bench/bare-worker.mjs, ' +
          'in a process of its own, behind the bare handler). In the closed-loop rounds our ' +
          'worker is stopped (SIGSTOP) while the api is measured, as nothing consumes the bare ' +
          'queue; the open loop runs ours both ways (latency.ours: worker stopped; ' +
          'latency.oursWithWorker: as deployed). Load comes from the bench process; everything ' +
          'shares the cores, and the Redis with whatever else runs.',
      };
      const ordered = ['bench', 'date', 'complete', 'machine', 'settings'];
      const output = Object.fromEntries([
        ...ordered.map((key) => [key, results[key]]),
        ...Object.entries(results).filter(([key]) => !ordered.includes(key)),
      ]);
      await mkdir(new URL('./', RESULTS), { recursive: true });
      await writeFile(RESULTS, `${JSON.stringify(output, null, 2)}\n`);
      console.log(table());
      console.log(`BENCH ${JSON.stringify(output)}`);
    } finally {
      await Promise.all(children.map(({ child }) => stop(child)));
      if (redis) {
        for (const pattern of [keys.pattern(), `${bareRoot}*`, `${floorRoot}*`, `${rawRoot}*`])
          await deleteUnder(redis, pattern);
        await redis.quit();
      }
      if (dataDir.path) await rm(dataDir.path, { recursive: true, force: true });
    }
  }, 120_000);

  it(`pipeline: ${PIPELINE_MESSAGES} texts posted to ours until sent, beside raw BullMQ addBulk + a no-op Worker, ${PIPELINE_ROUNDS} rounds each, alternating; Redis memory per message`, async () => {
    // First of the phases: BullMQ keeps the newest 10 000 completed jobs of ours, so later on
    // each new job would push an old one out and hide its cost from the memory figures (taken
    // in the first round).
    const n = PIPELINE_MESSAGES;

    // Ours takes its messages as an application would send them one by one (closed loop, as
    // in the ingest rounds), or as raw takes its jobs: all in one call (one batch, as addBulk).
    const oursRun = async (roundNo: number, intake: 'single' | 'batch' = 'single') => {
      const base = await counts();
      // Memory only in the first round (see above): later rounds skip the scan of every key.
      const measureMemory = roundNo === 1 && intake === 'single';
      const usedBefore = measureMemory ? await usedMemory(redis) : 0;
      const underBefore = measureMemory ? await bytesUnder(redis, keys.pattern()) : null;
      const apiCpu = await cpuMicros(ours.pid);
      const workerCpu = await cpuMicros(workerPid);
      const redisCpu = await redisCpuMicros(redis);
      const benchCpu = process.cpuUsage();
      const ticks = await machineTicks();
      const started = performance.now();
      const { seconds: postSeconds, ids } =
        intake === 'single'
          ? await closedLoop(ours, n, refusals)
          : await postBatch(ours, n, refusals);
      accepted(ours, ids);
      const usedAccepted = measureMemory ? await usedMemory(redis) : 0;
      await waitSent(base.sentOrBeyond + n, false);
      const sentSeconds = (performance.now() - started) / 1000;
      const benchCpuUs = process.cpuUsage(benchCpu);
      const hostStealPercent = stealPercent(ticks, await machineTicks());
      await waitSent(base.read + n, true);
      const apiCpuUs = (await cpuMicros(ours.pid)) - apiCpu;
      const workerCpuUs = (await cpuMicros(workerPid)) - workerCpu;
      const redisCpuUs = (await redisCpuMicros(redis)) - redisCpu;
      expectAllAccepted();
      expect(ids).toHaveLength(n);
      const figures = {
        round: roundNo,
        messages: n,
        intake,
        postSeconds: round(postSeconds, 3),
        acceptedPerSecond: Math.round(n / postSeconds),
        seconds: round(sentSeconds, 3),
        messagesPerSecond: Math.round(n / sentSeconds),
        // Of the machine's CPU time until all were sent, what its host gave other tenants.
        hostStealPercent,
        // Until every message was also acked delivered and read (the sandbox's acks).
        apiCpuUsPerMessage: Math.round(apiCpuUs / n),
        workerCpuUsPerMessage: Math.round(workerCpuUs / n),
        redisCpuUsPerMessage: Math.round(redisCpuUs / n),
        // The bench process (the load generator, and its polls for the counts) until all
        // were sent: it shares the cores with the api, the worker and Redis.
        benchProcessCpuUsPerMessage: Math.round((benchCpuUs.user + benchCpuUs.system) / n),
      };
      if (underBefore) {
        // One of the batch, settled (read): its record and its BullMQ job (kept completed).
        const usedSettled = await usedMemory(redis);
        const underSettled = await bytesUnder(redis, keys.pattern());
        const sample = ids[Math.floor(ids.length / 2)];
        const bareJob = (
          await keysUnder(redis, `${bareRoot}:bull:${sendQueueName(SESSION)}:*`)
        ).find((key) => /:[0-9a-f-]{36}$/.test(key));
        results.memory = {
          messages: n,
          messageRecordBytes: await memoryUsage(redis, keys.message(sample)),
          jobHashBytes: await memoryUsage(
            redis,
            `${keys.sessionBullPrefix(SESSION)}:${sendQueueName(SESSION)}:${sample}`,
          ),
          // The bare baseline's job (waiting: nothing consumes that queue), for comparison.
          bareJobHashBytes: bareJob ? await memoryUsage(redis, bareJob) : null,
          // INFO used_memory, whole Redis: whatever else runs against it adds noise.
          usedMemoryBytesPerMessage: {
            accepted: Math.round((usedAccepted - usedBefore) / n),
            settled: Math.round((usedSettled - usedBefore) / n),
          },
          // MEMORY USAGE summed over every key under our prefix: ours alone.
          prefixBytesPerMessage: Math.round((underSettled.bytes - underBefore.bytes) / n),
          prefixKeysPerMessage: round((underSettled.keys - underBefore.keys) / n, 2),
        };
      }
      return figures;
    };

    // Raw: the same number of jobs straight into a BullMQ queue and out through a Worker with a
    // no-op processor: one job at a time (the issue's baseline), and with as many in hand as
    // our consumer has unpaced (UNPACED_JOBS_IN_HAND).
    const rawRun = async (roundNo: number, concurrency: number) => {
      const producer = new Redis(redisUrl, { maxRetriesPerRequest: null });
      const consumer = new Redis(redisUrl, { maxRetriesPerRequest: null });
      const queue = new Queue(sendQueueName(SESSION), {
        connection: producer,
        prefix: `${rawRoot}:bull`,
      });
      let completed = 0;
      let allDone!: () => void;
      const done = new Promise<void>((resolve) => (allDone = resolve));
      const worker = new Worker(sendQueueName(SESSION), async () => undefined, {
        connection: consumer,
        prefix: `${rawRoot}:bull`,
        concurrency,
      });
      worker.on('completed', () => {
        if (++completed === n) allDone();
      });
      try {
        await worker.waitUntilReady();
        await sleep(100); // the worker is waiting for jobs
        const benchCpu = process.cpuUsage();
        const redisCpu = await redisCpuMicros(redis);
        const ticks = await machineTicks();
        const rawStarted = performance.now();
        await queue.addBulk(
          Array.from({ length: n }, (_, i) => ({
            name: 'send-message',
            data: { to: `49151${String(i).padStart(8, '0')}`, text: `raw ${i}` },
            opts: { jobId: randomUUID(), removeOnComplete: true },
          })),
        );
        const addSeconds = (performance.now() - rawStarted) / 1000;
        await Promise.race([
          done,
          sleep(DRAIN_LIMIT_MS).then(() => {
            throw new Error(`raw worker completed ${completed} of ${n}`);
          }),
        ]);
        const rawSeconds = (performance.now() - rawStarted) / 1000;
        const hostStealPercent = stealPercent(ticks, await machineTicks());
        const cpu = process.cpuUsage(benchCpu);
        const redisCpuUs = (await redisCpuMicros(redis)) - redisCpu;
        return {
          round: roundNo,
          messages: n,
          concurrency,
          addBulkSeconds: round(addSeconds, 3),
          seconds: round(rawSeconds, 3),
          messagesPerSecond: Math.round(n / rawSeconds),
          hostStealPercent,
          benchProcessCpuUsPerMessage: Math.round((cpu.user + cpu.system) / n),
          redisCpuUsPerMessage: Math.round(redisCpuUs / n),
        };
      } finally {
        await worker.close();
        await queue.close();
        producer.disconnect();
        consumer.disconnect();
      }
    };

    // Raw fed as ours is posted, one message per HTTP request: the bare handler in front of a
    // no-op BullMQ worker in a process of its own (bench/bare-worker.mjs, one job at a time).
    // Started at its first round, after ours has measured memory beside a bare job still
    // waiting, and stopped after the last, so the ingest rounds find nothing consuming the
    // bare queue.
    let bareWorker: ChildProcess | undefined;
    /** Resolves once the bare worker has completed `until` jobs in all. */
    const bareCompleted = (worker: ChildProcess, until: number) =>
      new Promise<void>((resolve, reject) => {
        const finish = (err?: Error) => {
          clearTimeout(timer);
          worker.off('message', onMessage);
          worker.off('exit', onExit);
          if (err) reject(err);
          else resolve();
        };
        const onMessage = (message: { done?: number }) => {
          if (message.done !== undefined) finish();
        };
        const onExit = () => finish(new Error('bare worker exited'));
        const timer = setTimeout(
          () => finish(new Error(`bare worker did not complete ${until} jobs`)),
          DRAIN_LIMIT_MS,
        );
        worker.on('message', onMessage);
        worker.once('exit', onExit);
        worker.send({ until });
      });
    const startBareWorker = async () => {
      const { child } = startChild(
        'bare-worker',
        spawn(process.execPath, [BARE_WORKER_SCRIPT], {
          env: { PATH: process.env.PATH, NODE_OPTIONS, REDIS_URL: redisUrl, BARE_PREFIX: bareRoot },
          stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
        }),
      );
      await new Promise<void>((resolve, reject) => {
        child.once('message', () => resolve());
        child.once('exit', () => reject(new Error('bare worker exited before it was ready')));
      });
      // What the bare handler took in its warm-up, before the first round is timed.
      await bareCompleted(child, bareAccepted);
      return child;
    };
    const rawPostedRun = async (roundNo: number) => {
      bareWorker ??= await startBareWorker();
      const apiCpu = await cpuMicros(bare.pid);
      const workerCpu = await cpuMicros(bareWorker.pid!);
      const redisCpu = await redisCpuMicros(redis);
      const benchCpu = process.cpuUsage();
      const ticks = await machineTicks();
      const started = performance.now();
      const completed = bareCompleted(bareWorker, bareAccepted + n);
      const { ids } = await closedLoop(bare, n, refusals);
      accepted(bare, ids);
      expectAllAccepted();
      await completed;
      const seconds = (performance.now() - started) / 1000;
      const benchCpuUs = process.cpuUsage(benchCpu);
      return {
        round: roundNo,
        messages: n,
        seconds: round(seconds, 3),
        messagesPerSecond: Math.round(n / seconds),
        hostStealPercent: stealPercent(ticks, await machineTicks()),
        apiCpuUsPerMessage: Math.round(((await cpuMicros(bare.pid)) - apiCpu) / n),
        workerCpuUsPerMessage: Math.round(((await cpuMicros(bareWorker.pid!)) - workerCpu) / n),
        redisCpuUsPerMessage: Math.round(((await redisCpuMicros(redis)) - redisCpu) / n),
        benchProcessCpuUsPerMessage: Math.round((benchCpuUs.user + benchCpuUs.system) / n),
      };
    };

    // One round of each is at the mercy of a shared machine's stalls: alternating rounds, the
    // best of each (as the ingest rounds).
    const rounds = {
      ours: [] as Awaited<ReturnType<typeof oursRun>>[],
      oursBatched: [] as Awaited<ReturnType<typeof oursRun>>[],
      raw: [] as Awaited<ReturnType<typeof rawRun>>[],
      rawSameJobsInHand: [] as Awaited<ReturnType<typeof rawRun>>[],
      rawPosted: [] as Awaited<ReturnType<typeof rawPostedRun>>[],
    };
    for (let r = 1; r <= PIPELINE_ROUNDS; r++) {
      rounds.ours.push(await oursRun(r));
      rounds.oursBatched.push(await oursRun(r, 'batch'));
      rounds.raw.push(await rawRun(r, 1));
      rounds.rawSameJobsInHand.push(await rawRun(r, UNPACED_JOBS_IN_HAND));
      rounds.rawPosted.push(await rawPostedRun(r));
    }
    if (bareWorker) await stop(bareWorker);
    const best = <T extends { messagesPerSecond: number }>(all: T[]): T =>
      all.reduce((a, b) => (b.messagesPerSecond > a.messagesPerSecond ? b : a));
    const oursBest = best(rounds.ours);
    const oursBatchedBest = best(rounds.oursBatched);
    const rawBest = best(rounds.raw);
    const rawInHandBest = best(rounds.rawSameJobsInHand);
    const rawPostedBest = best(rounds.rawPosted);
    // The middle round of each as well: raw's single-job worker swings the most from round to
    // round (it is bound by latency), so its best is the furthest from its typical round.
    const median = (all: { messagesPerSecond: number }[]) => {
      const sorted = all.map((r) => r.messagesPerSecond).sort((a, b) => a - b);
      const middle = Math.floor(sorted.length / 2);
      return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    };
    const medians = {
      raw: median(rounds.raw),
      ours: median(rounds.ours),
      oursBatched: median(rounds.oursBatched),
      rawPosted: median(rounds.rawPosted),
    };
    results.pipeline = {
      ours: oursBest,
      oursBatched: oursBatchedBest,
      raw: rawBest,
      rawSameJobsInHand: rawInHandBest,
      rawPosted: rawPostedBest,
      oursOverRaw: {
        messagesPerSecond: ratio(oursBest.messagesPerSecond, rawBest.messagesPerSecond),
        // Against a no-op worker with as many jobs in hand as ours (UNPACED_JOBS_IN_HAND).
        sameJobsInHand: ratio(oursBest.messagesPerSecond, rawInHandBest.messagesPerSecond),
        // Both take their messages in one call: our batch route beside addBulk.
        batched: ratio(oursBatchedBest.messagesPerSecond, rawBest.messagesPerSecond),
        // Both posted one by one over HTTP: raw through the bare handler.
        bothPosted: ratio(oursBest.messagesPerSecond, rawPostedBest.messagesPerSecond),
      },
      medians: {
        messagesPerSecond: medians,
        oursOverRaw: ratio(medians.ours, medians.raw),
        batchedOverRaw: ratio(medians.oursBatched, medians.raw),
        oursOverRawPosted: ratio(medians.ours, medians.rawPosted),
      },
      rounds,
    };
    phasesDone++;
  });

  it(`accepts ${REQUESTS} texts per round at concurrency ${CONCURRENCY}, ${ROUNDS} rounds each, alternating bare, the Nest floor and ours`, async () => {
    const rounds: Record<Server['name'], RoundFigures[]> = { bare: [], floor: [], ours: [] };
    for (let r = 1; r <= ROUNDS; r++) {
      for (const server of [bare, floor, ours]) {
        const cpuBefore = await cpuMicros(server.pid);
        const workerBefore = await cpuMicros(workerPid);
        const redisBefore = await redisCpuMicros(redis);
        // The api is measured alone, as the bare handler is (nothing consumes its queue): our
        // worker is stopped while the round runs, then sends what it accepted.
        if (server === ours) stopWorker();
        const ticks = await machineTicks();
        const { seconds, ids } = await closedLoop(server, REQUESTS, refusals).finally(() => {
          if (server === ours) resumeWorker();
        });
        const hostStealPercent = stealPercent(ticks, await machineTicks());
        const cpuUs = (await cpuMicros(server.pid)) - cpuBefore;
        const redisUs = (await redisCpuMicros(redis)) - redisBefore;
        accepted(server, ids);
        const figures: RoundFigures = {
          round: r,
          requests: REQUESTS,
          seconds: round(seconds, 3),
          acceptedPerSecond: Math.round(ids.length / seconds),
          serverCpuUsPerRequest: Math.round(cpuUs / REQUESTS),
          redisCpuUsPerRequest: Math.round(redisUs / REQUESTS),
          hostStealPercent,
        };
        if (server === ours) {
          // The worker sends what the round accepted; the next round starts idle.
          const drainStarted = performance.now();
          await waitSent(oursAccepted, true, 20);
          figures.drainSeconds = round((performance.now() - drainStarted) / 1000, 2);
          figures.workerCpuUsPerMessage = Math.round(
            ((await cpuMicros(workerPid)) - workerBefore) / REQUESTS,
          );
        }
        rounds[server.name].push(figures);
        expectAllAccepted();
        expect(ids).toHaveLength(REQUESTS);
      }
    }
    const best = (list: RoundFigures[]) => ({
      acceptedPerSecond: Math.max(...list.map((f) => f.acceptedPerSecond)),
      serverCpuUsPerRequest: Math.min(...list.map((f) => f.serverCpuUsPerRequest)),
      redisCpuUsPerRequest: Math.min(...list.map((f) => f.redisCpuUsPerRequest)),
    });
    const [bestBare, bestFloor, bestOurs] = [
      best(rounds.bare),
      best(rounds.floor),
      best(rounds.ours),
    ];
    const ratios = (a: ReturnType<typeof best>, b: ReturnType<typeof best>) => ({
      acceptedPerSecond: ratio(a.acceptedPerSecond, b.acceptedPerSecond),
      serverCpuUsPerRequest: ratio(a.serverCpuUsPerRequest, b.serverCpuUsPerRequest),
      redisCpuUsPerRequest: ratio(a.redisCpuUsPerRequest, b.redisCpuUsPerRequest),
    });
    results.ingest = {
      bare: { best: bestBare, rounds: rounds.bare },
      // bench/nest-floor-ingest.mjs: bare's work in a Nest route on Fastify, nothing else.
      floor: { best: bestFloor, rounds: rounds.floor },
      ours: { best: bestOurs, rounds: rounds.ours },
      oursOverBare: ratios(bestOurs, bestBare),
      // What Nest and Fastify cost over node:http, and what our own code costs over them.
      floorOverBare: ratios(bestFloor, bestBare),
      oursOverFloor: ratios(bestOurs, bestFloor),
    };
    phasesDone++;
  });

  it(`answers ${RATE} req/s for ${RATE_SECONDS} s (open loop, ${RATE_ROUNDS} rounds each): latency from each request's due time`, async () => {
    type Run = Awaited<ReturnType<typeof openLoop>>;
    const runs: Record<'bare' | 'ours' | 'oursWithWorker', Run[]> = {
      bare: [],
      ours: [],
      oursWithWorker: [],
    };
    for (let r = 0; r < RATE_ROUNDS; r++) {
      runs.bare.push(await openLoop(bare, refusals));
      // Ours twice: the api alone, as the bare handler runs (nothing consumes its queue),
      // then as deployed, its worker sending what it accepts on the same two cores.
      for (const deployed of [false, true]) {
        const before = refusals.count;
        if (!deployed) stopWorker();
        const figures = await openLoop(ours, refusals).finally(() => {
          if (!deployed) resumeWorker();
        });
        runs[deployed ? 'oursWithWorker' : 'ours'].push(figures);
        oursAccepted += figures.requests - (refusals.count - before);
        await waitSent(oursAccepted, true, 20);
      }
    }
    // Each figure is the round of median p99, with every round's p99 beside it.
    const median = (list: Run[]) => ({
      ...[...list].sort((a, b) => a.latencyMs.p99 - b.latencyMs.p99)[Math.floor(list.length / 2)],
      p99OfEachRound: list.map((run) => run.latencyMs.p99),
    });
    const latency = {
      bare: median(runs.bare),
      ours: median(runs.ours),
      oursWithWorker: median(runs.oursWithWorker),
    };
    results.latency = {
      ...latency,
      oursOverBare: {
        p50: ratio(latency.ours.latencyMs.p50, latency.bare.latencyMs.p50),
        p99: ratio(latency.ours.latencyMs.p99, latency.bare.latencyMs.p99),
      },
    };
    expectAllAccepted();
    phasesDone++;
  });

  it(`batches: ${BATCH_MESSAGES} texts in batches of ${BATCH_SIZE}, beside as many single requests (ours)`, async () => {
    const measure = async (send: () => Promise<number>) => {
      const apiCpu = await cpuMicros(ours.pid);
      const started = performance.now();
      const count = await send();
      const seconds = (performance.now() - started) / 1000;
      const cpuUs = (await cpuMicros(ours.pid)) - apiCpu;
      oursAccepted += count;
      await waitSent(oursAccepted, true, 20);
      return {
        messages: count,
        seconds: round(seconds, 3),
        acceptedPerSecond: Math.round(count / seconds),
        apiCpuUsPerMessage: Math.round(cpuUs / count),
      };
    };
    const single = await measure(async () => {
      const { ids } = await closedLoop(ours, BATCH_MESSAGES, refusals);
      return ids.length;
    });
    const batched = await measure(async () => {
      const { ids } = await postBatch(ours, BATCH_MESSAGES, refusals);
      return ids.length;
    });
    results.batches = {
      batchSize: BATCH_SIZE,
      single,
      batched,
      batchedOverSingle: {
        acceptedPerSecond: ratio(batched.acceptedPerSecond, single.acceptedPerSecond),
        apiCpuUsPerMessage: ratio(batched.apiCpuUsPerMessage, single.apiCpuUsPerMessage),
      },
    };
    expectAllAccepted();
    phasesDone++;
  });
});

/** SIGTERM, then SIGKILL if the process is still there after 10 s; resolves once it exited. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  // A worker stopped by a failed round must run to hear SIGTERM.
  child.kill('SIGCONT');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited(child);
  clearTimeout(timer);
}

/** The figures as one readable table. */
function table(): string {
  const ingest = results.ingest as
    | {
        bare: { best: Record<string, number> };
        floor: { best: Record<string, number> };
        ours: { best: Record<string, number> };
        oursOverBare: Record<string, number>;
        floorOverBare: Record<string, number>;
        oursOverFloor: Record<string, number>;
      }
    | undefined;
  const latency = results.latency as
    | (Record<'bare' | 'ours' | 'oursWithWorker', Awaited<ReturnType<typeof openLoop>>> & {
        oursOverBare: Record<string, number>;
      })
    | undefined;
  const pipeline = results.pipeline as
    | {
        ours: Record<string, number>;
        oursBatched: Record<string, number>;
        raw: Record<string, number>;
        rawSameJobsInHand: Record<string, number>;
        rawPosted: Record<string, number>;
        oursOverRaw: Record<string, number>;
        medians: {
          messagesPerSecond: Record<'raw' | 'ours' | 'oursBatched' | 'rawPosted', number>;
          oursOverRaw: number;
          batchedOverRaw: number;
          oursOverRawPosted: number;
        };
        rounds: Record<
          'ours' | 'oursBatched' | 'raw' | 'rawPosted',
          { messagesPerSecond: number; hostStealPercent: number }[]
        >;
      }
    | undefined;
  // Every round's figure in the order run: how far one round is from the next on this machine.
  const inOrder = (rounds: { messagesPerSecond: number }[]) =>
    rounds.map((round) => round.messagesPerSecond).join(' / ');
  // What the host took of the machine's CPU in each of those rounds (other tenants).
  const stealInOrder = (rounds: { hostStealPercent: number }[]) =>
    rounds.map((round) => `${round.hostStealPercent}%`).join(' / ');
  const memory = results.memory as Record<string, unknown> | undefined;
  const batches = results.batches as
    Record<'single' | 'batched' | 'batchedOverSingle', Record<string, number>> | undefined;
  const rows: (string | number | undefined)[][] = [['', 'bare', 'ours', 'ours/bare']];
  // Two servers of the ingest rounds side by side: each figure (label, best of each), and
  // their ratio.
  const side = (
    left: Server['name'],
    right: Server['name'],
    ratios: Record<string, number>,
    figures: [
      figure: 'acceptedPerSecond' | 'serverCpuUsPerRequest' | 'redisCpuUsPerRequest',
      label: string,
    ][],
  ): (string | number)[][] =>
    figures.map(([figure, label]) => [
      label,
      ingest![left].best[figure],
      ingest![right].best[figure],
      ratios[figure],
    ]);
  const rateAndCpu: Parameters<typeof side>[3] = [
    ['acceptedPerSecond', 'accepted req/s (best)'],
    ['serverCpuUsPerRequest', 'server CPU µs/request (best)'],
  ];
  if (ingest)
    rows.push(
      ...side('bare', 'ours', ingest.oursOverBare, [
        ['acceptedPerSecond', `accepted req/s (best of ${ROUNDS}, c=${CONCURRENCY})`],
        ['serverCpuUsPerRequest', 'server CPU µs/request (best)'],
        ['redisCpuUsPerRequest', 'Redis CPU µs/request (best; shared Redis)'],
      ]),
      // The same rounds split at the framework: bare's work in a bare Nest route on Fastify.
      ['', 'bare', 'Nest floor', 'floor/bare'],
      ...side('bare', 'floor', ingest.floorOverBare, rateAndCpu),
      ['', 'Nest floor', 'ours', 'ours/floor'],
      ...side('floor', 'ours', ingest.oursOverFloor, rateAndCpu),
    );
  if (latency)
    rows.push(
      ...(ingest ? [['', 'bare', 'ours', 'ours/bare']] : []),
      [
        `latency p50 ms @ ${RATE}/s (that round)`,
        latency.bare.latencyMs.p50,
        latency.ours.latencyMs.p50,
        latency.oursOverBare.p50,
      ],
      [
        `latency p99 ms @ ${RATE}/s (median of ${RATE_ROUNDS})`,
        latency.bare.latencyMs.p99,
        latency.ours.latencyMs.p99,
        latency.oursOverBare.p99,
      ],
      // The generator shares the cores: a late dispatch means the schedule was not kept.
      [
        'open loop sent req/s (latest dispatch ms)',
        `${latency.bare.sentPerSecond} (${Math.round(latency.bare.maxDispatchLateMs)})`,
        `${latency.ours.sentPerSecond} (${Math.round(latency.ours.maxDispatchLateMs)})`,
        '',
      ],
      [
        `ours with its worker sending: p50 / p99 ms (median)`,
        '',
        `${latency.oursWithWorker.latencyMs.p50} / ${latency.oursWithWorker.latencyMs.p99}`,
        '',
      ],
    );
  if (pipeline)
    rows.push(
      ['', 'raw', 'ours', 'ours/raw'],
      [
        `pipeline messages/s (${PIPELINE_MESSAGES}, best of ${PIPELINE_ROUNDS})`,
        pipeline.raw.messagesPerSecond,
        pipeline.ours.messagesPerSecond,
        pipeline.oursOverRaw.messagesPerSecond,
      ],
      [
        `  raw with ${UNPACED_JOBS_IN_HAND} jobs in hand, as ours`,
        pipeline.rawSameJobsInHand.messagesPerSecond,
        pipeline.ours.messagesPerSecond,
        pipeline.oursOverRaw.sameJobsInHand,
      ],
      [
        `  ours taking one batch of ${PIPELINE_MESSAGES}, as addBulk`,
        pipeline.raw.messagesPerSecond,
        pipeline.oursBatched.messagesPerSecond,
        pipeline.oursOverRaw.batched,
      ],
      // Like for like the other way: raw also takes one HTTP request per message.
      [
        '  raw posted one by one too (bare handler)',
        pipeline.rawPosted.messagesPerSecond,
        pipeline.ours.messagesPerSecond,
        pipeline.oursOverRaw.bothPosted,
      ],
      [
        `  median of the ${PIPELINE_ROUNDS} rounds`,
        pipeline.medians.messagesPerSecond.raw,
        pipeline.medians.messagesPerSecond.ours,
        pipeline.medians.oursOverRaw,
      ],
      [
        '  median, ours taking one batch',
        pipeline.medians.messagesPerSecond.raw,
        pipeline.medians.messagesPerSecond.oursBatched,
        pipeline.medians.batchedOverRaw,
      ],
      [
        '  median, raw posted one by one too',
        pipeline.medians.messagesPerSecond.rawPosted,
        pipeline.medians.messagesPerSecond.ours,
        pipeline.medians.oursOverRawPosted,
      ],
      ['  every round, in order', inOrder(pipeline.rounds.raw), inOrder(pipeline.rounds.ours), ''],
      [
        '  host CPU steal in each',
        stealInOrder(pipeline.rounds.raw),
        stealInOrder(pipeline.rounds.ours),
        '',
      ],
      ['  every round of one batch', '', inOrder(pipeline.rounds.oursBatched), ''],
      ['  host CPU steal in each', '', stealInOrder(pipeline.rounds.oursBatched), ''],
      ['  every round of raw posted one by one', inOrder(pipeline.rounds.rawPosted), '', ''],
      ['  host CPU steal in each', stealInOrder(pipeline.rounds.rawPosted), '', ''],
      // What bounds the pipeline: the consumer's CPU per message (raw: the whole bench process).
      [
        'consumer CPU µs/message',
        pipeline.raw.benchProcessCpuUsPerMessage,
        pipeline.ours.workerCpuUsPerMessage,
        '',
      ],
      [
        'Redis CPU µs/message',
        pipeline.raw.redisCpuUsPerMessage,
        pipeline.ours.redisCpuUsPerMessage,
        '',
      ],
    );
  if (memory) {
    const used = memory.usedMemoryBytesPerMessage as Record<string, number>;
    rows.push(
      ['Redis bytes per message', 'bare', 'ours', ''],
      ['message record (MEMORY USAGE)', '', memory.messageRecordBytes as number, ''],
      [
        'BullMQ job hash (MEMORY USAGE)',
        memory.bareJobHashBytes as number,
        memory.jobHashBytes as number,
        '',
      ],
      ['all keys under our prefix', '', memory.prefixBytesPerMessage as number, ''],
      ['used_memory accepted / settled', '', `${used.accepted} / ${used.settled}`, ''],
    );
  }
  if (batches)
    rows.push(
      ['', 'single', `batch of ${BATCH_SIZE}`, 'batch/single'],
      [
        `accepted messages/s (${BATCH_MESSAGES})`,
        batches.single.acceptedPerSecond,
        batches.batched.acceptedPerSecond,
        batches.batchedOverSingle.acceptedPerSecond,
      ],
      [
        'api CPU µs/message',
        batches.single.apiCpuUsPerMessage,
        batches.batched.apiCpuUsPerMessage,
        batches.batchedOverSingle.apiCpuUsPerMessage,
      ],
    );
  const widths = [0, 1, 2, 3].map((c) =>
    Math.max(...rows.map((row) => String(row[c] ?? '').length)),
  );
  return [
    `ingest benchmark (${os.cpus().length} cores, node ${process.version})`,
    ...rows.map((row) =>
      row
        .map((cell, c) =>
          c === 0 ? String(cell ?? '').padEnd(widths[c]) : String(cell ?? '').padStart(widths[c]),
        )
        .join('  '),
    ),
  ].join('\n');
}
