import { Counter, Histogram, Registry } from 'prom-client';
import { WorkerMetrics } from './worker-metrics.service.js';

describe('WorkerMetrics: wa_queue_wait_seconds', () => {
  function metrics() {
    const registers = [new Registry()];
    const histogram = (name: string, labelNames: string[]) =>
      new Histogram({ name, help: name, labelNames, registers });
    const queueWait = histogram('wait', ['session']);
    const Metrics = WorkerMetrics as unknown as new (...args: unknown[]) => WorkerMetrics;
    const service = new Metrics(
      new Counter({
        name: 'messages',
        help: 'm',
        labelNames: ['session', 'status', 'code'],
        registers,
      }),
      histogram('duration', ['session']),
      queueWait,
      // Gauges, sessions, registry and queues: not used here.
      ...Array.from({ length: 9 }),
    );
    const sum = async () =>
      (await queueWait.get()).values.find((v) => v.metricName === 'wait_sum')?.value;
    return { service, sum };
  }

  it('counts the wait from when the message was accepted', async () => {
    const { service, sum } = metrics();
    service.startSend('main', { createdAt: new Date(Date.now() - 5_000).toISOString() })();
    expect(await sum()).toBeGreaterThanOrEqual(5);
    expect(await sum()).toBeLessThan(6);
  });

  it('counts the wait of a scheduled message from its sendAt, not from when it was accepted', async () => {
    const { service, sum } = metrics();
    service.startSend('main', {
      createdAt: new Date(Date.now() - 86_400_000).toISOString(),
      sendAt: new Date(Date.now() - 2_000).toISOString(),
    })();
    expect(await sum()).toBeGreaterThanOrEqual(2);
    expect(await sum()).toBeLessThan(3);
  });
});
