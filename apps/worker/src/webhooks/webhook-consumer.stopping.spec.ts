import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { inject } from 'vitest';
import { AppConfigModule } from '@app/config';
import { QueueModule } from '@app/queue';
import { SessionRepository, StatusStoreModule, WebhookRepository } from '@app/status-store';
import { eventually } from '../../../../test/support/eventually.js';
import { WebhookReceiver, type Answer } from '../../../../test/support/webhook-receiver.js';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WebhookConsumer } from './webhook-consumer.service.js';
import { WebhookDeliveryService } from './webhook-delivery.service.js';
import { WebhookSender } from './webhook-sender.service.js';

const SECRET = `whsec_${Buffer.from('s'.repeat(32)).toString('base64')}`;

/**
 * A worker's webhook deliveries stopped as a SIGTERM stops them (WorkerLifecycle calls
 * WebhookConsumer.stop), then another worker's started: over real Redis and BullMQ, posting to
 * a real receiver on loopback.
 */
describe('WebhookConsumer.stop: a delivery in flight at a clean shutdown', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  let receiver: WebhookReceiver | undefined;
  const modules: TestingModule[] = [];
  const stopped = new Set<TestingModule>();
  const stop = (made: TestingModule) => {
    stopped.add(made);
    return made.get(WebhookConsumer).stop();
  };
  afterEach(async () => {
    for (const made of modules.splice(0)) {
      if (!stopped.has(made)) await stop(made);
      await made.close();
    }
    stopped.clear();
    await receiver?.close();
    receiver = undefined;
  });

  /** One worker's webhook part (its Redis keys under `prefix`), delivering once started. */
  async function worker(prefix: string, url: string, env: Record<string, string>) {
    const made = await Test.createTestingModule({
      imports: [
        AppConfigModule.forRoot({
          readEnvFile: false,
          overrides: {
            REDIS_URL: inject('redisUrl'),
            REDIS_PREFIX: prefix,
            WEBHOOK_URLS: url,
            WEBHOOK_SECRET: SECRET,
            WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
            ...env,
          },
        }),
        StatusStoreModule,
        QueueModule,
      ],
      providers: [
        WebhookSender,
        WebhookDeliveryService,
        WebhookConsumer,
        {
          provide: WorkerMetrics,
          useValue: { webhookAttempt: () => undefined, setWebhookBacklog: () => undefined },
        },
      ],
    }).compile();
    modules.push(made);
    return made;
  }

  /**
   * A receiver answering the nth request with `answer(n)`, and a first worker (`env`) whose
   * session `main` has two session.status events in line for it: the first is in flight (the
   * receiver has it) when this returns.
   */
  async function firstInFlight(answer: (n: number) => Answer | Promise<Answer>, env = {}) {
    receiver = await WebhookReceiver.start(answer);
    const prefix = `ws${randomBytes(5).toString('hex')}`;
    const first = await worker(prefix, receiver.url, env);
    const sessions = first.get(SessionRepository);
    await sessions.register('main');
    await sessions.setObserved('main', { status: 'STARTING' }, 'w1');
    await sessions.setObserved('main', { status: 'QR', qr: 'qr-1' }, 'w1');
    await first.get(WebhookConsumer).start();
    await eventually(() => expect(receiver!.requests).toHaveLength(1));
    return { prefix, first, webhooks: first.get(WebhookRepository) };
  }

  const eventIds = () => receiver!.requests.map((request) => String(request.headers['webhook-id']));
  const deliveryOf = async (webhooks: WebhookRepository, eventId: string) =>
    (await webhooks.list({ sessionIds: ['main'], limit: 10 })).find((d) => d.eventId === eventId);

  it('lets the delivery in flight finish and records it delivered, starts none after it, and the next worker posts the event once', async () => {
    // The receiver answers the first request after 1.5 s: the stop begins while it waits.
    const { prefix, first, webhooks } = await firstInFlight(
      (n) => (n === 1 ? new Promise((resolve) => setTimeout(() => resolve(204), 1_500)) : 204),
      { WEBHOOK_TIMEOUT_MS: '10000', SHUTDOWN_TIMEOUT_MS: '30000' },
    );
    const [inFlight] = eventIds();

    await stop(first);
    // Answered while the worker stopped: recorded before it was gone, once.
    expect(await deliveryOf(webhooks, inFlight)).toMatchObject({
      status: 'delivered',
      attempts: 1,
      lastError: null,
    });
    // The event behind it was not started by the stopping worker.
    expect(eventIds()).toEqual([inFlight]);
    const [waiting] = (await webhooks.list({ sessionIds: ['main'], limit: 10 })).filter(
      (d) => d.eventId !== inFlight,
    );
    expect(waiting).toMatchObject({ status: 'pending', attempts: 0 });

    // The next worker takes the line up from the event behind it: the first is not posted again.
    await (await worker(prefix, receiver!.url, {})).get(WebhookConsumer).start();
    await eventually(async () =>
      expect(await deliveryOf(webhooks, waiting.eventId)).toMatchObject({ status: 'delivered' }),
    );
    expect(eventIds()).toEqual([inFlight, waiting.eventId]);
    expect(await deliveryOf(webhooks, inFlight)).toMatchObject({
      status: 'delivered',
      attempts: 1,
    });
  });

  it('breaks off a delivery still in flight after half of SHUTDOWN_TIMEOUT_MS (below WEBHOOK_TIMEOUT_MS); the next worker posts it again, then the rest', async () => {
    // SHUTDOWN_TIMEOUT_MS 2 s: 1 s for the deliveries in flight. The receiver never answers
    // the first request; the worker's own limit (WEBHOOK_TIMEOUT_MS) is far longer.
    const { prefix, first, webhooks } = await firstInFlight((n) => (n === 1 ? 'hang' : 204), {
      WEBHOOK_TIMEOUT_MS: '60000',
      SHUTDOWN_TIMEOUT_MS: '2000',
    });
    const [inFlight] = eventIds();

    const stopping = performance.now();
    await stop(first);
    const tookMs = performance.now() - stopping;
    expect(tookMs).toBeGreaterThanOrEqual(900);
    expect(tookMs).toBeLessThan(5_000);
    // Broken off by the worker, not failed by the receiver: made again at once, by the next.
    expect(await deliveryOf(webhooks, inFlight)).toMatchObject({
      status: 'pending',
      attempts: 1,
      lastError: 'broken off: the worker is shutting down',
    });
    expect(eventIds()).toEqual([inFlight]);

    await (await worker(prefix, receiver!.url, {})).get(WebhookConsumer).start();
    await eventually(() => expect(receiver!.requests).toHaveLength(3));
    const [, again, next] = eventIds();
    // At least once: the same webhook-id, for the receiver to deduplicate on.
    expect(again).toBe(inFlight);
    expect(next).not.toBe(inFlight);
    await eventually(async () =>
      expect(await deliveryOf(webhooks, inFlight)).toMatchObject({
        status: 'delivered',
        attempts: 2,
      }),
    );
  });
});
