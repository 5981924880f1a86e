import type { ChildProcess } from 'node:child_process';
import { eventually } from '../support/eventually.js';
import { freePort } from '../support/global-setup.js';
import { exited, spawnWorker } from '../support/worker-process.js';
import { parsePrometheus } from '../support/prometheus.js';
import { RedisServer } from '../support/redis-server.js';
import { Stack, useStack } from '../support/stack.js';

describe('readiness follows Redis (stopped and restarted, AOF on)', () => {
  const WORKER_TOKEN = 'worker-token-0123456789';
  const METRICS_TOKEN = 'metrics-token-0123456789';
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(() => redis.destroy());
  // Redis may be down when a test ends: it comes back before the stack closes.
  const stack = useStack(() => ({
    REDIS_URL: redis.url,
    WORKER_HEARTBEAT_MS: '300',
    WORKER_TOKEN,
    METRICS_TOKEN,
  }));
  afterAll(() => redis.up().catch(() => undefined));
  beforeAll(() => stack.waitReady());

  const probe = async (url: string) => {
    const response = await fetch(url);
    return { status: response.status, body: (await response.json()) as any };
  };

  it('makes api and worker not ready, naming redis, while Redis is down (still live and scrapable), and ready again without a process restart', async () => {
    const api = stack.api;
    const worker = stack.worker;
    const apiReady = `${stack.url}/health/ready`;
    const workerReady = `${stack.workerUrl}/health/ready`;
    expect((await probe(apiReady)).status).toBe(200);
    expect((await probe(workerReady)).status).toBe(200);

    await redis.down();
    for (const url of [apiReady, workerReady]) {
      const down = await eventually(async () => {
        const answer = await probe(url);
        expect(answer.status).toBe(503);
        return answer;
      }, 10_000);
      expect(down.body.status).toBe('error');
      expect(down.body.error.redis.status).toBe('down');
    }
    // Liveness does not depend on Redis: an orchestrator must not restart the processes for it.
    expect((await probe(`${stack.url}/health/live`)).status).toBe(200);
    expect((await probe(`${stack.workerUrl}/health/live`)).status).toBe(200);
    // A scrape still answers (without the gauges read from Redis) before Prometheus gives up,
    // its token not counted (the failed-login count is in Redis): the token decides alone.
    const startedAt = Date.now();
    const scrape = await fetch(`${stack.workerUrl}/metrics`, {
      headers: { authorization: `Bearer ${WORKER_TOKEN}` },
    });
    expect(scrape.status).toBe(200);
    const samples = parsePrometheus(await scrape.text());
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(samples.some((sample) => sample.name === 'wa_queue_depth')).toBe(false);
    const wrong = await fetch(`${stack.workerUrl}/metrics`, {
      headers: { authorization: 'Bearer guess' },
    });
    expect(wrong.status).toBe(401);
    // The api's too: its metrics (the 503s it answers meanwhile) are what an outage is watched by.
    const apiStartedAt = Date.now();
    const apiScrape = await fetch(`${stack.url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(apiScrape.status).toBe(200);
    expect(Date.now() - apiStartedAt).toBeLessThan(5_000);
    expect(
      parsePrometheus(await apiScrape.text()).some((s) => s.name === 'http_requests_total'),
    ).toBe(true);
    const apiWrong = await fetch(`${stack.url}/metrics`, {
      headers: { authorization: 'Bearer guess' },
    });
    expect(apiWrong.status).toBe(401);

    await redis.up();
    for (const url of [apiReady, workerReady]) {
      await eventually(async () => {
        const answer = await probe(url);
        expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      }, 20_000);
    }
    // The same api and worker instances recovered: nothing was restarted.
    expect(stack.api).toBe(api);
    expect(stack.worker).toBe(worker);
  });
});

describe('worker readiness follows its heartbeat (Redis answering PING but refusing writes)', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start({ persistence: false });
  });
  afterAll(() => redis.destroy());
  const stack = useStack(() => ({ REDIS_URL: redis.url, WORKER_HEARTBEAT_MS: '300' }));
  // Writes come back before the stack closes.
  afterAll(() => stack.redis.config('SET', 'maxmemory', '0').catch(() => undefined));
  beforeAll(() => stack.waitReady());

  const ready = async () => {
    const response = await fetch(`${stack.workerUrl}/health/ready`);
    return { status: response.status, body: (await response.json()) as any };
  };

  it('makes the worker not ready, naming heartbeat, once its heartbeat is older than the fleet allows, and ready again once it is written', async () => {
    expect((await ready()).status).toBe(200);
    // Out of memory with noeviction: every write is refused, PING still answered.
    await stack.redis.config('SET', 'maxmemory-policy', 'noeviction');
    await stack.redis.config('SET', 'maxmemory', '1');
    const down = await eventually(async () => {
      const answer = await ready();
      expect(answer.status).toBe(503);
      return answer;
    }, 5_000);
    expect(down.body.error.heartbeat).toMatchObject({ status: 'down', staleAfterMs: 900 });
    expect(down.body.error.heartbeat.lastWrittenMsAgo).toBeGreaterThan(900);
    expect(down.body.details.redis.status).toBe('up');

    await stack.redis.config('SET', 'maxmemory', '0');
    await eventually(async () => {
      const answer = await ready();
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    }, 10_000);
  });
});

describe('the api and a worker started while Redis is down', () => {
  let redis: RedisServer;
  let stack: Stack | undefined;
  let worker: ChildProcess | undefined;
  beforeAll(async () => {
    redis = await RedisServer.start({ persistence: false });
    await redis.down();
  });
  afterAll(async () => {
    await redis.up().catch(() => undefined);
    if (worker && worker.exitCode === null) {
      worker.kill('SIGTERM');
      await exited(worker);
    }
    await stack?.close();
    await redis.destroy();
  });

  it('start, live but not ready, stay up, and take up their work once Redis is up (no restart loop)', async () => {
    stack = await Stack.start({ REDIS_URL: redis.url }, { worker: false });
    const port = await freePort();
    worker = spawnWorker({ ...stack.env, WORKER_HEALTH_PORT: String(port) });
    const status = async (base: string, path: string) =>
      (await fetch(`${base}${path}`).catch(() => null))?.status ?? null;
    const api = (path: string) => status(stack!.url, path);
    const ofWorker = (path: string) => status(`http://127.0.0.1:${port}`, path);
    expect(await api('/health/live')).toBe(200);
    expect(await api('/health/serving')).toBe(503);
    await eventually(async () => expect(await ofWorker('/health/live')).toBe(200), 15_000);
    expect(await ofWorker('/health/ready')).toBe(503);
    // Still the same process a while later (an orchestrator restarts one that exits).
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(worker.exitCode).toBeNull();

    await redis.up();
    await eventually(async () => expect(await api('/health/serving')).toBe(200), 15_000);
    // The api registered the default session, and the worker drives it.
    await eventually(async () => {
      const session = await stack!.call('GET', '/api/v1/sessions/main/status');
      expect(session.body.data?.status).toBe('READY');
    }, 30_000);
    expect(await ofWorker('/health/ready')).toBe(200);
    expect(worker.exitCode).toBeNull();
  }, 90_000);
});

describe('a worker stopped (SIGTERM) while Redis is down', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start({ persistence: false });
  });
  afterAll(() => redis.destroy());
  const stack = useStack(() => ({ REDIS_URL: redis.url }), { worker: false });
  // Redis comes back before the stack closes.
  afterAll(() => redis.up().catch(() => undefined));

  it('stops its engines and exits cleanly, not at SHUTDOWN_TIMEOUT_MS (nothing waits on Redis for good)', async () => {
    const worker = spawnWorker({ ...stack.env, SHUTDOWN_TIMEOUT_MS: '30000' });
    try {
      await eventually(async () => {
        const status = await stack.call('GET', '/api/v1/sessions/main/status');
        expect(status.body.data?.status).toBe('READY');
      }, 30_000);
      await redis.down();
      const started = performance.now();
      worker.kill('SIGTERM');
      // As after every clean stop (Nest raises the signal again); the deadline exits with 1.
      expect(await exited(worker)).toEqual({ code: null, signal: 'SIGTERM' });
      expect(performance.now() - started).toBeLessThan(28_000);
    } finally {
      if (worker.exitCode === null) worker.kill('SIGKILL');
    }
  }, 90_000);
});
