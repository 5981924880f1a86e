import { WorkerRepository, type WorkerInfo } from '@app/status-store';
import { useStack } from '../support/stack.js';

const worker = (id: string, extra: Partial<WorkerInfo> = {}): WorkerInfo => ({
  id,
  host: `host-of-${id}`,
  pid: 1,
  version: '0',
  startedAt: new Date().toISOString(),
  sessions: [],
  ...extra,
});

describe('an api started with the sandbox beside workers that run another engine', () => {
  // The api's WA_ENGINE is the sandbox (the stack's); the workers are beats written here.
  const stack = useStack({}, { worker: false });

  it("follows the engine of the session's worker: no sandbox message accepted and lost, a banner that says what runs", async () => {
    const workers = stack.api!.get(WorkerRepository);
    // As a wwebjs worker on the default WORKER_HEARTBEAT_MS writes it; it drives main.
    await workers.beat(worker('worker-wwebjs', { engine: 'wwebjs', sessions: ['main'] }), 15_000);
    await stack.redis.hset(stack.keys.session('main'), { worker: 'worker-wwebjs' });
    try {
      const incoming = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '4915100000010',
        text: 'never received by a wwebjs engine',
      });
      expect(incoming.status).toBe(409);
      expect(incoming.body.error).toEqual({
        code: 'CONFLICT',
        message:
          'Injecting incoming messages works with the sandbox engine only: session main is driven by wwebjs',
      });
      expect(await stack.redis.exists(stack.keys.sandboxIncoming('main'))).toBe(0);
      const link = await stack.call('POST', '/api/v1/sessions/main/link');
      expect(link.status).toBe(409);
      expect(link.body.error.message).toMatch(/driven by wwebjs/);

      const admin = await (await fetch(`${stack.url}/admin`)).text();
      expect(admin).not.toContain('Sandbox engine.');
      expect(admin).toContain('Engine <code>wwebjs</code>');
      // The queue board's badge too (it said "nothing is sent" while a wwebjs worker sends).
      const board = await (await fetch(`${stack.url}/admin/queues`)).text();
      expect(board).toContain('Send queues');
      expect(board).not.toContain('Sandbox: nothing is sent');

      // A sandbox worker joins: the engines are mixed, and the page says so.
      await workers.beat(worker('worker-sandbox', { engine: 'sandbox' }), 15_000);
      const mixed = await (await fetch(`${stack.url}/admin`)).text();
      expect(mixed).toContain('Mixed engines.');
      expect(mixed).not.toContain('Sandbox engine.');
      // main is still driven by the wwebjs worker: still refused.
      expect(
        (
          await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
            from: '4915100000010',
            text: 'x',
          })
        ).status,
      ).toBe(409);
      const listed = (await stack.call('GET', '/api/v1/workers')).body.data;
      expect(
        Object.fromEntries(listed.map((w: { id: string; engine: string }) => [w.id, w.engine])),
      ).toEqual({ 'worker-wwebjs': 'wwebjs', 'worker-sandbox': 'sandbox' });
    } finally {
      await workers.remove('worker-wwebjs');
      await workers.remove('worker-sandbox');
    }
  });

  it("accepts sandbox messages for a session whose worker runs the sandbox, whatever the api's engine", async () => {
    const workers = stack.api!.get(WorkerRepository);
    await workers.beat(worker('worker-sbx', { engine: 'sandbox', sessions: ['main'] }), 15_000);
    await stack.redis.hset(stack.keys.session('main'), { worker: 'worker-sbx' });
    try {
      const incoming = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '4915100000010',
        text: 'hello',
      });
      expect(incoming.status).toBe(202);
      expect(await (await fetch(`${stack.url}/admin`)).text()).toContain('Sandbox engine.');
    } finally {
      await workers.remove('worker-sbx');
    }
  });
});

describe('an api whose WORKER_HEARTBEAT_MS is shorter than the worker’s', () => {
  // The api judges with 3 × 300 ms; the worker beats every 5 s (15 s limit).
  const stack = useStack({ WORKER_HEARTBEAT_MS: '300' }, { worker: false });

  it('counts the worker live between its beats by its own limit, and accepts sends', async () => {
    const workers = stack.api!.get(WorkerRepository);
    // Its last beat, 2 s ago: within its own 15 s, past the api's 900 ms.
    await workers.beat(
      worker('worker-slow-beat', { engine: 'sandbox' }),
      15_000,
      Date.now() - 2_000,
    );
    try {
      const sent = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915123456789',
        text: 'accepted between two beats',
      });
      expect(sent.status).toBe(202);
      const health = await stack.call('GET', '/health/ready');
      expect(health.status).toBe(200);
    } finally {
      await workers.remove('worker-slow-beat');
    }
  });
});
