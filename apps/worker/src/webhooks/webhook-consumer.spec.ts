import type { QueueOptions } from 'bullmq';
import type { AppConfig } from '@app/config';
import type { QueueProducer } from '@app/queue';
import type { RedisKeys, RedisSubscriber, WebhookRepository } from '@app/status-store';
import type { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WebhookConsumer } from './webhook-consumer.service.js';
import type { WebhookDeliveryService } from './webhook-delivery.service.js';
import type { WebhookSender } from './webhook-sender.service.js';

describe('WebhookConsumer.sweep and the backlog gauge', () => {
  function consumer(webhooks: Partial<WebhookRepository>) {
    const setWebhookBacklog = vi.fn();
    const made = new WebhookConsumer(
      {} as QueueOptions,
      { WEBHOOK_CONCURRENCY: 10 } as AppConfig,
      {} as RedisKeys,
      {} as RedisSubscriber,
      { shards: async () => [], ...webhooks } as WebhookRepository,
      {} as WebhookDeliveryService,
      {} as WebhookSender,
      { webhookQueue: () => ({ getJobState: async () => 'waiting' }) } as unknown as QueueProducer,
      { setWebhookBacklog } as unknown as WorkerMetrics,
    );
    return { consumer: made, setWebhookBacklog };
  }

  it('sets the backlog per target from the chains it reads', async () => {
    const { consumer: sweeping, setWebhookBacklog } = consumer({
      chainHeads: async () => [
        { targetId: 't1', length: 3, head: null },
        { targetId: 't1', length: 2, head: null },
        { targetId: 't2', length: 1, head: null },
      ],
    } as unknown as Partial<WebhookRepository>);
    await sweeping.sweep();
    expect(setWebhookBacklog).toHaveBeenLastCalledWith(
      new Map([
        ['t1', 5],
        ['t2', 1],
      ]),
    );
  });

  it('reports no backlog rather than the last one when the chains cannot be read', async () => {
    const { consumer: sweeping, setWebhookBacklog } = consumer({
      chainHeads: async () => {
        throw new Error('Connection is closed');
      },
    });
    await sweeping.sweep();
    expect(setWebhookBacklog).toHaveBeenLastCalledWith(new Map());
  });
});
