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

describe('WorkerMetrics: wa_messages_total', () => {
  it('labels every series with session, status and code (empty for sent, delivered and read)', async () => {
    const registers = [new Registry()];
    const messages = new Counter({
      name: 'messages',
      help: 'm',
      labelNames: ['session', 'status', 'code'],
      registers,
    });
    const Metrics = WorkerMetrics as unknown as new (...args: unknown[]) => WorkerMetrics;
    const service = new Metrics(
      messages,
      new Histogram({ name: 'duration', help: 'd', labelNames: ['session'], registers }),
      new Histogram({ name: 'wait', help: 'w', labelNames: ['session'], registers }),
      // Gauges, sessions, registry and queues: not used here.
      ...Array.from({ length: 9 }),
    );
    service.startSend('main', { createdAt: new Date().toISOString() })();
    service.messageRecovered('main');
    service.messageAcked('main', 'delivered');
    service.messageAcked('main', 'read');
    service.sendFailed('main', 'SEND_FAILED', false);
    service.sendFailed('main', 'NOT_ON_WHATSAPP', true);
    const series = (await messages.get()).values.map(({ labels, value }) => ({ labels, value }));
    expect(series).toEqual([
      { labels: { session: 'main', status: 'sent', code: '' }, value: 2 },
      { labels: { session: 'main', status: 'delivered', code: '' }, value: 1 },
      { labels: { session: 'main', status: 'read', code: '' }, value: 1 },
      { labels: { session: 'main', status: 'retrying', code: 'SEND_FAILED' }, value: 1 },
      { labels: { session: 'main', status: 'failed', code: 'NOT_ON_WHATSAPP' }, value: 1 },
    ]);
  });
});
