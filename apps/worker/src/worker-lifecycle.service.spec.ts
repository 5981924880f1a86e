import type { HeartbeatService } from './health/heartbeat.service.js';
import type { WorkerHealth } from './health/worker-health.service.js';
import type { WorkerHttpServer } from './health/worker-http.server.js';
import type { WorkerMetrics } from './metrics/worker-metrics.service.js';
import type { AckTimeoutSweeper } from './send/ack-timeout-sweeper.service.js';
import type { ExpirySweeper } from './send/expiry-sweeper.service.js';
import type { SendConsumers } from './send/send-consumers.service.js';
import type { WebhookConsumer } from './webhooks/webhook-consumer.service.js';
import { WorkerLifecycle } from './worker-lifecycle.service.js';

describe('WorkerLifecycle: the order the worker boots and stops in', () => {
  function lifecycle(failingStop?: string, stops: Record<string, () => Promise<void>> = {}) {
    const calls: string[] = [];
    const part = (name: string, stops = true) => ({
      start: async () => {
        await Promise.resolve();
        calls.push(`start ${name}`);
      },
      ...(stops
        ? {
            stop: async () => {
              await Promise.resolve();
              calls.push(`stop ${name}`);
              if (name === failingStop) throw new Error(`${name} hung up`);
            },
          }
        : {}),
    });
    const worker = new WorkerLifecycle(
      part('http') as unknown as WorkerHttpServer,
      part('lag') as unknown as WorkerHealth,
      part('metrics', false) as unknown as WorkerMetrics,
      {
        ...part('heartbeat'),
        leave: async () => {
          await Promise.resolve();
          calls.push('leave placement');
        },
      } as unknown as HeartbeatService,
      {
        ...part('webhooks'),
        ...(stops.webhooks && { stop: stops.webhooks }),
      } as unknown as WebhookConsumer,
      part('expiry') as unknown as ExpirySweeper,
      part('ack-timeout') as unknown as AckTimeoutSweeper,
      {
        ...part('sessions'),
        ...(stops.sessions && { stop: stops.sessions }),
      } as unknown as SendConsumers,
    );
    return { worker, calls };
  }

  it('boots the health port first and the sessions last, each after the previous is up', async () => {
    const { worker, calls } = lifecycle();
    await worker.onApplicationBootstrap();
    expect(calls).toEqual([
      'start http',
      'start lag',
      'start metrics',
      'start heartbeat',
      'start webhooks',
      'start expiry',
      'start ack-timeout',
      'start sessions',
    ]);
  });

  it('stops the sessions (leases handed back) before the heartbeat leaves, and the health port last', async () => {
    const { worker, calls } = lifecycle();
    await worker.beforeApplicationShutdown();
    expect(calls).toEqual([
      'leave placement',
      'stop expiry',
      'stop ack-timeout',
      'stop webhooks',
      'stop sessions',
      'stop heartbeat',
      'stop lag',
      'stop http',
    ]);
  });

  it('lets webhook deliveries and the send path finish what they have in flight side by side, not one after the other', async () => {
    // The deliveries' stop ends only once the send path's began (or after 2 s, to fail).
    let sendPathStopping: () => void = () => undefined;
    const sendPathBegan = new Promise<boolean>(
      (resolve) => (sendPathStopping = () => resolve(true)),
    );
    let sideBySide = false;
    const { worker, calls } = lifecycle(undefined, {
      webhooks: async () => {
        sideBySide = await Promise.race([
          sendPathBegan,
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2_000)),
        ]);
        calls.push('stop webhooks');
      },
      sessions: async () => {
        sendPathStopping();
        await Promise.resolve();
        calls.push('stop sessions');
      },
    });
    await worker.beforeApplicationShutdown();
    expect(sideBySide).toBe(true);
    // The heartbeat still stops only after both.
    expect(calls.slice(3)).toEqual([
      'stop sessions',
      'stop webhooks',
      'stop heartbeat',
      'stop lag',
      'stop http',
    ]);
  });

  it('still stops every other part when one fails to', async () => {
    const { worker, calls } = lifecycle('sessions');
    await expect(worker.beforeApplicationShutdown()).resolves.toBeUndefined();
    expect(calls.slice(4)).toEqual(['stop sessions', 'stop heartbeat', 'stop lag', 'stop http']);
  });
});
