import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { vi } from 'vitest';
import { SessionRepository, WorkerRepository } from '@app/status-store';
import { EngineFactory, SessionManager } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';
import { useStack } from '../support/stack.js';

const WORKER_TOKEN = 'worker-token-0123456789';
const METRICS_TOKEN = 'metrics-token-0123456789';
const HEARTBEAT_MS = 300;

const get = async (url: string, headers: Record<string, string> = {}) => {
  const response = await fetch(url, { headers });
  const text = await response.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Prometheus text
  }
  return { status: response.status, headers: response.headers, body, text };
};
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('operations: health, workers and metrics', () => {
  const stack = useStack({
    WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
    WORKER_TOKEN,
    METRICS_TOKEN,
  });
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('answers api liveness and readiness without an API key, in terminus shape, not enveloped', async () => {
    const live = await get(`${stack.url}/health/live`);
    expect(live.status).toBe(200);
    expect(live.body).toEqual({ status: 'ok', info: {}, error: {}, details: {} });
    expect(live.headers.get('cache-control')).toContain('no-store');

    const ready = await get(`${stack.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(ready.body.status).toBe('ok');
    expect(ready.body.details.redis.status).toBe('up');
    expect(ready.body.details.workers).toMatchObject({ status: 'up' });
  });

  it('turns api readiness 503 naming the workers indicator within two heartbeats of the worker stopping, and 200 when it is back', async () => {
    await stack.stopWorker();
    const stoppedAt = Date.now();
    const down = await eventually(async () => {
      const answer = await get(`${stack.url}/health/ready`);
      expect(answer.status).toBe(503);
      return answer;
    }, 2 * HEARTBEAT_MS);
    expect(Date.now() - stoppedAt).toBeLessThanOrEqual(2 * HEARTBEAT_MS + 100);
    expect(down.body.status).toBe('error');
    expect(Object.keys(down.body.error)).toEqual(['workers']);
    expect(down.body.error.workers.message).toMatch(/no worker heartbeat/);
    expect(down.body.info.redis.status).toBe('up');
    // Still serving: reads, statuses and the admin need only Redis.
    const serving = await get(`${stack.url}/health/serving`);
    expect(serving.status).toBe(200);
    expect(Object.keys(serving.body.details)).toEqual(['redis']);

    await stack.startWorker();
    await eventually(async () => {
      expect((await get(`${stack.url}/health/ready`)).status).toBe(200);
    }, 2 * HEARTBEAT_MS);
    await stack.waitReady();
  });

  it('counts a worker that dies without saying goodbye as gone once its heartbeat is three beats old', async () => {
    await stack.stopWorker();
    const workers = stack.api!.get(WorkerRepository);
    const info = {
      id: 'crashed-worker',
      host: 'gone',
      pid: 1,
      version: '0.0.0',
      startedAt: new Date().toISOString(),
      sessions: ['main'],
    };
    try {
      // Taken before the beat is written: a slow answer below cannot make the beat look older.
      const beatAt = Date.now();
      await workers.beat(info, 3 * HEARTBEAT_MS);
      expect((await get(`${stack.url}/health/ready`)).status).toBe(200);
      await eventually(async () => {
        expect((await get(`${stack.url}/health/ready`)).status).toBe(503);
      }, 5 * HEARTBEAT_MS);
      expect(Date.now() - beatAt).toBeGreaterThanOrEqual(3 * HEARTBEAT_MS - 50);
    } finally {
      await workers.remove(info.id);
      // The tests after this one need a worker, whatever happened here.
      await stack.startWorker();
      await stack.waitReady();
    }
  });

  it('lists the live worker with its host, version and the sessions it drives', async () => {
    const workerId = stack.worker!.get(SessionManager).workerId;
    const answer = await eventually(async () => {
      const listed = await stack.call('GET', '/api/v1/workers');
      expect(listed.status).toBe(200);
      expect(listed.body.data).toHaveLength(1);
      expect(listed.body.data[0].sessions).toEqual(['main']);
      return listed;
    }, 3 * HEARTBEAT_MS);
    const [worker] = answer.body.data;
    expect(answer.body.ok).toBe(true);
    expect(worker).toMatchObject({ id: workerId, host: hostname(), pid: process.pid });
    expect(typeof worker.version).toBe('string');
    expect(Date.now() - Date.parse(worker.lastBeatAt)).toBeLessThan(3 * HEARTBEAT_MS);
    expect(Date.parse(worker.startedAt)).toBeLessThanOrEqual(Date.parse(worker.lastBeatAt));

    const anonymous = await stack.call('GET', '/api/v1/workers', undefined, { 'x-api-key': '' });
    expect(anonymous.status).toBe(401);
  });

  it('serves the worker health routes openly and refuses its other routes without the bearer token', async () => {
    const base = stack.workerUrl;
    const live = await get(`${base}/health/live`);
    expect(live.status).toBe(200);
    expect(live.body.status).toBe('ok');
    const ready = await get(`${base}/health/ready`);
    expect(ready.status).toBe(200);
    expect(Object.keys(ready.body.details).sort()).toEqual([
      'engines',
      'eventLoop',
      'heartbeat',
      'redis',
      'starts',
    ]);

    for (const headers of [{}, bearer('wrong-token-0123456789'), { authorization: WORKER_TOKEN }]) {
      const refused = await get(`${base}/metrics`, headers);
      expect(refused.status).toBe(401);
      expect(refused.body).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
      expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(refused.text).not.toContain('wa_messages_total');
    }
    expect((await get(`${base}/anything`)).status).toBe(401);
    expect((await get(`${base}/anything`, bearer(WORKER_TOKEN))).status).toBe(404);
    expect((await get(`${base}/metrics`, bearer(WORKER_TOKEN))).status).toBe(200);
    // One scrape config for api and workers: /metrics (only) also takes METRICS_TOKEN.
    expect((await get(`${base}/metrics`, bearer(METRICS_TOKEN))).status).toBe(200);
    expect((await get(`${base}/anything`, bearer(METRICS_TOKEN))).status).toBe(401);
  });

  it('exposes worker metrics as valid Prometheus text whose message counter and histograms move when a message is sent', async () => {
    const scrape = async () => {
      const answer = await get(`${stack.workerUrl}/metrics`, bearer(METRICS_TOKEN));
      expect(answer.status).toBe(200);
      expect(answer.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return parsePrometheus(answer.text);
    };
    const before = await scrape();
    const sent = { session: 'main', status: 'sent', code: '' };
    const sentBefore = sampleValue(before, 'wa_messages_total', sent);
    const durationsBefore = sampleValue(before, 'wa_send_duration_seconds_count', {
      session: 'main',
    });

    const answer = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915120000001',
      text: 'metrics',
    });
    expect(answer.status).toBe(202);
    await stack.waitForStatus(answer.body.data.id, 'read');
    // WhatsApp's played ack of a voice note after its read, and a late delivered: the status
    // does not move, nor does the counter.
    const [{ engineMessageId }] = stack
      .sandbox()
      .sends.filter((send) => send.chatId === '4915120000001@c.us');
    stack.sandbox().emit('ack', engineMessageId, 'read');
    stack.sandbox().emit('ack', engineMessageId, 'delivered');
    await sleep(500);
    const failed = await stack.call('POST', '/api/v1/messages/text', {
      to: '0001234567',
      text: 'not on WhatsApp',
    });
    await stack.waitForStatus(failed.body.data.id, 'failed');

    const after = await scrape();
    expect(sampleValue(after, 'wa_messages_total', sent)).toBe(sentBefore + 1);
    for (const status of ['delivered', 'read']) {
      const labels = { session: 'main', status, code: '' };
      expect(sampleValue(after, 'wa_messages_total', labels), status).toBe(
        sampleValue(before, 'wa_messages_total', labels) + 1,
      );
    }
    expect(
      sampleValue(after, 'wa_messages_total', {
        session: 'main',
        status: 'failed',
        code: 'NOT_ON_WHATSAPP',
      }),
    ).toBeGreaterThanOrEqual(1);
    expect(sampleValue(after, 'wa_send_duration_seconds_count', { session: 'main' })).toBe(
      durationsBefore + 1,
    );
    expect(sampleValue(after, 'wa_queue_wait_seconds_count', { session: 'main' })).toBeGreaterThan(
      0,
    );
    expect(sampleValue(after, 'wa_session_state', { session: 'main', state: 'READY' })).toBe(1);
    expect(sampleValue(after, 'wa_session_state', { session: 'main', state: 'QR' })).toBe(0);
    expect(after.some((s) => s.name === 'wa_queue_depth' && s.labels.session === 'main')).toBe(
      true,
    );
    expect(after.some((s) => s.name === 'process_cpu_seconds_total')).toBe(true);
  });

  it('shows queued messages of a session that is not ready as queue depth', async () => {
    const engine = stack.sandbox();
    // The engine reports a disconnect: its queue stops being consumed.
    engine.emit('state', { status: 'DISCONNECTED', lastError: 'test' });
    await eventually(() => expect(stack.worker!.get(SessionManager).isReady('main')).toBe(false));
    for (const n of [1, 2]) {
      const queued = await stack.call('POST', '/api/v1/messages/text', {
        to: `491512000000${n}`,
        text: `waits ${n}`,
      });
      expect(queued.status).toBe(202);
    }
    const samples = parsePrometheus(
      (await get(`${stack.workerUrl}/metrics`, bearer(WORKER_TOKEN))).text,
    );
    expect(sampleValue(samples, 'wa_queue_depth', { session: 'main' })).toBe(2);
    expect(
      sampleValue(samples, 'wa_session_state', { session: 'main', state: 'DISCONNECTED' }),
    ).toBe(1);
    engine.emit('state', { status: 'READY', phone: '15550000000', pushname: 'Sandbox main' });
    await eventually(async () => {
      const now = parsePrometheus(
        (await get(`${stack.workerUrl}/metrics`, bearer(WORKER_TOKEN))).text,
      );
      expect(sampleValue(now, 'wa_queue_depth', { session: 'main' })).toBe(0);
    });
  });

  it('counts an engine that starts again as an engine restart, and not its first start', async () => {
    const scrape = async () =>
      parsePrometheus((await get(`${stack.workerUrl}/metrics`, bearer(WORKER_TOKEN))).text);
    const before = sampleValue(await scrape(), 'wa_engine_restarts_total', { session: 'main' });
    const engine = stack.sandbox();
    await engine.stop();
    await engine.start();
    await stack.waitReady();
    await eventually(async () =>
      expect(sampleValue(await scrape(), 'wa_engine_restarts_total', { session: 'main' })).toBe(
        before + 1,
      ),
    );
  });

  it('counts api requests by route pattern and status, and needs METRICS_TOKEN on /metrics', async () => {
    const refused = await get(`${stack.url}/metrics`);
    expect(refused.status).toBe(401);
    expect(refused.body).toMatchObject({ ok: false, error: { code: 'UNAUTHORIZED' } });
    expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await get(`${stack.url}/metrics`, bearer('wrong-token-0123456789'))).status).toBe(401);

    await stack.call('GET', '/api/v1/messages/00000000-0000-4000-8000-000000000000');
    const answer = await get(`${stack.url}/metrics`, bearer(METRICS_TOKEN));
    expect(answer.status).toBe(200);
    const samples = parsePrometheus(answer.text);
    const route = { method: 'GET', route: '/api/v1/messages/:id', status: '404' };
    const seen = sampleValue(samples, 'http_requests_total', route);
    expect(seen).toBeGreaterThanOrEqual(1);
    expect(samples.some((s) => s.labels.route?.includes('00000000'))).toBe(false);

    await stack.call('GET', '/api/v1/messages/00000000-0000-4000-8000-000000000000');
    const again = parsePrometheus((await get(`${stack.url}/metrics`, bearer(METRICS_TOKEN))).text);
    expect(sampleValue(again, 'http_requests_total', route)).toBe(seen + 1);
    expect(
      sampleValue(again, 'http_requests_total', {
        method: 'GET',
        route: '/metrics',
        status: '401',
      }),
    ).toBeGreaterThanOrEqual(2);
  });

  it('documents health under the health tag without an API key, and the workers list with one', async () => {
    const doc = (await stack.call('GET', '/api/openapi')).body;
    for (const path of ['/health/live', '/health/ready']) {
      expect(doc.paths[path].get.tags).toEqual(['health']);
      // Explicitly open: an empty security list (probes carry no credentials).
      expect(doc.paths[path].get.security).toEqual([]);
      expect(Object.keys(doc.paths[path].get.responses)).toEqual(
        expect.arrayContaining(['200', '503']),
      );
    }
    expect(doc.paths['/api/v1/workers'].get.tags).toEqual(['workers']);
    expect(doc.paths['/api/v1/workers'].get.security).toEqual([{ 'api-key': [] }]);
    expect(doc.components.schemas.WorkerDto.properties.sessions.example).toEqual([
      'main',
      'support',
    ]);
    expect(doc.paths['/metrics'].get.tags).toEqual(['metrics']);
  });
});

describe('operations: worker readiness', () => {
  const stack = useStack({
    WORKER_STUCK_STARTING_MS: '400',
    WORKER_MAX_EVENT_LOOP_LAG_MS: '200',
  });
  beforeAll(async () => {
    await stack.waitReady();
  });

  const ready = () => get(`${stack.workerUrl}/health/ready`);

  it('is not ready after its event loop was blocked for longer than the bound, and ready again after', async () => {
    await eventually(async () => expect((await ready()).status).toBe(200));
    const until = Date.now() + 500;
    while (Date.now() < until) {
      // block the event loop, as a runaway synchronous task would
    }
    const blocked = await ready();
    expect(blocked.status).toBe(503);
    expect(Object.keys(blocked.body.error)).toEqual(['eventLoop']);
    expect(blocked.body.error.eventLoop.lagMs).toBeGreaterThan(200);
    await eventually(async () => expect((await ready()).status).toBe(200));
  });

  it('is not ready while an engine stays STARTING longer than the bound, naming the session', async () => {
    const engine = stack.sandbox();
    engine.emit('state', { status: 'STARTING' });
    const stuck = await eventually(async () => {
      const answer = await ready();
      expect(answer.status).toBe(503);
      return answer;
    }, 3_000);
    expect(stuck.body.error.engines).toMatchObject({ status: 'down', stuck: ['main'] });
    engine.emit('state', { status: 'READY', phone: '15550000000', pushname: 'Sandbox main' });
    await eventually(async () => expect((await ready()).status).toBe(200));
  });
});

describe('operations: worker readiness while Chromium does not launch there', () => {
  const stack = useStack({ WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS) }, { worker: false });
  // Every engine this worker makes fails to launch its Chromium (the worker starts in the test).
  beforeAll(() => {
    const create = EngineFactory.prototype.create;
    vi.spyOn(EngineFactory.prototype, 'create').mockImplementation(function (
      this: EngineFactory,
      sessionId: string,
    ) {
      const engine = create.call(this, sessionId);
      engine.start = () =>
        Promise.reject(new Error('Failed to launch the browser process! libnss3.so: not found'));
      return engine;
    });
  });
  afterAll(() => vi.restoreAllMocks());

  const ready = () => get(`${stack.workerUrl}/health/ready`);

  it('is not ready while it steps back (its starts fail, another worker takes sessions), and ready again when none would', async () => {
    // Two sessions whose Chromium does not launch: its starts fail.
    await stack.api!.get(SessionRepository).register('second');
    await stack.startWorker();
    const manager = stack.worker!.get(SessionManager);
    await eventually(() => expect(manager.startsFailing()).toBe(true));
    // Alone, it keeps trying its own sessions: nobody else would take them.
    expect((await ready()).status).toBe(200);

    // A worker with room, whose starts do not fail, joins: this one steps back.
    const workers = stack.api!.get(WorkerRepository);
    const other = {
      id: 'healthy-worker',
      host: 'elsewhere',
      pid: 1,
      version: '0.0.0',
      startedAt: new Date().toISOString(),
      sessions: [],
      maxSessions: 50,
    };
    let beat = workers.beat(other, 3 * HEARTBEAT_MS);
    await beat;
    const beating = setInterval(() => (beat = workers.beat(other, 3 * HEARTBEAT_MS)), HEARTBEAT_MS);
    try {
      await eventually(() => expect(manager.capacity()).toBe(0), 10 * HEARTBEAT_MS);
      const steppedBack = await ready();
      expect(steppedBack.status).toBe(503);
      expect(Object.keys(steppedBack.body.error)).toEqual(['starts']);
      expect(steppedBack.body.error.starts.message).toMatch(/Chromium does not launch/);
    } finally {
      clearInterval(beating);
      // A beat in flight would bring it back after its removal.
      await beat;
      await workers.remove(other.id);
    }
    await eventually(async () => expect((await ready()).status).toBe(200), 10 * HEARTBEAT_MS);
    expect(manager.capacity()).toBeGreaterThan(0);
  });
});
