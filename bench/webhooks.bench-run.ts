import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { Agent, createServer, request, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Webhook } from 'standardwebhooks';
import type { WebhookPayload } from '@app/status-store';
import type { IncomingMessage as EngineMessage, SandboxEngine } from '@app/whatsapp';
import { eventually } from '../test/support/eventually.js';
import { Stack } from '../test/support/stack.js';

const IDLE_EVENTS = Number(process.env.BENCH_WEBHOOK_IDLE_EVENTS ?? 200);
/** Pause after each idle event arrived, so its job has completed and the worker waits again. */
const IDLE_GAP_MS = 25;
const SESSIONS = Number(process.env.BENCH_WEBHOOK_SESSIONS ?? 20);
const RATE = Number(process.env.BENCH_WEBHOOK_RATE ?? 1000);
const LOAD_SECONDS = Number(process.env.BENCH_WEBHOOK_SECONDS ?? 10);
const WEBHOOK_CONCURRENCY = Number(process.env.WEBHOOK_CONCURRENCY ?? 50);
/** How long the gateway may take to deliver the whole load before the bench gives up. */
const DRAIN_LIMIT_MS = 120_000;
/** Direct posts sent first and not counted (a new agent, JIT), as the gateway had in beforeAll. */
const DIRECT_WARMUP = 5;
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const RESULTS = new URL('./results/webhooks.json', import.meta.url);

interface Arrival {
  raw: string;
  headers: IncomingHttpHeaders;
  /** performance.now() when the body was complete. */
  at: number;
  wallMs: number;
}

/**
 * A loopback receiver that answers 200 at once and only stamps and keeps each request: JSON
 * parsing and checks wait for the end of a run, so the receiver is never what holds it back.
 */
class StampingReceiver {
  private arrivals: Arrival[] = [];
  private onArrival?: () => void;
  private readonly server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const at = performance.now();
      this.arrivals.push({
        raw: Buffer.concat(chunks).toString('utf8'),
        headers: req.headers,
        at,
        wallMs: Date.now(),
      });
      res.writeHead(200).end();
      this.onArrival?.();
    });
  });

  static async start(): Promise<StampingReceiver> {
    const receiver = new StampingReceiver();
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  url(path: string): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/${path}`;
  }

  get count(): number {
    return this.arrivals.length;
  }

  /** Resolves at the next request (or rejects after `timeoutMs`). */
  next(timeoutMs = 10_000): Promise<Arrival> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no request arrived')), timeoutMs);
      this.onArrival = () => {
        this.onArrival = undefined;
        clearTimeout(timer);
        resolve(this.arrivals[this.arrivals.length - 1]);
      };
    });
  }

  /** The requests so far, in arrival order; the receiver starts a new list. */
  take(): Arrival[] {
    const taken = this.arrivals;
    this.arrivals = [];
    return taken;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * The baseline: the same signed POST the gateway makes (Standard Webhooks headers, body read to
 * the end), sent straight from this process.
 */
function directPost(agent: Agent, url: string, payload: WebhookPayload): Promise<number> {
  const body = JSON.stringify(payload);
  const now = new Date();
  const headers = {
    'content-type': 'application/json',
    'user-agent': 'bench/direct',
    'webhook-id': payload.id,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': new Webhook(SECRET).sign(payload.id, now, body),
    'content-length': String(Buffer.byteLength(body)),
  };
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method: 'POST', agent, headers }, (response) => {
      response.resume();
      response.on('close', () => resolve(response.statusCode ?? 0));
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

// The gateway's sender opens a connection per delivery (createSafeAgents: keepAlive false);
// the baseline does the same, plus a keep-alive variant to show what reusing one would save.
const freshConnections = () => new Agent({ keepAlive: false });
const keptAlive = () => new Agent({ keepAlive: true });

const eventId = () =>
  `evt_${Date.now().toString(36).padStart(9, '0')}${randomBytes(8).toString('hex')}`;

/** A payload shaped and sized like the gateway's message.received (from one it delivered). */
function directPayload(
  template: WebhookPayload,
  sessionId: string,
  sequence: number,
  text: string,
): WebhookPayload {
  return {
    ...template,
    id: eventId(),
    sequence,
    sessionId,
    timestamp: new Date().toISOString(),
    data: { ...(template.data as object), body: text },
  };
}

interface Spread {
  p50: number;
  p99: number;
  max: number;
}

function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  const round = (ms: number) => +ms.toFixed(2);
  return { p50: round(at(50)), p99: round(at(99)), max: round(sorted[sorted.length - 1]) };
}

const ratio = (slow: number, fast: number) => +(slow / fast).toFixed(1);

interface Ordering {
  received: number;
  unique: number;
  duplicates: number;
  /** Events whose sequence did not exceed the one before it in the same session. */
  orderViolations: number;
  /** Sessions whose sequences are not 1..n without holes (an event lost or skipped). */
  sessionsWithGaps: number;
}

function checkOrdering(payloads: { payload: WebhookPayload; webhookId: string }[]): Ordering {
  const seen = new Set<string>();
  const last = new Map<string, number>();
  const counts = new Map<string, number>();
  let duplicates = 0;
  let orderViolations = 0;
  for (const { payload, webhookId } of payloads) {
    if (seen.has(webhookId)) {
      duplicates++;
      continue;
    }
    seen.add(webhookId);
    const before = last.get(payload.sessionId) ?? 0;
    if (payload.sequence <= before) orderViolations++;
    last.set(payload.sessionId, Math.max(before, payload.sequence));
    counts.set(payload.sessionId, (counts.get(payload.sessionId) ?? 0) + 1);
  }
  let sessionsWithGaps = 0;
  for (const [sessionId, count] of counts) if (last.get(sessionId) !== count) sessionsWithGaps++;
  return {
    received: payloads.length,
    unique: seen.size,
    duplicates,
    orderViolations,
    sessionsWithGaps,
  };
}

/**
 * Calls `emit(i)` for i = 0..total-1 at `perSecond`, catching up after a late timer so the
 * rate holds on average; returns when each one was emitted (performance.now()) and the
 * largest backlog (emitted, not yet at the receiver) seen at a tick.
 */
async function paced(
  total: number,
  perSecond: number,
  emit: (index: number) => void,
  delivered: () => number,
): Promise<{ emittedAt: Float64Array; startedAt: number; endedAt: number; maxBacklog: number }> {
  const emittedAt = new Float64Array(total);
  const startedAt = performance.now();
  let next = 0;
  let maxBacklog = 0;
  while (next < total) {
    const due = Math.min(
      total,
      Math.floor(((performance.now() - startedAt) * perSecond) / 1000) + 1,
    );
    for (; next < due; next++) {
      emittedAt[next] = performance.now();
      emit(next);
    }
    maxBacklog = Math.max(maxBacklog, next - delivered());
    await sleep(2);
  }
  return { emittedAt, startedAt, endedAt: performance.now(), maxBacklog };
}

/** Hands out at most `free` turns at once (the direct loop's WEBHOOK_CONCURRENCY). */
class Slots {
  private readonly waiting: (() => void)[] = [];
  constructor(private free: number) {}

  async take(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

interface Counters {
  eventLoop: EventLoopUtilization;
  processCpuMs: number;
  redisCpuMs: number;
  /** Calls per Redis command (those a script makes included), from INFO commandstats. */
  redisCalls: Map<string, number>;
}

/** CPU time used so far by this process (api, worker, receiver, generator) and by Redis. */
async function counters(stack: Stack): Promise<Counters> {
  const usage = process.cpuUsage();
  const [cpu, commandstats] = await Promise.all([
    stack.redis.info('cpu'),
    stack.redis.info('commandstats'),
  ]);
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(cpu)?.[1] ?? 0);
  const redisCalls = new Map<string, number>();
  for (const [, command, calls] of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
    redisCalls.set(command, Number(calls));
  return {
    eventLoop: performance.eventLoopUtilization(),
    processCpuMs: (usage.user + usage.system) / 1000,
    redisCpuMs: (field('used_cpu_user') + field('used_cpu_sys')) * 1000,
    redisCalls,
  };
}

interface Cost {
  /** Busy share of this process's one event loop (api, worker, receiver, generator): 1 = saturated. */
  eventLoopUtilization: number;
  /** Share of one core used from the first event emitted to the last received. */
  processCores: number;
  redisCores: number;
  processCpuMsPerEvent: number;
  redisCpuMsPerEvent: number;
  /** Redis calls per event, busiest first (the Redis is shared: other clients add noise). */
  redisCallsPerEvent: Record<string, number>;
}

function cost(before: Counters, after: Counters, wallMs: number, events: number): Cost {
  const processMs = after.processCpuMs - before.processCpuMs;
  const redisMs = after.redisCpuMs - before.redisCpuMs;
  const calls = [...after.redisCalls]
    .map(([command, count]) => [command, (count - (before.redisCalls.get(command) ?? 0)) / events])
    .filter(([, perEvent]) => (perEvent as number) >= 0.05)
    .sort((a, b) => (b[1] as number) - (a[1] as number))
    .map(([command, perEvent]) => [command, +(perEvent as number).toFixed(2)]);
  return {
    eventLoopUtilization: +performance
      .eventLoopUtilization(after.eventLoop, before.eventLoop)
      .utilization.toFixed(2),
    processCores: +(processMs / wallMs).toFixed(2),
    redisCores: +(redisMs / wallMs).toFixed(2),
    processCpuMsPerEvent: +(processMs / events).toFixed(3),
    redisCpuMsPerEvent: +(redisMs / events).toFixed(3),
    redisCallsPerEvent: Object.fromEntries(calls),
  };
}

interface LoadFigures {
  events: number;
  /** Events that reached the receiver per second, from the first emitted to the last received. */
  eventsPerSecond: number;
  /** Received while the load ran, per second of load. */
  receivedPerSecondDuringLoad: number;
  /** From the first event emitted to the last received. */
  seconds: number;
  maxBacklog: number;
  latencyMs: Spread;
  ordering: Ordering;
  cost?: Cost;
}

function loadFigures(
  arrivals: Arrival[],
  run: Awaited<ReturnType<typeof paced>>,
  indexOf: (payload: WebhookPayload) => number,
): LoadFigures {
  const parsed = arrivals.map((arrival) => ({
    arrival,
    payload: JSON.parse(arrival.raw) as WebhookPayload,
    webhookId: String(arrival.headers['webhook-id']),
  }));
  const latencies = parsed.map(
    ({ arrival, payload }) => arrival.at - run.emittedAt[indexOf(payload)],
  );
  const lastAt = Math.max(...arrivals.map((arrival) => arrival.at));
  const seconds = (lastAt - run.startedAt) / 1000;
  const duringLoad = arrivals.filter((arrival) => arrival.at <= run.endedAt).length;
  return {
    events: run.emittedAt.length,
    eventsPerSecond: Math.round(run.emittedAt.length / seconds),
    receivedPerSecondDuringLoad: Math.round(duringLoad / ((run.endedAt - run.startedAt) / 1000)),
    seconds: +seconds.toFixed(2),
    maxBacklog: run.maxBacklog,
    latencyMs: spread(latencies),
    ordering: checkOrdering(parsed),
  };
}

const figures: Record<string, unknown> = {};
/** The host's 1-minute load average at start: other work on the machine skews every figure. */
const loadAverageAtStart = +os.loadavg()[0].toFixed(2);

describe('webhook delivery benchmark (sandbox engine, real Redis and HTTP, one process)', () => {
  let stack: Stack;
  let receiver: StampingReceiver;
  /** A message.received payload the gateway delivered: the direct loop sends look-alikes. */
  let template: WebhookPayload;

  beforeAll(async () => {
    receiver = await StampingReceiver.start();
    stack = await Stack.start({
      WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      WEBHOOK_CONCURRENCY: String(WEBHOOK_CONCURRENCY),
      LOG_LEVEL: 'silent',
    });
    await stack.waitReady();
    await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { url: receiver.url('idle'), events: ['message.received'], secret: SECRET },
    ]);
    // Warm-up (first connections, JIT) that also yields the direct loop's template.
    for (let i = 0; i < 5; i++) template = (await injectOne(`warm-up ${i}`)).payload;
    const [last] = receiver.take().slice(-1);
    expect(() =>
      new Webhook(SECRET).verify(last.raw, last.headers as Record<string, string>),
    ).not.toThrow();
  });

  /** Injects one incoming message into `main` over HTTP and waits for its delivery. */
  const injectOne = async (text: string) => {
    const arrived = receiver.next();
    const startedAt = performance.now();
    const injected = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915100000000',
      text,
    });
    expect(injected.status).toBe(202);
    const arrival = await arrived;
    const payload = JSON.parse(arrival.raw) as WebhookPayload;
    expect((payload.data as { id: string }).id).toBe(injected.body.data.id);
    return { startedAt, arrival, payload };
  };

  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
    const result = {
      bench: 'webhooks',
      date: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        node: process.version,
        loadAverageAtStart,
        loadAverageAtEnd: +os.loadavg()[0].toFixed(2),
      },
      settings: {
        WEBHOOK_CONCURRENCY,
        sessions: SESSIONS,
        targetEventsPerSecond: RATE,
        loadSeconds: LOAD_SECONDS,
        idleEvents: IDLE_EVENTS,
        idleGapMs: IDLE_GAP_MS,
        generator:
          'sandbox engine emit("message") (SessionManager.onMessage -> IncomingRepository.record)',
        note: 'api, worker, receiver and generator share one Node process; Redis is its own',
      },
      ...figures,
    };
    await mkdir(new URL('./', RESULTS), { recursive: true });
    await writeFile(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`BENCH ${JSON.stringify(result)}`);
  });

  it(`brings ${IDLE_EVENTS} incoming messages one at a time to the receiver, beside a direct POST`, async () => {
    const injectToReceiver: number[] = [];
    const eventToReceiver: number[] = [];
    for (let i = 0; i < IDLE_EVENTS; i++) {
      const { startedAt, arrival, payload } = await injectOne(`idle ${i}`);
      injectToReceiver.push(arrival.at - startedAt);
      eventToReceiver.push(arrival.wallMs - Date.parse(payload.timestamp));
      await sleep(IDLE_GAP_MS);
    }
    expect(receiver.take()).toHaveLength(IDLE_EVENTS);

    const direct = async (agent: Agent) => {
      const latencies: number[] = [];
      for (let i = 0; i < DIRECT_WARMUP + IDLE_EVENTS; i++) {
        const arrived = receiver.next();
        const startedAt = performance.now();
        const status = await directPost(
          agent,
          receiver.url('idle-direct'),
          directPayload(template, 'main', i + 1, `idle ${i}`),
        );
        expect(status).toBe(200);
        const arrival = await arrived;
        if (i >= DIRECT_WARMUP) latencies.push(arrival.at - startedAt);
        await sleep(IDLE_GAP_MS);
      }
      agent.destroy();
      receiver.take();
      return spread(latencies);
    };
    const gateway = spread(injectToReceiver);
    const directFresh = await direct(freshConnections());
    const directKeepAlive = await direct(keptAlive());
    figures.idle = {
      events: IDLE_EVENTS,
      gateway: {
        // Injection: api -> Redis list + nudge -> worker reconcile -> engine -> record script.
        injectToReceiverMs: gateway,
        // From the event timestamp (taken as the worker records the message): delivery alone, in whole ms.
        eventTimestampToReceiverMs: spread(eventToReceiver),
      },
      direct: { freshConnectionMs: directFresh, keepAliveMs: directKeepAlive },
      gatewayOverDirectFresh: {
        p50: ratio(gateway.p50, directFresh.p50),
        p99: ratio(gateway.p99, directFresh.p99),
      },
    };
    expect(injectToReceiver).toHaveLength(IDLE_EVENTS);
  });

  it(`delivers ~${RATE} events/s across ${SESSIONS} sessions for ${LOAD_SECONDS} s in order per session, beside a direct POST loop`, async () => {
    const sessionIds = Array.from(
      { length: SESSIONS },
      (_, i) => `load-${String(i + 1).padStart(2, '0')}`,
    );
    for (const sessionId of sessionIds) {
      const created = await stack.call('POST', '/api/v1/sessions', { id: sessionId });
      expect(created.status).toBe(201);
      const put = await stack.call('PUT', `/api/v1/sessions/${sessionId}/webhooks`, [
        { url: receiver.url(`load/${sessionId}`), events: ['message.received'], secret: SECRET },
      ]);
      expect(put.status).toBe(200);
    }
    await eventually(async () => {
      for (const sessionId of sessionIds) await stack.waitReady(sessionId);
    }, 60_000);
    const engines: SandboxEngine[] = sessionIds.map((sessionId) => stack.sandbox(sessionId));
    receiver.take();
    const total = RATE * LOAD_SECONDS;
    const indexOf = (payload: WebhookPayload) =>
      Number((payload.data as { body: string }).body.slice(5));

    // Emitting the engine's own 'message' event runs the real path from there on
    // (SessionManager.onMessage -> IncomingRepository.record: Lua writes the record, the event
    // and the chain, then the kick) at the cost of one Redis script per event. The HTTP
    // sandbox/incoming route would add an api call and a worker reconcile of every session per
    // message, which the idle figures above already measure and which would cap the generator.
    let before = await counters(stack);
    let wallBefore = performance.now();
    const gatewayRun = await paced(
      total,
      RATE,
      (index) => {
        const message: EngineMessage = {
          engineMessageId: `bench_load_${index}`,
          chatId: '4915100000001@c.us',
          from: '4915100000001@c.us',
          fromPhone: '4915100000001',
          fromMe: false,
          isGroup: false,
          type: 'text',
          body: `load ${index}`,
          timestamp: new Date().toISOString(),
          quotedId: null,
        };
        engines[index % SESSIONS].emit('message', message);
      },
      () => receiver.count,
    );
    await eventually(
      () => expect(receiver.count).toBeGreaterThanOrEqual(total),
      DRAIN_LIMIT_MS,
      50,
    );
    const gatewayCost = cost(before, await counters(stack), performance.now() - wallBefore, total);
    // Late duplicates, if any, would show within a moment.
    await sleep(200);
    const gateway = { ...loadFigures(receiver.take(), gatewayRun, indexOf), cost: gatewayCost };

    // The baseline keeps the gateway's rules: one POST in flight per session, at most
    // WEBHOOK_CONCURRENCY at once, a fresh connection each.
    const agent = freshConnections();
    const slots = new Slots(WEBHOOK_CONCURRENCY);
    const chains = new Map(
      sessionIds.map((sessionId) => [
        sessionId,
        { queue: [] as WebhookPayload[], busy: false, sequence: 0 },
      ]),
    );
    let failures = 0;
    const pump = async (sessionId: string) => {
      const chain = chains.get(sessionId)!;
      chain.busy = true;
      while (chain.queue.length > 0) {
        await slots.take();
        try {
          const status = await directPost(
            agent,
            receiver.url(`direct/${sessionId}`),
            chain.queue[0],
          );
          if (status !== 200) failures++;
        } catch {
          failures++;
        } finally {
          slots.give();
        }
        chain.queue.shift();
      }
      chain.busy = false;
    };
    before = await counters(stack);
    wallBefore = performance.now();
    const directRun = await paced(
      total,
      RATE,
      (index) => {
        const sessionId = sessionIds[index % SESSIONS];
        const chain = chains.get(sessionId)!;
        chain.queue.push(directPayload(template, sessionId, ++chain.sequence, `load ${index}`));
        if (!chain.busy) void pump(sessionId);
      },
      () => receiver.count,
    );
    await eventually(
      () => expect(receiver.count).toBeGreaterThanOrEqual(total),
      DRAIN_LIMIT_MS,
      50,
    );
    const directCost = cost(before, await counters(stack), performance.now() - wallBefore, total);
    agent.destroy();
    const direct = { ...loadFigures(receiver.take(), directRun, indexOf), cost: directCost };

    figures.load = {
      gateway,
      direct,
      directConcurrency: Math.min(WEBHOOK_CONCURRENCY, SESSIONS),
      gatewayOverDirect: {
        eventsPerSecond: ratio(direct.eventsPerSecond, gateway.eventsPerSecond),
        latencyP50: ratio(gateway.latencyMs.p50, direct.latencyMs.p50),
        latencyP99: ratio(gateway.latencyMs.p99, direct.latencyMs.p99),
      },
    };
    expect(failures).toBe(0);
    expect(gateway.ordering).toMatchObject({
      unique: total,
      duplicates: 0,
      orderViolations: 0,
      sessionsWithGaps: 0,
    });
    expect(direct.ordering).toMatchObject({ unique: total, duplicates: 0, orderViolations: 0 });
  });
});
